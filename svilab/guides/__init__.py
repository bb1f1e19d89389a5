"""Guides (variational families), chosen by name with :func:`make_guide`.

=============  ==================================================================================
name           guide
=============  ==================================================================================
``normal``     :class:`MeanFieldPositiveNormal`: the notebook's mean-field Normal, each factor
               truncated to (0, inf); hand-written with ``pyro.param``
``lognormal``  :class:`pyro.infer.autoguide.AutoNormal`: mean-field Normal in the unconstrained
               (log) space, i.e. mean-field LogNormal for positive latents
``gamma``      :class:`MeanFieldGamma`: mean-field Gamma, hand-written (the CAVI family)
``mvn``        :class:`pyro.infer.autoguide.AutoMultivariateNormal`: full-rank Gaussian in the
               unconstrained space (memory D^2)
``lowrank``    :class:`~svilab.guides.lowrank.AutoLowRank` (Pyro's ``AutoLowRankMultivariateNormal``):
               Gaussian with a covariance of rank min(round(sqrt(D)), 32) plus a diagonal (time and
               memory linear in D above 1024): the correlated guide for models with many latents
``flow``       :class:`AutoFlow`: a normalizing flow (autoregressive neural spline and a full-rank
               affine layer, an :class:`~pyro.infer.autoguide.AutoContinuous`) in the unconstrained space
=============  ==================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from svilab.guides.flow import AutoFlow
from svilab.guides.mean_field import MeanFieldGamma, MeanFieldPositiveNormal
from svilab.guides.truncated_normal import PositiveNormal
from svilab.validation import choice


@dataclass(frozen=True)
class GuideSpec:
    """Everything svilab knows about one guide: adding a guide is adding one of these to
    :data:`GUIDE_SPECS` (docs/architecture.md).

    :ivar build: ``build(model, init_loc_fn=..., **options) -> guide``.
    :ivar init: the initial location when none is asked for (Pyro's defaults, made sample-free so
        that improper priors work: see :mod:`svilab.inference.init`).
    :ivar jit: Pyro's JIT ELBOs can compile it (the flow creates its networks lazily, which the JIT
        tracer does not accept).
    :ivar laplace: it can start at a Laplace approximation (:mod:`svilab.inference.laplace`).
    :ivar any_model: it works on any model, so ``--model`` fits it by default (the hand-written
        mean-field guides need global positive latent sites).
    :ivar schedule: SVI settings on the Poisson-Gamma model (``steps``, ``particles``, ``lr``).
    :ivar user_schedule: SVI settings on a user's model (``lr`` None: chosen by the start).
    :ivar default: fitted when no ``--guides`` are given (``lowrank`` is asked for by name: on a small
        model it is ``mvn`` with fewer directions).
    """

    name: str
    description: str
    build: Callable
    init: str
    jit: bool
    laplace: bool
    any_model: bool = True
    schedule: dict = field(default_factory=lambda: {"steps": 2000, "particles": 16, "lr": 0.02})
    user_schedule: dict = field(default_factory=lambda: {"steps": 3000, "particles": 16, "lr": None})
    aliases: tuple[str, ...] = ()
    default: bool = True


def _auto_normal(model, **options):
    from pyro.infer.autoguide import AutoNormal

    return AutoNormal(model, **options)


def _auto_lowrank(model, **options):
    from svilab.guides.lowrank import AutoLowRank

    return AutoLowRank(model, **options)          # rank None: sized from D (svilab.guides.sizing.lowrank_rank)


def _auto_mvn(model, **options):
    from pyro.infer.autoguide import AutoMultivariateNormal

    return AutoMultivariateNormal(model, **options)


#: the guides, by name (the order is the default order of ``svilab posterior``)
GUIDE_SPECS: dict[str, GuideSpec] = {s.name: s for s in (
    GuideSpec("normal", "mean-field Normal truncated to (0, inf) (the notebook's guide)", MeanFieldPositiveNormal,
              init="mean", jit=True, laplace=False, any_model=False,
              aliases=("truncated_normal", "truncnormal")),
    GuideSpec("lognormal", "mean-field LogNormal (AutoNormal in the unconstrained space)", _auto_normal,
              init="feasible", jit=True, laplace=True,
              aliases=("meanfield", "autonormal", "diagonal")),
    GuideSpec("gamma", "mean-field Gamma (the CAVI family)", MeanFieldGamma, init="mean", jit=True, laplace=False,
              any_model=False, aliases=("meanfield_gamma",)),
    GuideSpec("mvn", "full-rank Gaussian in the unconstrained space (AutoMultivariateNormal)", _auto_mvn,
              init="median", jit=True, laplace=True,
              aliases=("fullrank", "automultivariatenormal")),
    GuideSpec("lowrank",
              "low-rank-plus-diagonal Gaussian, rank min(round(sqrt(D)), 32) (AutoLowRankMultivariateNormal)",
              _auto_lowrank, init="median", jit=True, laplace=True, default=False,
              aliases=("lowrank_mvn", "autolowrankmultivariatenormal")),
    GuideSpec("flow", "normalizing flow: autoregressive neural spline + full-rank affine (AutoFlow)", AutoFlow,
              init="median", jit=False, laplace=True,
              # its steps cost ~5x more, so it takes fewer, larger-batch steps
              schedule={"steps": 800, "particles": 128, "lr": 0.03},
              user_schedule={"steps": 3000, "particles": 32, "lr": None}, aliases=("autoflow",)),
)}

#: name -> description (for help texts)
GUIDES: dict[str, str] = {n: s.description for n, s in GUIDE_SPECS.items()}
#: other names users reach for (``meanfield``: for real-valued latents ``lognormal`` is a Normal)
GUIDE_ALIASES: dict[str, str] = {a: s.name for s in GUIDE_SPECS.values() for a in s.aliases}


def guide_name(name: str) -> str:
    """The canonical name of a guide (case-insensitive, with :data:`GUIDE_ALIASES`)."""
    key = str(name).lower()
    return GUIDE_ALIASES[key] if key in GUIDE_ALIASES else choice(name, list(GUIDES), "guide")


def guide_spec(name: str) -> GuideSpec:
    """The :class:`GuideSpec` of ``name`` (or an alias); a ValueError lists the known guides."""
    return GUIDE_SPECS[guide_name(name)]


def make_guide(name: str, model, init=None, **options):
    """Build the guide called ``name`` for ``model``.

    :param name: one of :data:`GUIDES` (or an alias from :data:`GUIDE_ALIASES`).
    :param init: initial location: a name from :data:`svilab.inference.init.INIT_STRATEGIES`, a Pyro
        init function, or None for the guide's default (:attr:`GuideSpec.init`); none samples a site.
    :param options: passed to the guide's constructor (e.g. ``init_scale``, ``num_transforms``).
    :raises ValueError: unknown name (the message lists the known ones).
    """
    from svilab.inference.init import make_init

    spec = guide_spec(name)
    init = spec.init if init is None else init
    options["init_loc_fn"] = make_init(init) if isinstance(init, str) else init
    return spec.build(model, **options)


__all__ = ["GUIDES", "GUIDE_ALIASES", "GUIDE_SPECS", "AutoFlow", "GuideSpec", "MeanFieldGamma",
           "MeanFieldPositiveNormal", "PositiveNormal", "guide_name", "guide_spec", "make_guide"]
