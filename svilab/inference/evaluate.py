r"""The check of a fitted guide, in one call: :func:`evaluate_guide`.

What ``svilab posterior`` does for every guide after SVI, for any Pyro model and guide:

1. the Monte Carlo ELBO with its standard error and Pareto :math:`\hat k` of the importance weights
   :math:`\log p(x, z_s) - \log q(z_s)`, :math:`z_s \sim q` (``elbo_samples`` draws;
   :func:`~svilab.inference.summaries.elbo_estimate`);
2. ``draws`` draws from the guide with the model's deterministic sites, the pointwise
   log-likelihood and their importance log-weights (:func:`~svilab.inference.draws.guide_draws`),
   as an ArviZ ``InferenceData`` (one chain of independent draws);
3. the diagnostics, each a sentence: :math:`\hat k` (above 0.7 the guide misses mass the posterior
   has; in [0.5, 0.7) its sds are suspect), the importance-sampling check of the means (where
   :math:`\hat k < 0.7`), and, given the SVI result, convergence or divergence.

The warnings are returned, and also issued as Python ``UserWarning``\ s (``warn=True``), so that a
bad posterior is never left for the user to find.

>>> import pyro, pyro.distributions as dist, torch, svilab
>>> def model(x):
...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
...     with pyro.plate("data", len(x)):
...         pyro.sample("x", dist.Normal(mu, 1.0), obs=x)
>>> pyro.clear_param_store()
>>> x = torch.tensor([1.0, 2.0, 3.0])
>>> guide = svilab.make_guide("meanfield", model)
>>> result = svilab.fit(model, guide, x, steps=1500, num_particles=8, lr=0.05, lr_final=0.002, seed=0)
>>> check = svilab.evaluate_guide(model, guide, x, fit=result, seed=0)
>>> check.warnings, round(check.elbo.pareto_k, 1) < 0.5
([], True)
>>> round(float(check.idata.posterior["mu"].mean()), 1)
2.0
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass

import arviz as az

from svilab.inference.diagnostics import convergence_warnings, importance_warnings, pareto_k_warnings
from svilab.inference.draws import Draws, flat_draws, guide_draws
from svilab.inference.summaries import ELBOEstimate, MethodResult, elbo_estimate, guide_inference_data


@dataclass
class GuideEvaluation:
    """What :func:`evaluate_guide` finds.

    :ivar elbo: ``.value``, ``.se``, ``.pareto_k``.
    :ivar draws: the guide's draws with their importance log-weights.
    :ivar idata: the draws as ``InferenceData`` (posterior, deterministic sites, log_likelihood,
        observed_data).
    :ivar warnings: every diagnostic that failed, one sentence each (empty: none).
    """

    elbo: ELBOEstimate
    draws: Draws
    idata: az.InferenceData
    warnings: list[str]

    def method(self, name: str, seconds: float | None = None) -> MethodResult:
        """This guide as a row of :func:`~svilab.inference.summaries.comparison_table`."""
        return MethodResult(name, self.idata, elbo=self.elbo.value, elbo_se=self.elbo.se, seconds=seconds,
                            pareto_k=self.elbo.pareto_k, warnings=list(self.warnings))


def evaluate_guide(model, guide, *args, fit=None, draws: int = 4000, elbo_samples: int = 100_000,
                   seed: int | None = None, sites=None, warn: bool = True, model_kwargs: dict | None = None,
                   log_likelihood: bool = True, **kwargs) -> GuideEvaluation:
    """Check a fitted ``guide`` of ``model(*args, **kwargs)`` (module docstring).

    :param fit: the :class:`~svilab.inference.svi.FitResult` (or the ``DivergenceError``) of its SVI
        run, for the convergence/divergence diagnostic (None: not checked).
    :param draws: guide draws for the InferenceData (>= 2); ``elbo_samples``: for the ELBO and k-hat.
    :param seed: the ELBO's draws use ``seed`` and the InferenceData's ``seed + 1`` (None: the
        global RNG, left as it is).
    :param sites: the model's :class:`~svilab.inference.sites.ModelSites` (None: read off a trace).
    :param warn: also issue each warning as a ``UserWarning``.
    :param model_kwargs: model keyword arguments whose names this function uses itself.
    :param log_likelihood: keep the pointwise log-likelihood in the draws and the InferenceData (False for
        data whose draws x observations would not fit in memory).
    """
    from svilab.inference.svi import DivergenceError

    mk = model_kwargs
    elbo = elbo_estimate(model, guide, *args, num_samples=elbo_samples, seed=seed, model_kwargs=mk, **kwargs)
    d = guide_draws(model, guide, *args, num_samples=draws, seed=None if seed is None else seed + 1, sites=sites,
                    model_kwargs=mk, log_likelihood=log_likelihood, **kwargs)
    found = pareto_k_warnings(elbo.pareto_k) + importance_warnings(flat_draws(d.posterior), d.log_weights,
                                                                   elbo.pareto_k)
    if isinstance(fit, DivergenceError):
        found.append(f"diverged: {fit}; results are from the last finite parameters")
    elif fit is not None:
        found += convergence_warnings(fit.history, fit.steps_done)
    if warn:
        for w in found:
            _warnings.warn(w, UserWarning, stacklevel=2)
    return GuideEvaluation(elbo, d, guide_inference_data(model, guide, *args, draws=d, model_kwargs=mk, **kwargs),
                           found)


__all__ = ["GuideEvaluation", "evaluate_guide"]
