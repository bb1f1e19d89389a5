r"""Monte Carlo estimator of the ELBO value (the notebook's 1.1), written by hand.

.. math::

    \hat{\mathcal{L}}_M = \frac{1}{M} \sum_{m=1}^{M}
        \big[\log p(x, z_m) - \log q_\lambda(z_m)\big], \qquad z_m \sim q_\lambda,

unbiased for :math:`\mathcal{L}(\lambda) = E_q[\log p(x, z) - \log q_\lambda(z)]` with variance
:math:`\mathrm{Var}_q[\log p - \log q] / M`.
"""

from __future__ import annotations

from svilab.inference.estimators.base import Estimator


class ELBOEstimator(Estimator):
    """Returns shape ``(reps,)``: one ELBO estimate per repetition."""

    name = "elbo"
    is_value = True

    def __call__(self, target, family, params, eps):
        z = family.sample(params, eps)                              # (D, R, M)
        f = target(z) - family.log_prob(params, z).sum(0)           # (R, M)
        return f.mean(-1)


__all__ = ["ELBOEstimator"]
