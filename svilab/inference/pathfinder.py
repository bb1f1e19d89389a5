r"""Pathfinder (Zhang, Carpenter, Gelman and Vehtari, JMLR 2022): Gaussian approximations along an L-BFGS path,
the one with the best ELBO kept, several paths pooled by Pareto-smoothed importance resampling.

On the unconstrained space of a model (:class:`~svilab.inference.potential.UnconstrainedTarget`,
:math:`\log p(\zeta)` with the Jacobians), with :math:`f = -\log p`:

1. **The path.** L-BFGS (SciPy's, history J) minimises f from a start :math:`\zeta_0`; every iterate
   :math:`\zeta_l` and its gradient :math:`g_l = \nabla f(\zeta_l)` are kept.
2. **A Gaussian at every iterate.** From the last J pairs :math:`s_k = \zeta_{k+1} - \zeta_k`,
   :math:`y_k = g_{k+1} - g_k` that satisfy the curvature condition :math:`s_k^\top y_k > 10^{-12}\|y_k\|^2`,
   the BFGS recursion from :math:`H_0 = \gamma I`, :math:`\gamma = s^\top y / y^\top y` of the latest pair,
   gives the inverse-Hessian estimate :math:`\Sigma_l`; the approximation is
   :math:`q_l = \mathcal N(\mu_l, \Sigma_l)` with :math:`\mu_l = \zeta_l - \Sigma_l g_l` (the quasi-Newton step:
   for a Gaussian target with an exact :math:`\Sigma_l` it is the mean). The paper's diagonal :math:`H_0` and
   its low-rank factorisation are replaced by a scalar :math:`H_0` and a dense :math:`D \times D` matrix:
   the same approximation family for the moderate D of a posterior here (the memory is checked).
3. **The ELBO picks one.** Each :math:`q_l` gets ``draws_per_iter`` draws and a Monte Carlo ELBO
   :math:`\mathbb E_{q_l}[\log p - \log q_l]`; the path's approximation is the :math:`q_l` with the largest.
4. **Several paths.** ``num_paths`` paths from Stan's Uniform(-2, 2) starts; each best :math:`q` gives
   ``num_draws`` draws with importance log-weights :math:`\log p - \log q`; the pooled weights are Pareto
   smoothed (:func:`arviz.psislw`) and ``num_draws`` draws resampled from them with replacement (the paper's
   multi-path Pathfinder). The Pareto :math:`\hat k` of the pooled weights says whether the resampling can be
   trusted (:math:`\hat k \ge 0.7`: it cannot).

Cost is counted as in the paper: **gradient evaluations** of :math:`\log p` (the L-BFGS path) and **density
evaluations** (the ELBO draws and the final draws), both in :class:`PathfinderResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from svilab.validation import positive_int

#: the curvature condition's tolerance (pairs with s.y <= this x |y|^2 are dropped, as in the paper)
CURVATURE_TOL = 1e-12


@dataclass
class PathfinderResult:
    """What :func:`pathfinder` returns (unconstrained coordinates, float64).

    :ivar draws: ``(num_draws, D)``, resampled from the pooled paths.
    :ivar loc, cov: the best path's Gaussian (the largest ELBO over all paths).
    :ivar elbo: that Gaussian's Monte Carlo ELBO; ``path_elbos``: the best ELBO of each path (nan for a path
        that found no usable Gaussian).
    :ivar pareto_k: of the pooled importance weights.
    :ivar gradient_evals, density_evals: the cost (module docstring).
    :ivar iterations: L-BFGS iterations per path; ``best_iteration``: the iterate chosen per path.
    """

    draws: torch.Tensor
    loc: torch.Tensor
    cov: torch.Tensor
    elbo: float
    pareto_k: float
    gradient_evals: int
    density_evals: int
    path_elbos: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    best_iteration: list[int] = field(default_factory=list)
    message: str = ""


def log_density(target, z: torch.Tensor) -> torch.Tensor:
    """``log p`` of ``target`` at points ``z`` of shape ``(n, D)`` -> ``(n,)``, in batches of the target's
    ``max_batch`` (bounded memory on a model with many observations), without gradient."""
    batch = getattr(target, "max_batch", len(z))
    with torch.no_grad():
        return torch.cat([target(z[i:i + batch].T) for i in range(0, len(z), batch)])


class _Counted:
    """``target`` with its density and gradient evaluations counted, and ``f, grad`` for SciPy."""

    def __init__(self, target) -> None:
        self.target, self.gradients, self.densities = target, 0, 0

    def log_p(self, z: torch.Tensor) -> torch.Tensor:
        """:func:`log_density`, counted."""
        self.densities += z.shape[0]
        return log_density(self.target, z)

    def f_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.gradients += 1
        z = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        with torch.enable_grad():
            lp = self.target(z[:, None])[0]
            (g,) = torch.autograd.grad(lp, z)
        value = -float(lp.detach())
        if not math.isfinite(value):
            return math.inf, np.zeros_like(x)
        return value, -g.numpy()


def inverse_hessians(xs: torch.Tensor, gs: torch.Tensor, history: int):
    """The L-BFGS inverse-Hessian estimate at every iterate, one at a time (module docstring, step 2): ``xs``,
    ``gs`` of shape ``(L+1, D)``; None for iterate 0 and for iterates with no usable pair yet."""
    yield None
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    eye = torch.eye(xs.shape[1], dtype=torch.float64)
    for k in range(len(xs) - 1):
        s, y = xs[k + 1] - xs[k], gs[k + 1] - gs[k]
        if float(s @ y) > CURVATURE_TOL * float(y @ y):
            pairs = (pairs + [(s, y)])[-history:]
        if not pairs:
            yield None
            continue
        s_last, y_last = pairs[-1]
        h = float(s_last @ y_last) / float(y_last @ y_last) * eye
        for s_j, y_j in pairs:
            rho = 1.0 / float(s_j @ y_j)
            left = eye - rho * torch.outer(s_j, y_j)
            h = left @ h @ left.T + rho * torch.outer(s_j, s_j)
        yield 0.5 * (h + h.T)


def _path(counted: _Counted, start: np.ndarray, history: int, max_iter: int, draws_per_iter: int,
          generator: torch.Generator) -> tuple[float, torch.Tensor | None, torch.Tensor | None, int, int]:
    """One path: ``(best ELBO, loc, cov, best iterate, iterations)``."""
    from scipy.optimize import minimize

    xs, gs = [], []

    def fun(x):
        value, grad = counted.f_and_grad(x)
        fun.last = (x.copy(), grad.copy())
        return value, grad

    def record(x):
        if np.array_equal(fun.last[0], x):
            grad = fun.last[1]
        else:
            _, grad = counted.f_and_grad(x)
        xs.append(x.copy())
        gs.append(grad.copy())

    fun.last = (None, None)
    record(start)
    minimize(fun, start, jac=True, method="L-BFGS-B", callback=record,
             options={"maxcor": history, "maxiter": max_iter, "gtol": 1e-10, "ftol": 1e-14})
    X = torch.as_tensor(np.array(xs), dtype=torch.float64)
    G = torch.as_tensor(np.array(gs), dtype=torch.float64)
    best = (-math.inf, None, None, 0)
    for l, cov in enumerate(inverse_hessians(X, G, history)):
        if cov is None:
            continue
        try:
            chol = torch.linalg.cholesky(cov)
        except RuntimeError:
            continue
        loc = X[l] - cov @ G[l]
        q = torch.distributions.MultivariateNormal(loc, scale_tril=chol)
        z = loc + torch.randn(draws_per_iter, len(loc), generator=generator, dtype=torch.float64) @ chol.T
        elbo = float((counted.log_p(z) - q.log_prob(z)).mean())
        if math.isfinite(elbo) and elbo > best[0]:
            best = (elbo, loc, cov, l)
    return (*best, len(xs) - 1)


def pathfinder(target, num_paths: int = 4, num_draws: int = 1000, draws_per_iter: int = 20, history: int = 6,
               max_iter: int = 1000, seed: int = 0, init: torch.Tensor | None = None) -> PathfinderResult:
    """Multi-path Pathfinder on ``target`` (an :class:`~svilab.inference.potential.UnconstrainedTarget` or any
    :class:`~svilab.inference.estimators.base.Target` on the real line; module docstring).

    :param num_paths: L-BFGS paths (>= 1), from Uniform(-2, 2) starts drawn with ``seed`` (``init``: the
        first path's start instead).
    :param num_draws: draws returned (and drawn from each path's best Gaussian).
    :param draws_per_iter: draws for each iterate's ELBO (the paper's K).
    :param history: L-BFGS history size J; ``max_iter``: its iterations per path.
    :raises ValueError: an option out of range, or no path with a usable Gaussian.
    """
    import arviz as az

    from svilab.inference.diagnostics import pareto_k
    from svilab.memory import check_memory

    num_paths = positive_int(num_paths, "--pathfinder-paths")
    num_draws = positive_int(num_draws, "--draws", minimum=2)
    draws_per_iter = positive_int(draws_per_iter, "--pathfinder-draws-per-iteration", minimum=2)
    history = positive_int(history, "--pathfinder-history")
    max_iter = positive_int(max_iter, "--pathfinder-iterations")
    d = int(target.dim)
    check_memory(8 * d * d * (history + 8), f"Pathfinder's {d} x {d} inverse-Hessian estimates")
    g = torch.Generator().manual_seed(int(seed))
    counted = _Counted(target)
    starts = 4 * torch.rand(num_paths, d, generator=g, dtype=torch.float64) - 2
    if init is not None:
        starts[0] = torch.as_tensor(init, dtype=torch.float64).reshape(d)
    paths = [_path(counted, starts[p].numpy(), history, max_iter, draws_per_iter, g) for p in range(num_paths)]
    usable = [p for p in paths if p[1] is not None]
    if not usable:
        raise ValueError("Pathfinder found no usable Gaussian on any path (no L-BFGS step satisfied the curvature "
                         "condition, or every ELBO was not finite)")
    pooled, log_w = [], []
    for _, loc, cov, _, _ in usable:
        chol = torch.linalg.cholesky(cov)
        z = loc + torch.randn(num_draws, d, generator=g, dtype=torch.float64) @ chol.T
        q = torch.distributions.MultivariateNormal(loc, scale_tril=chol)
        pooled.append(z)
        log_w.append(counted.log_p(z) - q.log_prob(z))
    z, w = torch.cat(pooled), torch.cat(log_w)
    finite = torch.isfinite(w)
    z, w = z[finite], w[finite]
    k = pareto_k(w)
    smoothed, _ = az.psislw(w.numpy().copy())
    probs = torch.as_tensor(np.exp(smoothed - smoothed.max()))
    idx = torch.multinomial(probs / probs.sum(), num_draws, replacement=True, generator=g)
    best = max(usable, key=lambda p: p[0])
    return PathfinderResult(draws=z[idx], loc=best[1], cov=best[2], elbo=best[0], pareto_k=float(k),
                            gradient_evals=counted.gradients, density_evals=counted.densities,
                            path_elbos=[p[0] if p[1] is not None else math.nan for p in paths],
                            iterations=[p[4] for p in paths], best_iteration=[p[3] for p in paths],
                            message=f"{len(usable)} of {num_paths} paths usable")


__all__ = ["PathfinderResult", "inverse_hessians", "log_density", "pathfinder"]
