r"""Reparameterization (pathwise) gradient estimators, written by hand.

With :math:`z = T(\epsilon; \lambda)`, :math:`\epsilon \sim U(0,1)^D` (inverse-CDF maps of
:mod:`~svilab.inference.estimators.families`), the ELBO is
:math:`E_\epsilon[\log p(x, T(\epsilon;\lambda)) - \log q_\lambda(T(\epsilon;\lambda))]` and

.. math::

    \nabla_\lambda \mathcal{L} = E_\epsilon\Big[
        \big(\nabla_z \log p(x, z) - \nabla_z \log q_\lambda(z)\big)\, \frac{\partial z}{\partial\lambda}
        - \partial_\lambda \log q_\lambda(z)\big|_{z\ \mathrm{fixed}}\Big].

The *same* noise :math:`\epsilon_m` gives :math:`z_m` and every derivative evaluated at it (the
exercise notebook evaluated :math:`\nabla \log p` at samples drawn independently of the z it
differentiated through, which is why its sigma gradients were wrong). Mean-field, so
:math:`\partial z_i / \partial\lambda_j = 0` for :math:`i \ne j` and the chain rule is elementwise.

Variants:

* ``reparam`` — the full expression above.
* ``reparam_entropy`` — the entropy term in closed form:
  :math:`\hat g = \frac1M\sum_m \nabla_z \log p(x, z_m)\, \partial z_m/\partial\lambda + \nabla_\lambda H[q_\lambda]`.
* ``reparam_stl`` — "sticking the landing" (Roeder et al., 2017): drop the score term
  :math:`\partial_\lambda \log q|_z` (zero mean), keeping the path derivative only; its variance
  vanishes when q equals the posterior.
* ``reparam_qmc`` — randomized quasi-Monte Carlo: the M noise points of one repetition are a
  scrambled Sobol sequence (``torch.quasirandom.SobolEngine(scramble=True)``) with an independent
  uniform random digital shift per repetition (XOR of the 30-bit coordinates), pushed through the
  same inverse CDFs. Each point is marginally uniform, so the estimator is unbiased; the points
  are a (t, m, s)-net, so its variance falls faster than 1/M for smooth integrands.
"""

from __future__ import annotations

import torch
from torch.quasirandom import SobolEngine

from svilab.inference.estimators.base import Estimator, to_rows

_BITS = 30  # SobolEngine's resolution: coordinates are multiples of 2**-30


def _path(target, family, params, eps):
    z = family.sample(params, eps)                                  # (D, R, M)
    dz = family.dz_dparams(params, eps, z)                          # (D, 2, R, M)
    return z, dz


class Reparameterization(Estimator):
    name = "reparam"

    def __call__(self, target, family, params, eps):
        z, dz = _path(target, family, params, eps)
        gz = target.grad(z) - family.dlogq_dz(params, z)           # (D, R, M)
        return to_rows(gz.unsqueeze(1) * dz - family.score(params, z))


class ReparameterizationEntropy(Estimator):
    name = "reparam_entropy"

    def __call__(self, target, family, params, eps):
        z, dz = _path(target, family, params, eps)
        return to_rows(target.grad(z).unsqueeze(1) * dz) + family.entropy_grad(params).flatten()


class ReparameterizationSTL(Estimator):
    name = "reparam_stl"

    def __call__(self, target, family, params, eps):
        z, dz = _path(target, family, params, eps)
        gz = target.grad(z) - family.dlogq_dz(params, z)
        return to_rows(gz.unsqueeze(1) * dz)


class ReparameterizationQMC(Reparameterization):
    name = "reparam_qmc"

    def noise(self, reps, M, D, generator, dtype):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        base = SobolEngine(D, scramble=True, seed=seed).draw(M, dtype=torch.float64).T  # (D, M)
        ints = torch.floor(base * 2**_BITS).long().unsqueeze(1)     # exact: multiples of 2^-30
        shift = torch.randint(0, 2**_BITS, (D, reps, 1), generator=generator)
        jitter = torch.rand((D, reps, M), generator=generator, dtype=torch.float64)
        eps = (torch.bitwise_xor(ints, shift).to(torch.float64) + jitter) / 2**_BITS
        tiny = torch.finfo(dtype).eps * 0.5
        return eps.to(dtype).clamp_(tiny, 1 - tiny)


__all__ = ["Reparameterization", "ReparameterizationEntropy", "ReparameterizationQMC", "ReparameterizationSTL"]
