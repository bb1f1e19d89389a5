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

:func:`elbo` and :func:`iwae_log_likelihood` take svilab's :class:`~svilab.models.vae.VAE`
(``elbo(vae, x)``, the fast path through its encoder and decoder) or any Pyro model/guide pair
(``elbo(model, guide, x)``) whose latent and observed sites all sit in one plate over the images
(an amortized guide): the pair is traced once per batch, vectorized over the samples, and every
site's log density is summed per image; the ELBO takes each latent site's KL in closed form where
torch knows it (as ``TraceMeanField_ELBO``) and by Monte Carlo otherwise, and the importance weights
are :math:`\log p(x, z) - \log q(z \mid x)` from the guide's own distribution, as Pyro's
``vectorized_importance_weights`` computes them, kept per image.
"""

from __future__ import annotations

import math

import pyro
import pyro.util
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from svilab.models.vae import VAE
from svilab.validation import positive_int


def _acc_dtype(device: torch.device) -> torch.dtype:
    """The accumulation dtype: float64, except on Apple's MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def _batches(x: torch.Tensor, batch: int):
    for i in range(0, len(x), batch):
        yield x[i:i + batch]


_PARTICLES = "_svilab_eval_particles"


def _plate_frame(trace, n_items: int):
    """The plate over the items: the outermost plate of the observed sites whose size is ``n_items``."""
    for site in trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            for frame in sorted(site["cond_indep_stack"], key=lambda f: f.dim):
                if frame.name != _PARTICLES and frame.size == n_items and frame.vectorized:
                    return frame
    raise ValueError(f"no plate of size {n_items} (one per image) around the observed site: per-image evaluation "
                     "needs the model to put the images in a pyro.plate")


def _per_item(value: torch.Tensor, site: dict, frame, nest: int, n: int, n_items: int) -> torch.Tensor:
    """A site's log density (or KL), shape broadcastable to the plates, summed to ``(n, n_items)``."""
    if frame not in site["cond_indep_stack"]:
        raise ValueError(f"site {site['name']!r} is not inside the plate over the images ({frame.name!r}): "
                         "per-image evaluation needs every latent site to be local to an image (an amortized guide)")
    v = torch.as_tensor(value)
    v = v.reshape((1,) * (nest + 1 - v.dim()) + v.shape)
    data_dim = nest + 1 + frame.dim
    others = [d for d in range(1, nest + 1) if d != data_dim]
    v = v.sum(others, keepdim=True) if others else v
    return v.reshape(v.shape[0], v.shape[data_dim]).expand(n, n_items)


def _pair_terms(model, guide, x: torch.Tensor, n: int, nest: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(x, z) - log q(z), the same with closed-form KLs)`` per image, ``(n, B)`` each, from one
    vectorized trace of the guide and the model replayed on it."""
    with poutine.block(), pyro.plate(_PARTICLES, n, dim=-(nest + 1)):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    frame = _plate_frame(model_trace, len(x))
    acc = _acc_dtype(x.device)
    log_w = torch.zeros(n, len(x), dtype=acc, device=x.device)
    mean_field = torch.zeros(n, len(x), dtype=acc, device=x.device)
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = _per_item(site["log_prob"], site, frame, nest, n, len(x)).to(acc)
        log_w = log_w + lp
        if site["is_observed"]:
            mean_field = mean_field + lp
            continue
        g = guide_trace.nodes.get(name)
        if g is None:
            raise ValueError(f"latent site {name!r} of the model is not in the guide")
        lq = _per_item(g["log_prob"], g, frame, nest, n, len(x)).to(acc)
        log_w = log_w - lq
        try:
            kl = _per_item(kl_divergence(g["fn"], site["fn"]), g, frame, nest, n, len(x)).to(acc)
            mean_field = mean_field - kl
        except NotImplementedError:
            mean_field = mean_field + lp - lq
    for name, g in guide_trace.nodes.items():      # auxiliary guide sites: their density is part of q
        if g["type"] == "sample" and not site_is_subsample(g) and name not in model_trace.nodes:
            lq = _per_item(g["log_prob"], g, frame, nest, n, len(x)).to(acc)
            log_w, mean_field = log_w - lq, mean_field - lq
    return log_w, mean_field


def _nesting(model, guide, x: torch.Tensor) -> int:
    from svilab.inference.sites import max_plate_nesting_of

    state = pyro.util.get_rng_state()           # the draws of the evaluation do not depend on this trace
    try:
        with poutine.block():
            guide_trace = poutine.trace(guide).get_trace(x)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    finally:
        pyro.util.set_rng_state(state)
    return max(max_plate_nesting_of(guide_trace), max_plate_nesting_of(model_trace))


def _pair(model, guide, x):
    """``(model, guide, x, is_svilab_vae)`` from ``(vae, x)`` or ``(model, guide, x)``."""
    if x is None:
        if not isinstance(model, VAE):
            raise TypeError("give (model, guide, x), or (vae, x) for svilab's VAE")
        return model, None, guide, True
    return model, guide, x, False


@torch.no_grad()
def elbo(model, guide, x: torch.Tensor | None = None, samples: int = 1, batch: int = 1000) -> tuple[float, float]:
    """``(mean ELBO per image, its standard error over images)``: ``elbo(vae, x)`` or
    ``elbo(model, guide, x)`` (module docstring), ``samples`` draws per image."""
    model, guide, x, fast = _pair(model, guide, x)
    samples = positive_int(samples, "samples")
    if not fast:
        nest = _nesting(model, guide, x[:1])
        v = torch.cat([_pair_terms(model, guide, xb, samples, nest)[1].mean(0) for xb in _batches(x, batch)])
        return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0
    vae = model
    values = []
    for xb in _batches(x, batch):
        q = vae.posterior(xb)
        z = q.rsample((samples,))                                   # (S, B, K)
        log_lik = vae.likelihood(vae.decode(z)).log_prob(xb).mean(0)  # (B,)
        kl = kl_divergence(q, vae.prior(len(xb), xb.dtype, xb.device))   # (B,), closed form
        values.append(log_lik - kl)
    v = torch.cat(values).to(_acc_dtype(x.device))
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


@torch.no_grad()
def iwae_log_likelihood(model, guide, x: torch.Tensor | None = None, k: int = 5000, chunk: int = 500,
                        batch: int = 100) -> tuple[float, float]:
    """``(mean importance-weighted log p(x) per image, standard error over images)`` with k samples:
    ``iwae_log_likelihood(vae, x)`` or ``iwae_log_likelihood(model, guide, x)`` (module docstring);
    the k samples are drawn ``chunk`` at a time, so memory stays at ``batch x chunk``."""
    model, guide, x, fast = _pair(model, guide, x)
    k = positive_int(k, "k")
    chunk = positive_int(chunk, "chunk")
    values = []
    dtype = _acc_dtype(x.device)
    nest = None if fast else _nesting(model, guide, x[:1])
    for xb in _batches(x, batch):
        if not fast:
            total = torch.full((len(xb),), -math.inf, dtype=dtype, device=x.device)
            for start in range(0, k, chunk):
                log_w = _pair_terms(model, guide, xb, min(chunk, k - start), nest)[0]
                total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
            values.append(total - math.log(k))
            continue
        vae = model
        q = vae.posterior(xb)
        # a running logsumexp: memory bounded in k
        total = torch.full((len(xb),), -math.inf, dtype=dtype, device=x.device)
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            z = q.sample((n,))                                      # (n, B, K)
            log_lik, log_prior = vae.log_joint_terms(xb, z)
            total = torch.logaddexp(total, torch.logsumexp(log_lik + log_prior - q.log_prob(z), 0).to(dtype))
        values.append(total - math.log(k))
    v = torch.cat(values).to(dtype)
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
