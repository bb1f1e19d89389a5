"""The figures of ``svilab posterior``: every method's draws against the exact posterior
(Poisson-Gamma) or the reference draws (``--model``), and the SVI loss curves. One colour per
method in all of them (:data:`COLORS`)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from svilab.inference.exact import ExactPosterior
from svilab.inference.summaries import MethodResult

#: every method's colour in the figures: the guides' own, NUTS, CAVI
#: each method's colour in every figure
COLORS = {"normal": "tab:orange", "lognormal": "tab:green", "gamma": "tab:red", "mvn": "tab:purple",
          "flow": "tab:brown", "lowrank": "tab:olive", "nuts": "tab:gray", "cavi": "tab:pink"}


def figure_joint(exact: ExactPosterior, methods: list[MethodResult], n_points: int = 1500, n_grid: int = 200):
    """Exact posterior contours with each method's draws overlaid, one panel per method."""
    box = exact.grid_box(1e-4)
    ug, vg = np.linspace(*box["u"], n_grid), np.linspace(*box["v"], n_grid)
    U, V = np.meshgrid(ug, vg)
    log_p = exact.log_density(U, V)
    levels = log_p.max() + np.log([0.01, 0.05, 0.2, 0.5, 0.8])
    cols = min(3, len(methods))
    rows = int(np.ceil(len(methods) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.0 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, m in zip(axes.flat, methods, strict=False):
        draws = m.flat_draws()
        ax.scatter(draws["u"][:n_points], draws["v"][:n_points], s=3, alpha=0.35, color=COLORS.get(m.name, "k"))
        ax.contour(U, V, log_p, levels=levels, colors="navy", linewidths=0.9, linestyles="solid", zorder=3)
        kl = "" if m.elbo is None else f", KL = {exact.log_evidence - m.elbo:.4f}"
        ax.set_title(f"{m.name}{kl}", fontsize=10)
        ax.set_xlim(*box["u"])
        ax.set_ylim(*box["v"])
        ax.set_xlabel("u")
        ax.set_ylabel("v")
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    fig.suptitle("Exact posterior p(u, v | x) (contours at 1, 5, 20, 50, 80% of the peak) and draws of each method")
    fig.tight_layout()
    return fig


def figure_marginals_exact(exact: ExactPosterior, methods: list[MethodResult]):
    """Marginal densities of u and v: exact (quadrature) vs each method (ArviZ KDE of the draws)."""
    import arviz as az

    box = exact.grid_box(1e-4)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for ax, name in zip(axes, ("u", "v"), strict=True):
        grid = np.linspace(*box[name], 400)
        ax.plot(grid, exact.pdf(name, grid), color="navy", lw=2.5, label="exact")
        for m in methods:
            az.plot_kde(m.flat_draws()[name], ax=ax, plot_kwargs={"color": COLORS.get(m.name, "k"), "linewidth": 1.3},
                        label=m.name)
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        ax.set_title(f"Posterior marginal of {name}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_marginals_reference(methods: list[MethodResult], reference_draws: dict[str, np.ndarray] | None,
                               names: list[str], max_panels: int = 16):
    """One panel per parameter (the first ``max_panels``): each method's KDE, the reference's in black."""
    import arviz as az

    names = names[:max_panels]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    flats = {m.name: m.flat_draws() for m in methods}
    for ax, name in zip(axes.flat, names, strict=False):
        if reference_draws is not None and name in reference_draws:
            az.plot_kde(reference_draws[name], ax=ax, plot_kwargs={"color": "black", "linewidth": 2.2},
                        label="reference")
        for i, m in enumerate(methods):
            if name in flats[m.name]:
                az.plot_kde(flats[m.name][name], ax=ax, label=m.name,
                            plot_kwargs={"color": COLORS.get(m.name, cycle[i % len(cycle)]), "linewidth": 1.2})
        ax.set_title(name, fontsize=10)
        ax.set_yticks([])
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle("Posterior marginals: each method (colours) and the reference draws (black)")
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), fontsize=9)
    return fig


def figure_losses(histories: dict[str, np.ndarray], loss: str, log_evidence: float | None = None):
    """Each guide's loss (a moving average over 1/50 of the run) against the step. With the exact
    ``log_evidence`` the line -log p(x), which every ELBO loss stays above, is drawn and the axis
    spans 3 nats above it; else the axis starts near the best value reached."""
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    lows = []
    for name, h in histories.items():
        if not len(h):
            continue
        k = max(1, len(h) // 50)
        smooth = np.convolve(h, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, color=COLORS.get(name), label=name)
        lows.append(smooth.min())
    if log_evidence is not None:
        ax.axhline(-log_evidence, color="navy", ls="--", lw=1, label="-log p(x)")
        ax.set_ylim(-log_evidence - 0.2, -log_evidence + 3)
    elif lows:  # the end of the optimisation is what matters: start the axis near the best value
        lo = min(lows)
        ax.set_ylim(lo - 0.05 * abs(lo) - 1, lo + 0.2 * abs(lo) + 20)
    ax.set_xlabel("SVI step")
    ax.set_ylabel(f"{loss} (moving average)")
    ax.set_title("SVI loss per guide")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
