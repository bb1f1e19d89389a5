r"""Diagnostics that say when a fit is wrong: Pareto-:math:`\hat k`, convergence, MCMC health.

Each check returns plain warning strings; the experiments put them in the table, the JSON and
stderr, so a bad posterior is never reported silently.

* :func:`pareto_k` — Yao, Vehtari, Simpson and Gelman (2018), "Yes, but did it work?": fit a
  generalized Pareto distribution to the largest importance ratios :math:`w_s = p(x, z_s)/q(z_s)`,
  :math:`z_s \sim q`. :math:`\hat k < 0.5`: the guide is close to the posterior; :math:`0.5 \le
  \hat k < 0.7`: usable for means, sds are suspect; :math:`\hat k \ge 0.7`: the guide misses part of
  the posterior and its summaries cannot be trusted. The tail rule and the fit are Pyro's
  (:func:`pyro.infer.importance.psis_diagnostic`, :func:`pyro.ops.stats.fit_generalized_pareto`),
  applied to log-weights computed once for the ELBO as well (the tests check the two agree).
* :func:`importance_shift` — the guide's own means against the self-normalised importance-sampling
  means :math:`\sum_s w_s z_s / \sum_s w_s` of the same draws, in guide sds. Pareto :math:`\hat k`
  does not see a guide that is a good proposal but sits off-centre (a shift of half a posterior sd
  costs only ~0.125 nats of KL and leaves :math:`\hat k` small); the reweighted means, reliable
  exactly when :math:`\hat k` is small, do. The shift's standard error in guide sds is about
  :math:`\sqrt{1/\mathrm{ESS} + 1/S}` (ESS :math:`= (\sum w)^2/\sum w^2`).
* :func:`loss_convergence` — the mean loss over the last 10% of the steps against the 10% before:
  a decrease larger than 3 standard errors and than ``tol`` nats means the optimisation was still
  making progress when it stopped.
* :func:`mcmc_warnings` — divergent transitions, split R-hat > 1.01 and bulk/tail ESS below 100 per
  chain (Vehtari et al. 2021), from ``az.summary`` of the run's InferenceData.
* :func:`reference_warnings` — when a reference is known, any parameter whose mean is more than
  ``max_error`` reference sds off, or whose sd is off by more than a factor 2.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from pyro.ops.stats import fit_generalized_pareto

#: Pareto-k thresholds of Yao et al. (2018)
K_GOOD, K_BAD = 0.5, 0.7


def pareto_k(log_weights: torch.Tensor | np.ndarray) -> float:
    r""":math:`\hat k` of the importance log-weights (same tail rule as Pyro's ``psis_diagnostic``).

    :returns: the shape estimate; ``inf`` when the tail has fewer than 10 points or a weight is not finite.
    """
    lw = torch.as_tensor(np.asarray(log_weights), dtype=torch.float64).flatten()
    n = lw.numel()
    if n < 10 or not torch.isfinite(lw).all():
        return math.inf
    lw = torch.sort(lw - lw.max())[0]
    cutoff_index = -int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n)))) - 1
    lw_cutoff = max(math.log(1.0e-15), float(lw[cutoff_index]))
    tail = lw[lw > lw_cutoff]
    if len(tail) < 10:
        return math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k, _ = fit_generalized_pareto(tail.exp() - math.exp(lw_cutoff))
    return float(k)


def pareto_k_warnings(k: float) -> list[str]:
    """The sentence (a one-element list) for a Pareto k-hat of 0.5 or more or a non-finite one;
    empty when the guide's importance weights are fine (k-hat < 0.5)."""
    if not math.isfinite(k):
        return ["Pareto k-hat could not be computed (non-finite importance weights): the guide puts mass "
                "where the model has none"]
    if k >= K_BAD:
        return [f"Pareto k-hat = {k:.2f} >= {K_BAD}: the weights p/q are heavy-tailed, the guide has much "
                "lighter tails than the posterior somewhere; its summaries are not certified (Yao et al. 2018)"]
    if k >= K_GOOD:
        return [f"Pareto k-hat = {k:.2f} in [{K_GOOD}, {K_BAD}): the guide is a rough fit; its sds may be off"]
    return []


#: largest shift (in guide sds) between a guide's mean and its importance-weighted mean that passes
IMPORTANCE_SHIFT = 0.25


def importance_shift(draws: Mapping[str, np.ndarray], log_weights: np.ndarray) -> tuple[dict[str, float], float]:
    """Per parameter ``(E_w[z] - E_q[z]) / sd_q(z)`` over the guide's draws with their importance
    log-weights, and the weights' effective sample size. ``draws``: name -> ``(S,)`` (flat scalars)."""
    lw = np.asarray(log_weights, dtype=np.float64)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    ess = float(1.0 / np.sum(w**2))
    names = list(draws)
    z = np.stack([np.asarray(draws[k], dtype=np.float64) for k in names], 1)          # (S, P)
    sd = z.std(0, ddof=1)
    shift = (w @ z - z.mean(0)) / np.where(sd > 0, sd, np.inf)
    return dict(zip(names, shift.tolist(), strict=True)), ess


def importance_warnings(draws: Mapping[str, np.ndarray], log_weights: np.ndarray, k: float = 0.0,
                        threshold: float = IMPORTANCE_SHIFT) -> list[str]:
    """A warning when some mean of the guide is more than ``threshold`` guide sds (and 3 standard
    errors) from its importance-weighted value: the guide is off-centre there (module docstring).
    Only where the weights can be trusted: ``k`` (the guide's Pareto k-hat) below :data:`K_BAD`
    (above it k-hat's own warning says more)."""
    lw = np.asarray(log_weights, dtype=np.float64)
    if len(lw) < 10 or not np.isfinite(lw).all() or not draws or not k < K_BAD:
        return []
    shift, ess = importance_shift(draws, lw)
    se = math.sqrt(1.0 / ess + 1.0 / len(lw))
    off = {k: v for k, v in shift.items() if abs(v) > max(threshold, 3 * se)}
    if not off:
        return []
    worst = max(off, key=lambda k: abs(off[k]))
    return [f"importance-sampling check: {len(off)} mean(s) of the guide move by more than {threshold} guide sd "
            f"when its draws are reweighted by p/q (worst {worst}: {off[worst]:+.2f} sd, weights' ESS "
            f"{ess:.0f} of {len(lw)}): the guide is off-centre there"]


def loss_convergence(history: np.ndarray, tol: float = 0.01, fraction: float = 0.1) -> tuple[bool, float, float]:
    """(converged, decrease, its standard error) of the mean loss, last ``fraction`` vs the one before."""
    h = np.asarray(history, dtype=np.float64)
    h = h[np.isfinite(h)]
    n = int(len(h) * fraction)
    if n < 5:
        return True, 0.0, math.nan  # too short to judge
    last, prev = h[-n:], h[-2 * n:-n]
    drop = float(prev.mean() - last.mean())
    se = float(math.sqrt(prev.var(ddof=1) / n + last.var(ddof=1) / n))
    return not (drop > 3 * se and drop > tol), drop, se


def convergence_warnings(history: np.ndarray, steps_done: int, tol: float = 0.01) -> list[str]:
    """The sentence (a one-element list) when the loss was still falling at the end of the run
    (:func:`loss_convergence`: by more than ``tol`` nats and two standard errors over the last 10%);
    empty when it had levelled off."""
    ok, drop, se = loss_convergence(history, tol)
    if ok:
        return []
    return [f"not converged: the loss was still falling at the end ({drop:.3g} nats over the last 10% of "
            f"{steps_done} steps, {drop / se:.0f} standard errors); run more steps or raise the learning rate "
            "(--steps, --lr)"]


def mcmc_warnings(summary, divergences: int, num_chains: int, num_draws: int, depth_hits: int | None = None,
                  iterations: int | None = None, max_tree_depth: int = 10) -> list[str]:
    """Warnings from ``az.summary`` (columns r_hat, ess_bulk, ess_tail), the divergence count, and the kept
    iterations whose tree reached ``max_tree_depth`` (``depth_hits`` of ``iterations``; Stan warns at any,
    svilab above 1%: the chain then moves by random walk, the usual sign of a badly scaled posterior)."""
    out = []
    if depth_hits and iterations and depth_hits > 0.01 * iterations:
        out.append(f"{depth_hits} of {iterations} iterations hit the maximum tree depth {max_tree_depth}: the sampler "
                   "moves by random walk, slowly (a badly scaled or strongly correlated posterior: centre and scale "
                   "the predictors, or reparameterize)")
    if divergences:
        out.append(f"{divergences} divergent transitions out of {num_chains * num_draws}: the sampler did not "
                   "explore the posterior reliably (reparameterize, or raise the target acceptance)")
    if num_chains > 1 and "r_hat" in summary:
        r = summary["r_hat"].astype(float)
        if (r > 1.01).any():
            out.append(f"R-hat up to {r.max():.3f} > 1.01 ({r.idxmax()}): the chains disagree; run longer")
    min_ess = 100 * num_chains
    for col in ("ess_bulk", "ess_tail"):
        if col in summary:
            e = summary[col].astype(float)
            if (e < min_ess).any():
                out.append(f"{col.replace('_', ' ')} down to {e.min():.0f} < {min_ess} ({e.idxmin()}): too few "
                           "effective draws for reliable summaries")
    return out


def reference_warnings(params: Mapping[str, Mapping[str, float]], max_error: float = 0.5) -> list[str]:
    """Parameters more than ``max_error`` reference sds off in mean, or with sd off by over 2x."""
    off = {k: p["mean_error_sd"] for k, p in params.items() if abs(p.get("mean_error_sd", 0.0)) > max_error}
    out = []
    if off:
        worst = max(off, key=lambda k: abs(off[k]))
        out.append(f"{len(off)} parameter mean(s) more than {max_error} reference sd off the reference "
                   f"(worst {worst}: {off[worst]:+.2f} sd)")
    ratios = {k: p["sd_ratio"] for k, p in params.items() if "sd_ratio" in p
              and not 0.5 <= p["sd_ratio"] <= 2.0}
    if ratios:
        worst = max(ratios, key=lambda k: abs(math.log(max(ratios[k], 1e-300))))
        out.append(f"{len(ratios)} posterior sd(s) off by more than 2x (worst {worst}: {ratios[worst]:.3g} x the "
                   "reference sd)")
    return out


__all__ = ["IMPORTANCE_SHIFT", "K_BAD", "K_GOOD", "convergence_warnings", "importance_shift", "importance_warnings",
           "loss_convergence", "mcmc_warnings", "pareto_k",
           "pareto_k_warnings", "reference_warnings"]
