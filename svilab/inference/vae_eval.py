r"""Evaluation of a trained VAE: the same yardstick whatever objective trained it.

For images :math:`x` (``(N, 784)``), in batches, vectorized over samples:

* :func:`elbo`: :math:`\mathcal L(x) = \mathbb E_q[\log p(x\mid z)] - \mathrm{KL}(q(z\mid x)\,\|\,p(z))`,
  the KL in closed form, the expectation with ``samples`` draws;
* :func:`iwae_log_likelihood`: :math:`\log p(x) \approx \log \frac1k \sum_{s=1}^k
  \frac{p(x \mid z_s)\,p(z_s)}{q(z_s \mid x)}`, :math:`z_s \sim q(z \mid x)` (Burda et al. 2015),
  a lower bound that increases with k towards :math:`\log p(x)`; k is processed in chunks so memory
  stays at ``batch x chunk`` decoder outputs;
* :func:`reconstruction_error`: mean squared error per image between x and the decoder's mean at the
  encoder's mean, summed over pixels;
* :func:`active_units`: the number of latent dimensions with
  :math:`\mathrm{Cov}_x\big(\mathbb E_q[z_k]\big) > 10^{-2}` (Burda et al.).

All return per-image averages (nats per image; higher ELBO / log-likelihood is better).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import kl_divergence

from svilab.models.vae import VAE
from svilab.validation import positive_int


def _batches(x: torch.Tensor, batch: int):
    for i in range(0, len(x), batch):
        yield x[i:i + batch]


@torch.no_grad()
def elbo(vae: VAE, x: torch.Tensor, samples: int = 1, batch: int = 1000) -> tuple[float, float]:
    """``(mean ELBO per image, its standard error over images)``."""
    samples = positive_int(samples, "samples")
    values = []
    for xb in _batches(x, batch):
        q = vae.posterior(xb)
        z = q.rsample((samples,))                                   # (S, B, K)
        log_lik = vae.likelihood(vae.decode(z)).log_prob(xb).mean(0)  # (B,)
        kl = kl_divergence(q, vae.prior(len(xb), xb.dtype))         # (B,), closed form
        values.append(log_lik - kl)
    v = torch.cat(values).double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


@torch.no_grad()
def iwae_log_likelihood(vae: VAE, x: torch.Tensor, k: int = 5000, chunk: int = 500, batch: int = 100
                        ) -> tuple[float, float]:
    """``(mean importance-weighted log p(x) per image, standard error over images)`` with k samples."""
    k = positive_int(k, "k")
    chunk = positive_int(chunk, "chunk")
    values = []
    for xb in _batches(x, batch):
        q = vae.posterior(xb)
        acc = torch.full((len(xb),), -math.inf, dtype=torch.float64)   # running logsumexp: memory bounded in k
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            z = q.sample((n,))                                      # (n, B, K)
            log_lik, log_prior = vae.log_joint_terms(xb, z)
            acc = torch.logaddexp(acc, torch.logsumexp(log_lik + log_prior - q.log_prob(z), 0).double())
        values.append(acc - math.log(k))
    v = torch.cat(values).double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


@torch.no_grad()
def reconstruction_error(vae: VAE, x: torch.Tensor, batch: int = 1000) -> float:
    """Mean over images of the summed squared error between x and E[x | z = mean of q(z | x)]."""
    total = 0.0
    for xb in _batches(x, batch):
        loc, _ = vae.encode(xb)
        total += float(((vae.mean_image(vae.decode(loc)) - xb) ** 2).sum())
    return total / len(x)


@torch.no_grad()
def latent_means(vae: VAE, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([vae.encode(xb)[0] for xb in _batches(x, batch)])


def active_units(vae: VAE, x: torch.Tensor, threshold: float = 1e-2) -> int:
    means = latent_means(vae, x)
    return int((means.var(0) > threshold).sum())


__all__ = ["active_units", "elbo", "iwae_log_likelihood", "latent_means", "reconstruction_error"]
