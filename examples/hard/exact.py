r"""Exact posteriors of the hard examples (issue #18), by one-dimensional quadrature: the reference the
methods are compared with, computed independently of every method svilab runs.

Each example is a Gaussian model given one positive hyperparameter :math:`h` (a noise scale
:math:`\sigma` or a group scale :math:`\tau`):

.. math::
    z \mid h \sim \mathcal N(m_0, S(h)), \qquad y \mid z, h \sim \mathcal N(A z, R(h)),

so that :math:`y \mid h \sim \mathcal N(A m_0, A S A^\top + R)` and :math:`z \mid y, h` is Gaussian with
mean :math:`m_0 + K (y - A m_0)` and covariance :math:`S - K A S`, :math:`K = S A^\top (A S A^\top + R)^{-1}`.
The posterior of :math:`h` is :math:`p(h) \, \mathcal N(y; A m_0, A S A^\top + R)` on a fine log-spaced grid
(``grid`` points; the mass at its ends is checked to be negligible), and everything else is a mixture of
Gaussians over that grid: the moments by the laws of total expectation and variance, the draws by drawing a
grid point and then :math:`z` from its Gaussian.

* ``years``: :math:`z = (\alpha, \beta)`, :math:`h = \sigma` with the flat prior :math:`p(\sigma) = 1`
  (``examples/hard/years.py``);
* ``collinear``: :math:`z = \beta \in \mathbb R^p`, :math:`h = \sigma \sim \mathrm{HalfNormal}(2)`
  (``examples/hard/collinear.py``);
* ``schools``: the centred eight schools, :math:`z = (\mu, \theta_1, \dots, \theta_8)`,
  :math:`h = \tau \sim \mathrm{HalfCauchy}(5)`, :math:`\mu \sim \mathcal N(0, 5^2)`,
  :math:`\theta_j \sim \mathcal N(\mu, \tau^2)` (``examples/hard/eight_schools_centered.py``): the funnel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent


@dataclass
class ExactPosterior:
    """The posterior as a mixture over the hyperparameter grid: ``weights`` (G,), per grid point the
    conditional ``means`` (G, D) and ``covs`` (G, D, D) of z; ``names`` of z's coordinates and ``h_name``."""

    h_name: str
    grid: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    names: list[str]

    def moments(self) -> dict[str, tuple[float, float]]:
        """Exact posterior mean and sd of every parameter (z's coordinates and h)."""
        w = self.weights
        mean = w @ self.means
        second = np.einsum("g,gd->d", w, np.einsum("gdd->gd", self.covs) + self.means ** 2)
        out = {n: (float(m), float(np.sqrt(s - m * m))) for n, m, s in zip(self.names, mean, second, strict=True)}
        hm = float(w @ self.grid)
        out[self.h_name] = (hm, float(np.sqrt(w @ self.grid ** 2 - hm * hm)))
        return out

    def draws(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """``n`` independent exact draws (a grid point, then z from its Gaussian), by name."""
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(self.grid), size=n, p=self.weights)
        chol = np.linalg.cholesky(self.covs)                                      # (G, D, D)
        z = self.means[idx] + np.einsum("nde,ne->nd", chol[idx], rng.standard_normal((n, len(self.names))))
        out = {name: z[:, i] for i, name in enumerate(self.names)}
        out[self.h_name] = self.grid[idx]
        return out


def _posterior(h_name, grid, log_prior_h, m0, S, A, R, y, names) -> ExactPosterior:
    """The mixture for grid ``grid`` (log-spaced: the quadrature weight of a point is proportional to h), in
    the covariance form (module docstring): for priors of moderate scale (the eight schools)."""
    S, R = np.asarray(S(grid)), np.asarray(R(grid))                              # (G, D, D), (G, N, N)
    marg_cov = A @ S @ A.T + R
    resid = y - A @ m0
    L = np.linalg.cholesky(marg_cov)
    sol = np.linalg.solve(L, np.broadcast_to(resid[:, None], L.shape[:-1] + (1,)))[..., 0]
    log_marg = -0.5 * (sol ** 2).sum(-1) - np.log(np.einsum("gnn->gn", L)).sum(-1)
    K = S @ A.T @ np.linalg.inv(marg_cov)                                        # (G, D, N)
    means = m0 + (K @ resid[:, None])[..., 0]
    covs = S - K @ A @ S
    return _mixture(h_name, grid, log_prior_h(grid) + log_marg, means, covs, names)


def _posterior_precision(h_name, grid, log_prior_h, prior_prec, A, noise_var, y, names) -> ExactPosterior:
    r"""The same for a zero-mean prior of precision ``prior_prec`` (D, D) and noise ``noise_var(h) I``, in the
    precision form: :math:`P = S^{-1} + A^\top A / \sigma^2` scaled to unit diagonal before its Cholesky
    factor, the mean solved from it, and the marginal likelihood's quadratic form as the two non-negative
    terms at the mean (no cancellation: the years' prior variance of 1e6 and correlation -0.99996 would
    lose every digit of the covariance form)."""
    n = len(y)
    v = noise_var(grid)                                                          # (G,)
    P = prior_prec[None] + (A.T @ A)[None] / v[:, None, None]                    # (G, D, D)
    d = np.sqrt(np.einsum("gdd->gd", P))
    Ls = np.linalg.cholesky(P / d[:, :, None] / d[:, None, :])
    b = (A.T @ y)[None] / v[:, None] / d                                         # scaled right-hand side
    z = np.linalg.solve(np.swapaxes(Ls, -1, -2), np.linalg.solve(Ls, b[..., None]))[..., 0]
    means = z / d
    resid = y[None] - means @ A.T
    quad = (resid ** 2).sum(-1) / v + np.einsum("gd,de,ge->g", means, prior_prec, means)
    logdet_P = 2 * np.log(np.einsum("gdd->gd", Ls)).sum(-1) + 2 * np.log(d).sum(-1)
    _, logdet_prior = np.linalg.slogdet(prior_prec)
    log_marg = -0.5 * quad - 0.5 * (n * np.log(v) - logdet_prior + logdet_P)
    inv_s = np.linalg.inv(Ls)
    covs = np.swapaxes(inv_s, -1, -2) @ inv_s / d[:, :, None] / d[:, None, :]
    return _mixture(h_name, grid, log_prior_h(grid) + log_marg, means, covs, names)


def _mixture(h_name, grid, log_post_h, means, covs, names) -> ExactPosterior:
    logw = log_post_h + np.log(grid)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    if w[0] > 1e-6 or w[-1] > 1e-6:
        raise ValueError(f"the {h_name} grid [{grid[0]:g}, {grid[-1]:g}] cuts off posterior mass")
    return ExactPosterior(h_name, grid, w, means, 0.5 * (covs + np.swapaxes(covs, -1, -2)), names)


def _load(name: str) -> dict:
    return json.loads((HERE / f"{name}.json").read_text())


def years(grid: int = 4000) -> ExactPosterior:
    """The linear trend on raw years: alpha ~ N(0, 1000^2), beta ~ N(0, 10^2), p(sigma) = 1."""
    d = _load("years")
    x, y = np.asarray(d["x"]), np.asarray(d["y"])
    A = np.c_[np.ones_like(x), x]
    h = np.geomspace(0.05, 0.5, grid)
    return _posterior_precision("sigma", h, lambda s: np.zeros_like(s), np.diag([1000.0 ** -2, 10.0 ** -2]), A,
                                lambda s: s ** 2, y, ["alpha", "beta"])


def collinear(grid: int = 4000) -> ExactPosterior:
    """The regression with collinear predictors: beta ~ N(0, 10^2 I), sigma ~ HalfNormal(2)."""
    d = _load("collinear")
    X, y = np.asarray(d["X"]), np.asarray(d["y"])
    p = X.shape[1]
    h = np.geomspace(0.02, 20.0, grid)
    return _posterior_precision("sigma", h, lambda s: stats.halfnorm.logpdf(s, scale=2.0), np.eye(p) / 100.0, X,
                                lambda s: s ** 2, y, [f"beta[{i + 1}]" for i in range(p)])


def schools(grid: int = 4000) -> ExactPosterior:
    """The centred eight schools: mu ~ N(0, 5^2), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau^2)."""
    d = _load("eight_schools_centered")
    y, sigma = np.asarray(d["y"], dtype=float), np.asarray(d["sigma"], dtype=float)
    J = len(y)
    A = np.c_[np.zeros(J), np.eye(J)]

    def S(tau):
        base = 25.0 * np.ones((J + 1, J + 1))
        out = np.broadcast_to(base, (len(tau), J + 1, J + 1)).copy()
        out[:, 1:, 1:] += tau[:, None, None] ** 2 * np.eye(J)
        return out

    h = np.geomspace(1e-4, 2e3, grid)
    return _posterior("tau", h, lambda t: stats.halfcauchy.logpdf(t, scale=5.0), np.zeros(J + 1), S, A,
                      lambda t: np.broadcast_to(np.diag(sigma ** 2), (len(t), J, J)), y,
                      ["mu"] + [f"theta[{j + 1}]" for j in range(J)])


EXACT = {"years": years, "collinear": collinear, "eight_schools_centered": schools}


def write_reference(name: str, path: str | Path, n: int = 20_000, seed: int = 0) -> Path:
    """``n`` exact draws of example ``name`` as a reference file for ``svilab posterior --reference``."""
    draws = EXACT[name]().draws(n, seed)
    path = Path(path)
    path.write_text(json.dumps({k: [round(float(v), 10) for v in a] for k, a in draws.items()}))
    return path


__all__ = ["EXACT", "ExactPosterior", "collinear", "schools", "write_reference", "years"]
