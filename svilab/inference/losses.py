r"""Variational objectives by name, as Pyro ELBO objects that ``pyro.infer.SVI`` accepts.

=================  ===============================================================================
name               objective (minimised as a loss)
=================  ===============================================================================
``trace_elbo``     :class:`pyro.infer.Trace_ELBO`: :math:`-\mathbb E_q[\log p(x, z) - \log q(z)]`
``meanfield_elbo`` :class:`pyro.infer.TraceMeanField_ELBO`: the same, with the KL term in closed
                   form wherever torch knows it (Monte Carlo for the other sites)
``renyi``          :class:`pyro.infer.RenyiELBO`: :math:`-\frac{1}{1-\alpha}\log \mathbb E_q
                   [(p(x,z)/q(z))^{1-\alpha}]` with ``alpha`` (``alpha=0`` is the IWAE bound with
                   ``num_particles`` samples), per item of the plates every site shares (the
                   images of a VAE); needs ``num_particles >= 2``
``iwae``           :class:`svilab.inference.iwae_elbo.IWAE_ELBO`: the importance-weighted bound
                   with k = ``num_particles`` draws per item, vectorized (JIT-compiled unless
                   ``dreg=True``, the doubly reparameterized gradient) (MNIST VAE)
``gjs``/``dgjs``   the skew geometric Jensen-Shannon objectives (MNIST VAE,
                   :mod:`svilab.inference.jsd_elbo`), with ``alpha``, fixed or learned
=================  ===============================================================================

Every loss is one :class:`LossSpec` in :data:`LOSS_SPECS`. ``objective`` names what is optimised:
``elbo`` is the ELBO whichever of Pyro's two estimators computes it (``trace_elbo``: Monte Carlo
throughout; ``meanfield_elbo``: analytic KL). Which losses a command offers, and which estimator of an
objective it picks, is the command's choice (:mod:`svilab.experiments.loss_choice`), not the loss's.

``jit=True`` uses Pyro's JIT-compiled variants, fixed in :mod:`svilab.inference.jit_elbo` (its
``JitTrace_ELBO`` had twice the gradient, its ``JitTraceMeanField_ELBO`` recompiled every call),
which cut the per-step overhead severalfold; they need a guide whose parameters all exist before
the first step (see :func:`svilab.inference.svi.fit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro.infer as infer

from svilab.validation import choice, positive_int


@dataclass(frozen=True)
class LossSpec:
    """One objective: adding a loss is adding one of these to :data:`LOSS_SPECS`.

    :ivar build: ``build(kw, jit, alpha, beta, **options) -> ELBO`` with ``kw`` Pyro's ELBO options and
        ``options`` the loss's own (``dreg``, ``learn_alpha``).
    :ivar objective: what is optimised (``elbo``, ``renyi``, ``gjs``, ``dgjs``).
    :ivar jit: it has a JIT-compiled variant.
    :ivar alpha: what ``alpha`` means for it (None: it takes none).
    :ivar samples: its ``num_particles`` are the k draws of an importance-weighted bound (``--k``).
    :ivar options: the options of its own that it takes (``dreg``, ``learn_alpha``).
    """

    name: str
    description: str
    build: Callable
    objective: str
    jit: bool = True
    alpha: str | None = None
    aliases: tuple[str, ...] = ()
    samples: bool = False
    options: tuple[str, ...] = ()


def _trace_elbo(kw, jit, alpha, beta):
    from svilab.inference.jit_elbo import JitTrace_ELBO

    return (JitTrace_ELBO if jit else infer.Trace_ELBO)(**kw)


def _meanfield_elbo(kw, jit, alpha, beta):
    from svilab.inference.jit_elbo import JitTraceMeanField_ELBO

    return (JitTraceMeanField_ELBO if jit else infer.TraceMeanField_ELBO)(**kw)


def _renyi(kw, jit, alpha, beta):
    a = 0.0 if alpha is None else float(alpha)
    if a == 1.0 or a != a or math.isinf(a):
        raise ValueError(f"renyi: alpha must be a number other than 1 (alpha=1 is trace_elbo) and finite, got {alpha}")
    if kw["num_particles"] < 2:
        raise ValueError("renyi: needs num_particles >= 2 (with one sample it is the ELBO)")
    return infer.RenyiELBO(alpha=a, **kw)


def _iwae(kw, jit, alpha, beta, dreg=False):
    from svilab.inference.iwae_elbo import IWAE_ELBO, JitIWAE_ELBO

    kw = {k: v for k, v in kw.items() if k != "vectorize_particles"}     # always vectorized
    return JitIWAE_ELBO(**kw) if jit and not dreg else IWAE_ELBO(dreg=dreg, **kw)   # DReG: eager


def _gjs(dual: bool):
    def build(kw, jit, alpha, beta, learn_alpha=False):
        from svilab.inference.jsd_elbo import GeometricJSD_ELBO, JitGeometricJSD_ELBO

        cls = JitGeometricJSD_ELBO if jit else GeometricJSD_ELBO
        return cls(alpha=0.5 if alpha is None else alpha, dual=dual, beta=beta, learn_alpha=learn_alpha, **kw)
    return build


#: the losses, by name
LOSS_SPECS: dict[str, LossSpec] = {s.name: s for s in (
    LossSpec("trace_elbo", "Trace_ELBO", _trace_elbo, "elbo", aliases=("elbo",)),
    LossSpec("meanfield_elbo", "TraceMeanField_ELBO", _meanfield_elbo, "elbo", aliases=("tracemeanfield_elbo",)),
    LossSpec("renyi", "RenyiELBO(alpha)", _renyi, "renyi", jit=False, alpha="the Renyi order",
             aliases=("renyi_elbo",), samples=True),
    LossSpec("iwae", "importance-weighted bound (k draws; DReG gradient optional)", _iwae, "iwae",
             aliases=("iwae_elbo",), samples=True, options=("dreg",)),
    LossSpec("gjs", "skew geometric Jensen-Shannon ELBO (alpha, fixed or learned)", _gjs(False), "gjs",
             alpha="the skew", options=("learn_alpha",)),
    LossSpec("dgjs", "dual skew geometric Jensen-Shannon ELBO (alpha, fixed or learned)", _gjs(True), "dgjs",
             alpha="the skew", options=("learn_alpha",)),
)}
#: name -> description
LOSSES: dict[str, str] = {n: s.description for n, s in LOSS_SPECS.items()}
_ALIASES = {a: s.name for s in LOSS_SPECS.values() for a in s.aliases}


def loss_name(name: str) -> str:
    """The canonical name of a loss (case-insensitive, with aliases), or a ValueError listing them."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    return key if key in LOSSES else choice(name, list(LOSSES), "loss")


def loss_spec(name: str) -> LossSpec:
    """The :class:`LossSpec` of ``name`` (or an alias)."""
    return LOSS_SPECS[loss_name(name)]


def make_loss(name: str = "trace_elbo", *, num_particles: int = 1, vectorize_particles: bool = True,
              max_plate_nesting: int | None = None, jit: bool = False, alpha: float | None = None,
              beta: float = 1.0, dreg: bool = False, learn_alpha: bool = False) -> infer.ELBO:
    """Build the Pyro loss called ``name``.

    :param num_particles: Monte Carlo samples per step (vectorized when ``vectorize_particles``).
    :param max_plate_nesting: passed to the ELBO (give it when the model's plates are known:
        it saves a trace of the model and is required by some JIT models).
    :param jit: the JIT-compiled variant, where the loss has one (:attr:`LossSpec.jit`; else eager).
    :param alpha: the Renyi order (default 0, the IWAE bound, as Pyro's ``RenyiELBO``) or the GJS skew
        (default 0.5).
    :param beta: weight of the divergence term (GJS objectives only).
    :param dreg: the doubly reparameterized gradient (``iwae`` only).
    :param learn_alpha: train the skew from the start value ``alpha`` (``gjs``/``dgjs`` only).
    :raises ValueError: unknown name, ``num_particles < 1`` (< 2 for ``renyi``), alpha out of range, an
        option the loss does not take.
    """
    spec = loss_spec(name)
    kw = {"num_particles": positive_int(num_particles, "num_particles"), "vectorize_particles": vectorize_particles}
    if max_plate_nesting is not None:
        kw["max_plate_nesting"] = max_plate_nesting
    options = {k: v for k, v in (("dreg", dreg), ("learn_alpha", learn_alpha)) if v}
    for key in options:
        if key not in spec.options:
            raise ValueError(f"loss {spec.name!r} takes no {key} (it is an option of "
                             f"{', '.join(s.name for s in LOSS_SPECS.values() if key in s.options)})")
    return spec.build(kw, jit and spec.jit, alpha, beta, **options)


__all__ = ["LOSSES", "LOSS_SPECS", "LossSpec", "loss_name", "loss_spec", "make_loss"]
