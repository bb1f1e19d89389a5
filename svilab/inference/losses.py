r"""Variational objectives by name, as Pyro ELBO objects that ``pyro.infer.SVI`` accepts.

=================  ===============================================================================
name               objective (minimised as a loss)
=================  ===============================================================================
``trace_elbo``     :class:`pyro.infer.Trace_ELBO`: :math:`-\mathbb E_q[\log p(x, z) - \log q(z)]`
``meanfield_elbo`` :class:`pyro.infer.TraceMeanField_ELBO`: the same, with the KL term in closed
                   form wherever torch knows it (Monte Carlo for the other sites)
``renyi``          :class:`pyro.infer.RenyiELBO`: :math:`-\frac{1}{1-\alpha}\log \mathbb E_q
                   [(p(x,z)/q(z))^{1-\alpha}]` with ``alpha`` (``alpha=0`` is the IWAE bound with
                   ``num_particles`` samples); needs ``num_particles >= 2``
``gjs``/``dgjs``   the skew geometric Jensen-Shannon objectives (MNIST VAE,
                   :mod:`svilab.inference.jsd_elbo`), with ``alpha``
=================  ===============================================================================

``jit=True`` uses Pyro's JIT-compiled variants, fixed in :mod:`svilab.inference.jit_elbo` (its
``JitTrace_ELBO`` had twice the gradient, its ``JitTraceMeanField_ELBO`` recompiled every call),
which cut the per-step overhead severalfold; they need a guide whose parameters all exist before
the first step (see :func:`svilab.inference.svi.fit`) and the same model and guide objects on
every call.
"""

from __future__ import annotations

import pyro.infer as infer

from svilab.validation import choice, positive_int

LOSSES: dict[str, str] = {
    "trace_elbo": "Trace_ELBO",
    "meanfield_elbo": "TraceMeanField_ELBO",
    "renyi": "RenyiELBO(alpha)",
    "gjs": "skew geometric Jensen-Shannon ELBO (alpha)",
    "dgjs": "dual skew geometric Jensen-Shannon ELBO (alpha)",
}
_ALIASES = {"elbo": "trace_elbo", "tracemeanfield_elbo": "meanfield_elbo", "renyi_elbo": "renyi"}


def loss_name(name: str) -> str:
    """The canonical name of a loss (case-insensitive, with aliases), or a ValueError listing them."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    return key if key in LOSSES else choice(name, list(LOSSES), "loss")


def make_loss(name: str = "trace_elbo", *, num_particles: int = 1, vectorize_particles: bool = True,
              max_plate_nesting: int | None = None, jit: bool = False, alpha: float | None = None,
              beta: float = 1.0) -> infer.ELBO:
    """Build the Pyro loss called ``name``.

    :param num_particles: Monte Carlo samples per step (vectorized when ``vectorize_particles``).
    :param max_plate_nesting: passed to the ELBO (give it when the model's plates are known:
        it saves a trace of the model and is required by some JIT models).
    :param alpha: the Renyi order (default 0.5) or the GJS skew (default 0.5).
    :param beta: weight of the divergence term (GJS objectives only).
    :raises ValueError: unknown name, ``num_particles < 1`` (< 2 for ``renyi``), alpha out of range.
    """
    name = loss_name(name)
    num_particles = positive_int(num_particles, "num_particles")
    kw = {"num_particles": num_particles, "vectorize_particles": vectorize_particles}
    if max_plate_nesting is not None:
        kw["max_plate_nesting"] = max_plate_nesting
    if name == "trace_elbo":
        from svilab.inference.jit_elbo import JitTrace_ELBO

        return (JitTrace_ELBO if jit else infer.Trace_ELBO)(**kw)
    if name == "meanfield_elbo":
        from svilab.inference.jit_elbo import JitTraceMeanField_ELBO

        return (JitTraceMeanField_ELBO if jit else infer.TraceMeanField_ELBO)(**kw)
    if name == "renyi":
        a = 0.5 if alpha is None else float(alpha)
        if a == 1.0 or a != a:
            raise ValueError(f"renyi: alpha must be a number other than 1 (alpha=1 is trace_elbo), got {alpha}")
        if num_particles < 2:
            raise ValueError("renyi: needs num_particles >= 2 (with one sample it is the ELBO)")
        return infer.RenyiELBO(alpha=a, **kw)
    from svilab.inference.jsd_elbo import GeometricJSD_ELBO, JitGeometricJSD_ELBO

    cls = JitGeometricJSD_ELBO if jit else GeometricJSD_ELBO
    return cls(alpha=0.5 if alpha is None else alpha, dual=(name == "dgjs"), beta=beta, **kw)
