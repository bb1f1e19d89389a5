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

This module is the one place the truncated Normal's maths is written: the functions below (in
:math:`\alpha = \mu/\sigma` and the standardized :math:`t = (z - \mu)/\sigma`) serve
:class:`PositiveNormal`, the hand-written estimator family
(:class:`svilab.inference.estimators.families.TruncatedNormalFamily`) and the exact ELBO's
quadrature rule (:mod:`svilab.inference.exact_elbo`). With the inverse Mills ratio
:math:`\rho(\alpha) = \varphi(\alpha)/\Phi(\alpha)`:

.. math::

    E[z] = \mu + \sigma\rho, \qquad \mathrm{Var}[z] = \sigma^2 (1 - \alpha\rho - \rho^2), \qquad
    H = \tfrac12\log(2\pi e) + \log\sigma + \log\Phi(\alpha) - \tfrac12\alpha\rho,

:math:`dH/d\alpha = \tfrac12\rho(1 + \alpha^2 + \alpha\rho)`. :math:`\Phi(\alpha)` is always taken
from ``log_ndtr``: torch's ``ndtr(alpha)`` is already 0 at :math:`\alpha = -10` (``1 - erf``
cancels), where the distribution is still well defined.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.special import log_ndtr, ndtr, ndtri

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: below this mu/sigma the mass Phi(mu/sigma) underflows float64 (Phi(-37.5) ~ 5e-308)
MIN_ALPHA = -37.0


def log_mass(alpha: torch.Tensor) -> torch.Tensor:
    """:math:`\\log\\Phi(\alpha)`, the log of the Normal's mass on (0, inf)."""
    return log_ndtr(alpha)


def mills(alpha: torch.Tensor) -> torch.Tensor:
    """The inverse Mills ratio :math:`\varphi(\alpha)/\\Phi(\alpha)`, stable for large :math:`|\alpha|`."""
    return torch.exp(-0.5 * alpha**2 - HALF_LOG_2PI - log_ndtr(alpha))


def check_alpha(alpha: torch.Tensor) -> None:
    """Raise where :math:`\\Phi(\alpha)` underflows float64 (no sample or density is computable)."""
    if (alpha < MIN_ALPHA).any():
        raise ValueError(f"truncated Normal guide: mu/sigma = {alpha.min().item():.4g} < {MIN_ALPHA:g} puts "
                         "all its mass beyond float64's range (Phi(mu/sigma) underflows); choose a larger mu "
                         "or sigma")


def standardized_sample(alpha: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The standardized draw :math:`t = -\\Phi^{-1}(\\epsilon\\,\\Phi(\alpha))` whose survival
    probability is ``eps`` (accurate in both tails)."""
    return -ndtri(eps * torch.exp(log_ndtr(alpha)))


def log_density(t: torch.Tensor, sigma: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """:math:`\\log q(z) = -t^2/2 - \\log\\sqrt{2\\pi} - \\log\\sigma - \\log\\Phi(\alpha)` at
    :math:`t = (z - \\mu)/\\sigma` (for z > 0)."""
    return -0.5 * t**2 - (HALF_LOG_2PI + torch.log(sigma) + log_ndtr(alpha))


def mean(mu, sigma):
    """:math:`E[z] = \\mu + \\sigma\rho(\alpha)`."""
    return mu + sigma * mills(mu / sigma)


def variance(mu, sigma):
    """:math:`\\mathrm{Var}[z] = \\sigma^2 (1 - \alpha\rho - \rho^2)`."""
    a = mu / sigma
    rho = mills(a)
    return sigma**2 * (1 - a * rho - rho**2)


def entropy(mu, sigma):
    """:math:`H = \tfrac12\\log(2\\pi e) + \\log\\sigma + \\log\\Phi(\alpha) - \tfrac12\alpha\rho`."""
    a = mu / sigma
    return 0.5 + HALF_LOG_2PI + torch.log(sigma) + log_ndtr(a) - 0.5 * a * mills(a)


def entropy_dalpha(alpha):
    """:math:`dH/d\alpha = \tfrac12\rho(1 + \alpha^2 + \alpha\rho)` (at fixed sigma)."""
    rho = mills(alpha)
    return 0.5 * rho * (1 + alpha**2 + alpha * rho)


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
        t = standardized_sample(self._alpha, eps)
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
        lp = log_density((value - self.loc) / self.scale, self.scale, self._alpha)
        return torch.where(value > 0, lp, torch.full_like(lp, -math.inf))

    def cdf(self, value):
        a = ndtr(-self._alpha)
        return ((ndtr((value - self.loc) / self.scale) - a) / (1 - a)).clamp(0, 1)

    @property
    def mean(self):
        return mean(self.loc, self.scale)

    @property
    def variance(self):
        return variance(self.loc, self.scale)

    def entropy(self):
        return entropy(self.loc, self.scale)


__all__ = ["PositiveNormal", "entropy", "log_density", "mean", "variance"]
