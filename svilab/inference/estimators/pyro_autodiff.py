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
get the same noise from :func:`pyro_noise`.
"""

from __future__ import annotations

import pyro
import torch

from svilab.inference.estimators.families import Family, get_family


def _guide_fn(family: Family, params: torch.Tensor, reparameterized: bool, names=("u", "v")):
    def guide():
        for i, name in enumerate(names):
            pyro.sample(name, family.pyro_distribution(params[i, 0], params[i, 1], reparameterized))
    return guide


def pyro_elbo_gradient(model, family: Family | str, params, M: int, reparameterized: bool,
                       seed: int) -> torch.Tensor:
    """One gradient estimate of the ELBO (not the loss) from Pyro, flattened to (P,)."""
    fam = get_family(family)
    p = torch.as_tensor(params, dtype=torch.float64).reshape(2, 2).clone().requires_grad_(True)
    elbo = pyro.infer.Trace_ELBO(num_particles=M, vectorize_particles=True, max_plate_nesting=1)
    torch.manual_seed(seed)
    with torch.enable_grad():
        loss = elbo.differentiable_loss(model, _guide_fn(fam, p, reparameterized))
        (g,) = torch.autograd.grad(-loss, p)
    return g.flatten()


def pyro_noise(family: Family | str, M: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """The uniform noise Pyro's guide draws under ``torch.manual_seed(seed)``: shape (2, 1, M).

    Only valid for the truncated Normal guide, whose ``rsample`` draws one ``torch.rand`` per
    site (u first, then v); for the LogNormal (``torch.randn``) use :func:`lognormal_noise`.
    """
    torch.manual_seed(seed)
    fam = get_family(family)
    eu = fam.pyro_uniform_noise((M, 1), dtype)
    ev = fam.pyro_uniform_noise((M, 1), dtype)
    return torch.stack((eu.reshape(1, M), ev.reshape(1, M)), 0)


__all__ = ["pyro_elbo_gradient", "pyro_noise"]
