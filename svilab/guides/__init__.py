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
               unconstrained space
``flow``       :class:`AutoFlow`: a normalizing flow (autoregressive neural spline and a full-rank
               affine layer, an :class:`~pyro.infer.autoguide.AutoContinuous`) in the unconstrained space
=============  ==================================================================================
"""

from __future__ import annotations

from svilab.guides.flow import AutoFlow
from svilab.guides.mean_field import MeanFieldGamma, MeanFieldPositiveNormal
from svilab.guides.truncated_normal import PositiveNormal
from svilab.validation import choice

GUIDES: dict[str, str] = {
    "normal": "mean-field Normal truncated to (0, inf) (the notebook's guide)",
    "lognormal": "mean-field LogNormal (AutoNormal in the unconstrained space)",
    "gamma": "mean-field Gamma (the CAVI family)",
    "mvn": "full-rank Gaussian in the unconstrained space (AutoMultivariateNormal)",
    "flow": "normalizing flow: autoregressive neural spline + full-rank affine (AutoFlow)",
}

#: guides that Pyro's JIT ELBOs can compile (the flow creates its networks lazily, which the
#: JIT tracer does not accept)
JIT_GUIDES = frozenset({"normal", "lognormal", "gamma", "mvn"})


#: other names users reach for (``meanfield``: for real-valued latents ``lognormal`` is a Normal)
GUIDE_ALIASES = {"meanfield": "lognormal", "autonormal": "lognormal", "diagonal": "lognormal",
                 "fullrank": "mvn", "automultivariatenormal": "mvn", "autoflow": "flow"}

#: each guide's initial location when none is asked for (Pyro's defaults, made sample-free so
#: that improper priors work: see :mod:`svilab.inference.init`)
DEFAULT_INIT = {"normal": "mean", "gamma": "mean", "lognormal": "feasible", "mvn": "median", "flow": "median"}


def guide_name(name: str) -> str:
    """The canonical name of a guide (case-insensitive, with :data:`GUIDE_ALIASES`)."""
    key = str(name).lower()
    return GUIDE_ALIASES[key] if key in GUIDE_ALIASES else choice(name, list(GUIDES), "guide")


def make_guide(name: str, model, init=None, **options):
    """Build the guide called ``name`` for ``model``.

    :param name: one of :data:`GUIDES` (or an alias from :data:`GUIDE_ALIASES`).
    :param init: initial location: a name from :data:`svilab.inference.init.INIT_STRATEGIES`, a Pyro
        init function, or None for the guide's default (:data:`DEFAULT_INIT`); none samples a site.
    :param options: passed to the guide's constructor (e.g. ``init_scale``, ``num_transforms``).
    :raises ValueError: unknown name (the message lists the known ones).
    """
    from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

    from svilab.inference.init import make_init

    name = guide_name(name)
    init = DEFAULT_INIT[name] if init is None else init
    options["init_loc_fn"] = make_init(init) if isinstance(init, str) else init
    if name == "normal":
        return MeanFieldPositiveNormal(model, **options)
    if name == "gamma":
        return MeanFieldGamma(model, **options)
    if name == "lognormal":
        return AutoNormal(model, **options)
    if name == "mvn":
        return AutoMultivariateNormal(model, **options)
    return AutoFlow(model, **options)


__all__ = ["DEFAULT_INIT", "GUIDES", "GUIDE_ALIASES", "JIT_GUIDES", "AutoFlow", "MeanFieldGamma",
           "MeanFieldPositiveNormal", "PositiveNormal", "guide_name", "make_guide"]
