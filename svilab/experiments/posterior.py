"""``svilab posterior``: SVI with several guides (and NUTS) on the Poisson-Gamma model, compared
with the exact posterior and mean-field CAVI.

For each guide: fit by SVI, then the ELBO (closed form for ``gamma``, quadrature for ``normal``,
Monte Carlo with its standard error otherwise), KL = log p(x) - ELBO, posterior moments from
guide draws, an ArviZ InferenceData and ``az.summary``. Writes the comparison table, one
``summary_<method>`` table per method, ``inference_data/<method>.nc`` and the figures.

Layers: :class:`~svilab.experiments.posterior_config.PosteriorConfig` (typed, checked) -> the one
pipeline of :mod:`svilab.experiments.posterior_pipeline` (:func:`run`: fits, NUTS, a
:class:`~svilab.experiments.posterior_pipeline.PosteriorResult`; :func:`write`: tables, InferenceData,
figures, warnings, the JSON) -> the argparse layer. This model is the pipeline's
:class:`PoissonGammaProblem` with the :class:`ExactComparison`; a ``--model`` is
:class:`~svilab.experiments.posterior_user.UserProblem` with reference draws or none.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.distributions as dist

from svilab.experiments.common import Reporter, add_model_args, add_run_args, model_from_args, run_folder
from svilab.experiments.loss_choice import command_losses
from svilab.experiments.posterior_config import (
    USER_LR,
    PosteriorConfig,
    default_guides,
    fit_and_evaluate,
    guide_options,
)
from svilab.experiments.posterior_figures import figure_joint, figure_marginals_exact
from svilab.experiments.posterior_pipeline import PosteriorResult, run_posterior, write_posterior
from svilab.experiments.posterior_user import (
    check_user_model,
    nuts_method,
    parameter_names,
    run_user,
    write_user,
)
from svilab.experiments.runs import RunFolder
from svilab.guides import GUIDE_SPECS, GUIDES, PositiveNormal, guide_spec, make_guide
from svilab.inference.cavi import GammaFactor, cavi
from svilab.inference.cavi import elbo as gamma_elbo
from svilab.inference.exact import ExactPosterior
from svilab.inference.init import INIT_STRATEGIES
from svilab.inference.losses import LOSSES, loss_spec
from svilab.inference.mcmc import run_nuts
from svilab.inference.reference import read_reference
from svilab.inference.summaries import (
    MethodResult,
    comparison_table,
)
from svilab.models.poisson_gamma import PoissonGamma
from svilab.models.user import UserModel, float64_default


def exact_guide_elbo(model: PoissonGamma, guide) -> tuple[float, str] | None:
    """The ELBO of a fitted guide without Monte Carlo, from its ``factors()``: closed form when every
    factor is a Gamma (the CAVI family), 2-D quadrature when every factor is a truncated Normal.
    None for other guides (no ``factors``, or other families)."""
    if not hasattr(guide, "factors"):
        return None
    f = guide.factors()
    if set(f) != {"u", "v"}:
        return None
    if all(isinstance(f[s], dist.Gamma) for s in "uv"):
        q = [GammaFactor(f[s].concentration.item(), f[s].rate.item()) for s in "uv"]
        return gamma_elbo(model, *q), "closed form"
    if all(isinstance(f[s], PositiveNormal) for s in "uv"):
        from svilab.inference.estimators.base import Target
        from svilab.inference.exact_elbo import exact_elbo

        params = [getattr(f[s], p).item() for s in "uv" for p in ("loc", "scale")]
        return float(exact_elbo(Target.from_poisson_gamma(model), "normal", params)), "quadrature"
    return None


def fit_guide(model: PoissonGamma, name: str, cfg: dict, config: PosteriorConfig) -> tuple[MethodResult, np.ndarray]:
    """Fit guide ``name`` and evaluate it (:func:`~svilab.experiments.posterior_config.fit_and_evaluate`),
    with the exact ELBO where the guide's family has one; returns the method row and the loss history."""
    pyro.clear_param_store()
    guide = make_guide(name, model.model, init=config.init, **guide_options(name, config))
    jit = guide_spec(name).jit and loss_spec(config.loss).jit
    f = fit_and_evaluate(model.model, guide, name, config, cfg, cfg["lr"], jit, max_plate_nesting=1)
    mc, result = f.elbo, f.result
    method = MethodResult(name, f.idata, seconds=result.seconds, pareto_k=mc.pareto_k, warnings=f.warnings,
                          extra={"steps": result.steps_done, "particles": cfg["particles"], "lr": cfg["lr"],
                                 "elbo_mc": mc.value, "elbo_mc_se": mc.se, "final_loss": result.final_loss})
    exact_value = exact_guide_elbo(model, guide)
    if exact_value is not None:
        method.elbo, method.elbo_se, method.elbo_method = exact_value[0], 0.0, exact_value[1]
    else:
        method.elbo, method.elbo_se, method.elbo_method = mc.value, mc.se, f"Monte Carlo (n={config.elbo_samples})"
    return method, result.history


class PoissonGammaProblem:
    """The Poisson-Gamma model as a :class:`~svilab.experiments.posterior_pipeline.PosteriorProblem`: each
    guide from its own start (:class:`~svilab.guides.GuideSpec`), the exact ELBO where its family has one,
    NUTS from Stan's uniform init; no Pathfinder (the exact posterior is known)."""

    def __init__(self, model: PoissonGamma, log_evidence: float) -> None:
        self.model, self.log_evidence = model, log_evidence

    def start(self, config, reporter):
        return None

    def fit(self, name, cfg, config, start):
        return fit_guide(self.model, name, cfg, config)

    def nuts(self, config, start):
        n = config.nuts_settings
        res = run_nuts(self.model.model, num_samples=n["num_samples"], warmup_steps=n["warmup_steps"],
                       num_chains=n["num_chains"], seed=config.seed, init=config.init or "uniform",
                       time_limit=n.get("time_limit"))
        return nuts_method(res)

    def pathfinder(self, config):
        return None

    def describe_fit(self, name, cfg, m):
        return (f"fitted {name:9s} in {m.seconds:5.2f} s ({cfg['steps']} steps x {cfg['particles']} particles): "
                f"ELBO {m.elbo:.5f} ({m.elbo_method}), KL {self.log_evidence - m.elbo:.5f}")

    def describe_nuts(self, config, m):
        n = config.nuts_settings
        return f"NUTS: {n['num_chains']} chains x {n['num_samples']} draws in {m.seconds:.1f} s"

    def describe_pathfinder(self, m):
        return ""


class ExactComparison:
    """The exact posterior of the Poisson-Gamma model (quadrature) and mean-field CAVI as the
    :class:`~svilab.experiments.posterior_pipeline.Comparison`: two extra rows, the KL column, the joint and
    marginal figures against the exact densities."""

    summary_vars = ["u", "v"]

    def __init__(self, model: PoissonGamma) -> None:
        self.model = model
        self.exact = ExactPosterior(model)
        self.cavi = cavi(model)
        self.log_evidence = self.exact.log_evidence
        q = self.cavi
        self.exact_row = MethodResult("exact", elbo=self.log_evidence, elbo_se=0.0, elbo_method="quadrature (log p(x))",
                                      moments={k: (self.exact.mean[k], self.exact.sd[k]) for k in ("u", "v")},
                                      corr=self.exact.corr)
        self.cavi_row = MethodResult("cavi", elbo=q.elbo, elbo_se=0.0, elbo_method="closed form",
                                     moments={"u": (q.q_u.mean, q.q_u.sd), "v": (q.q_v.mean, q.q_v.sd)}, corr=0.0)

    def add_warnings(self, methods, config):
        pass

    def tables(self, result, folder, reporter):
        rows = [self.exact_row, self.cavi_row, *result.methods]
        table = comparison_table(rows, self.exact_row.moments, self.log_evidence, ("u", "v"))
        table.insert(2, "ELBO method", [m.elbo_method for m in rows])
        folder.write_table("comparison", table)
        reporter.table(f"Posterior approximations vs the exact posterior ({self.model!r}, loss {result.config.loss})",
                       table.drop(columns=[c for c in table.columns if c.startswith("sd(") and "error" in c]))

    def after_summary(self, method, table, reporter):
        if method.name == "nuts":
            reporter.table("az.summary of NUTS", table)

    def figures(self, result):
        return [(figure_joint(self.exact, result.methods), "posterior_joint"),
                (figure_marginals_exact(self.exact, result.methods), "posterior_marginals")]

    def trace_vars(self, result):
        return ["u", "v"], False

    def json(self, result):
        log_evidence = self.log_evidence

        def row(m: MethodResult) -> dict:
            ms = m.mean_sd()
            return {"name": m.name, "elbo": m.elbo, "elbo_se": m.elbo_se,
                    "kl": None if m.elbo is None else log_evidence - m.elbo,
                    "u": {"mean": ms["u"][0], "sd": ms["u"][1]}, "v": {"mean": ms["v"][0], "sd": ms["v"][1]},
                    "corr": m.correlation(("u", "v")), "seconds": m.seconds, "pareto_k": m.pareto_k,
                    "warnings": m.warnings, **({"details": m.extra} if m.extra else {})}

        return {"log_evidence": log_evidence, "methods": [row(m) for m in result.methods],
                "exact": row(self.exact_row), "cavi": row(self.cavi_row)}


def run(model: PoissonGamma, config: PosteriorConfig, reporter: Reporter) -> PosteriorResult:
    """Fit every guide of ``config`` (and NUTS when asked), one line each: the one posterior pipeline
    (:func:`~svilab.experiments.posterior_pipeline.run_posterior`) with the exact comparison."""
    comparison = ExactComparison(model)
    return run_posterior(PoissonGammaProblem(model, comparison.log_evidence), comparison, config, reporter)


def write(result: PosteriorResult, folder: RunFolder, reporter: Reporter) -> dict:
    """The comparison table, summaries, InferenceData, figures and warnings; returns the JSON
    (:func:`~svilab.experiments.posterior_pipeline.write_posterior`)."""
    return write_posterior(result, folder, reporter)


def register(sub) -> None:
    p = sub.add_parser("posterior", help="SVI with several guides and NUTS vs the exact posterior",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p, user_model=True)
    p.add_argument("--reference", default=None, metavar="DRAWS.json",
                   help="with --model: reference posterior draws ({\"name[i]\": [values]} with Stan's 1-based "
                        "indices, or posteriordb's {\"draws\": {...}}) to compare every method with")
    g = p.add_argument_group("inference")
    g.add_argument("--guides", nargs="+", default=None, metavar="NAME",
                   help=f"guides to fit, from: {', '.join(GUIDES)} (default: all for the Poisson-Gamma model; "
                        f"{' '.join(default_guides(True))} for --model)")
    g.add_argument("--init", default=None, metavar="NAME",
                   help=f"initial values, from: laplace, pathfinder, {', '.join(INIT_STRATEGIES)}. laplace (the "
                        "default for --model): guides start at the Laplace approximation (L-BFGS mode and Hessian on "
                        "the unconstrained space; Stan's uniform init where there is no usable mode) and NUTS from "
                        "it when it is badly conditioned, else from uniform, Stan's Uniform(-2, 2) on the "
                        "unconstrained scale. pathfinder: the same from Pathfinder's best Gaussian (for posteriors "
                        "without a mode, such as funnels). Poisson-Gamma: each guide's own")
    g.add_argument("--precondition", action=argparse.BooleanOptionalAction, default=True,
                   help="with --model and the Laplace start, when the Laplace precision's condition number is at "
                        "least 1000: fit lognormal, mvn and flow in the coordinates the Laplace covariance whitens, "
                        "so that Adam's steps have the posterior's scale in every direction, and start NUTS at the "
                        "Laplace approximation (on by default; --no-precondition: never)")
    g.add_argument("--max-error", type=float, default=0.5,
                   help="with --reference: warn when a mean is more than this many reference sds off")
    g.add_argument("--flow-hidden", type=int, nargs="+", default=None, metavar="WIDTH",
                   help="hidden widths of the flow's autoregressive network, each >= the latent dimension D "
                        "(default: max(16, 2D) up to D = 100, D + 100 above)")
    g.add_argument("--flow-layers", type=int, default=None, help="spline layers of the flow (default 1)")
    g.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="--model only: rows per SVI step, passed to the model as subsample_size (write it as "
                        "def model(data, subsample_size=None) with pyro.plate('data', N, subsample_size=...)); "
                        "every evaluation uses all rows")
    g.add_argument("--log-likelihood", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the pointwise log-likelihood (draws x observations) in the draws and InferenceData")
    g.add_argument("--pathfinder", action="store_true",
                   help="--model only: also run multi-path Pathfinder (Zhang et al. 2022), a method in the table")
    g.add_argument("--pathfinder-paths", type=int, default=4, help="Pathfinder's L-BFGS paths")
    g.add_argument("--pathfinder-draws", type=int, default=20,
                   help="draws per L-BFGS iterate for Pathfinder's ELBO (the paper's K)")
    g.add_argument("--nuts", action="store_true", help="also run NUTS (the MCMC reference)")
    g.add_argument("--loss", default="trace_elbo",
                   help=f"SVI objective, from: {', '.join(command_losses('posterior'))}")
    g.add_argument("--alpha", type=float, default=None, help="Renyi alpha for --loss renyi (default 0.5)")
    g.add_argument("--steps", type=int, default=None,
                   help=f"SVI steps per guide (default: {_schedules('steps')})")
    g.add_argument("--particles", type=int, default=None,
                   help=f"Monte Carlo samples per step, vectorized (default: {_schedules('particles')})")
    g.add_argument("--lr", type=float, default=None,
                   help=f"initial Adam learning rate, decayed 40x over the run (default: {_schedules('lr')}; "
                        f"--model: {USER_LR['laplace']} after a Laplace start, {USER_LR['other']} otherwise)")
    g.add_argument("--draws", type=int, default=4000, help="posterior draws per guide for moments and ArviZ")
    g.add_argument("--elbo-samples", type=int, default=100_000, help="Monte Carlo samples for the final ELBO")
    g.add_argument("--nuts-samples", type=int, default=500, help="NUTS draws per chain")
    g.add_argument("--nuts-warmup", type=int, default=300, help="NUTS warm-up steps per chain")
    g.add_argument("--chains", type=int, default=4, help="NUTS chains")
    g.add_argument("--neutra", action="store_true",
                   help="--model: run NUTS in the coordinates of the fitted flow guide (neural transport, Hoffman et "
                        "al. 2019), where a funnel or a curved ridge is round; needs --nuts and the flow guide")
    g.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop NUTS after this many seconds and keep what it has: the chains that finished (or the "
                        "first chain's draws so far), with a warning saying where it stopped")
    add_run_args(p)
    p.set_defaults(func=main)


def _schedules(key: str) -> str:
    """The guides' default values of one SVI setting, for the help text (from their specs)."""
    def values(attr):
        got = {}
        for name, spec in GUIDE_SPECS.items():
            v = getattr(spec, attr)[key]
            if v is not None:
                got.setdefault(v, []).append(name)
        common = max(got, key=lambda v: len(got[v])) if got else None
        return "; ".join([f"{common:g}"] + [f"{v:g} for {', '.join(n)}" for v, n in got.items() if v != common])
    text = values("schedule")
    if key != "lr":
        text += f"; --model: {values('user_schedule')}"
    return text


def config_from_args(args: argparse.Namespace, model) -> PosteriorConfig:
    """The typed configuration of the command line (see :meth:`PosteriorConfig.for_model`)."""
    return PosteriorConfig.for_model(
        model, guides=args.guides, loss=args.loss, alpha=args.alpha, seed=args.seed, init=args.init,
        steps=args.steps, particles=args.particles, lr=args.lr, draws=args.draws, elbo_samples=args.elbo_samples,
        nuts=args.nuts, nuts_samples=args.nuts_samples, nuts_warmup=args.nuts_warmup, chains=args.chains,
        reference=args.reference, max_error=args.max_error, precondition=args.precondition,
        flow_hidden=getattr(args, "flow_hidden", None), flow_layers=getattr(args, "flow_layers", None),
        batch_size=getattr(args, "batch_size", None), log_likelihood=getattr(args, "log_likelihood", True),
        pathfinder=getattr(args, "pathfinder", False), pathfinder_paths=getattr(args, "pathfinder_paths", 4),
        pathfinder_draws=getattr(args, "pathfinder_draws", 20), time_limit=getattr(args, "time_limit", None),
        neutra=getattr(args, "neutra", False))


@dataclass
class Prepared:
    """Everything ``svilab posterior`` checks before it makes a run folder: the model, the typed
    configuration and, for a ``--model``, its sites and the reference draws."""

    model: object
    config: PosteriorConfig
    sites: object = None
    reference: object = None
    #: run-level warnings decided before the run (the pointwise log-likelihood left out for memory)
    warnings: list = field(default_factory=list)


def prepare(args: argparse.Namespace) -> Prepared:
    """The model and configuration of the command line, every file and option checked (one-line
    ValueErrors naming the option or file); nothing is run and no folder is made."""
    from svilab.guides.sizing import check_guide_memory
    from svilab.inference.sites import model_sites
    from svilab.memory import check_particles

    model = model_from_args(args)
    config = config_from_args(args, model)
    most = max(config.svi[g]["particles"] for g in config.guides)
    if not isinstance(model, UserModel):
        check_particles(model_sites(model.model), most, "--particles")
        return Prepared(model, config)
    with float64_default():
        sites = check_user_model(model)
        if config.batch_size is not None:     # the model takes subsample_size and uses it, B <= rows
            from svilab.inference.subsample import check_batch_size

            check_batch_size(config.batch_size, model.model, function=model.fn)
        check_particles(sites, most, "--particles")
        config, notes = _fit_log_likelihood(config, sites)
        if config.nuts:                      # the kept samples, replayed with every deterministic and log-lik value
            from svilab.memory import check_memory

            n = config.nuts_settings
            check_memory(_nuts_bytes(config, sites, config.log_likelihood),
                         f"NUTS's --chains {n['num_chains']} x --nuts-samples {n['num_samples']} draws of "
                         f"{sites.values_per_draw(config.log_likelihood):,} latent, deterministic and pointwise "
                         "log-likelihood values")
        for g in config.guides:   # a guide that cannot hold this dimension (or a flow narrower than D)
            check_guide_memory(g, sites.latent_dim, config.svi[g]["particles"],
                               flow_hidden=config.flow["hidden_dims"], flow_layers=config.flow["num_transforms"])
        reference = read_reference(args.reference) if args.reference else None
        if reference is not None:
            reference.check_names(parameter_names(sites), f"reference file {args.reference}")
    return Prepared(model, config, sites, reference, notes)


def _nuts_bytes(config: PosteriorConfig, sites, log_likelihood: bool) -> int:
    """Bytes of NUTS's kept draws replayed through the model (every latent, deterministic and, with
    ``log_likelihood``, pointwise log-likelihood value; twice: the samples and their InferenceData)."""
    n = config.nuts_settings
    return 2 * 8 * n["num_chains"] * n["num_samples"] * sites.values_per_draw(log_likelihood)


def _fit_log_likelihood(config: PosteriorConfig, sites) -> tuple[PosteriorConfig, list[str]]:
    """The pointwise log-likelihood (draws x observations numbers, for LOO/WAIC) left out, with a warning,
    where keeping it for the guides' --draws or NUTS's draws would not fit svilab's memory budget and
    leaving it out would (too big either way: the memory checks that follow refuse it with the amount);
    ``--no-log-likelihood`` leaves it out by choice. Decided before anything runs."""
    from svilab.inference.draws import draws_bytes
    from svilab.memory import format_bytes, memory_budget

    if not config.log_likelihood or not sites.observed:
        return config, []
    n = config.nuts_settings
    kept = max([config.draws] + ([n["num_chains"] * n["num_samples"]] if config.nuts else []))

    def need(log_likelihood: bool) -> int:          # the guides' draws and NUTS's, as the checks count them
        return max(draws_bytes(config.draws, sites, log_likelihood),
                   _nuts_bytes(config, sites, log_likelihood) if config.nuts else 0)

    budget = memory_budget()
    if need(True) <= budget or need(False) > budget:      # fits, or too big either way: the checks refuse it
        return config, []
    note = (f"the pointwise log-likelihood ({kept:,} draws x {sites.num_observed:,} observations, about "
            f"{format_bytes(need(True))} with the draws) would not fit svilab's memory budget of "
            f"{format_bytes(budget)}: left out of the InferenceData (no LOO/WAIC); fewer --draws/--nuts-samples "
            "keep it, --no-log-likelihood leaves it out without this warning")
    return dataclasses.replace(config, log_likelihood=False), [note]


def main(args: argparse.Namespace) -> int:
    p = prepare(args)
    model, config = p.model, p.config
    reporter = Reporter(args.json)
    folder = run_folder(args, "posterior")
    folder.write_config({**config.as_dict(), **({"warnings": p.warnings} if p.warnings else {})})
    for note in p.warnings:
        print(f"warning: {note}", file=sys.stderr)
    t0 = time.perf_counter()
    if isinstance(model, UserModel):
        with float64_default():
            results = write_user(run_user(model, config, reporter, reference=p.reference, sites=p.sites), folder,
                                 reporter)
    else:
        results = write(run(model, config, reporter), folder, reporter)
    results["seconds"] = time.perf_counter() - t0
    if p.warnings:
        results["warnings"] = p.warnings
    folder.write_results(results)
    reporter.say(f"\nRun folder: {folder}")
    reporter.emit_json(results)
    return 0


__all__ = ["LOSSES", "ExactComparison", "PoissonGammaProblem", "PosteriorConfig", "PosteriorResult", "Prepared",
           "fit_guide", "prepare", "register", "run", "write"]
