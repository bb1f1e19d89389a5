"""The typed configuration of ``svilab posterior`` (both models), checked on construction.

:meth:`PosteriorConfig.for_model` fills in every default from the guide and loss registries
(:data:`svilab.guides.GUIDE_SPECS`, :data:`svilab.inference.losses.LOSS_SPECS`) and raises a
ValueError naming the option for anything meaningless; :meth:`PosteriorConfig.as_dict` is what the
run folder's ``config.json`` holds. ``svilab demo`` and the tests build configs with it directly.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

from svilab.experiments.loss_choice import command_loss
from svilab.guides import GUIDE_SPECS, guide_name, guide_spec
from svilab.inference.init import INIT_STRATEGIES
from svilab.memory import check_memory
from svilab.validation import choice, positive, positive_int

#: initial learning rate on a user's model when none is given: small after a Laplace start (the
#: guide starts near the posterior and Adam's steps of ~lr per coordinate must stay below the
#: posterior sds), larger from a random start (the guide must travel)
USER_LR = {"laplace": 0.01, "other": 0.05}
#: the starts that are a Gaussian approximation (the guides start or are whitened there, NUTS starts from it)
GAUSSIAN_STARTS = ("laplace", "pathfinder")


def default_guides(user: bool) -> list[str]:
    """Every default guide for the Poisson-Gamma model; those that work on any model for a user's."""
    return [n for n, s in GUIDE_SPECS.items() if s.default and (s.any_model or not user)]


def guide_options(name: str, config) -> dict:
    """The constructor options of guide ``name`` from the configuration (the flow's widths and layers)."""
    if guide_name(name) == "flow":
        return {"hidden_dims": config.flow["hidden_dims"], "num_transforms": config.flow["num_transforms"]}
    return {}


def settings(guide: str, steps: int | None, particles: int | None, lr: float | None, user: bool = False) -> dict:
    """The SVI schedule of ``guide`` (its :class:`~svilab.guides.GuideSpec` schedule, for the
    Poisson-Gamma model or a user's model), with the options given overriding it."""
    spec = guide_spec(guide)
    base = spec.user_schedule if user else spec.schedule
    return {"steps": base["steps"] if steps is None else positive_int(steps, "--steps"),
            "particles": base["particles"] if particles is None else positive_int(particles, "--particles"),
            "lr": base["lr"] if lr is None else positive(lr, "--lr")}


@dataclass(frozen=True)
class PosteriorConfig:
    """One ``svilab posterior`` run.

    :ivar guides: guides to fit, in order.
    :ivar svi: per guide its schedule ``{"steps", "particles", "lr"}`` (``lr`` None on a user's model:
        :data:`USER_LR` by the start).
    :ivar init: the start (``laplace``, ``pathfinder`` or an init strategy; None: each Poisson-Gamma guide's
        own).
    :ivar precondition: with a Laplace start, fit ``lognormal``, ``mvn`` and ``flow`` in the coordinates it
        whitens (:mod:`svilab.guides.whitened`).
    :ivar nuts_settings: ``num_samples``, ``warmup_steps``, ``num_chains``, ``time_limit`` (seconds, or None).
    :ivar model: the model's own configuration (``model.config()``); ``user`` when it is a ``--model``.
    :ivar flow: the flow's ``hidden_dims`` (None: sized from the latent dimension) and ``num_transforms``.
    :ivar batch_size: rows per SVI step of a ``--model`` that subsamples (passed as ``subsample_size``; None:
        all rows); every evaluation uses all rows (:mod:`svilab.inference.subsample`).
    :ivar log_likelihood: keep the pointwise log-likelihood in the draws and InferenceData.
    :ivar pathfinder: also run multi-path Pathfinder (``--model``), with ``pathfinder_settings``.
    :ivar neutra: run NUTS in the coordinates of the fitted flow guide (NeuTra, :mod:`svilab.inference.neutra`).
    """

    guides: tuple[str, ...]
    svi: dict
    loss: str = "trace_elbo"
    alpha: float | None = None
    seed: int = 0
    init: str | None = None
    precondition: bool = True
    draws: int = 4000
    elbo_samples: int = 100_000
    nuts: bool = False
    nuts_settings: dict = field(default_factory=lambda: {"num_samples": 500, "warmup_steps": 300, "num_chains": 4,
                                                                  "time_limit": None})
    reference: str | None = None
    max_error: float = 0.5
    user: bool = False
    model: dict = field(default_factory=dict)
    flow: dict = field(default_factory=lambda: {"hidden_dims": None, "num_transforms": 1})
    batch_size: int | None = None
    log_likelihood: bool = True
    pathfinder: bool = False
    pathfinder_settings: dict = field(default_factory=lambda: {"num_paths": 4, "draws_per_iter": 20})
    neutra: bool = False

    @classmethod
    def for_model(cls, model, *, guides=None, loss: str = "trace_elbo", alpha: float | None = None, seed: int = 0,
                  init: str | None = None, steps: int | None = None, particles: int | None = None,
                  lr: float | None = None, draws: int = 4000, elbo_samples: int = 100_000, nuts: bool = False,
                  nuts_samples: int = 500, nuts_warmup: int = 300, chains: int = 4, reference: str | None = None,
                  max_error: float = 0.5, precondition: bool = True, flow_hidden=None,
                  flow_layers: int | None = None, batch_size: int | None = None,
                  log_likelihood: bool = True, pathfinder: bool = False, pathfinder_paths: int = 4,
                  pathfinder_draws: int = 20, time_limit: float | None = None,
                  neutra: bool = False) -> PosteriorConfig:
        """The configuration for ``model`` (a ``PoissonGamma`` or a ``UserModel``) with these options,
        every default filled in and every option checked (the messages name the command-line option)."""
        from svilab.models.user import UserModel

        user = isinstance(model, UserModel)
        names = [guide_name(g) for g in (guides or default_guides(user))]
        if len(set(names)) != len(names):
            raise ValueError(f"--guides: {', '.join(g for g in names if names.count(g) > 1)} given twice")
        loss = command_loss(loss, "posterior").name
        if loss == "renyi":
            if min(settings(g, steps, particles, lr, user)["particles"] for g in names) < 2:
                raise ValueError("--loss renyi needs --particles >= 2")
            if alpha is not None and not (math.isfinite(alpha) and alpha != 1):
                raise ValueError(f"--alpha must be a finite number other than 1 for --loss renyi, got {alpha}")
            alpha = 0.5 if alpha is None else alpha      # the command's default since 0.1 (Pyro's is 0)
        elif alpha is not None:
            raise ValueError(f"--alpha applies to --loss renyi only, not to {loss}")
        if init is not None:
            init = choice(init, [*GAUSSIAN_STARTS, *INIT_STRATEGIES], "--init")
            if init in GAUSSIAN_STARTS and not user:
                raise ValueError(f"--init {init} needs --model (the Poisson-Gamma guides have their own starts)")
        if not precondition and not (user and (init or "laplace") in GAUSSIAN_STARTS):
            raise ValueError("--no-precondition applies to --model with a Gaussian start (--init laplace or "
                             "pathfinder)")
        if reference is not None and not user:
            raise ValueError("--reference needs --model (the Poisson-Gamma model is compared with its exact posterior)")
        check_memory(6 * 8 * elbo_samples, f"--elbo-samples {elbo_samples}")
        if (flow_hidden is not None or flow_layers is not None) and "flow" not in names:
            raise ValueError("--flow-hidden and --flow-layers shape the flow guide; --guides has no flow")
        if time_limit is not None:
            if not nuts:
                raise ValueError("--time-limit limits NUTS; give --nuts too")
            time_limit = positive(time_limit, "--time-limit")
        if neutra:
            if not user:
                raise ValueError("--neutra needs --model (NUTS on the Poisson-Gamma model needs no reparameterisation)")
            if not nuts:
                raise ValueError("--neutra runs NUTS in the flow guide's coordinates; give --nuts too")
            if "flow" not in names:
                raise ValueError("--neutra runs NUTS in the coordinates of the fitted flow guide; --guides has no flow")
        if pathfinder and not user:
            raise ValueError("--pathfinder needs --model (the Poisson-Gamma model has its exact posterior)")
        pf = {"num_paths": positive_int(pathfinder_paths, "--pathfinder-paths"),
              "draws_per_iter": positive_int(pathfinder_draws, "--pathfinder-draws", minimum=2)}
        if batch_size is not None:
            if not user:
                raise ValueError("--batch-size needs --model (a model that subsamples its data plate)")
            batch_size = positive_int(batch_size, "--batch-size")
        flow = {"hidden_dims": None if flow_hidden is None else [positive_int(h, "--flow-hidden") for h in flow_hidden],
                "num_transforms": 1 if flow_layers is None else positive_int(flow_layers, "--flow-layers")}
        return cls(
            guides=tuple(names), svi={g: settings(g, steps, particles, lr, user) for g in names}, loss=loss,
            alpha=alpha, seed=seed, init=(init or "laplace") if user else init, precondition=bool(precondition),
            draws=positive_int(draws, "--draws", minimum=2),    # a posterior sd needs two draws
            elbo_samples=positive_int(elbo_samples, "--elbo-samples", minimum=2),   # an SE needs 2
            nuts=bool(nuts),
            nuts_settings={"num_samples": positive_int(nuts_samples, "--nuts-samples", minimum=4),   # R-hat
                           "warmup_steps": positive_int(nuts_warmup, "--nuts-warmup", minimum=0),
                           "num_chains": positive_int(chains, "--chains"), "time_limit": time_limit},
            reference=reference, max_error=positive(max_error, "--max-error"), user=user, model=model.config(),
            flow=flow, batch_size=batch_size, log_likelihood=bool(log_likelihood), pathfinder=bool(pathfinder),
            pathfinder_settings=pf, neutra=bool(neutra))

    def as_dict(self) -> dict:
        """``config.json``: the command, every setting and the model's configuration."""
        extra = {"reference": self.reference, "max_error": self.max_error, "init": self.init,
                 "precondition": self.precondition, "batch_size": self.batch_size,
                 "log_likelihood": self.log_likelihood, "pathfinder": self.pathfinder, "neutra": self.neutra,
                 **({"pathfinder_settings": self.pathfinder_settings} if self.pathfinder else {})
                 } if self.user else {"init": self.init}
        return {"command": "posterior", "guides": list(self.guides), "loss": self.loss, "alpha": self.alpha,
                "seed": self.seed, **extra, "svi": self.svi, "draws": self.draws, "elbo_samples": self.elbo_samples,
                "nuts": self.nuts, "nuts_settings": self.nuts_settings,
                **({"flow": self.flow} if "flow" in self.guides else {}), **self.model}



@dataclass
class GuideFit:
    """One guide fitted and evaluated (:func:`fit_and_evaluate`): the SVI run, the Monte Carlo ELBO
    with its Pareto k-hat, the draws' InferenceData and every diagnostic that failed."""

    result: object          # svilab.inference.svi.FitResult (the partial one for a diverged run)
    elbo: object            # svilab.inference.summaries.ELBOEstimate
    idata: object           # arviz.InferenceData
    warnings: list[str]


def fit_and_evaluate(model, guide, name: str, config: PosteriorConfig, cfg: dict, lr: float, jit: bool,
                     max_plate_nesting: int, sites=None, fit_model=None) -> GuideFit:
    """What both models do for a guide: SVI with ``cfg``'s schedule (lr decayed 40x; a diverged run keeps
    its last finite parameters and says so), then from the fitted guide the ELBO with its standard
    error and Pareto k-hat (``config.elbo_samples`` draws), ``config.draws`` draws with their importance
    weights for the InferenceData, and the warnings: k-hat, the importance-sampling check of the means,
    divergence or non-convergence. ``fit_model``: the model SVI steps on (a subsampling one), if not
    ``model``; the evaluation is always on ``model``."""
    from svilab.inference.evaluate import evaluate_guide
    from svilab.inference.svi import DivergenceError, fit

    try:
        result = fit(model if fit_model is None else fit_model, guide, loss=config.loss, alpha=config.alpha,
                     steps=cfg["steps"], num_particles=cfg["particles"], lr=lr, lr_final=lr / 40, jit=jit,
                     max_plate_nesting=max_plate_nesting, seed=config.seed, description=f"SVI {name}")
        outcome = result
    except DivergenceError as exc:
        result, outcome = exc.result, exc
    check = evaluate_guide(model, guide, fit=outcome, draws=config.draws, elbo_samples=config.elbo_samples,
                           seed=config.seed + 1, sites=sites, warn=False, log_likelihood=config.log_likelihood)
    # the order of the warnings as before: k-hat, importance check, then the fit's
    return GuideFit(result, check.elbo, check.idata, check.warnings)


def run_methods(config: PosteriorConfig, fit_one, nuts_one, reporter, describe_fit, describe_nuts,
                pathfinder_one=None, describe_pathfinder=None):
    """The loop both models share: fit every guide of ``config`` (``fit_one(name, schedule) ->
    (MethodResult, loss history)``), then NUTS when asked (``nuts_one() -> MethodResult``), one line
    each (``describe_fit(name, schedule, method)``, ``describe_nuts(method)``); Pathfinder likewise, first,
    when the configuration asks for it.

    A guide whose fit cannot be evaluated (a ``ValueError`` other than the model's own vectorization
    error, e.g. parameters that ran away to invalid values under a huge ``--lr``) is left out with a
    ``warning: <guide>: ...`` line on stderr, and the other methods go on; when nothing is left the
    run stops with that error. Returns the methods, the loss histories by guide and ``{guide: error}``."""
    from svilab.inference.draws import VectorizationError

    methods, histories, failed = [], {}, {}
    if getattr(config, "pathfinder", False) and pathfinder_one is not None:
        try:
            method = pathfinder_one()
        except ValueError as exc:
            failed["pathfinder"] = str(exc)
            print(f"warning: pathfinder: left out of the comparison: {exc}", file=sys.stderr)
        else:
            methods.append(method)
            reporter.say(describe_pathfinder(method))
    for name in config.guides:
        cfg = config.svi[name]
        try:
            method, history = fit_one(name, cfg)
        except VectorizationError:
            raise
        except ValueError as exc:
            failed[name] = str(exc)
            print(f"warning: {name}: left out of the comparison: {exc}", file=sys.stderr)
            continue
        methods.append(method)
        histories[name] = history
        reporter.say(describe_fit(name, cfg, method))
    if config.nuts:
        try:
            method = nuts_one()
        except ValueError as exc:
            if not methods:
                raise
            failed["nuts"] = str(exc)
            print(f"warning: nuts: left out of the comparison: {exc}", file=sys.stderr)
        else:
            methods.append(method)
            reporter.say(describe_nuts(method))
    if not methods:
        raise ValueError(f"no method could be evaluated: {'; '.join(f'{k}: {v}' for k, v in failed.items())}")
    return methods, histories, failed


__all__ = ["GAUSSIAN_STARTS", "USER_LR", "GuideFit", "PosteriorConfig", "default_guides", "fit_and_evaluate",
           "guide_options",
           "run_methods", "settings"]
