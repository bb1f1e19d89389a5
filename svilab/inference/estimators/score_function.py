r"""Score-function (REINFORCE, likelihood-ratio) gradient estimators, written by hand.

With :math:`f(z) = \log p(x, z) - \log q_\lambda(z)` and the score
:math:`s(z) = \nabla_\lambda \log q_\lambda(z)` (which has :math:`E_q[s] = 0`),

.. math::

    \nabla_\lambda \mathcal{L} = E_q\big[f(z)\, s(z)\big]
    \quad\Rightarrow\quad
    \hat g = \frac{1}{M}\sum_m f(z_m)\, s(z_m).

(The term :math:`E_q[\nabla_\lambda f] = -E_q[s] = 0` drops out.) The weight must be the full
:math:`\log p(x, z) - \log q(z)`: the exercise notebook left out the log prior, which biases it.

Variance reduction with control variates (both stay unbiased):

* ``score_loo`` — leave-one-out baseline: each sample's weight is centred on the mean of the
  *other* samples, :math:`\hat g = \frac1M \sum_m (f_m - \bar f_{-m}) s_m`, which is independent
  of :math:`z_m`, so the baseline adds zero in expectation. Needs M >= 2.
* ``score_cv`` — the optimal scalar control variate per parameter k:
  :math:`\hat g_k = \frac1M \sum_m (f_m - a_k) s_{mk}` with
  :math:`a_k^* = E[f s_k^2]/E[s_k^2]` (which minimises the variance since
  :math:`E[s_k] = 0`), estimated leave-one-out as
  :math:`a_{k,-m} = \sum_{j\ne m} f_j s_{jk}^2 / \sum_{j\ne m} s_{jk}^2`, again unbiased. M >= 2.
"""

from __future__ import annotations

import torch

from svilab.inference.estimators.base import Estimator, to_rows


def _weights_and_scores(target, family, params, eps):
    z = family.sample(params, eps)                                    # (D, R, M)
    f = target(z) - family.log_prob(params, z).sum(0)                 # (R, M)
    s = family.score(params, z)                                       # (D, 2, R, M)
    return f, s


class ScoreFunction(Estimator):
    name = "score"

    def __call__(self, target, family, params, eps):
        f, s = _weights_and_scores(target, family, params, eps)
        return to_rows(f * s)


class ScoreFunctionLOO(Estimator):
    name = "score_loo"
    min_samples = 2

    def __call__(self, target, family, params, eps):
        f, s = _weights_and_scores(target, family, params, eps)
        M = f.shape[-1]
        baseline = (f.sum(-1, keepdim=True) - f) / (M - 1)            # mean of the others
        return to_rows((f - baseline) * s)


class ScoreFunctionOptimalCV(Estimator):
    name = "score_cv"
    min_samples = 2

    def __call__(self, target, family, params, eps):
        f, s = _weights_and_scores(target, family, params, eps)
        s2 = s**2                                                     # (D, 2, R, M)
        fs2 = f * s2
        num = fs2.sum(-1, keepdim=True) - fs2                         # leave-one-out sums
        den = s2.sum(-1, keepdim=True) - s2
        a = num / torch.where(den > 0, den, torch.ones_like(den))
        return to_rows((f - a) * s)


__all__ = ["ScoreFunction", "ScoreFunctionLOO", "ScoreFunctionOptimalCV"]
