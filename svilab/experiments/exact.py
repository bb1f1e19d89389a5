"""``svilab exact``: the exact posterior and the mean-field CAVI posterior, side by side.

Layers: :func:`run` (computation: :class:`ExactComparison`) -> :func:`table`, :func:`quantile_table`,
:func:`figure` -> :func:`write` (run folder and printout) -> the argparse layer. The configuration
is the model itself (data and priors, ``PoissonGamma.config()``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from svilab.experiments.common import (
    Reporter,
    add_model_args,
    add_run_args,
    model_from_args,
    run_folder,
)
from svilab.experiments.runs import RunFolder
from svilab.inference.cavi import CAVIResult, cavi
from svilab.inference.exact import ExactPosterior
from svilab.models.poisson_gamma import PoissonGamma


@dataclass
class ExactComparison:
    """What :func:`run` computed: the exact posterior and the CAVI result for one model."""

    model: PoissonGamma
    exact: ExactPosterior
    cavi: CAVIResult

    @property
    def warnings(self) -> list[str]:
        return [] if self.cavi.converged else [cavi_warning(self.cavi)]

    def to_json(self) -> dict:
        """The ``svilab exact --json`` keys."""
        summary, q = self.exact.summary(), self.cavi
        return {"log_evidence": summary.pop("log_evidence"), "exact": summary,
                "cavi": {"u": q.q_u.as_dict(), "v": q.q_v.as_dict(), "elbo": q.elbo,
                         "kl": q.kl(self.exact.log_evidence), "iterations": q.iterations, "converged": q.converged},
                "quadrature_accuracy": self.exact.accuracy, "warnings": self.warnings}


def run(model: PoissonGamma) -> ExactComparison:
    """The exact posterior (quadrature) and CAVI of ``model``."""
    return ExactComparison(model, ExactPosterior(model), cavi(model))


def cavi_warning(q: CAVIResult) -> str:
    return (f"CAVI did not converge in {q.iterations} iterations (the rates still changed by more than 1e-12 "
            "relative); its factors and ELBO are the last iterate's")


def table(result: ExactComparison) -> pd.DataFrame:
    """Moments, log evidence, ELBO and KL of both posteriors."""
    exact, q = result.exact, result.cavi
    rows = {
        "E[u]": (exact.mean["u"], q.q_u.mean),
        "sd(u)": (exact.sd["u"], q.q_u.sd),
        "E[v]": (exact.mean["v"], q.q_v.mean),
        "sd(v)": (exact.sd["v"], q.q_v.sd),
        "corr(u, v)": (exact.corr, 0.0),
        "log p(x)": (exact.log_evidence, np.nan),
        "ELBO": (np.nan, q.elbo),
        "KL(q || p)": (0.0, q.kl(exact.log_evidence)),
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["exact", "CAVI (mean-field)"])


def quantile_table(result: ExactComparison) -> pd.DataFrame:
    """The exact posterior's quantiles of u and v."""
    return pd.DataFrame({name: result.exact.quantile(name, [0.025, 0.25, 0.5, 0.75, 0.975]) for name in ("u", "v")},
                        index=["2.5%", "25%", "50%", "75%", "97.5%"]).T


def figure(result: ExactComparison, n_grid: int = 300):
    """Joint posterior contours with the CAVI product q(u)q(v) overlaid, and both marginals."""
    exact, q = result.exact, result.cavi
    box = exact.grid_box(2e-4)
    ug = np.linspace(*box["u"], n_grid)
    vg = np.linspace(*box["v"], n_grid)
    U, V = np.meshgrid(ug, vg)
    log_p = exact.log_density(U, V)
    qu = stats.gamma(q.q_u.shape, scale=1 / q.q_u.rate)
    qv = stats.gamma(q.q_v.shape, scale=1 / q.q_v.rate)
    log_q = qu.logpdf(U) + qv.logpdf(V)
    peak = log_p.max()
    levels = peak + np.log([0.01, 0.05, 0.2, 0.5, 0.8])  # contours at fractions of the peak

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    cf = ax.contourf(U, V, np.exp(log_p), levels=12, cmap="Blues")
    ax.contour(U, V, log_p, levels=levels, colors="navy", linewidths=0.9, linestyles="solid")
    ax.contour(U, V, log_q, levels=log_q.max() + np.log([0.01, 0.05, 0.2, 0.5, 0.8]),
               colors="tab:orange", linewidths=1.2, linestyles="--")
    ax.plot([], [], color="navy", label="exact p(u, v | x)")
    ax.plot([], [], color="tab:orange", ls="--", label="CAVI q(u) q(v)")
    ax.plot(exact.mean["u"], exact.mean["v"], "x", color="navy", ms=8, label="exact mean")
    ax.plot(q.q_u.mean, q.q_v.mean, "+", color="tab:orange", ms=10, label="CAVI mean")
    ax.set_xlabel("u")
    ax.set_ylabel("v")
    ax.set_title(f"Joint posterior (corr = {exact.corr:.3f})")
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(cf, ax=ax, label="density")
    for ax, name, grid, qd in ((axes[1], "u", ug, qu), (axes[2], "v", vg, qv)):
        ax.plot(grid, exact.pdf(name, grid), color="navy", lw=2, label=f"exact p({name} | x)")
        ax.plot(grid, qd.pdf(grid), color="tab:orange", ls="--", lw=2, label=f"CAVI q({name})")
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        ax.set_title(f"Marginal of {name}")
        ax.legend(fontsize=8)
    kl = q.kl(exact.log_evidence)
    fig.suptitle(f"Poisson-Gamma posterior: exact vs mean-field CAVI (KL = {kl:.4f} nats)")
    fig.tight_layout()
    return fig


def write(result: ExactComparison, folder: RunFolder, reporter: Reporter) -> dict:
    """Config, results, tables and figure in ``folder``; the tables printed; returns the JSON."""
    folder.write_config({"command": "exact", **result.model.config()})
    results = result.to_json()
    folder.write_results(results)
    df, quant = table(result), quantile_table(result)
    folder.write_table("exact_vs_cavi", df)
    folder.write_table("exact_quantiles", quant)
    folder.save_figure(figure(result), "posterior_exact_vs_cavi")
    reporter.table(f"Exact posterior vs mean-field CAVI ({result.model!r})", df)
    reporter.table("Exact posterior quantiles", quant)
    if result.cavi.converged:
        reporter.say(f"CAVI converged in {result.cavi.iterations} iterations.")
    else:
        print(f"warning: {cavi_warning(result.cavi)}", file=sys.stderr)
    return results


def register(sub) -> None:
    p = sub.add_parser("exact", help="exact posterior (quadrature) and mean-field CAVI",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    add_run_args(p, seed=False)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    reporter = Reporter(args.json)
    folder = run_folder(args, "exact")
    results = write(run(model), folder, reporter)
    reporter.say(f"\nRun folder: {folder}")
    reporter.emit_json(results)
    return 0
