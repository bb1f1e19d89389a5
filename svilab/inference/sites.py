r"""What a Pyro model contains, from one trace that never samples a latent site.

:func:`model_sites` runs the model once under :class:`pyro.infer.autoguide.initialization.InitMessenger` with a
sample-free init strategy (:mod:`svilab.inference.init`), so models with improper priors
(``dist.ImproperUniform``) can be inspected too, and sorts its sample sites into

* **latent** sites (:class:`LatentSite`: shape, batch shape, event dim, support),
* **deterministic** sites (``pyro.deterministic``: derived quantities such as ``theta`` in the
  non-centred eight schools; part of the posterior, never of the likelihood),
* **observed** sites that carry data (the likelihood terms ``az.loo`` needs), and
* **factor** sites (``pyro.factor``: extra log-density terms; neither data nor parameters).

``max_plate_nesting`` is Pyro's own rule (``pyro.infer.util`` ``_guess_max_plate_nesting``):
:math:`-\min` of the ``dim`` of every vectorized plate frame, so a model whose only plate is at
``dim=-2`` has nesting 2, and a particle plate placed at ``dim=-(nesting + 1)`` never collides with
the model's plates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.util import prune_subsample_sites

from svilab.inference.init import make_init


@dataclass(frozen=True)
class LatentSite:
    """One latent sample site: ``shape == batch_shape + event_shape`` of its value."""

    name: str
    shape: torch.Size
    batch_shape: torch.Size
    event_dim: int
    support: object
    dtype: torch.dtype
    #: its prior is improper (``dist.ImproperUniform``, possibly wrapped): the joint density is unnormalised
    improper: bool = False


def _improper(fn) -> bool:
    """Whether a site's distribution is improper: ``ImproperUniform`` under any ``Independent``/``Expanded``/
    ``Masked`` wrapper (Pyro's ``base_dist``)."""
    from pyro.distributions import ImproperUniform

    while fn is not None:
        if isinstance(fn, ImproperUniform):
            return True
        fn = getattr(fn, "base_dist", None)
    return False


@dataclass
class ModelSites:
    """Latent, deterministic, observed and factor sites of a model (shapes without particle dims)."""

    latent: dict[str, LatentSite]
    observed: dict[str, torch.Tensor]
    deterministic: dict[str, torch.Size] = field(default_factory=dict)
    factors: list[str] = field(default_factory=list)
    max_plate_nesting: int = 0

    @property
    def latent_shapes(self) -> dict[str, torch.Size]:
        return {k: s.shape for k, s in self.latent.items()}

    @property
    def latent_dim(self) -> int:
        """Total number of scalar latent values (constrained space)."""
        return sum(s.shape.numel() for s in self.latent.values())

    def values_per_draw(self, log_likelihood: bool = True) -> int:
        """Scalars one posterior draw carries: every latent and deterministic value and, with
        ``log_likelihood``, one pointwise log-likelihood per observed value (what draws and memory checks
        count)."""
        return (self.latent_dim + sum(torch.Size(d).numel() for d in self.deterministic.values())
                + (self.num_observed if log_likelihood else 0))

    @property
    def num_observed(self) -> int:
        """Total number of scalar observed values (one pointwise log-likelihood each)."""
        return sum(v.numel() for v in self.observed.values())

    @property
    def unconstrained_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each latent site's shape on the unconstrained space (Pyro's ``biject_to(support)``), in site
        order: the layout of the stacked unconstrained vector (Laplace, estimators, NUTS starts)."""
        from torch.distributions import biject_to

        return {k: tuple(biject_to(s.support).inverse_shape(s.shape)) for k, s in self.latent.items()}


def merge_model_kwargs(kwargs: dict, model_kwargs: dict | None, who: str = "model") -> dict:
    """The model's keyword arguments from a function's stray keywords and its ``model_kwargs`` (for names
    the function uses itself): a name given both ways is a TypeError."""
    both = set(kwargs) & set(model_kwargs or {})
    if both:
        raise TypeError(f"{who}: model keyword arguments {sorted(both)} given twice (as keywords and in "
                        "model_kwargs)")
    return {**(model_kwargs or {}), **kwargs}


def is_deterministic(site: dict) -> bool:
    return bool(site.get("infer", {}).get("_deterministic", False))


def is_factor(site: dict) -> bool:
    fn = site["fn"]
    while isinstance(fn, dist.Independent | dist.MaskedDistribution | dist.ExpandedDistribution):
        fn = fn.base_dist
    return isinstance(fn, dist.Unit)


def prototype_trace(model, *args, init: str = "feasible", **kwargs) -> poutine.Trace:
    """One trace of ``model`` with every latent site set by the sample-free ``init`` strategy
    (blocked, no gradients, subsample sites pruned)."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(InitMessenger(make_init(init))(model)).get_trace(*args, **kwargs)
    return prune_subsample_sites(trace)


def max_plate_nesting_of(trace: poutine.Trace) -> int:
    """Pyro's rule: ``-min(frame.dim)`` over the vectorized plate frames of every sample site."""
    dims = [frame.dim for site in trace.nodes.values() if site["type"] == "sample"
            for frame in site["cond_indep_stack"] if frame.vectorized]
    return -min(dims) if dims else 0


def model_sites(model, *args, **kwargs) -> ModelSites:
    """Trace ``model(*args, **kwargs)`` once without sampling it and list its sites (module docstring)."""
    trace = prototype_trace(model, *args, **kwargs)
    latent, observed, deterministic, factors = {}, {}, {}, []
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        value = site["value"]
        if is_deterministic(site):
            deterministic[name] = value.shape
        elif is_factor(site):
            factors.append(name)
        elif site["is_observed"]:
            observed[name] = value.detach()
        else:
            fn = site["fn"]
            latent[name] = LatentSite(name, value.shape, fn.batch_shape, len(fn.event_shape), fn.support,
                                      value.dtype, _improper(fn))
    return ModelSites(latent, observed, deterministic, factors, max_plate_nesting_of(trace))


__all__ = ["LatentSite", "ModelSites", "is_deterministic", "is_factor", "max_plate_nesting_of", "merge_model_kwargs",
           "model_sites", "prototype_trace"]
