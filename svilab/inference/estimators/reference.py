r"""The reference the estimators are judged against: the exact ELBO and its gradient at a guide point.

* up to 2 latent dimensions: adaptive quadrature (:func:`svilab.inference.exact_elbo.exact_elbo_and_grad`),
  exact to quadrature precision, standard error 0;
* more dimensions: a large-M Monte Carlo reference, the reparameterization gradient and the ELBO
  estimator with ``samples`` draws in 64 independent batches, reported with the standard error of
  their mean over batches (so a comparison can use it in its tolerance).

>>> import torch
>>> from svilab.inference.estimators import Target
>>> from svilab.inference.estimators.reference import reference_gradient
>>> target = Target(lambda z: -0.5 * (z ** 2).sum(0), dim=3, support="real")   # N(0, I), unnormalised
>>> ref = reference_gradient(target, "gaussian", [0.5, 1.0] * 3, samples=2**14)
>>> ref.method.startswith("Monte Carlo")
True
>>> [round(float(g), 1) for g in ref.grad[:2]]          # d/d loc = -loc, d/d scale = 1/scale - scale
[-0.5, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svilab.inference.estimators.base import Target, estimate

#: draws behind the Monte Carlo reference (more than 2 latent dimensions)
REFERENCE_SAMPLES = 2**20


@dataclass
class ReferenceGradient:
    """The ELBO and its gradient in the guide parameters ``(loc_1, scale_1, loc_2, ...)``, with their
    standard errors (0 for quadrature) and how they were computed."""

    elbo: float
    elbo_se: float
    grad: np.ndarray
    grad_se: np.ndarray
    method: str


def reference_gradient(target: Target, family: str, point, seed: int = 0,
                       samples: int = REFERENCE_SAMPLES) -> ReferenceGradient:
    """The reference at ``point`` (module docstring): quadrature for <= 2 dimensions, else Monte Carlo
    with ``samples`` draws (seeded by ``seed``; the global RNG is not touched)."""
    if target.dim <= 2:
        from svilab.inference.exact_elbo import exact_elbo_and_grad

        elbo, grad = exact_elbo_and_grad(target, family, point)
        return ReferenceGradient(float(elbo), 0.0, grad.numpy(), np.zeros(len(grad)), "quadrature")
    batches = 64
    m = max(1, int(samples) // batches)
    g = estimate("reparam", target, family, point, m, batches, seed=seed + 10_007).numpy()
    v = estimate("elbo", target, family, point, m, batches, seed=seed + 20_011).numpy()
    return ReferenceGradient(float(v.mean()), float(v.std(ddof=1) / math.sqrt(batches)), g.mean(0),
                             g.std(0, ddof=1) / math.sqrt(batches),
                             f"Monte Carlo reference ({m * batches} reparameterization samples)")


__all__ = ["REFERENCE_SAMPLES", "ReferenceGradient", "reference_gradient"]
