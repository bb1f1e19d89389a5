r"""The Normal distribution truncated to :math:`(0, \infty)`, as a Pyro distribution.

The exercise notebook redraws negative Normal samples (rejection sampling from the truncated
Normal) but scores them with the untruncated density. Here the density carries its normaliser,

.. math::

    q(z) = \frac{\varphi\big((z - \mu)/\sigma\big)}{\sigma\, \Phi(\mu/\sigma)}, \qquad z > 0,

and sampling is by the inverse survival function, :math:`z = \mu - \sigma\,\Phi^{-1}(\epsilon\,\Phi(\mu/\sigma))`
with :math:`\epsilon \sim U(0, 1)`: vectorized and reparameterizable. For :math:`\mu/\sigma \gtrsim 8`
it equals the plain Normal to double precision.

``reparameterized=False`` gives the same distribution without ``rsample`` (``has_rsample`` is
False), so Pyro's ELBOs fall back to the score-function estimator for that site.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.special import log_ndtr, ndtr, ndtri

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class PositiveNormal(TorchDistribution):
    """Normal(loc, scale) truncated to (0, inf)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.positive

    def __init__(self, loc, scale, reparameterized: bool = True, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        self.reparameterized = reparameterized
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def has_rsample(self) -> bool:
        return self.reparameterized

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PositiveNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.reparameterized = self.reparameterized
        super(PositiveNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def _alpha(self):
        return self.loc / self.scale

    def icdf_survival(self, eps: torch.Tensor) -> torch.Tensor:
        """The z whose survival probability is ``eps`` (the sampling map)."""
        t = -ndtri(eps * ndtr(self._alpha))
        return torch.clamp(self.loc + self.scale * t, min=torch.finfo(t.dtype).tiny)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        tiny = torch.finfo(eps.dtype).eps * 0.5
        return self.icdf_survival(eps.clamp(tiny, 1 - tiny))

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        t = (value - self.loc) / self.scale
        lp = -0.5 * t**2 - _HALF_LOG_2PI - torch.log(self.scale) - log_ndtr(self._alpha)
        return torch.where(value > 0, lp, torch.full_like(lp, -math.inf))

    def cdf(self, value):
        a = ndtr(-self._alpha)
        return ((ndtr((value - self.loc) / self.scale) - a) / (1 - a)).clamp(0, 1)

    @property
    def mean(self):
        rho = torch.exp(-0.5 * self._alpha**2 - _HALF_LOG_2PI - log_ndtr(self._alpha))
        return self.loc + self.scale * rho

    @property
    def variance(self):
        a = self._alpha
        rho = torch.exp(-0.5 * a**2 - _HALF_LOG_2PI - log_ndtr(a))
        return self.scale**2 * (1 - a * rho - rho**2)

    def entropy(self):
        a = self._alpha
        rho = torch.exp(-0.5 * a**2 - _HALF_LOG_2PI - log_ndtr(a))
        return 0.5 + _HALF_LOG_2PI + torch.log(self.scale) + log_ndtr(a) - 0.5 * a * rho
