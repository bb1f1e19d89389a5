"""``svilab posterior --model FILE.py[:FUNC] --data DATA.json [--reference DRAWS.json]``: the
guides (and NUTS) on a model the user wrote, compared with reference draws when given.

For each guide: SVI from Stan's initialisation (Uniform(-2, 2) on the unconstrained scale), then
from one set of importance weights the ELBO with its standard error and Pareto k-hat, draws from the
guide (latent and deterministic sites, pointwise log-likelihood), an ArviZ InferenceData and
``az.summary``; diagnostics (Pareto k-hat, convergence of the loss; for NUTS divergences, R-hat,
ESS; against a reference the mean error in reference sds and the sd ratio) become warnings in the
table, the JSON and stderr.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import pyro
import torch

from svilab.experiments.common import Reporter
from svilab.experiments.posterior_config import (
    GAUSSIAN_STARTS,
    USER_LR,
    PosteriorConfig,
    fit_and_evaluate,
    guide_options,
)
from svilab.experiments.posterior_figures import figure_marginals_reference
from svilab.experiments.posterior_pipeline import (
    PosteriorResult,
    report_warnings,
    run_posterior,
    write_histories,
    write_posterior,
)
from svilab.experiments.runs import RunFolder
from svilab.guides import guide_name, guide_spec, make_guide
from svilab.inference.diagnostics import (
    mcmc_warnings,
    reference_warnings,
)
from svilab.inference.draws import flat_draws
from svilab.inference.losses import loss_spec
from svilab.inference.mcmc import run_nuts, stopped_text
from svilab.inference.reference import Reference, read_reference, worst_mean_error
from svilab.inference.sites import model_sites
from svilab.inference.summaries import (
    MethodResult,
    comparison_table,
    mcmc_inference_data,
    parameter_table,
    summary,
)
from svilab.models.user import UserModel, float64_default


def parameter_names(sites) -> set[str]:
    """Stan-style names of every scalar of the latent and deterministic sites."""
    shapes = {**{k: s.shape for k, s in sites.latent.items()}, **sites.deterministic}
    return set(flat_draws({k: np.zeros((1, *shape)) for k, shape in shapes.items()}))


#: precondition (whitened guides, NUTS started at the Laplace approximation) only when the Laplace precision's
#: condition number is at least this: study (d) in the README found whitening far better on sblrc (3.2e4) and
#: the raw-years regression (5e10), and worse on eight schools (295), where Adam in the raw coordinates is fine
PRECONDITION_MIN_CONDITION = 1e3


def preconditioned(config: PosteriorConfig, start) -> bool:
    """Whether the guides are whitened and NUTS starts at the Laplace approximation ``start``
    (``(target, approx)`` or None): asked for, usable, and ill-conditioned enough to need it."""
    return (start is not None and start[1].ok and config.precondition
            and start[1].condition_number >= PRECONDITION_MIN_CONDITION)


@contextlib.contextmanager
def model_errors(what: str):
    """An exception the user's model raises part-way (for some parameter values only: its first traces
    passed) becomes a ValueError naming it, so that the method is left out with a warning and the others
    go on, instead of a traceback that loses them."""
    from svilab.inference.draws import VectorizationError
    from svilab.inference.svi import DivergenceError

    try:
        yield
    except (ValueError, DivergenceError, VectorizationError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"{what}: the model raised {type(exc).__name__}: {first} (for some parameter values only: "
                         "its first runs passed)") from exc


def laplace_start(um: UserModel, sites, reporter: Reporter | None = None, config: PosteriorConfig | None = None):
    """The Laplace approximation the guides start from (:mod:`svilab.inference.laplace`), found from the
    centre of the unconstrained space; ``ok`` False when there is no usable mode, or when its D x D matrices
    would not fit svilab's memory budget (:func:`svilab.guides.sizing.laplace_bytes`: then it is not tried)."""
    from svilab.guides.sizing import laplace_bytes
    from svilab.inference.laplace import LaplaceApproximation, laplace
    from svilab.inference.potential import UnconstrainedTarget
    from svilab.memory import check_memory

    target = UnconstrainedTarget(um.model, sites)
    t0 = time.perf_counter()
    try:
        check_memory(laplace_bytes(target.dim), f"the {target.dim} x {target.dim} Hessian of the Laplace start")
    except ValueError as exc:
        approx = LaplaceApproximation(torch.zeros(target.dim), None, None, False, f"skipped: {exc}")
    else:
        try:
            approx = laplace(target, torch.zeros(target.dim, dtype=torch.float64))
        except (RuntimeError, ValueError) as exc:  # a model the Hessian cannot go through
            approx = LaplaceApproximation(torch.zeros(target.dim), None, None, False, f"failed: {exc}")
    if reporter is not None:
        reporter.say(f"Laplace start: {approx.message} ({time.perf_counter() - t0:.2f} s)" if approx.ok else
                     f"Laplace start not usable ({approx.message}): guides start from Stan's uniform init")
    return target, approx


def fit_user_guide(um: UserModel, name: str, cfg: dict, config: PosteriorConfig, sites, start=None,
                   keep: dict | None = None) -> tuple[MethodResult, np.ndarray]:
    """Fit one guide to the user's model and evaluate it (ELBO, Pareto k, draws, warnings); the fitted guide
    goes into ``keep[name]`` when ``keep`` is given (NeuTra runs NUTS in its coordinates).

    ``start``: ``(target, LaplaceApproximation)`` from :func:`laplace_start` when ``config.init`` is
    ``laplace``; guides whose :class:`~svilab.guides.GuideSpec` has ``laplace`` start there when it is usable."""
    pyro.clear_param_store()
    use_laplace = config.init in GAUSSIAN_STARTS and start is not None and start[1].ok and guide_spec(name).laplace
    whiten = use_laplace and preconditioned(config, start) and guide_name(name) in ("lognormal", "mvn", "flow")
    if whiten:
        from svilab.guides.whitened import whitened_guide

        guide = whitened_guide(name, um.model, start[1], **guide_options(name, config))
    else:
        guide = make_guide(name, um.model, init="uniform" if config.init in GAUSSIAN_STARTS else config.init,
                           **guide_options(name, config))
    if use_laplace and not whiten:
        from svilab.inference.laplace import start_guide_at

        with pyro.poutine.block(), torch.no_grad():
            guide()
        start_guide_at(guide, start[1], start[0])
    lr = cfg["lr"] if cfg["lr"] is not None else USER_LR["laplace" if use_laplace else "other"]
    if cfg["lr"] is None and use_laplace and not whiten and config.batch_size is not None:
        # minibatch steps are noisy: from a Laplace start Adam's steps (about lr per coordinate) must stay well
        # below the posterior sds, which shrink like 1/sqrt(N) (2M rows: 0.002, a fifth of the default 0.01)
        lr = min(lr, 0.1 * float(start[1].cov.diagonal().sqrt().min()))
    jit = (guide_spec(name).jit and loss_spec(config.loss).jit and getattr(guide, "jit_compatible", True)
           and config.batch_size is None)              # each step's rows are drawn in Python: eager
    fit_model = None
    if config.batch_size is not None:
        from svilab.inference.subsample import with_batch_size

        fit_model = with_batch_size(um.model, config.batch_size)
    with model_errors(f"fitting {name}"):
        f = fit_and_evaluate(um.model, guide, name, config, cfg, lr, jit, sites.max_plate_nesting, sites=sites,
                             fit_model=fit_model)
    elbo, result = f.elbo, f.result
    method = MethodResult(name, f.idata, elbo=elbo.value, elbo_se=elbo.se,
                          elbo_method=f"Monte Carlo (n={elbo.num_samples})", seconds=result.seconds,
                          pareto_k=elbo.pareto_k, warnings=f.warnings,
                          extra={"steps": result.steps_done, "particles": cfg["particles"], "lr": lr,
                                 "gradient_evals": result.steps_done * cfg["particles"],
                                 "start": (f"{config.init}, whitened" if whiten else config.init) if use_laplace
                                 else ("uniform" if config.init in GAUSSIAN_STARTS else config.init),
                                 "final_loss": result.final_loss if len(result.history) else None})
    if keep is not None:
        keep[name] = guide
    return method, result.history


def pathfinder_start(um: UserModel, sites, reporter: Reporter | None, config: PosteriorConfig):
    """Pathfinder's best Gaussian (:mod:`svilab.inference.pathfinder`, ``config.pathfinder_settings``) as the
    start, in the form of the Laplace start (:func:`laplace_start`): where the posterior has no mode (a
    funnel) or its Hessian is not usable, a Gaussian fitted by its ELBO along the L-BFGS path still is."""
    from svilab.inference.laplace import LaplaceApproximation, condition_number
    from svilab.inference.pathfinder import pathfinder
    from svilab.inference.potential import UnconstrainedTarget

    target = UnconstrainedTarget(um.model, sites)
    t0 = time.perf_counter()
    s = config.pathfinder_settings
    try:
        r = pathfinder(target, num_paths=s["num_paths"], num_draws=100, draws_per_iter=s["draws_per_iter"],
                       seed=config.seed)
        precision = torch.cholesky_inverse(torch.linalg.cholesky(r.cov))
        cond = condition_number(precision)
        approx = LaplaceApproximation(
            r.loc, r.cov, 0.5 * (precision + precision.T), True,
            f"Pathfinder's best Gaussian ({r.message}, {r.gradient_evals} gradient evaluations; condition number "
            f"{cond:.3g})", r.elbo, cond)
    except (RuntimeError, ValueError) as exc:
        approx = LaplaceApproximation(torch.zeros(target.dim), None, None, False, f"failed: {exc}")
    if reporter is not None:
        reporter.say(f"Pathfinder start: {approx.message} ({time.perf_counter() - t0:.2f} s)" if approx.ok else
                     f"Pathfinder start not usable ({approx.message}): guides start from Stan's uniform init")
    return target, approx


def run_user_pathfinder(um: UserModel, config: PosteriorConfig, sites) -> MethodResult:
    """Multi-path Pathfinder (:mod:`svilab.inference.pathfinder`) on the user's model: its resampled draws as
    the method's InferenceData, the ELBO of its best Gaussian from ``config.elbo_samples`` draws, the Pareto
    k-hat of the pooled importance weights, and the gradient and density evaluations it cost."""
    from svilab.inference.diagnostics import pareto_k_warnings
    from svilab.inference.draws import replay_draws
    from svilab.inference.pathfinder import log_density, pathfinder
    from svilab.inference.potential import UnconstrainedTarget
    from svilab.inference.summaries import draws_inference_data

    target = UnconstrainedTarget(um.model, sites)
    t0 = time.perf_counter()
    s = config.pathfinder_settings
    with model_errors("Pathfinder"):
        r = pathfinder(target, num_paths=s["num_paths"], num_draws=config.draws, draws_per_iter=s["draws_per_iter"],
                       seed=config.seed)
        q = torch.distributions.MultivariateNormal(r.loc, r.cov)
        g = torch.Generator().manual_seed(config.seed + 7)
        n = config.elbo_samples
        z = r.loc + torch.randn(n, target.dim, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(r.cov).T
        w = log_density(target, z) - q.log_prob(z)
        draws = replay_draws(um.model, target.constrained(r.draws), sites=sites)
        if not config.log_likelihood:
            draws.log_likelihood = {}
    idata = draws_inference_data(draws, sites, 1, "Pathfinder (multi-path, Pareto-smoothed importance resampling)")
    return MethodResult("pathfinder", idata, elbo=float(w.mean()), elbo_se=float(w.std() / math.sqrt(n)),
                        elbo_method=f"Monte Carlo of the best Gaussian (n={n})", seconds=time.perf_counter() - t0,
                        pareto_k=r.pareto_k, warnings=pareto_k_warnings(r.pareto_k),
                        extra={"gradient_evals": r.gradient_evals, "density_evals": r.density_evals + n,
                               "paths": s["num_paths"], "usable": r.message, "iterations": r.iterations,
                               "best_iteration": r.best_iteration})


def run_user_nuts(um: UserModel, config: PosteriorConfig, sites, start=None, flow=None) -> MethodResult:
    """NUTS on the user's model. With a usable Laplace approximation (``start``) and ``config.precondition``,
    each chain starts at a draw from N(mode, 1.5^2 Sigma) and the dense mass matrix is Sigma, kept through
    warm-up (Pyro's re-estimate is shrunk towards 1e-3 I, which ruins posteriors with scales far below
    that); otherwise Stan's uniform init and the adapted mass matrix. With ``config.neutra``, NUTS runs in the
    coordinates of the fitted ``flow`` guide instead (:func:`svilab.inference.neutra.neutra_nuts`); without one
    (the flow was left out) on the model's own, with a warning saying so."""
    n = config.nuts_settings
    if config.neutra and flow is not None:
        from svilab.inference.neutra import neutra_nuts

        with model_errors("NUTS"):
            res = neutra_nuts(um.model, flow, num_samples=n["num_samples"], warmup_steps=n["warmup_steps"],
                              num_chains=n["num_chains"], seed=config.seed, max_plate_nesting=sites.max_plate_nesting,
                              time_limit=n.get("time_limit"))
        res.config["reparam"] = "neutra (flow)"
        return nuts_method(res)
    init = "uniform" if config.init in GAUSSIAN_STARTS else config.init  # NUTS adapts from Stan's init
    extra = {}
    if preconditioned(config, start):
        approx = start[1]
        g = torch.Generator().manual_seed(config.seed + 3)
        L = torch.linalg.cholesky(approx.cov)
        points = approx.loc + 1.5 * torch.randn(n["num_chains"], len(approx.loc), generator=g,
                                                dtype=torch.float64) @ L.T
        extra = {"inverse_mass_matrix": approx.cov, "initial_points": points, "adapt_mass_matrix": False}
    with model_errors("NUTS"):
        res = run_nuts(um.model, num_samples=n["num_samples"], warmup_steps=n["warmup_steps"],
                       num_chains=n["num_chains"], seed=config.seed, init=init,
                       max_plate_nesting=sites.max_plate_nesting, time_limit=n.get("time_limit"), **extra)
    method = nuts_method(res)
    if config.neutra:
        method.warnings.insert(0, "--neutra: the flow guide was left out of the comparison, so NUTS ran in the "
                                  "model's own coordinates")
    return method


def nuts_method(res) -> MethodResult:
    """The comparison row of a finished NUTS run, with its divergences, R-hat and ESS as warnings."""
    n = res.config
    idata = mcmc_inference_data(res)
    s = summary(idata)
    divergences = int(idata.sample_stats["diverging"].values.sum())
    warns = mcmc_warnings(s, divergences, n["num_chains"], n["num_samples"], n.get("tree_depth_hits"),
                          n.get("kept_iterations"), n.get("max_tree_depth", 10))
    if n.get("stopped"):
        warns.insert(0, stopped_text(n["stopped"]))
    return MethodResult("nuts", idata, seconds=res.seconds, warnings=warns,
                        extra={"divergences": divergences, "gradient_evals": n.get("gradient_evals"),
                               **({"reparam": n["reparam"]} if n.get("reparam") else {}),
                               "tree_depth_hits": n.get("tree_depth_hits"), "stopped": n.get("stopped"),
                               "max_r_hat": float(s["r_hat"].max()) if "r_hat" in s and n["num_chains"] > 1 else None,
                               "min_ess_bulk": float(s["ess_bulk"].min()) if "ess_bulk" in s else None})


def method_json(m: MethodResult, reference: Reference | None) -> dict:
    params = m.compare(reference) if reference is not None else \
        {k: {"mean": a, "sd": b} for k, (a, b) in m.mean_sd().items()}
    return {"name": m.name, "elbo": m.elbo, "elbo_se": m.elbo_se, "pareto_k": m.pareto_k, "warnings": m.warnings,
            "max_abs_mean_error_sd": worst_mean_error(params) if reference is not None else None,
            "params": params, "seconds": m.seconds, **({"details": m.extra} if m.extra else {})}


def check_user_model(um: UserModel):
    """Run the model once on its data (no sampling); one-line errors name the file. Returns its sites."""
    try:
        sites = model_sites(um.model)
    except Exception as exc:  # noqa: BLE001 - the user's code: one line naming the file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = " (no --data file was given)" if isinstance(exc, KeyError) and um.data_path is None else ""
        raise ValueError(f"model {um.path}:{um.func}: running it on the data failed: {type(exc).__name__}: "
                         f"{msg}{hint}") from exc
    if not sites.latent:
        raise ValueError(f"model {um.path}:{um.func}: it has no latent sample sites to infer")
    return sites


class UserProblem:
    """A user's model as a :class:`~svilab.experiments.posterior_pipeline.PosteriorProblem`: the Laplace (or
    Pathfinder) start, guides started and whitened there, NUTS preconditioned by it, Pathfinder as a method."""

    def __init__(self, um: UserModel, sites) -> None:
        self.um, self.sites = um, sites
        self.fitted: dict = {}            # the flow guide, kept for NeuTra

    def start(self, config, reporter):
        if config.init in GAUSSIAN_STARTS and (config.guides or (config.nuts and config.precondition)):
            return (laplace_start if config.init == "laplace" else pathfinder_start)(self.um, self.sites, reporter,
                                                                                      config)
        return None

    def fit(self, name, cfg, config, start):
        keep = self.fitted if config.neutra and guide_name(name) == "flow" else None
        return fit_user_guide(self.um, name, cfg, config, self.sites, start, keep)

    def nuts(self, config, start):
        return run_user_nuts(self.um, config, self.sites, start, self.fitted.get("flow"))

    def pathfinder(self, config):
        return run_user_pathfinder(self.um, config, self.sites)

    def describe_fit(self, name, cfg, m):
        return (f"fitted {name:9s} in {m.seconds:6.2f} s ({m.extra['steps']} steps x {cfg['particles']} particles, "
                f"lr {m.extra['lr']:g}, start {m.extra['start']}): ELBO {m.elbo:.4f} +- {m.elbo_se:.4f}, "
                f"Pareto k {m.pareto_k:.2f}")

    def describe_nuts(self, config, m):
        n = config.nuts_settings
        where = " (NeuTra: in the coordinates of the flow guide)" if m.extra.get("reparam") else ""
        return (f"NUTS{where}: "
                f"{n['num_chains']} chains x {n['num_samples']} draws in {m.seconds:.1f} s, "
                f"{m.extra['divergences']} divergences, "
                + (f"max R-hat {m.extra['max_r_hat']:.3f}" if m.extra["max_r_hat"] is not None
                   else "no R-hat (one chain)"))

    def describe_pathfinder(self, m):
        return (f"Pathfinder: {m.extra['usable']}, {m.extra['gradient_evals']} gradient evaluations, "
                f"{m.seconds:.2f} s: ELBO {m.elbo:.4f} +- {m.elbo_se:.4f}, Pareto k {m.pareto_k:.2f}")


class DrawsComparison:
    """Reference draws (or none) as the :class:`~svilab.experiments.posterior_pipeline.Comparison` of a
    user's model: each method's mean error in reference sds and sd ratio (warned beyond ``--max-error``),
    the comparison and per-parameter tables, the marginals against the reference's."""

    summary_vars = None
    log_evidence = None

    def __init__(self, um: UserModel, sites, names: list[str], reference: Reference | None) -> None:
        self.um, self.sites, self.names, self.reference = um, sites, names, reference

    def add_warnings(self, methods, config):
        if self.reference is not None:
            for m in methods:
                m.warnings += reference_warnings(m.compare(self.reference), config.max_error)

    def tables(self, result, folder, reporter):
        reference, methods = self.reference, result.methods
        table = comparison_table(methods, reference, per_parameter=len(self.names) <= 4)
        if "warnings" not in table:
            table["warnings"] = ""
        folder.write_table("comparison", table)
        params = parameter_table(methods, reference)
        folder.write_table("parameters", params)
        title = f"Posterior approximations of {self.um.name}" + (
            f" vs the reference draws ({reference.num_draws})" if reference is not None else "")
        reporter.table(title, table.drop(columns=["warnings"]))
        shown = params if reference is None else params[
            params.index.get_level_values("parameter").isin(reference.names)]
        reporter.table("Per parameter" + (" (mean error in reference sds, sd ratio; all parameters in "
                                          "parameters.csv)" if reference else ""), shown)

    def after_summary(self, method, table, reporter):
        pass

    def figures(self, result):
        reference = self.reference
        shown = [n for n in self.names if reference is None or n in reference.mean] or self.names
        return [(figure_marginals_reference(result.methods, reference.draws if reference is not None else None,
                                            shown), "posterior_marginals")]

    def trace_vars(self, result):
        return list(self.sites.latent)[:6], True

    def json(self, result):
        return {"model": f"{self.um.path}:{self.um.func}", "reference": result.config.reference,
                "methods": [method_json(m, self.reference) for m in result.methods]}


#: the result of :func:`run_user` (the one pipeline's)
UserPosteriorResult = PosteriorResult


def run_user(um: UserModel, config: PosteriorConfig, reporter: Reporter, reference: Reference | None = None,
             sites=None) -> PosteriorResult:
    """Fit every guide (and NUTS) to the user's model; the reference's warnings added when given: the one
    posterior pipeline (:func:`~svilab.experiments.posterior_pipeline.run_posterior`) with reference draws.
    Runs with float64 as torch's default dtype (as every user model here)."""
    with float64_default():
        sites = sites or check_user_model(um)
        if reference is None and config.reference:
            reference = read_reference(config.reference)
        names = sorted(parameter_names(sites))
        if reference is not None:
            reference.check_names(set(names), f"reference file {config.reference}")
        reporter.say(f"Model {um.path}:{um.func}: latent sites "
                     + ", ".join(f"{k}{list(s.shape) if s.shape else ''}" for k, s in sites.latent.items())
                     + (f"; deterministic {', '.join(sites.deterministic)}" if sites.deterministic else "")
                     + f"; observed {', '.join(sites.observed) or 'none'}")
        return run_posterior(UserProblem(um, sites), DrawsComparison(um, sites, names, reference), config, reporter)


def write_user(result: PosteriorResult, folder: RunFolder, reporter: Reporter) -> dict:
    """The comparison and per-parameter tables, summaries, InferenceData, figures and warnings of a
    user's model; returns the JSON (:func:`~svilab.experiments.posterior_pipeline.write_posterior`)."""
    return write_posterior(result, folder, reporter)


__all__ = ["DrawsComparison", "UserPosteriorResult", "UserProblem", "check_user_model", "laplace_start",
           "nuts_method", "parameter_names", "report_warnings", "run_user", "write_histories", "write_user"]
