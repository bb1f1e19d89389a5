r"""Initial values of latent sites, for guides (``init_loc_fn``) and NUTS (``init_strategy``).

Pyro's own strategies (:mod:`pyro.infer.autoguide.initialization`) call ``site["fn"].sample()``
to learn a site's shape, so they fail on improper priors (``dist.ImproperUniform``, what Stan means
by a parameter without a prior statement), and ``init_to_median`` puts a regression coefficient
with a Normal(0, 1000) prior thousands of units from its posterior. The strategies here never
sample a site: the shape is ``fn.batch_shape + fn.event_shape`` and the value is built in the
unconstrained space :math:`\mathbb R^d` of the site's support and mapped back with
``transform_to(support)``.

=============  ====================================================================================
name           initial value
=============  ====================================================================================
``uniform``    Stan's and NumPyro's default: :math:`\zeta \sim \mathrm{Uniform}(-r, r)` on the
               unconstrained scale (``radius`` :math:`r = 2`), a different point per call
``feasible``   :math:`\zeta = 0`: the "centre" of the support (0 for reals, 1 for positive, 0.5
               for (0, 1), an equally spaced ordered vector ...), deterministic
``median``     the prior median from 15 prior draws (Pyro's ``init_to_median``); falls back to
               ``feasible`` where the prior cannot be sampled (improper) or has no median
``mean``       the prior mean (Pyro's ``init_to_mean``); falls back to ``feasible``
``sample``     one draw from the prior; falls back to ``uniform``
=============  ====================================================================================

Every strategy returns a value marked as not user-given (``_pyro_custom_init = False``), the way
Pyro's do, so ``AutoGuide`` and NUTS treat them alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro.infer.autoguide.initialization import init_to_mean, init_to_median
from torch.distributions import transform_to

from svilab.validation import choice, positive

INIT_STRATEGIES: dict[str, str] = {
    "uniform": "Uniform(-2, 2) on the unconstrained scale (Stan's and NumPyro's default)",
    "feasible": "0 on the unconstrained scale (deterministic)",
    "median": "prior median (falls back to feasible for improper priors)",
    "mean": "prior mean (falls back to feasible for improper priors)",
    "sample": "one prior draw (falls back to uniform for improper priors)",
}


def site_dtype(fn) -> torch.dtype:
    """The floating dtype of a distribution's parameters (torch's default when it has none)."""
    seen = [fn]
    while seen:
        d = seen.pop()
        for value in vars(d).values():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value.dtype
            if isinstance(value, torch.distributions.Distribution):
                seen.append(value)
    return torch.get_default_dtype()


def _unconstrained_zeros(fn) -> tuple[torch.Tensor, torch.distributions.Transform]:
    """Zeros of the unconstrained shape of ``fn``'s support, and the map back to the support."""
    t = transform_to(fn.support)
    shape = t.inverse_shape(tuple(fn.batch_shape) + tuple(fn.event_shape))
    return torch.zeros(shape, dtype=site_dtype(fn)), t


def _mark(value: torch.Tensor) -> torch.Tensor:
    value = value.detach()
    value._pyro_custom_init = False
    return value


def init_to_uniform(site: dict | None = None, radius: float = 2.0):
    """Uniform(-radius, radius) on the unconstrained scale, without sampling the site."""
    if site is None:
        return functools.partial(init_to_uniform, radius=radius)
    zeros, t = _unconstrained_zeros(site["fn"])
    return _mark(t(torch.rand_like(zeros) * (2 * radius) - radius))


def init_to_feasible(site: dict | None = None):
    """0 on the unconstrained scale, without sampling the site."""
    if site is None:
        return init_to_feasible
    zeros, t = _unconstrained_zeros(site["fn"])
    return _mark(t(zeros))


def _improper(fn) -> bool:
    while isinstance(fn, dist.Independent | dist.MaskedDistribution | dist.ExpandedDistribution):
        fn = fn.base_dist
    return isinstance(fn, dist.ImproperUniform)


def _with_fallback(strategy: Callable, fallback: Callable, site: dict | None = None):
    if site is None:
        return functools.partial(_with_fallback, strategy, fallback)
    if _improper(site["fn"]):
        return fallback(site)
    try:
        value = strategy(site)
    except (NotImplementedError, RuntimeError, ValueError):
        return fallback(site)
    if not torch.isfinite(value).all():
        return fallback(site)
    return _mark(value)


def _sample(site: dict) -> torch.Tensor:
    return site["fn"].sample()


def make_init(name: str = "uniform", radius: float = 2.0) -> Callable:
    """The init strategy called ``name`` (see the module docstring), for ``init_loc_fn=`` of a Pyro
    autoguide or ``init_strategy=`` of :class:`pyro.infer.NUTS`.

    :raises ValueError: unknown name (the message lists the known ones), radius not positive.
    """
    name = choice(name, list(INIT_STRATEGIES), "init strategy")
    radius = positive(radius, "init radius")
    if name == "uniform":
        return init_to_uniform(radius=radius)
    if name == "feasible":
        return init_to_feasible
    if name == "median":
        return _with_fallback(init_to_median(fallback=None), init_to_feasible)
    if name == "mean":
        return _with_fallback(init_to_mean(fallback=None), init_to_feasible)
    return _with_fallback(_sample, init_to_uniform(radius=radius))


__all__ = ["INIT_STRATEGIES", "init_to_feasible", "init_to_uniform", "make_init", "site_dtype"]
