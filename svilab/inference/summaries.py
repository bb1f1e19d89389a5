r"""ArviZ summaries of fitted guides and MCMC runs, and the method-comparison table.

* :func:`guide_inference_data`: an :class:`arviz.InferenceData` for a fitted guide, with the
  same groups and variable names as for MCMC: ``posterior`` (independent draws from the guide as
  **one chain**, labelled ``variational draws`` in the attributes: R-hat and trace plots of
  independent draws say nothing about the fit, Pareto-k-hat does, :mod:`svilab.inference.diagnostics`),
  deterministic sites included; ``log_likelihood`` (pointwise :math:`\log p(x_i \mid z)` of every
  observed data site, so ``az.loo``/``az.waic`` work; ``pyro.deterministic`` and ``pyro.factor``
  sites are not data) and ``observed_data``.
* :func:`mcmc_inference_data`: the same layout for an MCMC run (chains kept), with
  ``sample_stats.diverging``. Built like ``az.from_pyro`` but through
  :func:`svilab.inference.draws.replay_draws`, which handles vector latents, deterministic sites and
  improper priors (``az.from_pyro`` samples the model and puts deterministic sites in the likelihood).
* :func:`elbo_estimate`: the ELBO of a guide by vectorized Monte Carlo with its standard error,

  .. math:: \widehat{\mathcal L} = \frac1n \sum_{s=1}^n \log p(x, z_s) - \log q(z_s),
     \qquad z_s \sim q, \qquad \mathrm{se} = \mathrm{sd}/\sqrt n,

  where the evidence :math:`\log p(x)` is known, :math:`\mathrm{KL}(q \,\|\, p(\cdot \mid x)) =
  \log p(x) - \mathcal L`.
* :func:`comparison_table`: per method the ELBO, KL, posterior mean and sd of each latent and
  their errors against a reference, a correlation, and the wall time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import arviz as az
import numpy as np
import pandas as pd
import torch

from svilab.inference.diagnostics import pareto_k
from svilab.inference.draws import Draws, flat_draws, guide_draws, importance_log_weights, replay_draws
from svilab.inference.reference import Reference
from svilab.inference.sites import ModelSites, merge_model_kwargs, model_sites
from svilab.validation import positive_int


@dataclass
class ELBOEstimate:
    """Monte Carlo ELBO with its standard error and the Pareto k-hat of the same importance weights."""

    value: float
    se: float
    num_samples: int
    pareto_k: float = math.nan


def elbo_estimate(model, guide, *args, num_samples: int = 100_000, seed: int | None = None, **kwargs) -> ELBOEstimate:
    """Monte Carlo ELBO of ``guide`` with its standard error and Pareto k-hat (module docstring);
    keywords go to the model (``model_kwargs={...}`` for names used here).

    :raises ValueError: ``num_samples < 2`` (no standard error), or a non-finite weight.
    """
    num_samples = positive_int(num_samples, "num_samples (ELBO samples)", minimum=2)
    w = importance_log_weights(model, guide, *args, num_samples=num_samples, seed=seed, **kwargs)
    if not torch.isfinite(w).all():
        raise ValueError("the ELBO estimate is not finite: the guide puts mass where the model has none, or its "
                         "parameters ran away (try a smaller learning rate, --lr)")
    return ELBOEstimate(float(w.mean()), float(w.std() / math.sqrt(len(w))), len(w), pareto_k(w))


def draws_inference_data(draws: Draws, sites: ModelSites, chains: int = 1, method: str = "",
                         sample_stats: dict | None = None) -> az.InferenceData:
    """``InferenceData`` from :class:`~svilab.inference.draws.Draws` (chains in order, ``S = chains * draws``)."""
    n = draws.num_draws
    if n % chains:
        raise ValueError(f"{n} draws cannot be split into {chains} chains")

    def split(v):
        return np.asarray(v).reshape((chains, n // chains) + np.asarray(v).shape[1:])

    idata = az.from_dict(
        posterior={k: split(v) for k, v in draws.posterior.items()},
        log_likelihood={k: split(v) for k, v in draws.log_likelihood.items()} or None,
        observed_data={k: v.cpu().numpy() for k, v in sites.observed.items()} or None,
        sample_stats=sample_stats,
        attrs={"inference_library": "pyro", "method": method})
    idata.posterior.attrs.update({"inference_library": "pyro", "method": method})  # kept in .nc files
    return idata


def guide_inference_data(model, guide, *args, num_samples: int = 4000, seed: int | None = None,
                         draws: Draws | None = None, model_kwargs: dict | None = None, **kwargs) -> az.InferenceData:
    """``InferenceData`` for a fitted guide: independent draws as one chain (module docstring);
    ``model_kwargs``: model keyword arguments named like an option here."""
    kwargs = merge_model_kwargs(kwargs, model_kwargs, "guide_inference_data")
    sites = model_sites(model, *args, **kwargs)
    if draws is None:
        draws = guide_draws(model, guide, *args, num_samples=num_samples, seed=seed, sites=sites, **kwargs)
    return draws_inference_data(draws, sites, 1, "variational draws (independent draws from the guide, not MCMC)")


def mcmc_inference_data(run, *args, **kwargs) -> az.InferenceData:
    """``InferenceData`` of a finished MCMC run (a :class:`svilab.inference.mcmc.NUTSResult` or a
    :class:`pyro.infer.MCMC`): chains kept, deterministic sites in ``posterior``, pointwise
    log-likelihood, ``sample_stats.diverging``. The model and its arguments come from the run."""
    mcmc = getattr(run, "mcmc", run)
    model = mcmc.kernel.model
    if not args and not kwargs:
        if hasattr(run, "mcmc") or hasattr(run, "runs"):     # NUTSResult, SequentialChains keep the arguments
            args, kwargs = run.args, run.kwargs
        else:                                                # a plain pyro.infer.MCMC keeps them itself
            args, kwargs = mcmc._args, mcmc._kwargs
    sites = model_sites(model, *args, **kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    chains, ndraws = next(iter(samples.values())).shape[:2]
    flat = {k: v.reshape((chains * ndraws,) + tuple(v.shape[2:])) for k, v in samples.items()}
    draws = replay_draws(model, flat, *args, sites=sites, **kwargs)
    diverging = np.zeros((chains, ndraws), dtype=bool)
    found = mcmc.diagnostics().get("divergences", {})
    for i, key in enumerate(sorted(found, key=lambda k: int(str(k).split()[-1]))):
        diverging[i, found[key]] = True
    return draws_inference_data(draws, sites, chains, "NUTS (pyro.infer.MCMC)", {"diverging": diverging})


def _default_coords(idata: az.InferenceData) -> bool:
    post = idata.posterior
    return all(list(post.coords[d].values) == list(range(post.sizes[d]))
               for d in post.dims if d not in ("chain", "draw") and d in post.coords)


def _one_based(label: str) -> str:
    m = re.fullmatch(r"(.+)\[(\d+(?:,\s*\d+)*)\]", label)
    if m is None:
        return label
    return f"{m.group(1)}[{', '.join(str(int(i) + 1) for i in m.group(2).split(','))}]"


def summary(idata: az.InferenceData, var_names: Sequence[str] | None = None, kind: str | None = None,
            one_based: bool = True) -> pd.DataFrame:
    """``az.summary`` without rounding: means, sds, HDI, and for MCMC (2+ chains) MCSE, ESS and R-hat.

    For one chain of independent variational draws (:func:`guide_inference_data`) only the
    statistics: R-hat and ESS describe Markov chains, not a guide (its diagnostic is Pareto k-hat).
    ``one_based``: rows named as svilab's tables and posteriordb's references name them (Stan's
    ``beta[1]`` for the first coordinate; ArviZ says ``beta[0]``) when the draws carry ArviZ's
    default 0-based coordinates."""
    if kind is None:
        kind = "all" if idata.posterior.sizes.get("chain", 1) > 1 else "stats"
    table = az.summary(idata, var_names=list(var_names) if var_names else None, kind=kind, round_to="none")
    if one_based and _default_coords(idata):
        table.index = [_one_based(str(i)) for i in table.index]
    return table


# --------------------------------------------------------------------------- comparison
@dataclass
class MethodResult:
    """One posterior approximation to compare.

    :ivar name: label in the table.
    :ivar idata: its draws (``posterior`` group); may be None when ``moments`` are given.
    :ivar elbo: the ELBO (None for MCMC); ``elbo_se`` its standard error (0 when exact).
    :ivar moments: ``{latent: (mean, sd)}`` computed exactly (used instead of the draws).
    :ivar corr: the correlation of ``corr_pair`` (computed from draws when None).
    :ivar pareto_k: Pareto k-hat of the guide's importance weights (None for MCMC and exact rows).
    :ivar warnings: what the diagnostics found wrong with this fit (empty when nothing).
    """

    name: str
    idata: az.InferenceData | None = None
    elbo: float | None = None
    elbo_se: float | None = None
    elbo_method: str = ""
    seconds: float | None = None
    moments: dict[str, tuple[float, float]] = field(default_factory=dict)
    corr: float | None = None
    extra: dict = field(default_factory=dict)
    pareto_k: float | None = None
    warnings: list[str] = field(default_factory=list)

    def flat_draws(self) -> dict[str, np.ndarray]:
        """Draws of each scalar (chains pooled), vector sites as ``name[i]`` with Stan's 1-based indices."""
        return flat_draws({name: da.values.reshape((da.shape[0] * da.shape[1],) + da.shape[2:])
                           for name, da in self.idata.posterior.data_vars.items()})

    def mean_sd(self) -> dict[str, tuple[float, float]]:
        if self.moments:
            return dict(self.moments)
        return {k: (float(v.mean()), float(v.std(ddof=1))) for k, v in self.flat_draws().items()}

    def correlation(self, pair: tuple[str, str]) -> float:
        if self.corr is not None:
            return self.corr
        draws = self.flat_draws()
        return float(np.corrcoef(draws[pair[0]], draws[pair[1]])[0, 1])

    def compare(self, reference: Reference) -> dict[str, dict[str, float]]:
        """Per parameter: mean, sd, mean error in reference sds, sd ratio (see :mod:`svilab.inference.reference`)."""
        from svilab.inference.reference import compare

        return compare(self.mean_sd(), reference)


def _as_reference(reference) -> Reference | None:
    if reference is None or isinstance(reference, Reference):
        return reference
    if isinstance(reference, Mapping):
        return Reference.from_moments(reference)
    raise ValueError(f"reference must be a Reference or {{name: (mean, sd)}}, got {type(reference).__name__}")


def comparison_table(methods: Sequence[MethodResult], reference: Mapping[str, tuple[float, float]] | Reference | None
                     = None, log_evidence: float | None = None, corr_pair: tuple[str, str] | None = None,
                     per_parameter: bool = True) -> pd.DataFrame:
    """One row per method: ELBO (and its se), KL = log p(x) - ELBO, Pareto k-hat where known, mean/sd of
    each latent with their errors against ``reference``, ``corr(pair)``, seconds, the gradient evaluations of
    the log density where a method counted them (``extra["gradient_evals"]``: SVI steps x particles,
    Pathfinder's L-BFGS path), warnings.

    :param reference: ``{name: (mean, sd)}`` or a :class:`~svilab.inference.reference.Reference` (e.g.
        read from reference draws); every name in it must be a parameter of some method.
    :param per_parameter: one column per parameter (``E[x]``, ``sd(x)``, errors); False gives only the
        worst mean error in reference sds and the range of sd ratios (for models with many parameters).
    :raises ValueError: a reference parameter that no method has.
    """
    ref = _as_reference(reference)
    if ref is not None:
        available = set().union(*(m.mean_sd().keys() for m in methods)) if methods else set()
        ref.check_names(available, "comparison_table reference")
    show_k = any(m.pareto_k is not None for m in methods)
    rows = []
    for m in methods:
        row = {"method": m.name, "ELBO": m.elbo, "ELBO se": m.elbo_se}
        if log_evidence is not None:
            row["KL(q || p)"] = None if m.elbo is None else log_evidence - m.elbo
        if show_k:
            row["Pareto k"] = m.pareto_k
        moments = m.mean_sd()
        if per_parameter:
            for k, (mean, sd) in moments.items():
                row[f"E[{k}]"] = mean
                row[f"sd({k})"] = sd
                if ref is not None and k in ref.mean:
                    row[f"E[{k}] error"] = mean - ref.mean[k]
                    row[f"sd({k}) error"] = sd - ref.sd[k]
        if ref is not None:
            cmp = [p for p in m.compare(ref).values() if "mean_error_sd" in p]
            if cmp:
                row["max |mean error| (ref sd)"] = max(abs(p["mean_error_sd"]) for p in cmp)
                row["min sd ratio"] = min(p["sd_ratio"] for p in cmp)
                row["max sd ratio"] = max(p["sd_ratio"] for p in cmp)
        if corr_pair is not None:
            row[f"corr({corr_pair[0]}, {corr_pair[1]})"] = m.correlation(corr_pair)
        row["seconds"] = m.seconds
        if any("gradient_evals" in x.extra for x in methods):
            row["gradient evals"] = m.extra.get("gradient_evals")
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method").astype(float)
    if any(m.warnings for m in methods):
        table["warnings"] = ["; ".join(m.warnings) for m in methods]
    return table


def parameter_table(methods: Sequence[MethodResult], reference: Reference | None = None) -> pd.DataFrame:
    """Long form: one row per (method, parameter) with mean, sd and, against ``reference``, the mean
    error in reference sds and the sd ratio."""
    rows = []
    for m in methods:
        stats = m.compare(reference) if reference is not None else \
            {k: {"mean": a, "sd": b} for k, (a, b) in m.mean_sd().items()}
        for name, p in stats.items():
            rows.append({"method": m.name, "parameter": name, **p})
    return pd.DataFrame(rows).set_index(["method", "parameter"])


__all__ = ["ELBOEstimate", "MethodResult", "comparison_table", "draws_inference_data", "elbo_estimate",
           "guide_inference_data", "mcmc_inference_data", "parameter_table", "summary"]
