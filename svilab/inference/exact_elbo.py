r"""The exact ELBO of a mean-field guide and its exact gradient, by 1-D or 2-D quadrature.

For :math:`q_\lambda(z) = q_{\lambda_1}(z_1)\,q_{\lambda_2}(z_2)`,

.. math::

    \mathcal{L}(\lambda) = \iint q_{\lambda_1}(z_1) q_{\lambda_2}(z_2)\,
        \log p(x, z_1, z_2)\, dz_1 dz_2 \;-\; \sum_i \int q_{\lambda_i}(z_i) \log q_{\lambda_i}(z_i)\, dz_i,

computed with a tensor product of one-dimensional double-exponential (tanh-sinh) rules, one per
factor, in the standardized variable of the factor (:math:`t = (z - \mu)/\sigma` on
:math:`(-\mu/\sigma, \infty)` for the truncated Normal, :math:`n = (\log z - \mu)/\sigma` for the
LogNormal, the same on the real line for the ``gaussian`` family), cut where the Normal weight
is below :math:`e^{-72}`. Tanh-sinh converges
exponentially also with the log singularity of :math:`\log p` at :math:`z \to 0`. Nodes and
weights are differentiable functions of :math:`\lambda`, so ``torch.autograd`` gives the exact
gradient (boundary terms included). Accuracy: ~1e-10 relative with the default rule; the tests
check it against ``scipy.integrate.dblquad`` and finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from svilab.inference.estimators.base import Target, check_params
from svilab.inference.estimators.families import Family, get_family

_L = 12.0         # standardized half-width: Normal weight exp(-72) there
_H = 1.0 / 32.0   # tanh-sinh step
_K = 110          # nodes k = -K..K, k h up to ~3.4


def _tanh_sinh(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes as a fraction s in (0, 1) of [a, b], and weights (including b - a)."""
    k = torch.arange(-_K, _K + 1, dtype=a.dtype) * _H
    u = 0.5 * math.pi * torch.sinh(k)
    s = torch.sigmoid(2 * u)                                   # (1 + tanh u) / 2, stable
    w = (b - a) * 2 * s * torch.sigmoid(-2 * u) * 0.5 * math.pi * torch.cosh(k) * _H
    return s, w


def factor_rule(family: Family, mu: torch.Tensor, sigma: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes z and weights w with :math:`\\sum_k w_k f(z_k) \\approx E_q[f(z)]` for one factor: the
    family's own standardized variable (:meth:`~svilab.inference.estimators.families.Family.quadrature`)
    on the tanh-sinh rule."""
    return family.quadrature(mu, sigma, _tanh_sinh, bound=_L)


def exact_elbo(target: Target | Callable, family: Family | str, params,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The ELBO at ``params`` (shape (D, 2) or 2 D numbers, D = 1 or 2), differentiable in ``params``."""
    fam = get_family(family)
    dim = getattr(target, "dim", 2)
    if dim not in (1, 2):
        raise ValueError(f"quadrature needs 1 or 2 latent dimensions, the target has {dim}")
    p = params if isinstance(params, torch.Tensor) and params.shape == (dim, 2) else check_params(
        params, dim, dtype)
    rules = [factor_rule(fam, p[i, 0], p[i, 1]) for i in range(dim)]
    if dim == 1:
        (z1, w1), = rules
        e_logp = (w1 * target(z1[None, :])).sum()
        return e_logp - (w1 * fam.log_prob(p, z1[None, :])[0]).sum()
    (zu, wu), (zv, wv) = rules
    z = torch.stack(torch.broadcast_tensors(zu[:, None], zv[None, :]), 0)       # (2, K, K)
    lp = target(z)
    e_logp = (wu[:, None] * wv[None, :] * lp).sum()
    lq = fam.log_prob(p, torch.stack((zu, zv), 0))                               # (2, K)
    e_logq = (wu * lq[0]).sum() + (wv * lq[1]).sum()
    return e_logp - e_logq


def exact_elbo_and_grad(target: Target | Callable, family: Family | str, params,
                        dtype: torch.dtype = torch.float64) -> tuple[float, torch.Tensor]:
    """``(ELBO, gradient)`` with the gradient flattened as (loc_1, scale_1, loc_2, scale_2)."""
    p = check_params(params, getattr(target, "dim", 2), dtype).clone().requires_grad_(True)
    with torch.enable_grad():
        value = exact_elbo(target, family, p, dtype)
        (g,) = torch.autograd.grad(value, p)
    return float(value.detach()), g.flatten()


__all__ = ["exact_elbo", "exact_elbo_and_grad", "factor_rule"]
