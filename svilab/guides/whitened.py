r"""Guides fitted in coordinates whitened by a Gaussian approximation of the posterior.

Adam moves every coordinate by about ``lr`` per step, so on a badly scaled posterior (a regression on
calendar years: coefficient sds 2 and 0.001, correlation -0.99999) a guide started at the right
answer is walked off it in a few steps, and one started elsewhere never arrives. Given an
approximation :math:`\mathcal N(m, S)` of the posterior on the unconstrained space (the Laplace
approximation, :mod:`svilab.inference.laplace`), the guide is fitted to :math:`u` with

.. math::

    \zeta = m + L\,u \quad (S = L L^\top), \qquad \text{or} \qquad \zeta = m + s \odot u \quad
    (s_i = \Lambda_{ii}^{-1/2},\ \Lambda = S^{-1}),

where the posterior of :math:`u` is round (about :math:`\mathcal N(0, I)`): Adam's steps have the
posterior's own scale in every direction. The learnable part acts on :math:`u` and starts at the
identity, so the guide starts exactly at the approximation:

* :class:`AutoWhitenedNormal` (``lognormal`` preconditioned): a diagonal affine map on :math:`u`
  after the diagonal preconditioner :math:`s` (a mean-field Gaussian in :math:`\zeta`, the family of
  ``AutoNormal``; it starts at the Laplace mean-field optimum);
* :class:`AutoWhitened` with ``num_transforms=0`` (``mvn``): a full-rank affine map on :math:`u`
  after :math:`L` (the family of ``AutoMultivariateNormal``);
* :class:`AutoWhitened` with spline layers (``flow``): :class:`~svilab.guides.flow.AutoFlow`'s
  splines and affine layer on :math:`u`, after :math:`L`.

Each is a Pyro :class:`~pyro.infer.autoguide.AutoContinuous` (Delta sites carrying the Jacobians), so
every tool that takes a guide takes them; the preconditioner is a fixed transform, not a parameter.
:attr:`AutoWhitened.condition_number` is the condition number of :math:`S` that the whitening removed.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import ComposeTransformModule, LowerCholeskyAffine, spline_autoregressive
from pyro.infer.autoguide import AutoContinuous
from torch.distributions import constraints
from torch.distributions.transforms import AffineTransform, ComposeTransform

from svilab.guides.flow import LowerTriangularAffine


class DiagonalAffine(TransformModule):
    r"""Learnable :math:`y = a + e^{\ell} \odot x`, starting at the identity; shapes ``(..., D)``."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int, dtype: torch.dtype) -> None:
        super().__init__(cache_size=1)
        self.loc = torch.nn.Parameter(torch.zeros(dim, dtype=dtype))
        self.log_scale = torch.nn.Parameter(torch.zeros(dim, dtype=dtype))

    def _call(self, x):
        return self.loc + self.log_scale.exp() * x

    def _inverse(self, y):
        return (y - self.loc) * (-self.log_scale).exp()

    def log_abs_det_jacobian(self, x, y):
        return self.log_scale.sum().expand(x.shape[:-1])


def _check(loc: torch.Tensor, matrix: torch.Tensor | None, scale: torch.Tensor | None) -> None:
    if loc.dim() != 1 or not torch.isfinite(loc).all():
        raise ValueError("the preconditioner's loc must be a finite vector")
    if matrix is not None and (matrix.shape != (loc.numel(), loc.numel()) or not torch.isfinite(matrix).all()):
        raise ValueError(f"the preconditioner's scale_tril must be a finite {loc.numel()} x {loc.numel()} matrix")
    if scale is not None and (scale.shape != loc.shape or not bool((scale > 0).all())):
        raise ValueError("the preconditioner's scale must be a positive vector of loc's length")


class _Whitened(AutoContinuous):
    """Shared machinery: a base N(0, I) over u, learnable transforms, then the fixed preconditioner."""

    #: Pyro's JIT compiles the affine forms (the same losses as eager, 2.5x faster, tests/test_hard_posteriors.py)
    jit_compatible = True

    def __init__(self, model, loc: torch.Tensor, init_loc_fn=None) -> None:
        from svilab.inference.init import make_init

        # the prototype's values are not used (the preconditioner sets the start); sample-free, so
        # improper priors work
        super().__init__(model, init_loc_fn=init_loc_fn or make_init("feasible"))
        self.pre_loc = loc.detach().clone()
        self.transform = None

    def _learned(self, dim: int, dtype: torch.dtype) -> list:
        raise NotImplementedError

    def _preconditioner(self, dtype: torch.dtype):
        raise NotImplementedError

    def _build(self) -> None:
        """The learnable transforms and the fixed preconditioner, once (the model's dtype is read off the
        prototype once, not on every step)."""
        dtype = self._init_loc().dtype
        if self.pre_loc.numel() != self.latent_dim:
            raise ValueError(f"the preconditioner has {self.pre_loc.numel()} coordinates, the model's "
                             f"unconstrained space {self.latent_dim}")
        self.transform = ComposeTransformModule(self._learned(self.latent_dim, dtype)).to(dtype)
        self._fixed = self._preconditioner(dtype)
        self._base = dist.Normal(torch.zeros(self.latent_dim, dtype=dtype),
                                 torch.ones(self.latent_dim, dtype=dtype)).to_event(1)

    def get_base_dist(self):
        if self.transform is None:
            self._build()
        return self._base

    def get_transform(self, *args, **kwargs):
        if self.transform is None:
            self._build()
        return ComposeTransform([self.transform, self._fixed])

    def get_posterior(self, *args, **kwargs):
        return dist.TransformedDistribution(self.get_base_dist(), self.get_transform())


class AutoWhitened(_Whitened):
    r"""A full-rank Gaussian (``num_transforms=0``) or a spline flow fitted in coordinates whitened by
    :math:`\mathcal N(m, L L^\top)` (module docstring).

    :param model: the Pyro model.
    :param loc: :math:`m`, ``(D,)``, on the unconstrained space (the packed latent of ``AutoContinuous``).
    :param scale_tril: :math:`L`, ``(D, D)`` lower-triangular with a positive diagonal.
    :param num_transforms, hidden_dims, count_bins, bound: the spline layers (as :class:`AutoFlow`).
    """

    def __init__(self, model, loc: torch.Tensor, scale_tril: torch.Tensor, num_transforms: int = 0,
                 hidden_dims: tuple[int, ...] | None = None, count_bins: int = 8, bound: float = 3.0,
                 init_loc_fn=None) -> None:
        _check(loc, scale_tril, None)
        super().__init__(model, loc, init_loc_fn)
        self.pre_scale_tril = scale_tril.detach().clone()
        self.num_transforms = int(num_transforms)
        self.hidden_dims = None if hidden_dims is None else [int(h) for h in hidden_dims]
        self.count_bins, self.bound = int(count_bins), float(bound)

    @property
    def jit_compatible(self) -> bool:
        """The spline layers' networks are not compiled by Pyro's JIT; the affine form is."""
        return self.num_transforms == 0

    @property
    def condition_number(self) -> float:
        """The condition number of :math:`L L^T` that the whitening removed."""
        s = torch.linalg.svdvals(self.pre_scale_tril)
        return float((s[0] / s[-1]) ** 2)

    def _learned(self, dim, dtype):
        from svilab.guides.sizing import flow_hidden_dims

        widths = flow_hidden_dims(dim, self.hidden_dims)
        splines = [spline_autoregressive(dim, hidden_dims=widths, count_bins=self.count_bins,
                                         bound=self.bound) for _ in range(self.num_transforms)]
        return [*splines, LowerTriangularAffine(torch.zeros(dim, dtype=dtype), scale=1.0)]

    def _preconditioner(self, dtype):
        # cached: the guide's log_prob then inverts the chain from the cached values; uncached, the inverse
        # solve gives a new tensor, every layer below misses its cache, and the spline layers are inverted
        # for real (D sequential network passes): 2.7x the step time (benchmarks/bench_hard_posteriors.py)
        return LowerCholeskyAffine(self.pre_loc.to(dtype), self.pre_scale_tril.to(dtype), cache_size=1)


class AutoWhitenedNormal(_Whitened):
    r"""A mean-field Gaussian on the unconstrained space (``AutoNormal``'s family) fitted in coordinates
    scaled by :math:`s`: :math:`\zeta = m + s \odot (a + e^{\ell} \odot \epsilon)` (module docstring).

    :param loc: :math:`m`, ``(D,)``; :param scale: :math:`s`, ``(D,)``, positive.
    """

    def __init__(self, model, loc: torch.Tensor, scale: torch.Tensor, init_loc_fn=None) -> None:
        _check(loc, None, scale)
        super().__init__(model, loc, init_loc_fn)
        self.pre_scale = scale.detach().clone()

    @property
    def condition_number(self) -> float:
        """The ratio of the largest to the smallest variance :math:`s_i^2` that the scaling removed."""
        return float((self.pre_scale.max() / self.pre_scale.min()) ** 2)

    def _learned(self, dim, dtype):
        return [DiagonalAffine(dim, dtype)]

    def _preconditioner(self, dtype):
        return AffineTransform(self.pre_loc.to(dtype), self.pre_scale.to(dtype), event_dim=1, cache_size=1)


def whitened_guide(name: str, model, approx, init_loc_fn=None, hidden_dims=None, num_transforms: int = 1):
    """The preconditioned form of guide ``name`` (``lognormal``, ``mvn``, ``flow``) at the Gaussian
    approximation ``approx`` (a :class:`~svilab.inference.laplace.LaplaceApproximation` that is ``ok``);
    ``hidden_dims`` and ``num_transforms`` are the flow's (as :class:`~svilab.guides.flow.AutoFlow`)."""
    from svilab.guides import guide_name

    name = guide_name(name)
    if not approx.ok:
        raise ValueError(f"no Gaussian approximation to whiten with: {approx.message}")
    if name == "lognormal":
        return AutoWhitenedNormal(model, approx.loc, approx.precision.diagonal().rsqrt(), init_loc_fn=init_loc_fn)
    if name in ("mvn", "flow"):
        L = torch.linalg.cholesky(approx.cov)
        return AutoWhitened(model, approx.loc, L, num_transforms=num_transforms if name == "flow" else 0,
                            hidden_dims=hidden_dims, init_loc_fn=init_loc_fn)
    raise ValueError(f"guide {name!r} has no preconditioned form (lognormal, mvn and flow have)")


__all__ = ["AutoWhitened", "AutoWhitenedNormal", "DiagonalAffine", "whitened_guide"]
