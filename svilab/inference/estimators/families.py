r"""Mean-field variational families with hand-written derivatives, for the baseline estimators.

A family describes :math:`q_\lambda(z) = \prod_{i=1}^{D} q_{\lambda_i}(z_i)` with
:math:`\lambda_i = (\mathrm{loc}_i, \mathrm{scale}_i)`; parameters are a tensor of shape
``(D, 2)``. Noise and samples are **latent-first**, shape ``(D, *B)`` for any batch shape ``B``
(so each latent's values are contiguous in memory, which keeps the elementwise work fast);
per-coordinate outputs have the same shape, and parameter derivatives shape ``(D, 2, *B)``.
The base noise is **uniform** on (0, 1) for every family, so that quasi-Monte Carlo points
can be pushed through the same inverse-CDF maps.

Everything here is written out by hand (no autograd), as the baseline the mission asks for; the
tests check each derivative against ``torch.autograd``.

Truncated Normal on :math:`(0, \infty)`
---------------------------------------
With :math:`\alpha = \mu / \sigma`, :math:`t = (z - \mu)/\sigma` and the inverse Mills ratio
:math:`\rho(\alpha) = \varphi(\alpha) / \Phi(\alpha)`:

.. math::

    \log q(z) = -\tfrac12 t^2 - \tfrac12 \log 2\pi - \log\sigma - \log\Phi(\alpha), \qquad z > 0.

Sampling by the inverse survival function (accurate in both tails):
:math:`t = -\Phi^{-1}(\epsilon\,\Phi(\alpha))`, :math:`z = \mu + \sigma t`,
:math:`\epsilon \sim U(0, 1)`. Then :math:`dt/d\alpha = -\Phi(-t)\rho(\alpha)/\varphi(t)`, so

.. math::

    \frac{\partial z}{\partial\mu} = 1 + \frac{dt}{d\alpha}, \qquad
    \frac{\partial z}{\partial\sigma} = t - \alpha \frac{dt}{d\alpha}.

Score at fixed z: :math:`\partial_\mu \log q = (t - \rho)/\sigma`,
:math:`\partial_\sigma \log q = (t^2 - 1 + \alpha\rho)/\sigma`; and
:math:`\partial_z \log q = -t/\sigma`. Entropy:
:math:`H = \tfrac12\log(2\pi e) + \log\sigma + \log\Phi(\alpha) - \tfrac12 \alpha\rho`, with
:math:`dH/d\alpha = \tfrac12\rho(1 + \alpha^2 + \alpha\rho)`,
:math:`\partial_\mu H = (dH/d\alpha)/\sigma`, :math:`\partial_\sigma H = 1/\sigma - \alpha (dH/d\alpha)/\sigma`.
For :math:`\alpha \gtrsim 8` every truncation term is below 1e-15: it is numerically the plain
Normal, and elsewhere it stays exact.

Normal on the real line (``gaussian``)
--------------------------------------
For a user's model, on its unconstrained space (Pyro's bijections to each site's support):
:math:`n = \Phi^{-1}(\epsilon)`, :math:`z = \mu + \sigma n`,
:math:`\log q(z) = -\log\sigma - \tfrac12\log 2\pi - \tfrac12 n^2`;
:math:`\partial z/\partial\mu = 1`, :math:`\partial z/\partial\sigma = n`;
score :math:`(n/\sigma, (n^2 - 1)/\sigma)`; :math:`\partial_z \log q = -n/\sigma`;
:math:`H = \log\sigma + \tfrac12\log(2\pi e)`.

LogNormal
---------
:math:`n = \Phi^{-1}(\epsilon)`, :math:`z = e^{\mu + \sigma n}`,
:math:`\log q(z) = -\log z - \log\sigma - \tfrac12\log 2\pi - \tfrac12 n^2`;
:math:`\partial z/\partial\mu = z`, :math:`\partial z/\partial\sigma = z n`;
score :math:`(n/\sigma, (n^2 - 1)/\sigma)`; :math:`\partial_z \log q = -(1 + n/\sigma)/z`;
:math:`H = \mu + \log\sigma + \tfrac12\log(2\pi e)`.
"""

from __future__ import annotations

import torch
from torch.special import log_ndtr, ndtr, ndtri

from svilab.guides import truncated_normal as tn
from svilab.guides.truncated_normal import HALF_LOG_2PI as _HALF_LOG_2PI


def _split(params: torch.Tensor, like: torch.Tensor | None = None):
    """loc and scale, shaped (D, 1, ..., 1) to broadcast against ``like`` of shape (D, *B)."""
    shape = (params.shape[0],) + (1,) * (like.dim() - 1) if like is not None else (params.shape[0],)
    return params[:, 0].reshape(shape), params[:, 1].reshape(shape)


def _stack2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(D, *B), (D, *B) -> (D, 2, *B)."""
    return torch.stack((a, b), 1)


def _maybe_without_rsample(d, reparameterized: bool):
    """``d`` as it is, or hiding ``rsample`` (Pyro's ELBOs then use the score function for its site)."""
    if not reparameterized:
        d.has_rsample = False
    return d


class Family:
    """Interface of a mean-field family (see module docstring). ``params``: shape (D, 2)."""

    name: str = ""
    #: where z lives: ``"positive"`` or ``"real"`` (:func:`~svilab.inference.estimators.estimate` checks it
    #: against the target's)
    support: str = "real"

    def sample(self, params, eps):
        """z = T(eps; params); eps uniform, shape (D, *B)."""
        raise NotImplementedError

    def log_prob(self, params, z):
        """Per-coordinate log q_i(z_i), shape (D, *B)."""
        raise NotImplementedError

    def score(self, params, z):
        """d log q_i(z_i) / d(loc_i, scale_i) at fixed z, shape (D, 2, *B)."""
        raise NotImplementedError

    def dz_dparams(self, params, eps, z):
        """dz_i / d(loc_i, scale_i) at fixed eps, shape (D, 2, *B)."""
        raise NotImplementedError

    def dlogq_dz(self, params, z):
        """d log q_i(z_i) / d z_i, shape (D, *B)."""
        raise NotImplementedError

    def entropy(self, params):
        """Per-coordinate entropy, shape (D,)."""
        raise NotImplementedError

    def entropy_grad(self, params):
        """d H_i / d(loc_i, scale_i), shape (D, 2)."""
        raise NotImplementedError

    def quadrature(self, mu, sigma, rule):
        """Nodes z and weights w with :math:`\\sum_k w_k f(z_k) \approx E_q[f(z)]` for one factor
        (scalar ``mu``, ``sigma``), from ``rule(a, b) -> (s, w)``: nodes as fractions of [a, b]
        of the standardized variable and their weights (:mod:`svilab.inference.exact_elbo`)."""
        raise NotImplementedError

    def pyro_distribution(self, loc, scale, reparameterized: bool = True):
        """The same factor as a Pyro distribution (without ``rsample`` when not ``reparameterized``)."""
        raise NotImplementedError

    def pyro_uniform_noise(self, shape, dtype) -> torch.Tensor:
        """The uniform noise behind one draw of :meth:`pyro_distribution` from torch's global RNG:
        ``Phi(randn)`` (the Normal-based distributions draw ``torch.randn``)."""
        return ndtr(torch.randn(shape, dtype=dtype))

    @staticmethod
    def _normal_quadrature(mu, sigma, rule, bound: float):
        """The standard Normal's rule on [-bound, bound], as (n, weights)."""
        a, b = torch.tensor(-bound, dtype=mu.dtype), torch.tensor(bound, dtype=mu.dtype)
        s, w = rule(a, b)
        n = a + (b - a) * s
        return n, w * torch.exp(-0.5 * n**2 - _HALF_LOG_2PI)


class TruncatedNormalFamily(Family):
    """Normal(loc, scale) truncated to (0, inf), per coordinate."""

    name = "normal"
    support = "positive"
    #: above this alpha, dt/dalpha < 5e-17 wherever t > -alpha/2 (bound exp(-3 alpha^2 / 8))
    _FAST_ALPHA = 10.0

    def sample(self, params, eps):
        mu, sigma = _split(params, eps)
        alpha = mu / sigma
        tn.check_alpha(alpha)
        z = mu + sigma * tn.standardized_sample(alpha, eps)
        return torch.clamp_(z, min=torch.finfo(z.dtype).tiny)

    def log_prob(self, params, z):
        mu, sigma = _split(params, z)
        return tn.log_density((z - mu) / sigma, sigma, mu / sigma)

    def score(self, params, z):
        mu, sigma = _split(params, z)
        alpha = mu / sigma
        rho = tn.mills(alpha)
        t = (z - mu) / sigma
        return _stack2((t - rho) / sigma, (t**2 - 1 + alpha * rho) / sigma)

    def dz_dparams(self, params, eps, z):
        mu, sigma = _split(params, z)
        alpha = mu / sigma
        t = (z - mu) / sigma
        dt = torch.zeros_like(t)
        for i in range(t.shape[0]):       # loop over latent coordinates (D), not samples
            a = alpha[i].reshape(())
            if a > self._FAST_ALPHA:      # truncation below double precision except deep in the tail
                mask = t[i] < -0.5 * a
                dt[i][mask] = self._dt(t[i][mask], a)
            else:
                dt[i] = self._dt(t[i], a)
        return _stack2(1 + dt, t - alpha * dt)

    @staticmethod
    def _dt(t, alpha):
        """dt/dalpha = -Phi(-t) rho(alpha) / phi(t).

        Computed as ``ndtr(-t) * exp(t^2/2 - alpha^2/2 - log Phi(alpha))`` (cheap) where that
        cannot underflow or overflow (t <= 8), and in logs (``log_ndtr``) on the rare rest.
        """
        c = -0.5 * alpha**2 - log_ndtr(alpha)
        dt = -(ndtr(-t) * torch.exp(0.5 * t**2 + c))
        far = t > 8.0
        if far.any():
            tf = t[far]
            dt[far] = -torch.exp(log_ndtr(-tf) + 0.5 * tf**2 + c)
        return dt

    def dlogq_dz(self, params, z):
        mu, sigma = _split(params, z)
        return -(z - mu) / sigma**2

    def entropy(self, params):
        return tn.entropy(*_split(params))

    def entropy_grad(self, params):
        mu, sigma = _split(params)
        alpha = mu / sigma
        dh = tn.entropy_dalpha(alpha)
        return torch.stack((dh / sigma, 1 / sigma - alpha * dh / sigma), -1)

    def quadrature(self, mu, sigma, rule, bound: float = 12.0):
        """t on (-alpha, -alpha + bound) or (-bound, bound), with the truncated density as weight."""
        alpha = mu / sigma
        a = torch.clamp(-alpha, min=-bound)
        b = torch.clamp(-alpha, min=0.0) + bound
        s, w = rule(a, b)
        t = a + (b - a) * s
        # z = mu + sigma t, written so that z -> 0+ exactly at the truncation point
        offset = torch.where(-alpha > -bound, torch.zeros_like(mu), mu + sigma * a)
        z = sigma * (b - a) * s + offset
        return z, w * torch.exp(tn.log_density(t, torch.ones_like(sigma), alpha))

    def pyro_distribution(self, loc, scale, reparameterized: bool = True):
        return tn.PositiveNormal(loc, scale, reparameterized=reparameterized)

    def pyro_uniform_noise(self, shape, dtype) -> torch.Tensor:
        """``PositiveNormal.rsample`` draws one clamped ``torch.rand`` per value."""
        tiny = torch.finfo(dtype).eps * 0.5
        return torch.rand(shape, dtype=dtype).clamp(tiny, 1 - tiny)


class LogNormalFamily(Family):
    """LogNormal(loc, scale) per coordinate (loc, scale of log z)."""

    name = "lognormal"
    support = "positive"

    def sample(self, params, eps):
        mu, sigma = _split(params, eps)
        return torch.exp(mu + sigma * ndtri(eps))

    def _n(self, params, z):
        mu, sigma = _split(params, z)
        return (torch.log(z) - mu) / sigma, sigma

    def log_prob(self, params, z):
        mu, sigma = _split(params, z)
        logz = torch.log(z)
        n = (logz - mu) / sigma
        return -logz - 0.5 * n**2 - (torch.log(sigma) + _HALF_LOG_2PI)

    def score(self, params, z):
        n, sigma = self._n(params, z)
        return _stack2(n / sigma, (n**2 - 1) / sigma)

    def dz_dparams(self, params, eps, z):
        n, _ = self._n(params, z)
        return _stack2(z, z * n)

    def dlogq_dz(self, params, z):
        n, sigma = self._n(params, z)
        return -(1 + n / sigma) / z

    def entropy(self, params):
        mu, sigma = _split(params)
        return mu + torch.log(sigma) + 0.5 + _HALF_LOG_2PI

    def entropy_grad(self, params):
        mu, sigma = _split(params)
        return torch.stack((torch.ones_like(mu), 1 / sigma), -1)

    def quadrature(self, mu, sigma, rule, bound: float = 12.0):
        n, w = self._normal_quadrature(mu, sigma, rule, bound)
        return torch.exp(mu + sigma * n), w

    def pyro_distribution(self, loc, scale, reparameterized: bool = True):
        import pyro.distributions as dist

        return _maybe_without_rsample(dist.LogNormal(loc, scale), reparameterized)


class GaussianFamily(Family):
    """Normal(loc, scale) on the real line per coordinate (a user model's unconstrained space)."""

    name = "gaussian"

    def sample(self, params, eps):
        mu, sigma = _split(params, eps)
        return mu + sigma * ndtri(eps)

    def log_prob(self, params, z):
        mu, sigma = _split(params, z)
        n = (z - mu) / sigma
        return -0.5 * n**2 - (torch.log(sigma) + _HALF_LOG_2PI)

    def score(self, params, z):
        mu, sigma = _split(params, z)
        n = (z - mu) / sigma
        return _stack2(n / sigma, (n**2 - 1) / sigma)

    def dz_dparams(self, params, eps, z):
        mu, sigma = _split(params, z)
        return _stack2(torch.ones_like(z), (z - mu) / sigma)

    def dlogq_dz(self, params, z):
        mu, sigma = _split(params, z)
        return -(z - mu) / sigma**2

    def entropy(self, params):
        _, sigma = _split(params)
        return torch.log(sigma) + 0.5 + _HALF_LOG_2PI

    def entropy_grad(self, params):
        mu, sigma = _split(params)
        return torch.stack((torch.zeros_like(mu), 1 / sigma), -1)

    def quadrature(self, mu, sigma, rule, bound: float = 12.0):
        n, w = self._normal_quadrature(mu, sigma, rule, bound)
        return mu + sigma * n, w

    def pyro_distribution(self, loc, scale, reparameterized: bool = True):
        import pyro.distributions as dist

        return _maybe_without_rsample(dist.Normal(loc, scale), reparameterized)


FAMILIES: dict[str, Family] = {"normal": TruncatedNormalFamily(), "lognormal": LogNormalFamily(),
                               "gaussian": GaussianFamily()}


def get_family(name: str | Family) -> Family:
    """The family called ``name`` (``normal``, ``lognormal``, ``gaussian``; a :class:`Family` is
    returned as it is); a ValueError lists the known names."""
    if isinstance(name, Family):
        return name
    from svilab.validation import choice

    return FAMILIES[choice(name, list(FAMILIES), "guide family")]


__all__ = ["Family", "GaussianFamily", "LogNormalFamily", "TruncatedNormalFamily", "get_family"]
