r"""ArviZ summaries of fitted guides and MCMC runs, and the method-comparison table.

* :func:`guide_inference_data`: an :class:`arviz.InferenceData` for a fitted guide, with the
  same groups and variable names as :func:`arviz.from_pyro` gives for MCMC: ``posterior``
  (draws from the guide through :class:`pyro.infer.Predictive`, one chain), ``log_likelihood``
  (pointwise :math:`\log p(x_i \mid z)` of every observed site, so ``az.loo``/``az.waic`` work) and
  ``observed_data``.
* :func:`mcmc_inference_data`: ``az.from_pyro`` of an MCMC run (with its log likelihood).
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import arviz as az
import numpy as np
import pandas as pd
import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive
from pyro.poutine.util import prune_subsample_sites

from svilab.validation import positive_int


@dataclass
class ModelSites:
    """Latent and observed sites of a model, from one trace (shapes without any particle dims)."""

    latent: dict[str, torch.Size]
    observed: dict[str, torch.Tensor]
    max_plate_nesting: int


def model_sites(model, *args, **kwargs) -> ModelSites:
    """Trace ``model`` once (blocked, no gradients) and list its latent and observed sites."""
    with poutine.block(), torch.no_grad():
        trace = prune_subsample_sites(poutine.trace(model).get_trace(*args, **kwargs))
    latent, observed = {}, {}
    nesting = 0
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        nesting = max(nesting, len(site["cond_indep_stack"]))
        if site["is_observed"]:
            observed[name] = site["value"].detach()
        else:
            latent[name] = site["value"].shape
    return ModelSites(latent, observed, nesting)


@dataclass
class ELBOEstimate:
    value: float
    se: float
    num_samples: int
    method: str = "Monte Carlo"


def _per_particle_log_prob(trace, n: int, nesting: int) -> torch.Tensor:
    """Sum every site's log density over all dims but the particle dim ``-(nesting + 1)``."""
    total = torch.zeros(n, dtype=torch.float64)
    for site in trace.nodes.values():
        if site["type"] != "sample" or "log_prob" not in site:
            continue
        lp = site["log_prob"].double()
        if lp.dim() < nesting + 1:  # no particle dim: the same value for every particle
            total = total + lp.sum()
        else:
            lp = lp.movedim(-(nesting + 1), 0)
            total = total + lp.reshape(lp.shape[0], -1).sum(-1)
    return total


def log_weights(model, guide, *args, num_samples: int = 10_000, chunk: int = 50_000, seed: int | None = None,
                **kwargs) -> torch.Tensor:
    r""":math:`\log p(x, z_s) - \log q(z_s)` for ``num_samples`` draws :math:`z_s \sim q`, vectorized
    (in chunks of ``chunk`` draws) over a particle plate outside the model's plates."""
    num_samples = positive_int(num_samples, "num_samples")
    nesting = model_sites(model, *args, **kwargs).max_plate_nesting
    if seed is not None:
        pyro.set_rng_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, num_samples, chunk):
            n = min(chunk, num_samples - start)
            with pyro.plate("_elbo_particles", n, dim=-(nesting + 1)):
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            guide_trace.compute_log_prob()
            model_trace.compute_log_prob()
            out.append(_per_particle_log_prob(model_trace, n, nesting)
                       - _per_particle_log_prob(guide_trace, n, nesting))
    return torch.cat(out)


def elbo_estimate(model, guide, *args, num_samples: int = 100_000, seed: int | None = None, **kwargs) -> ELBOEstimate:
    """Monte Carlo ELBO of ``guide`` with its standard error (see the module docstring)."""
    w = log_weights(model, guide, *args, num_samples=num_samples, seed=seed, **kwargs)
    if not torch.isfinite(w).all():
        raise ValueError("the ELBO estimate is not finite: the guide puts mass where the model has none")
    return ELBOEstimate(float(w.mean()), float(w.std() / math.sqrt(len(w))), len(w))


def guide_samples(model, guide, *args, num_samples: int = 4000, seed: int | None = None,
                  **kwargs) -> dict[str, np.ndarray]:
    """Draws of every latent site from ``guide``: ``{name: array of shape (num_samples, *site_shape)}``."""
    num_samples = positive_int(num_samples, "num_samples")
    sites = model_sites(model, *args, **kwargs)
    if seed is not None:
        pyro.set_rng_seed(seed)
    with torch.no_grad():
        draws = Predictive(model, guide=guide, num_samples=num_samples, parallel=True,
                           return_sites=list(sites.latent))(*args, **kwargs)
    return {k: draws[k].reshape((num_samples,) + tuple(shape)).detach().cpu().numpy()
            for k, shape in sites.latent.items()}


def pointwise_log_likelihood(model, samples: Mapping[str, np.ndarray], *args, **kwargs) -> dict[str, np.ndarray]:
    """:math:`\\log p(x_i \\mid z_s)` of each observed site: ``{name: (S, *obs_shape)}``, vectorized
    over the draws the way :func:`arviz.from_pyro` does it."""
    tensors = {k: torch.as_tensor(v) for k, v in samples.items()}
    n = len(next(iter(tensors.values())))
    with torch.no_grad():
        trace = Predictive(model, posterior_samples=tensors).get_vectorized_trace(*args, **kwargs)
    out = {}
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and site["is_observed"] and name not in tensors:
            lp = site["fn"].log_prob(site["value"])
            out[name] = lp.reshape((n,) + tuple(site["value"].shape[-lp.dim() + 1:] if lp.dim() > 1 else ())
                                   ).detach().cpu().numpy()
    return out


def guide_inference_data(model, guide, *args, num_samples: int = 4000, chains: int = 4, seed: int | None = None,
                         **kwargs) -> az.InferenceData:
    """``InferenceData`` for a fitted guide, laid out like ``az.from_pyro`` (see module docstring).

    The ``num_samples`` independent draws are split into ``chains`` pseudo-chains so that ArviZ's
    diagnostics apply (for independent draws R-hat is ~1 and the ESS ~ ``num_samples``).
    """
    chains = positive_int(chains, "chains")
    if num_samples % chains:
        raise ValueError(f"num_samples ({num_samples}) must be a multiple of chains ({chains})")
    sites = model_sites(model, *args, **kwargs)
    draws = guide_samples(model, guide, *args, num_samples=num_samples, seed=seed, **kwargs)
    loglik = pointwise_log_likelihood(model, draws, *args, **kwargs)

    def split(v):
        return v.reshape((chains, num_samples // chains) + v.shape[1:])

    return az.from_dict(
        posterior={k: split(v) for k, v in draws.items()},
        log_likelihood={k: split(v) for k, v in loglik.items()},
        observed_data={k: v.cpu().numpy() for k, v in sites.observed.items()},
        attrs={"inference_library": "pyro", "method": "variational (guide draws)"})


def mcmc_inference_data(mcmc) -> az.InferenceData:
    """``az.from_pyro`` of a finished :class:`pyro.infer.MCMC` run, with the pointwise log likelihood."""
    return az.from_pyro(mcmc, log_likelihood=True)


def summary(idata: az.InferenceData, var_names: Sequence[str] | None = None, kind: str = "all") -> pd.DataFrame:
    """``az.summary`` without rounding (means, sds, HDI, MCSE, ESS, R-hat)."""
    return az.summary(idata, var_names=list(var_names) if var_names else None, kind=kind, round_to="none")


# --------------------------------------------------------------------------- comparison
@dataclass
class MethodResult:
    """One posterior approximation to compare.

    :ivar name: label in the table.
    :ivar idata: its draws (``posterior`` group); may be None when ``moments`` are given.
    :ivar elbo: the ELBO (None for MCMC); ``elbo_se`` its standard error (0 when exact).
    :ivar moments: ``{latent: (mean, sd)}`` computed exactly (used instead of the draws).
    :ivar corr: the correlation of ``corr_pair`` (computed from draws when None).
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

    def flat_draws(self) -> dict[str, np.ndarray]:
        """Draws of each scalar latent, chains pooled (vector sites give ``name[i]`` entries)."""
        out = {}
        for name, da in self.idata.posterior.data_vars.items():
            arr = da.values.reshape(da.shape[0] * da.shape[1], -1)
            if arr.shape[1] == 1:
                out[name] = arr[:, 0]
            else:
                out.update({f"{name}[{i}]": arr[:, i] for i in range(arr.shape[1])})
        return out

    def mean_sd(self) -> dict[str, tuple[float, float]]:
        if self.moments:
            return dict(self.moments)
        return {k: (float(v.mean()), float(v.std(ddof=1))) for k, v in self.flat_draws().items()}

    def correlation(self, pair: tuple[str, str]) -> float:
        if self.corr is not None:
            return self.corr
        draws = self.flat_draws()
        return float(np.corrcoef(draws[pair[0]], draws[pair[1]])[0, 1])


def comparison_table(methods: Sequence[MethodResult], reference: Mapping[str, tuple[float, float]] | None = None,
                     log_evidence: float | None = None, corr_pair: tuple[str, str] | None = None) -> pd.DataFrame:
    """One row per method: ELBO (and its se), KL = log p(x) - ELBO, mean/sd of each latent with
    their errors against ``reference`` (``{latent: (mean, sd)}``), ``corr(pair)``, seconds."""
    rows = []
    for m in methods:
        row = {"method": m.name, "ELBO": m.elbo, "ELBO se": m.elbo_se}
        if log_evidence is not None:
            row["KL(q || p)"] = None if m.elbo is None else log_evidence - m.elbo
        for k, (mean, sd) in m.mean_sd().items():
            row[f"E[{k}]"] = mean
            row[f"sd({k})"] = sd
            if reference and k in reference:
                row[f"E[{k}] error"] = mean - reference[k][0]
                row[f"sd({k}) error"] = sd - reference[k][1]
        if corr_pair is not None:
            row[f"corr({corr_pair[0]}, {corr_pair[1]})"] = m.correlation(corr_pair)
        row["seconds"] = m.seconds
        rows.append(row)
    return pd.DataFrame(rows).set_index("method").astype(float)
