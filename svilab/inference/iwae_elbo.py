r"""The importance-weighted bound as a Pyro ELBO, with the doubly reparameterized gradient:
:class:`IWAE_ELBO`.

For every item :math:`n` of the plates that hold all sample sites (the images of a VAE), with
:math:`k` draws :math:`z_{n,1..k} \sim q(z \mid x_n)` (Burda, Grosse and Salakhutdinov 2015),

.. math::

    \mathcal L_k(x_n) = \log \frac1k \sum_{i=1}^k w_{n,i}, \qquad
    \log w_{n,i} = \log p(x_n, z_{n,i}) - \log q(z_{n,i} \mid x_n),

and the loss is :math:`-\sum_n \mathcal L_k(x_n)`. :math:`\mathcal L_1` is the ELBO estimator;
:math:`\mathbb E\,\mathcal L_k` increases with k towards :math:`\log p(x_n)`. The k draws are one
vectorized trace (a particle plate, as ``vectorize_particles=True`` in Pyro's ELBOs), and the sum over
sites keeps the plates common to all sites, exactly as :class:`pyro.infer.RenyiELBO` with
``alpha=0`` (the tests check the value and the gradient against it).

**Gradients.** With :math:`\tilde w_{n,i} = w_{n,i} / \sum_j w_{n,j}`, the plain IWAE gradient is the
autodiff of :math:`\mathcal L_k` through reparameterized draws,
:math:`\sum_i \tilde w_i \nabla \log w_i`. Its encoder part has a signal-to-noise ratio that falls
like :math:`k^{-1/2}` (Rainforth et al. 2018). ``dreg=True`` gives the doubly reparameterized gradient
of Tucker, Lawson, Gu and Maddison (2018) for the guide's parameters :math:`\phi`:

.. math::

    \nabla_\phi \mathcal L_k = \mathbb E\Big[\sum_i \tilde w_i^2\,
        \frac{\partial \log w_i}{\partial z_i}\,\frac{\partial z_i}{\partial \phi}\Big],

where :math:`\log q` in :math:`\log w_i` is evaluated with its distribution's parameters held fixed
(only the path through :math:`z_i` is differentiated); the model's parameters keep the IWAE
gradient :math:`\sum_i \tilde w_i \nabla_\theta \log p(x, z_i)`. Written here by hand: a surrogate
:math:`\sum_i \mathrm{sg}(\tilde w_i) \log w_i` (model gradient right, path gradient weighted by
:math:`\tilde w_i`) and a gradient hook on each draw :math:`z_i` that multiplies what reaches it by
:math:`\tilde w_i` once more. The estimate is unbiased for the same expectation as the IWAE
gradient, with a smaller variance for the guide (``tests/test_iwae.py`` measures both).

Requirements: every guide site reparameterized (``has_rsample``), every sample site inside the
plates the bound is per item of, no subsampling scale; ``dreg=True`` further needs a guide
distribution whose parameters can be held fixed (any ``torch.distributions`` class with
``arg_constraints``, under ``Independent`` wrappers). :class:`JitIWAE_ELBO` compiles the plain IWAE
gradient with Pyro's JIT (once per (model, guide) pair, as :mod:`svilab.inference.jit_elbo`); the DReG
gradient stays eager (a gradient hook cannot be traced).
"""

from __future__ import annotations

import math
import weakref

import pyro.ops.jit
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import get_dependent_plate_dims, is_validation_enabled
from pyro.util import check_if_enumerated, warn_if_nan
from torch.distributions import Independent

from svilab.inference.jit_elbo import _CompiledPerPair
from svilab.validation import positive_int


def _fixed_parameters(fn):
    """The distribution ``fn`` with its parameters detached (the same density, no gradient to them)."""
    if isinstance(fn, Independent):
        return Independent(_fixed_parameters(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, MaskedDistribution):
        return MaskedDistribution(_fixed_parameters(fn.base_dist), fn._mask)
    if isinstance(fn, ExpandedDistribution):
        return _fixed_parameters(fn.base_dist).expand(fn.batch_shape)
    names = list(getattr(fn, "arg_constraints", {}))
    params = {n: fn.__dict__[n] for n in names if isinstance(fn.__dict__.get(n), torch.Tensor)}
    if not params:
        raise ValueError(f"IWAE_ELBO(dreg=True): cannot hold the parameters of a {type(fn).__name__} fixed (no "
                         "tensor parameters found); use dreg=False")
    try:
        return type(fn)(**{n: v.detach() for n, v in params.items()}, validate_args=False)
    except TypeError as exc:
        raise ValueError(f"IWAE_ELBO(dreg=True): cannot rebuild a {type(fn).__name__} with fixed parameters "
                         f"({exc}); use dreg=False") from None


class IWAE_ELBO(ELBO):
    """The per-item importance-weighted bound with ``num_particles`` = k draws (module docstring).

    :param num_particles: k >= 1 (k = 1 is the ELBO estimator).
    :param dreg: the doubly reparameterized gradient for the guide's parameters.
    :param max_plate_nesting: as in Pyro's ELBOs (guessed from a first trace when not given).

    >>> import pyro, pyro.distributions as dist, torch, svilab
    >>> def model(x):
    ...     with pyro.plate("data", len(x)):
    ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
    >>> def guide(x):
    ...     loc = pyro.param("loc", torch.zeros(len(x)))
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("z", dist.Normal(loc, 0.8))
    >>> pyro.clear_param_store(); pyro.set_rng_seed(0)
    >>> loss = svilab.IWAE_ELBO(num_particles=50, dreg=True).loss(model, guide, torch.tensor([0.0, 1.0]))
    >>> exact = -float(dist.Normal(0.0, 2 ** 0.5).log_prob(torch.tensor([0.0, 1.0])).sum())
    >>> abs(loss - exact) < 0.05
    True
    """

    def __init__(self, num_particles: int = 5, dreg: bool = False, max_plate_nesting: float = float("inf"),
                 strict_enumeration_warning: bool = True) -> None:
        self.dreg = bool(dreg)
        super().__init__(num_particles=positive_int(num_particles, "num_particles (k)"),
                         max_plate_nesting=max_plate_nesting, vectorize_particles=True,
                         strict_enumeration_warning=strict_enumeration_warning)

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def _log_weights(self, model, guide, args, kwargs, dreg: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(log w, log w with q's parameters fixed)``, each of shape ``(k, ...)`` broadcastable to the
        sites' batch shapes (the plates common to all sites kept, the others summed); the second, and the
        gradient hooks on the draws, only with ``dreg``."""
        model_trace, guide_trace = next(self._get_traces(model, guide, args, kwargs))
        sites = [s for s in [*model_trace.nodes.values(), *guide_trace.nodes.values()] if s["type"] == "sample"]
        sum_dims = get_dependent_plate_dims(sites)
        # batch dims of every site, the particle plate first (Pyro counts it in max_plate_nesting, and adds
        # no plate for one particle: a leading dim of 1 stands for it then)
        nest = int(self.max_plate_nesting) + (1 if self.num_particles == 1 else 0)

        def per_item(log_prob: torch.Tensor, site: dict) -> torch.Tensor:
            scale = site["scale"]                  # a tensor under Pyro's JIT
            if not (isinstance(scale, (int, float)) and scale == 1.0 or isinstance(scale, torch.Tensor)
                    and scale.numel() == 1 and float(scale) == 1.0):
                raise ValueError(f"IWAE_ELBO: site {site['name']!r} is scaled (a subsampled plate or "
                                 "poutine.scale): the per-item bound takes unscaled sites")
            v = log_prob.reshape((1,) * max(0, nest - log_prob.dim()) + log_prob.shape)
            dims = [d for d in sum_dims if -v.dim() <= d]
            return v.sum(dims, keepdim=True) if dims else v

        log_w = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_w = log_w + per_item(site["log_prob"], site)
        log_w_fixed = log_w if dreg else None
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            if not site["fn"].has_rsample:
                raise ValueError(f"IWAE_ELBO: guide site {site['name']!r} is not reparameterizable "
                                 f"({type(site['fn']).__name__}); the importance-weighted bound here needs rsample")
            log_w = log_w - per_item(site["log_prob"], site)
            if dreg:
                fixed = _fixed_parameters(site["fn"]).log_prob(site["value"])
                log_w_fixed = log_w_fixed - per_item(fixed, site)
        if dreg and self.num_particles > 1:               # with k = 1 every weight is 1
            weights = torch.softmax(log_w.detach(), dim=0)        # (k, ...), per item
            for site in guide_trace.nodes.values():
                value = site["value"] if site["type"] == "sample" else None
                if value is not None and value.requires_grad:
                    w = weights.reshape(weights.shape + (1,) * len(site["fn"].event_shape))
                    value.register_hook(lambda g, w=w: g * w)
        return log_w, log_w_fixed

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``-sum_n L_k(x_n)`` as a tensor whose gradient is the IWAE gradient, or with ``dreg`` the
        DReG gradient for the guide (module docstring)."""
        log_w, log_w_fixed = self._log_weights(model, guide, args, kwargs, dreg=self.dreg)
        bound = (torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)).sum()
        if self.dreg:
            surrogate = (torch.softmax(log_w.detach(), dim=0) * log_w_fixed).sum()
            bound = bound.detach() + (surrogate - surrogate.detach())
        loss = -bound
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        """``-sum_n L_k(x_n)`` as a float."""
        with torch.no_grad():
            log_w, _ = self._log_weights(model, guide, args, kwargs)
            return -float((torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)).sum())

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss as a float, its gradient accumulated in the parameters' ``.grad``."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())


class JitIWAE_ELBO(_CompiledPerPair, IWAE_ELBO):
    """:class:`IWAE_ELBO` with its plain IWAE gradient compiled by Pyro's JIT (``pyro.ops.jit.trace``), one
    compiled function per (model, guide) pair, called directly after its first call. The model must
    have a static structure (Pyro's JIT conditions). ``dreg=True`` is refused: its gradient hooks cannot
    be traced (use :class:`IWAE_ELBO`)."""

    _compiled_attr = "_differentiable_loss"

    def __init__(self, num_particles: int = 5, dreg: bool = False, max_plate_nesting: float = float("inf"),
                 strict_enumeration_warning: bool = True) -> None:
        if dreg:
            raise ValueError("JitIWAE_ELBO: the DReG gradient cannot be JIT-compiled (a gradient hook is not "
                             "traced); use IWAE_ELBO(dreg=True)")
        super().__init__(num_particles, False, max_plate_nesting, strict_enumeration_warning)

    def _compile(self, model, guide, *args, **kwargs):
        """Pyro's pattern (``JitTraceMeanField_ELBO``): trace :meth:`IWAE_ELBO.differentiable_loss` with the
        parameters as inputs, and call it."""
        kwargs["_pyro_model_id"], kwargs["_pyro_guide_id"] = id(model), id(guide)
        if getattr(self, "_differentiable_loss", None) is None:
            weakself = weakref.ref(self)

            @pyro.ops.jit.trace(ignore_warnings=True, jit_options=self.jit_options)
            def differentiable_loss(*args, **kwargs):
                kwargs.pop("_pyro_model_id")
                kwargs.pop("_pyro_guide_id")
                return IWAE_ELBO.differentiable_loss(weakself(), model, guide, *args, **kwargs)

            self._differentiable_loss = differentiable_loss
        return self._differentiable_loss(*args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return self._compiled_call(self._compile, model, guide, args, kwargs)


__all__ = ["IWAE_ELBO", "JitIWAE_ELBO"]
