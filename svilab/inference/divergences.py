r"""The skew geometric Jensen-Shannon divergence between Normal distributions, in closed form.

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
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal, kl_divergence


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in [0, 1], else a ValueError."""
    try:
        a = float(alpha)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from exc
    if not (0.0 <= a <= 1.0) or math.isnan(a):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return a


def _normal_parts(d, role: str) -> tuple[Normal, int]:
    ndims = 0
    while isinstance(d, Independent):
        ndims += d.reinterpreted_batch_ndims
        d = d.base_dist
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


def geometric_js(q, p, alpha: float = 0.5, dual: bool = False) -> torch.Tensor:
    r"""Skew geometric Jensen-Shannon divergence :math:`\mathrm{GJS}_\alpha(q\|p)` (or its dual).

    :param q, p: ``Normal`` or ``Independent(Normal)`` distributions with broadcastable parameters
        and the same number of event dims (e.g. the guide's and the prior's ``z``).
    :param alpha: skew in [0, 1]; 0 gives KL(q || p) (dual: KL(p || q)).
    :returns: a tensor of shape ``kl_divergence(q, p).shape`` (the batch shape).
    :raises ValueError: alpha outside [0, 1]; q or p not Normal; different event dims.
    """
    alpha = check_alpha(alpha)
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


__all__ = ["check_alpha", "geometric_js", "geometric_mean"]
