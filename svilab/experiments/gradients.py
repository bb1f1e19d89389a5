"""``svilab elbo`` and ``svilab gradients``: the Monte Carlo ELBO and gradient estimators of the
exercise notebook, done properly, swept over M and checked against the exact values."""

from __future__ import annotations

import argparse
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from svilab.experiments.common import Reporter, add_model_args, add_run_args, model_from_args, run_folder
from svilab.experiments.runs import RunFolder
from svilab.inference.estimators import GRADIENT_ESTIMATORS, PARAM_NAMES, Target, estimate, get_estimator
from svilab.inference.exact_elbo import exact_elbo_and_grad
from svilab.models.poisson_gamma import PoissonGamma
from svilab.validation import parse_floats, positive_int

NOTEBOOK_POINT = (5.0, 0.5, 1.0, 0.2)
DEFAULT_POINTS = {"normal": NOTEBOOK_POINT, "lognormal": (1.55, 0.1, -0.1, 0.2)}


def _point(args) -> tuple[float, ...]:
    if args.point is None:
        return DEFAULT_POINTS[args.family]
    return tuple(parse_floats(args.point, "--point", 4))


def _check_common(Ms, reps):
    Ms = [positive_int(m, "M") for m in Ms]
    reps = positive_int(reps, "--reps", 2)
    return Ms, reps


# ---------------------------------------------------------------------------------------- elbo
def run_elbo(model: PoissonGamma, family: str, point, Ms, reps: int, seed: int,
             folder: RunFolder, reporter: Reporter) -> dict:
    Ms, reps = _check_common(Ms, reps)
    target = Target.from_poisson_gamma(model)
    exact, _ = exact_elbo_and_grad(target, family, point)
    gen = torch.Generator().manual_seed(seed)
    rows, samples = [], {}
    for M in Ms:
        v = estimate("elbo", target, family, point, M, reps, generator=gen)
        samples[M] = v.numpy()
        mean, sd = v.mean().item(), v.std().item()
        se = sd / math.sqrt(reps)
        rows.append({"M": M, "mean": mean, "std": sd, "se": se, "exact": exact,
                     "bias/se": (mean - exact) / se})
    df = pd.DataFrame(rows).set_index("M")
    folder.write_table("elbo", df)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.boxplot([samples[M] for M in Ms], positions=range(1, len(Ms) + 1))
    ax.axhline(exact, color="tab:red", lw=1.5, label=f"exact ELBO = {exact:.4f}")
    ax.set_xticks(range(1, len(Ms) + 1), [str(M) for M in Ms])
    ax.set_xlabel("M (samples per estimate)")
    ax.set_ylabel("ELBO estimate")
    ax.set_title(f"Monte Carlo ELBO estimator, {reps} repetitions per M ({family} guide at {point})")
    ax.legend()
    folder.save_figure(fig, "elbo_boxplot")
    reporter.table(f"Monte Carlo ELBO estimate ({family} guide at {point}, {reps} repetitions)", df)
    return {"point": dict(zip(PARAM_NAMES, point, strict=True)), "family": family, "exact": {"elbo": exact},
            "results": [{"M": int(M), **{k: r[k] for k in ("mean", "std", "se")}}
                        for M, r in zip(Ms, rows, strict=True)]}


# ----------------------------------------------------------------------------------- gradients
def run_gradients(model: PoissonGamma, family: str, point, estimators, Ms, reps: int, seed: int,
                  folder: RunFolder, reporter: Reporter, boxplots: bool = True) -> dict:
    Ms, reps = _check_common(Ms, reps)
    estimators = [get_estimator(e).name for e in estimators]
    for e in estimators:
        if get_estimator(e).is_value:
            raise ValueError(f"{e!r} estimates the ELBO value, not its gradient; use `svilab elbo`")
        bad = [M for M in Ms if M < get_estimator(e).min_samples]
        if bad:
            raise ValueError(f"estimator {e!r} needs M >= {get_estimator(e).min_samples}, got {bad}")
    target = Target.from_poisson_gamma(model)
    exact_elbo, exact_grad = exact_elbo_and_grad(target, family, point)
    exact_grad = exact_grad.numpy()
    estimate("reparam", target, family, point, 10, 10)          # warm-up, so timings are fair
    gen = torch.Generator().manual_seed(seed)
    results, long_rows, draws = [], [], {}
    for name in estimators:
        for M in Ms:
            t0 = time.perf_counter()
            g = estimate(name, target, family, point, M, reps, generator=gen).numpy()
            secs = (time.perf_counter() - t0) / reps
            draws[name, M] = g
            mean, sd = g.mean(0), g.std(0, ddof=1)
            se = sd / math.sqrt(reps)
            var = sd**2
            results.append({"estimator": name, "M": M,
                            "mean": dict(zip(PARAM_NAMES, mean.tolist(), strict=True)),
                            "std": dict(zip(PARAM_NAMES, sd.tolist(), strict=True)),
                            "bias_se": dict(zip(PARAM_NAMES, ((mean - exact_grad) / se).tolist(), strict=True)),
                            "variance": dict(zip(PARAM_NAMES, var.tolist(), strict=True)),
                            "seconds": secs})
            for k, pname in enumerate(PARAM_NAMES):
                long_rows.append({"estimator": name, "M": M, "param": pname, "mean": mean[k],
                                  "std": sd[k], "exact": exact_grad[k],
                                  "bias/se": (mean[k] - exact_grad[k]) / se[k], "variance": var[k],
                                  "seconds": secs, "variance x seconds": var[k] * secs})
    long = pd.DataFrame(long_rows)
    folder.write_table("gradients_long", long.set_index(["estimator", "M", "param"]))
    exact_row = pd.DataFrame([exact_grad], columns=list(PARAM_NAMES), index=["exact"])
    folder.write_table("exact_gradient", exact_row)
    reporter.table(f"Exact ELBO gradient by quadrature ({family} guide at {point}); ELBO = {exact_elbo:.6f}",
                   exact_row)
    for name in estimators:
        sub = long[long.estimator == name]
        wide = _notebook_table(sub)
        folder.write_table(f"gradients_{name}", wide)
        reporter.table(f"{name}: mean and std of each gradient component over {reps} repetitions; "
                       f"bias/se = (mean - exact) / standard error", wide, floatfmt=".4g")
    eff = long.pivot_table(index=["estimator"], columns=["param"], values="variance x seconds",
                           aggfunc="median")[list(PARAM_NAMES)]
    folder.write_table("work_normalised_variance", eff)
    reporter.table("Work-normalised variance (variance x seconds per estimate; median over M; lower is better)",
                   eff, floatfmt=".3g")
    if boxplots:
        for name in estimators:
            folder.save_figure(_boxplots(name, Ms, draws, exact_grad, reps), f"boxplots_{name}")
    folder.save_figure(_variance_plot(long, estimators), "variance_vs_M")
    return {"point": dict(zip(PARAM_NAMES, point, strict=True)), "family": family,
            "exact": {"elbo": exact_elbo, "grad": dict(zip(PARAM_NAMES, exact_grad.tolist(), strict=True))},
            "results": results}


def _notebook_table(sub: pd.DataFrame) -> pd.DataFrame:
    cols = {}
    for pname in PARAM_NAMES:
        s = sub[sub.param == pname].set_index("M")
        cols[f"mean({pname})"] = s["mean"]
        cols[f"std({pname})"] = s["std"]
        cols[f"bias/se({pname})"] = s["bias/se"]
    wide = pd.DataFrame(cols)
    wide["ms/estimate"] = sub[sub.param == PARAM_NAMES[0]].set_index("M")["seconds"] * 1e3
    return wide


def _boxplots(name, Ms, draws, exact_grad, reps):
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    layout = {0: (0, 0), 1: (1, 0), 2: (0, 1), 3: (1, 1)}       # the notebook's arrangement
    for k, pname in enumerate(PARAM_NAMES):
        ax = axes[layout[k]]
        ax.boxplot([draws[name, M][:, k] for M in Ms], positions=range(1, len(Ms) + 1), showfliers=False)
        ax.axhline(exact_grad[k], color="tab:red", lw=1.2, label="exact gradient")
        ax.set_xticks(range(1, len(Ms) + 1), [str(M) for M in Ms])
        ax.set_xlabel("M (samples per estimate)")
        ax.set_ylabel(f"dELBO / d{pname}")
        ax.legend(fontsize=8)
    fig.suptitle(f"{name}: gradient estimates over {reps} repetitions (whiskers 1.5 IQR, outliers hidden)")
    fig.tight_layout()
    return fig


def _variance_plot(long: pd.DataFrame, estimators):
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6), sharex=True)
    for k, pname in enumerate(PARAM_NAMES):
        ax = axes[k]
        for name in estimators:
            s = long[(long.estimator == name) & (long.param == pname)]
            ax.loglog(s["M"], s["variance"], "o-", label=name, ms=4)
        Ms = np.array(sorted(long.M.unique()), dtype=float)
        ref = long[(long.param == pname) & (long.M == Ms[0])]["variance"].max()
        ax.loglog(Ms, ref * Ms[0] / Ms, "k:", lw=1, label="slope -1 (1/M)")
        ax.set_title(f"Var of dELBO/d{pname}")
        ax.set_xlabel("M")
        if k == 0:
            ax.set_ylabel("variance over repetitions")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Estimator variance against M (parallel to the dotted line: the Monte Carlo 1/M rate)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- CLI
def _common(p):
    add_model_args(p)
    p.add_argument("--family", choices=["normal", "lognormal"], default="normal",
                   help="mean-field guide: Normal truncated to (0, inf), or LogNormal")
    p.add_argument("--point", default=None, metavar="MU_U,SIGMA_U,MU_V,SIGMA_V",
                   help="guide parameters (default: the notebook's 5,0.5,1,0.2 for normal)")
    p.add_argument("--reps", type=int, default=1000, help="repetitions per M")
    add_run_args(p)


def register(sub) -> None:
    p = sub.add_parser("elbo", help="Monte Carlo ELBO estimator swept over M, against the exact ELBO",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--M", type=int, nargs="+", default=[5, 10, 100, 1000], help="samples per estimate")
    _common(p)
    p.set_defaults(func=main_elbo)
    p = sub.add_parser("gradients", help="ELBO gradient estimators swept over M, against the exact gradient",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--estimators", nargs="+", default=list(GRADIENT_ESTIMATORS),
                   help=f"any of: {', '.join(GRADIENT_ESTIMATORS)}")
    p.add_argument("--M", type=int, nargs="+", default=[5, 10, 100, 1000, 10000], help="samples per estimate")
    p.add_argument("--no-boxplots", action="store_true", help="skip the per-estimator boxplot figures")
    _common(p)
    p.set_defaults(func=main_gradients)


def _config(args, command):
    return {"command": command, **{k: v for k, v in vars(args).items() if k != "func"}}


def _main(args, command: str, run) -> int:
    """Shared body of both commands: model, run folder, config, run, results, JSON."""
    model = model_from_args(args)
    reporter = Reporter(args.json)
    point = _point(args)
    folder = run_folder(args, command)
    folder.write_config({**_config(args, command), "point": point, **model.config()})
    res = run(model, point, folder, reporter)
    folder.write_results(res)
    reporter.say(f"\nRun folder: {folder}")
    reporter.emit_json(res)
    return 0


def main_elbo(args) -> int:
    return _main(args, "elbo", lambda model, point, folder, reporter: run_elbo(
        model, args.family, point, args.M, args.reps, args.seed, folder, reporter))


def main_gradients(args) -> int:
    return _main(args, "gradients", lambda model, point, folder, reporter: run_gradients(
        model, args.family, point, args.estimators, args.M, args.reps, args.seed, folder, reporter,
        boxplots=not args.no_boxplots))
