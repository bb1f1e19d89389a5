r"""The skew geometric Jensen-Shannon divergence: in closed form between Normals, by Monte Carlo
between any two distributions.

Deasy, Simidjievski and Liò, "Constraining Variational Inference with Geometric Jensen-Shannon
Divergence" (NeurIPS 2020), with the convention of the paper's official code. For densities q, p and
a skew :math:`\alpha \in [0, 1]`, the normalised weighted geometric mean is

.. math::

    G_\alpha(z) \propto q(z)^{\alpha}\, p(z)^{1-\alpha},

and

.. math::

    \mathrm{GJS}_\alpha(q \| p) = (1-\alpha)\,\mathrm{KL}(q \| G_\alpha) + \alpha\,\mathrm{KL}(p \| G_\alpha),
    \qquad
    \mathrm{GJS}^{*}_\alpha(q \| p) = (1-\alpha)\,\mathrm{KL}(G_\alpha \| q) + \alpha\,\mathrm{KL}(G_\alpha \| p)

(the second is the dual form). Limits: :math:`G_0 = p`, :math:`G_1 = q`, so
:math:`\mathrm{GJS}_0 = \mathrm{KL}(q\|p)`, :math:`\mathrm{GJS}_1 = \mathrm{KL}(p\|q)`,
:math:`\mathrm{GJS}^*_0 = \mathrm{KL}(p\|q)`, :math:`\mathrm{GJS}^*_1 = \mathrm{KL}(q\|p)`; at
:math:`\alpha = 1/2` both are symmetric in (q, p).

For Normals the geometric mean is Normal, coordinate-wise: precision
:math:`\lambda_G = \alpha\lambda_q + (1-\alpha)\lambda_p` and mean
:math:`\mu_G = (\alpha\lambda_q\mu_q + (1-\alpha)\lambda_p\mu_p)/\lambda_G`, and every KL is the
Normal-Normal closed form. Diagonal Normals (``Normal(...).to_event(k)``) sum over the event dims,
so the result has the shape ``torch.distributions.kl_divergence(q, p)`` would have.

For any other pair (:func:`geometric_js_mc`), write :math:`Z = \int q^\alpha p^{1-\alpha}` for the
normaliser of :math:`G_\alpha`; then :math:`\mathrm{KL}(q\|G_\alpha) = (1-\alpha)\mathrm{KL}(q\|p) + \log Z`
and :math:`\mathrm{KL}(p\|G_\alpha) = \alpha\,\mathrm{KL}(p\|q) + \log Z`, so

.. math::

    \mathrm{GJS}_\alpha = (1-\alpha)^2\,\mathrm{KL}(q\|p) + \alpha^2\,\mathrm{KL}(p\|q) + \log Z,
    \qquad
    \mathrm{GJS}^*_\alpha = (2\alpha - 1)\,\mathbb E_{G_\alpha}[\log q - \log p] - \log Z,

each term an expectation under q or p: the KLs from S draws of each, and
:math:`Z = \mathbb E_p[(q/p)^\alpha]` (for :math:`\alpha \le 1/2`; else
:math:`\mathbb E_q[(p/q)^{1-\alpha}]`, whichever power is the smaller) with :math:`\mathbb E_{G_\alpha}`
by the same draws, self-normalised. The draws are reparameterized where the distribution allows, so
the estimate has a pathwise gradient. :math:`\log Z` is the log of a mean, biased by
:math:`O(1/S)`; ``tests/test_gjs.py`` checks the estimate against the closed form and against
quadrature.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal, kl_divergence


def check_alpha(alpha: float | torch.Tensor) -> float | torch.Tensor:
    """``alpha`` as a float in [0, 1], else a ValueError. A tensor (a learned skew, kept in (0, 1) by
    its parameter's constraint) passes unchecked, so that the gradient reaches it and nothing syncs."""
    if isinstance(alpha, torch.Tensor) and alpha.dim() == 0 and alpha.is_floating_point():
        return alpha
    try:
        a = float(alpha)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from exc
    if not (0.0 <= a <= 1.0) or math.isnan(a):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return a


def unwrap_independent(d) -> tuple[object, int]:
    """The distribution under any ``Independent`` wrappers, and how many batch dims they reinterpret."""
    ndims = 0
    while isinstance(d, Independent):
        ndims += d.reinterpreted_batch_ndims
        d = d.base_dist
    return d, ndims


def _normal_parts(d, role: str) -> tuple[Normal, int]:
    d, ndims = unwrap_independent(d)
    if not isinstance(d, Normal):
        raise ValueError(f"geometric_js: the {role} must be a (diagonal) Normal distribution, "
                         f"got {type(d).__name__}")
    return d, ndims


def geometric_mean(q: Normal, p: Normal, alpha: float) -> Normal:
    r"""The Normal :math:`G_\alpha \propto q^\alpha p^{1-\alpha}` (coordinate-wise)."""
    prec_q, prec_p = q.scale.pow(-2), p.scale.pow(-2)
    prec = alpha * prec_q + (1 - alpha) * prec_p
    loc = (alpha * prec_q * q.loc + (1 - alpha) * prec_p * p.loc) / prec
    return Normal(loc, prec.rsqrt())


def is_normal(d) -> bool:
    """``d`` is a Normal or an ``Independent`` of one (the closed form applies)."""
    return isinstance(unwrap_independent(d)[0], Normal)


def geometric_js_mc(q, p, alpha: float = 0.5, dual: bool = False, num_samples: int = 64) -> torch.Tensor:
    r"""Monte Carlo estimate of :math:`\mathrm{GJS}_\alpha(q\|p)` (or its dual) for any two
    distributions with ``log_prob`` and ``sample`` on the same space (module docstring).

    :param num_samples: draws S from each of q and p (>= 2).
    :returns: a tensor of the batch shape of ``q.log_prob(x)``.
    """
    alpha = check_alpha(alpha)
    if int(num_samples) < 2:
        raise ValueError(f"geometric_js_mc: num_samples must be >= 2, got {num_samples}")
    shape = (int(num_samples),)
    zq = q.rsample(shape) if q.has_rsample else q.sample(shape)
    zp = p.rsample(shape) if p.has_rsample else p.sample(shape)
    lq_q, lp_q = q.log_prob(zq), p.log_prob(zq)
    lq_p, lp_p = q.log_prob(zp), p.log_prob(zp)
    log_n = math.log(shape[0])
    if float(alpha) <= 0.5:     # Z = E_p[(q/p)^alpha]; E_G[f] = E_p[(q/p)^alpha f] / Z
        log_w, f = alpha * (lq_p - lp_p), lq_p - lp_p
    else:                # Z = E_q[(p/q)^(1-alpha)]
        log_w, f = (1 - alpha) * (lp_q - lq_q), lq_q - lp_q
    log_z = torch.logsumexp(log_w, 0) - log_n
    if dual:
        return (2 * alpha - 1) * (torch.softmax(log_w, 0) * f).sum(0) - log_z
    kl_qp, kl_pq = (lq_q - lp_q).mean(0), (lp_p - lq_p).mean(0)
    return (1 - alpha) ** 2 * kl_qp + alpha ** 2 * kl_pq + log_z


def geometric_js(q, p, alpha: float = 0.5, dual: bool = False, num_samples: int | None = None) -> torch.Tensor:
    r"""Skew geometric Jensen-Shannon divergence :math:`\mathrm{GJS}_\alpha(q\|p)` (or its dual).

    :param q, p: distributions on the same space with broadcastable batch shapes and the same
        number of event dims (e.g. the guide's and the prior's ``z``): in closed form when both are
        ``Normal`` or ``Independent(Normal)``; otherwise by :func:`geometric_js_mc` with
        ``num_samples`` draws (None: an error naming the distribution).
    :param alpha: skew in [0, 1]; 0 gives KL(q || p) (dual: KL(p || q)).
    :returns: a tensor of shape ``kl_divergence(q, p).shape`` (the batch shape).
    :raises ValueError: alpha outside [0, 1]; q or p not Normal (without ``num_samples``);
        different event dims.
    """
    alpha = check_alpha(alpha)
    if num_samples is not None and not (is_normal(q) and is_normal(p)):
        if len(q.event_shape) != len(p.event_shape):
            raise ValueError(f"geometric_js: q has {len(q.event_shape)} event dims but p has {len(p.event_shape)}")
        return geometric_js_mc(q, p, alpha, dual, num_samples)
    qn, nq = _normal_parts(q, "first distribution (q)")
    pn, np_ = _normal_parts(p, "second distribution (p)")
    if nq != np_:
        raise ValueError(f"geometric_js: q has {nq} event dims but p has {np_}")
    g = geometric_mean(qn, pn, alpha)
    if dual:
        value = (1 - alpha) * kl_divergence(g, qn) + alpha * kl_divergence(g, pn)
    else:
        value = (1 - alpha) * kl_divergence(qn, g) + alpha * kl_divergence(pn, g)
    return value.sum(tuple(range(-nq, 0))) if nq else value


__all__ = ["check_alpha", "geometric_js", "geometric_js_mc", "geometric_mean", "is_normal", "unwrap_independent"]
