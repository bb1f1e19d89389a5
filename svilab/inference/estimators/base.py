r"""The one interface every gradient estimator shares (after DeepMind's ``mc_gradients``).

An estimator is an object with

* ``noise(reps, M, D, generator, dtype)`` -> uniform base noise of shape ``(D, reps, M)``
  (latent-first, see :mod:`.families`)
  (i.i.d. uniforms by default; randomized quasi-Monte Carlo points for the QMC estimator), and
* ``__call__(target, family, params, eps)`` -> estimates of shape ``(reps, P)``: one gradient
  estimate of the ELBO w.r.t. the ``P = 2 D`` guide parameters per repetition, each averaging
  ``M`` samples; or shape ``(reps,)`` for the ELBO-value estimator.

:func:`estimate` runs any of them on ``reps`` repetitions in chunks of at most ``chunk``
(repetition x sample) pairs, so memory stays bounded at any M and reps. Within a chunk everything
is vectorized over both samples and repetitions.

``target`` is a :class:`Target`: the model's log joint :math:`\log p(x, z)` of ``z`` with shape
``(D, *B)`` and its gradient in ``z`` (hand-written where the model has one, else autograd).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from svilab.inference.estimators.families import FAMILIES, Family, get_family
from svilab.memory import check_memory
from svilab.validation import positive_int


class Target:
    """A differentiable log joint :math:`\\log p(x, z)` of z with shape ``(D, *B)`` (latent-first).

    :param log_joint: function ``z -> (*B)``.
    :param grad: optional function ``z -> (D, *B)``, the gradient of ``log_joint`` in z;
        computed with ``torch.autograd`` when omitted.
    :param support: where z lives, ``"positive"`` or ``"real"`` (None: not checked); a family whose
        draws live elsewhere is refused by :func:`estimate`.
    """

    def __init__(self, log_joint: Callable, grad: Callable | None = None, dim: int = 2,
                 support: str | None = None) -> None:
        self.log_joint = log_joint
        self._grad = grad
        self.dim = dim
        if support not in (None, "positive", "real"):
            raise ValueError(f"support must be 'positive', 'real' or None, got {support!r}")
        self.support = support

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.log_joint(z)

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        if self._grad is not None:
            return self._grad(z)
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.log_joint(z).sum(), z)
        return g

    @classmethod
    def from_poisson_gamma(cls, model) -> Target:
        """The Poisson-Gamma log joint and its hand-written gradient, latent-first: the model's own
        :meth:`~svilab.models.PoissonGamma.log_joint_positive` and
        :meth:`~svilab.models.PoissonGamma.grad_log_joint` (the guide families here only produce
        positive z)."""
        return cls(lambda z: model.log_joint_positive(z[0], z[1]),
                   lambda z: torch.stack(model.grad_log_joint(z[0], z[1]), 0), support="positive")


class Estimator:
    """Base class: i.i.d. uniform noise; subclasses implement ``__call__``."""

    name: str = ""
    #: smallest M the estimator is defined for
    min_samples: int = 1
    #: True for the ELBO-value estimator (output (reps,)), False for gradients (reps, P)
    is_value: bool = False

    def noise(self, reps: int, M: int, D: int, generator: torch.Generator,
              dtype: torch.dtype) -> torch.Tensor:
        eps = torch.rand((D, reps, M), generator=generator, dtype=dtype)
        # keep strictly inside (0, 1): the inverse CDFs are infinite at the end points
        return eps.clamp_(torch.finfo(dtype).eps * 0.5, 1 - torch.finfo(dtype).eps * 0.5)

    def __call__(self, target: Target, family: Family, params: torch.Tensor,
                 eps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def check_params(params, D: int = 2, dtype=torch.float64) -> torch.Tensor:
    """Guide parameters as a ``(D, 2)`` tensor [(loc, scale) per latent]; raise on NaN or scale <= 0."""
    p = torch.as_tensor(params, dtype=dtype)
    if p.numel() != 2 * D:
        what = "mu_u, sigma_u, mu_v, sigma_v" if D == 2 else f"a loc and a scale for each of the {D} latent coordinates"
        raise ValueError(f"guide parameters: expected {2 * D} numbers ({what}), got {p.numel()}")
    p = p.reshape(D, 2)
    if not torch.isfinite(p).all():
        raise ValueError(f"guide parameters must be finite, got {p.flatten().tolist()}")
    if (p[:, 1] <= 0).any():
        raise ValueError(f"guide scales (sigma) must be positive, got {p[:, 1].tolist()}")
    return p


def check_family(family: Family, target: Target) -> None:
    """A ValueError when the family's draws live where the target does not (e.g. the truncated
    ``normal`` family on a model's unconstrained space, which is the whole real line)."""
    support = getattr(target, "support", None)
    if support is not None and family.support != support:
        fits = [n for n, f in FAMILIES.items() if f.support == support]
        where = {"real": "the real line (a model's unconstrained space)", "positive": "(0, inf)"}[support]
        raise ValueError(f"family {family.name!r} draws {family.support} z, but this target lives on {where}: "
                         f"use {' or '.join(repr(n) for n in fits)}")


#: measured peak memory per sample and latent coordinate, in units of the float size (tests/test_reliability.py)
BYTES_PER_SAMPLE_COORD = 24


def estimate(estimator: Estimator | str, target: Target, family: Family | str, params,
             M: int, reps: int, seed: int | None = None, generator: torch.Generator | None = None,
             chunk: int = 2**16, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Run ``estimator`` ``reps`` times with ``M`` samples each; returns ``(reps, P)``
    (or ``(reps,)`` for the ELBO estimator).

    Repetitions are processed in chunks of about ``chunk`` samples (repetitions x M) in total:
    memory stays bounded at any M and reps, and small chunks stay in the CPU cache. The noise is
    drawn from ``generator`` (or a new one seeded with ``seed``), so a given seed and chunk size
    reproduce the same numbers; with neither, from a new generator seeded by one draw of torch's
    global generator (which is advanced, never reseeded), so two calls give independent numbers.
    """
    from svilab.inference.estimators import get_estimator

    est = get_estimator(estimator)
    fam = get_family(family)
    check_family(fam, target)
    M = positive_int(M, "M (samples per estimate)", est.min_samples)
    reps = positive_int(reps, "reps (repetitions)", 1)
    p = check_params(params, target.dim, dtype)
    if generator is None:
        seed = int(torch.randint(0, 2**62, ())) if seed is None else int(seed)
        generator = torch.Generator().manual_seed(seed)
    chunk = min(chunk, getattr(target, "max_batch", chunk))  # model targets bound their own batch
    per = max(1, min(reps, chunk // M))
    item = torch.finfo(dtype).bits // 8
    # peak per sample ~ BYTES_PER_SAMPLE_COORD x D x itemsize (measured: up to 348 bytes for D=2 in float64);
    # a single repetition is not split over samples (the LOO and control-variate estimators need all M)
    check_memory(BYTES_PER_SAMPLE_COORD * target.dim * item * M * per,
                 f"M = {M} (samples in one estimate{'' if per == 1 else f', {per} estimates at a time'})")
    check_memory(4 * reps * 2 * target.dim * item, f"reps = {reps} (repetitions, kept for the table)")
    out = []
    with torch.no_grad():
        for start in range(0, reps, per):    # loop over chunks of repetitions, not samples
            r = min(per, reps - start)
            eps = est.noise(r, M, target.dim, generator, dtype)
            out.append(est(target, fam, p, eps))
    return torch.cat(out, 0)


def to_rows(g: torch.Tensor) -> torch.Tensor:
    """Per-sample parameter gradients (D, 2, R, M) -> per-repetition means (R, 2 D), ordered
    (loc_1, scale_1, loc_2, scale_2, ...)."""
    D, _, R, _ = g.shape
    return g.mean(-1).permute(2, 0, 1).reshape(R, 2 * D)


def mean_and_se(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over repetitions and its standard error (sample sd / sqrt(reps))."""
    n = values.shape[0]
    if n < 2:
        raise ValueError("need at least 2 repetitions for a standard deviation (reps >= 2)")
    return values.mean(0), values.std(0) / math.sqrt(n)


__all__ = ["Estimator", "Target", "check_family", "check_params", "estimate", "mean_and_se", "to_rows"]
