"""One pipeline for ``svilab posterior`` on every model: run -> write, with what varies by model and by
reference as two plug-ins.

* A **problem** (:class:`PosteriorProblem`) is the model side: how the run starts (nothing for the
  Poisson-Gamma model; the Laplace or Pathfinder approximation for a user's model), how a guide is fitted
  (:func:`~svilab.experiments.posterior_config.fit_and_evaluate` for both, with each model's guide
  construction, learning rate and exact ELBO where one exists), NUTS, Pathfinder, and the one-line
  reports. :class:`svilab.experiments.posterior.PoissonGammaProblem`,
  :class:`svilab.experiments.posterior_user.UserProblem`.
* A **comparison** (:class:`Comparison`) is the reference side: the exact posterior by quadrature with
  CAVI (:class:`svilab.experiments.posterior.ExactComparison`), reference draws, or none
  (:class:`svilab.experiments.posterior_user.DrawsComparison`): the warnings it adds to each method, its
  tables, figures and JSON.

:func:`run_posterior` starts, fits every guide, Pathfinder and NUTS (:func:`run_methods`: a method that fails
is left out with a warning) and adds the comparison's warnings; :func:`write_posterior` writes the tables, the
per-method ``az.summary`` and InferenceData, the warnings, the figures and returns the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from svilab.experiments.common import Reporter
from svilab.experiments.posterior_config import PosteriorConfig, run_methods
from svilab.experiments.posterior_figures import figure_losses
from svilab.experiments.runs import RunFolder
from svilab.inference.summaries import MethodResult, summary


class PosteriorProblem(Protocol):
    """The model side of a posterior run (module docstring)."""

    def start(self, config: PosteriorConfig, reporter: Reporter):
        """What the guides and NUTS start from (None: each guide's own start)."""

    def fit(self, name: str, cfg: dict, config: PosteriorConfig, start) -> tuple[MethodResult, np.ndarray]:
        """Fit guide ``name`` with schedule ``cfg`` and evaluate it: its row and its loss history."""

    def nuts(self, config: PosteriorConfig, start) -> MethodResult:
        """NUTS, its row."""

    def pathfinder(self, config: PosteriorConfig) -> MethodResult | None:
        """Pathfinder's row (None: the problem has none)."""

    def describe_fit(self, name: str, cfg: dict, m: MethodResult) -> str: ...

    def describe_nuts(self, config: PosteriorConfig, m: MethodResult) -> str: ...

    def describe_pathfinder(self, m: MethodResult) -> str: ...


class Comparison(Protocol):
    """The reference side of a posterior run (module docstring)."""

    #: the variables of the per-method summaries and the NUTS trace (None: every one)
    summary_vars: list[str] | None
    #: the log evidence for the loss figure (None: unknown)
    log_evidence: float | None

    def add_warnings(self, methods: list[MethodResult], config: PosteriorConfig) -> None:
        """Append the comparison's warnings to each method's."""

    def tables(self, result: PosteriorResult, folder: RunFolder, reporter: Reporter) -> None:
        """Write and show the comparison tables."""

    def after_summary(self, method: MethodResult, table, reporter: Reporter) -> None:
        """Anything to show with a method's ``az.summary`` (the Poisson-Gamma NUTS summary)."""

    def figures(self, result: PosteriorResult) -> list[tuple[object, str]]:
        """The comparison's figures, ``(figure, name)``."""

    def trace_vars(self, result: PosteriorResult) -> tuple[list[str], bool]:
        """The NUTS trace plot's variables and whether it is compact."""

    def json(self, result: PosteriorResult) -> dict:
        """The run's JSON (``failed`` is added by :func:`write_posterior`)."""


@dataclass
class PosteriorResult:
    """What :func:`run_posterior` computed: every method's row (Pathfinder, the guides, NUTS) and loss
    history, the methods left out with their errors, and the problem and comparison they came from."""

    problem: PosteriorProblem
    comparison: Comparison
    config: PosteriorConfig
    methods: list[MethodResult]
    histories: dict[str, np.ndarray]
    failed: dict[str, str]


def run_posterior(problem: PosteriorProblem, comparison: Comparison, config: PosteriorConfig,
                  reporter: Reporter) -> PosteriorResult:
    """Start, fit every guide of ``config``, Pathfinder and NUTS when asked (one line each), and add the
    comparison's warnings."""
    start = problem.start(config, reporter)
    methods, histories, failed = run_methods(
        config, lambda name, cfg: problem.fit(name, cfg, config, start), lambda: problem.nuts(config, start),
        reporter, problem.describe_fit, lambda m: problem.describe_nuts(config, m),
        lambda: problem.pathfinder(config), problem.describe_pathfinder)
    comparison.add_warnings(methods, config)
    return PosteriorResult(problem, comparison, config, methods, histories, failed)


def report_warnings(methods: list[MethodResult], reporter: Reporter) -> None:
    """Every diagnostic that failed, one line each on stderr whatever the output mode."""
    import sys

    for m in methods:
        for w in m.warnings:
            print(f"warning: {m.name}: {w}", file=sys.stderr)
    if not any(m.warnings for m in methods):
        reporter.say("\nNo warnings: every diagnostic passed.")


def write_histories(folder: RunFolder, histories: dict) -> None:
    """``svi_loss.csv``: each guide's SVI loss per step (one column per guide), what ``svi_loss.png``
    draws, for tools (``svilab sweep`` reads it for TensorBoard and its curves)."""
    if histories:
        import pandas as pd

        df = pd.DataFrame({k: pd.Series(np.asarray(v, dtype=float)) for k, v in histories.items()})
        folder.write_csv("svi_loss.csv", df.rename_axis("step"))


def write_posterior(result: PosteriorResult, folder: RunFolder, reporter: Reporter) -> dict:
    """The comparison's tables, each method's ``az.summary`` and InferenceData, the warnings, the figures
    (the comparison's, the SVI losses, the NUTS trace); returns the JSON."""
    comparison, config, methods = result.comparison, result.config, result.methods
    comparison.tables(result, folder, reporter)
    for m in methods:
        s = summary(m.idata, comparison.summary_vars)
        folder.write_table(f"summary_{m.name}", s)
        folder.write_netcdf(f"inference_data/{m.name}.nc", m.idata)
        comparison.after_summary(m, s, reporter)
    report_warnings(methods, reporter)
    for fig, name in comparison.figures(result):
        folder.save_figure(fig, name)
    if result.histories:
        folder.save_figure(figure_losses(result.histories, config.loss, comparison.log_evidence), "svi_loss")
        write_histories(folder, result.histories)
    if config.nuts and methods and methods[-1].name == "nuts":
        import arviz as az

        names, compact = comparison.trace_vars(result)
        axes = az.plot_trace(methods[-1].idata, var_names=names, compact=compact)
        folder.save_figure(axes.ravel()[0].figure, "nuts_trace")
    out = comparison.json(result)
    if result.failed:
        out["failed"] = [{"name": k, "error": v} for k, v in result.failed.items()]
    return out


__all__ = ["Comparison", "PosteriorProblem", "PosteriorResult", "report_warnings", "run_posterior",
           "write_histories", "write_posterior"]
