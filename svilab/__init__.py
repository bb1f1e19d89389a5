"""svilab: variational-inference experiments on top of Pyro.

The pieces a Pyro user composes are all here, one import away (``import svilab``), with Pyro's
signatures where Pyro has the concept:

>>> import svilab
>>> svilab.SVI, svilab.fit, svilab.ClippedAdam, svilab.GJS_ELBO          # doctest: +ELLIPSIS
(<class 'svilab.inference.svi.SVI'>, <function fit at ...>, <class ...ClippedAdam'>, <class ...GeometricJSD_ELBO'>)

========================  =========================================================================
group                     names
========================  =========================================================================
SVI                       SVI, fit, FitResult, StoppingRule, DivergenceError, ClippedAdam,
                          GuardedAdam
losses                    make_loss, LOSSES, GJS_ELBO, JitGJS_ELBO, IWAE_ELBO, JitTrace_ELBO,
                          JitTraceMeanField_ELBO, geometric_js
guides                    make_guide, GUIDES, AutoFlow, MeanFieldGamma, MeanFieldPositiveNormal
start                     laplace, start_guide_at, make_init, whitened_guide, AutoWhitened,
                          AutoWhitenedNormal
check a fit               evaluate_guide, GuideEvaluation
draws and InferenceData   guide_draws, flat_draws, elbo_estimate, guide_inference_data,
                          mcmc_inference_data, summary
diagnostics               pareto_k, pareto_k_warnings, importance_warnings, convergence_warnings,
                          mcmc_warnings, reference_warnings
reference                 read_reference, ExactPosterior, cavi
NUTS                      run_nuts
estimator lab             estimate, get_estimator, register_estimator, get_family, ESTIMATORS,
                          unconstrained_target, reference_gradient
VAE                       VAE, VAEConfig, train_vae, vae_elbo, iwae_log_likelihood, load_mnist,
                          resolve_device
models                    PoissonGamma, load_user_model
========================  =========================================================================

Each name is imported on first use (``import svilab`` itself loads neither torch nor Pyro), and
each module lists its public names in ``__all__``; docs/api.md is the reference.

Subpackages: ``models`` (Pyro models), ``guides`` (variational families), ``inference`` (SVI,
ELBOs, estimators, diagnostics, summaries), ``experiments`` (the command-line experiments),
``sweep`` (studies on Ray), ``data`` (MNIST through torchvision).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> (module, attribute)
_API: dict[str, tuple[str, str]] = {}


def _add(module: str, *names: str, **renamed: str) -> None:
    for n in names:
        _API[n] = (module, n)
    for n, attr in renamed.items():
        _API[n] = (module, attr)


_add("svilab.inference.svi", "SVI", "fit", "FitResult", "StoppingRule", "DivergenceError")
_add("svilab.inference.optim", "ClippedAdam", "GuardedAdam")
_add("svilab.inference.losses", "make_loss", "LOSSES")
_add("svilab.inference.jsd_elbo", "GJS_ELBO", "JitGJS_ELBO")
_add("svilab.inference.iwae_elbo", "IWAE_ELBO")
_add("svilab.devices", "resolve_device")
_add("svilab.inference.jit_elbo", "JitTrace_ELBO", "JitTraceMeanField_ELBO")
_add("svilab.inference.divergences", "geometric_js")
_add("svilab.guides", "make_guide", "GUIDES", "AutoFlow", "MeanFieldGamma", "MeanFieldPositiveNormal")
_add("svilab.guides.whitened", "whitened_guide", "AutoWhitened", "AutoWhitenedNormal")
_add("svilab.inference.laplace", "laplace", "start_guide_at")
_add("svilab.inference.init", "make_init")
_add("svilab.inference.draws", "guide_draws", "flat_draws")
_add("svilab.inference.evaluate", "evaluate_guide", "GuideEvaluation")
_add("svilab.inference.summaries", "elbo_estimate", "guide_inference_data", "mcmc_inference_data", "summary")
_add("svilab.inference.diagnostics", "pareto_k", "pareto_k_warnings", "importance_warnings",
     "convergence_warnings", "mcmc_warnings", "reference_warnings")
_add("svilab.inference.reference", "read_reference")
_add("svilab.inference.exact", "ExactPosterior")
_add("svilab.inference.cavi", "cavi")
_add("svilab.inference.mcmc", "run_nuts")
_add("svilab.inference.neutra", "neutra_nuts")
_add("svilab.inference.estimators.reference", "reference_gradient")
_add("svilab.inference.estimators", "estimate", "get_estimator", "register_estimator", "get_family", "ESTIMATORS")
_add("svilab.inference.potential", "unconstrained_target")
_add("svilab.models.vae", "VAE", "VAEConfig")
_add("svilab.inference.vae_training", "train_vae")
_add("svilab.inference.vae_eval", "iwae_log_likelihood", vae_elbo="elbo")
_add("svilab.data.mnist", "load_mnist")
_add("svilab.models.poisson_gamma", "PoissonGamma")
_add("svilab.models.user", "load_user_model")

__all__ = sorted(_API)


def __getattr__(name: str):
    """Import the module of a public name on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'svilab' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
