r"""The same gradients from Pyro's own autodiff, to cross-check the hand-written estimators.

:func:`pyro_elbo_gradient` builds the mean-field guide as a Pyro guide (``PositiveNormal`` or
``LogNormal`` per latent) and differentiates ``pyro.infer.Trace_ELBO(num_particles=M,
vectorize_particles=True)`` with ``torch.autograd``:

* with ``reparameterized=True`` Pyro's surrogate is the reparameterization estimator
  (``reparam`` here, on the same noise);
* with ``reparameterized=False`` the sites have no ``rsample``; Pyro's surrogate is then
  :math:`\log q(z)\,[\log p(x,z) - \log q(z)]_{\text{detached}}` with no entropy term, i.e. exactly
  the score-function estimator ``score`` here, on the same noise.

The noise is the one torch's global generator draws: seed it, and the hand-written estimators
get the same noise from :func:`pyro_noise`. Any model whose latent sites are scalar and live where
the family does (positive for ``normal``/``lognormal``) works; the sites are read off the model.
"""

from __future__ import annotations

import pyro
import torch

from svilab.inference.estimators.families import Family, get_family


def _guide_fn(family: Family, params: torch.Tensor, reparameterized: bool, names):
    def guide():
        for i, name in enumerate(names):
            pyro.sample(name, family.pyro_distribution(params[i, 0], params[i, 1], reparameterized))
    return guide


def pyro_elbo_gradient(model, family: Family | str, params, M: int, reparameterized: bool,
                       seed: int, *args, **kwargs) -> torch.Tensor:
    """One gradient estimate of the ELBO (not the loss) of ``model(*args, **kwargs)`` from Pyro, flattened
    to ``(2 D,)`` in the order ``(loc_1, scale_1, loc_2, ...)`` of the model's latent sites.

    :raises ValueError: a latent site that is not a scalar, or ``params`` of the wrong length."""
    from svilab.inference.sites import model_sites

    fam = get_family(family)
    sites = model_sites(model, *args, **kwargs)
    names = list(sites.latent)
    if any(s.shape != () for s in sites.latent.values()):
        raise ValueError("pyro_elbo_gradient: every latent site must be a scalar (one family factor each)")
    p = torch.as_tensor(params, dtype=torch.float64)
    if p.numel() != 2 * len(names):
        raise ValueError(f"pyro_elbo_gradient: expected {2 * len(names)} numbers (a loc and a scale for each of "
                         f"{', '.join(names)}), got {p.numel()}")
    p = p.reshape(len(names), 2).clone().requires_grad_(True)
    elbo = pyro.infer.Trace_ELBO(num_particles=M, vectorize_particles=True,
                                 max_plate_nesting=sites.max_plate_nesting)
    torch.manual_seed(seed)
    with torch.enable_grad():
        loss = elbo.differentiable_loss(model, _guide_fn(fam, p, reparameterized, names), *args, **kwargs)
        (g,) = torch.autograd.grad(-loss, p)
    return g.flatten()


def pyro_noise(family: Family | str, M: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """The uniform noise Pyro's guide draws under ``torch.manual_seed(seed)``: shape (2, 1, M).

    Each site's ``rsample`` draws its noise in site order (u first, then v): one ``torch.rand`` for
    the truncated Normal, one ``torch.randn`` for the LogNormal, both mapped to uniforms by the
    family's ``pyro_uniform_noise``.
    """
    torch.manual_seed(seed)
    fam = get_family(family)
    eu = fam.pyro_uniform_noise((M, 1), dtype)
    ev = fam.pyro_uniform_noise((M, 1), dtype)
    return torch.stack((eu.reshape(1, M), ev.reshape(1, M)), 0)


__all__ = ["pyro_elbo_gradient", "pyro_noise"]
