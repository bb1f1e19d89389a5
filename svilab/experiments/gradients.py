"""``svilab elbo`` and ``svilab gradients``: the Monte Carlo ELBO and gradient estimators of the
exercise notebook, done properly, swept over M and checked against the exact values."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

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
#: samples behind the reference gradient of a model with more than 2 latent dims
REFERENCE_SAMPLES = 2**20


@dataclass
class Lab:
    """What the estimators run on: a target, a family, a point, parameter names, the exact values.

    ``exact_grad_se`` is 0 for quadrature and the Monte Carlo standard error of the reference
    gradient (``REFERENCE_SAMPLES`` reparameterization samples) for models with more than 2 dims.
    """

    target: Target
    family: str
    point: tuple[float, ...]
    param_names: tuple[str, ...]
    exact_elbo: float
    exact_elbo_se: float
    exact_grad: np.ndarray
    exact_grad_se: np.ndarray
    exact_method: str


def exact_reference(target: Target, family: str, point, seed: int = 0, samples: int = REFERENCE_SAMPLES):
    """(elbo, elbo se, grad, grad se, method): quadrature for <= 2 dims, else a large-M Monte Carlo
    reference (reparameterization gradient, ``samples`` draws in 64 batches, with its standard error)."""
    if target.dim <= 2:
        elbo, grad = exact_elbo_and_grad(target, family, point)
        return elbo, 0.0, grad.numpy(), np.zeros(len(grad)), "quadrature"
    batches = 64
    m = max(1, samples // batches)
    g = estimate("reparam", target, family, point, m, batches, seed=seed + 10_007).numpy()
    v = estimate("elbo", target, family, point, m, batches, seed=seed + 20_011).numpy()
    return (float(v.mean()), float(v.std(ddof=1) / math.sqrt(batches)), g.mean(0),
            g.std(0, ddof=1) / math.sqrt(batches), f"Monte Carlo reference ({m * batches} reparameterization samples)")


def poisson_gamma_lab(model: PoissonGamma, family: str, point) -> Lab:
    target = Target.from_poisson_gamma(model)
    elbo, elbo_se, grad, grad_se, method = exact_reference(target, family, point)
    return Lab(target, family, tuple(point), PARAM_NAMES, elbo, elbo_se, grad, grad_se, method)


def user_lab(um, point_text: str | None, seed: int, reference_samples: int = REFERENCE_SAMPLES) -> Lab:
    """The estimators on a user model's unconstrained space with the mean-field ``gaussian`` family."""
    from svilab.experiments.posterior_user import check_user_model
    from svilab.inference.potential import UnconstrainedTarget

    target = UnconstrainedTarget(um.model, check_user_model(um))
    if point_text is None:
        point = tuple(v for _ in range(target.dim) for v in (0.0, 0.1))  # where AutoNormal starts SVI
    else:
        point = tuple(parse_floats(point_text, "--point", 2 * target.dim))
    names = tuple(f"{kind}[{n}]" for n in target.names for kind in ("loc", "scale"))
    elbo, elbo_se, grad, grad_se, method = exact_reference(target, "gaussian", point, seed, reference_samples)
    if not (np.isfinite(grad).all() and math.isfinite(elbo)):
        raise ValueError("the ELBO or its gradient is not finite at --point: the guide puts mass where the model "
                         "has none (try smaller scales)")
    return Lab(target, "gaussian", point, names, elbo, elbo_se, grad, grad_se, method)


def _point(args) -> tuple[float, ...]:
    if args.point is None:
        return DEFAULT_POINTS[args.family]
    return tuple(parse_floats(args.point, "--point", 4))


def _check_common(Ms, reps):
    Ms = [positive_int(m, "M") for m in Ms]
    reps = positive_int(reps, "--reps", 2)
    return Ms, reps


# ---------------------------------------------------------------------------------------- elbo
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def run_elbo(lab: Lab, Ms, reps: int, seed: int, folder: RunFolder, reporter: Reporter,
             dtype: torch.dtype = torch.float64) -> dict:
    Ms, reps = _check_common(Ms, reps)
    target, family, point, exact = lab.target, lab.family, lab.point, lab.exact_elbo
    gen = torch.Generator().manual_seed(seed)
    rows, samples = [], {}
    for M in Ms:
        v = estimate("elbo", target, family, point, M, reps, generator=gen, dtype=dtype).double()
        samples[M] = v.numpy()
        mean, sd = v.mean().item(), v.std().item()
        se = sd / math.sqrt(reps)
        rows.append({"M": M, "mean": mean, "std": sd, "se": se, "exact": exact,
                     "bias/se": (mean - exact) / math.hypot(se, lab.exact_elbo_se)})
    df = pd.DataFrame(rows).set_index("M")
    folder.write_table("elbo", df)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.boxplot([samples[M] for M in Ms], positions=range(1, len(Ms) + 1))
    label = "exact" if lab.exact_method == "quadrature" else "reference"
    ax.axhline(exact, color="tab:red", lw=1.5, label=f"{label} ELBO = {exact:.4f}")
    ax.set_xticks(range(1, len(Ms) + 1), [str(M) for M in Ms])
    ax.set_xlabel("M (samples per estimate)")
    ax.set_ylabel("ELBO estimate")
    ax.set_title(f"Monte Carlo ELBO estimator, {reps} repetitions per M ({family} guide at {_short(point)})")
    ax.legend()
    folder.save_figure(fig, "elbo_boxplot")
    reporter.table(f"Monte Carlo ELBO estimate ({family} guide at {_short(point)}, {reps} repetitions; "
                   f"{label}: {lab.exact_method})", df)
    exact_json = {"elbo": exact} if lab.exact_method == "quadrature" else \
        {"elbo": exact, "elbo_se": lab.exact_elbo_se, "method": lab.exact_method}
    return {"point": dict(zip(lab.param_names, point, strict=True)), "family": family, "exact": exact_json,
            "results": [{"M": int(M), **{k: r[k] for k in ("mean", "std", "se")}}
                        for M, r in zip(Ms, rows, strict=True)]}


# ----------------------------------------------------------------------------------- gradients
def run_gradients(lab: Lab, estimators, Ms, reps: int, seed: int, folder: RunFolder, reporter: Reporter,
                  boxplots: bool = True, dtype: torch.dtype = torch.float64) -> dict:
    Ms, reps = _check_common(Ms, reps)
    estimators = [get_estimator(e).name for e in estimators]
    for e in estimators:
        if get_estimator(e).is_value:
            raise ValueError(f"{e!r} estimates the ELBO value, not its gradient; use `svilab elbo`")
        bad = [M for M in Ms if M < get_estimator(e).min_samples]
        if bad:
            raise ValueError(f"estimator {e!r} needs M >= {get_estimator(e).min_samples}, got {bad}")
    target, family, point, names = lab.target, lab.family, lab.point, lab.param_names
    exact_elbo, exact_grad, exact_se = lab.exact_elbo, lab.exact_grad, lab.exact_grad_se
    estimate("reparam", target, family, point, 10, 10, dtype=dtype)   # warm-up, so timings are fair
    gen = torch.Generator().manual_seed(seed)
    results, long_rows, draws = [], [], {}
    for name in estimators:
        for M in Ms:
            t0 = time.perf_counter()
            g = estimate(name, target, family, point, M, reps, generator=gen, dtype=dtype).double().numpy()
            secs = (time.perf_counter() - t0) / reps
            draws[name, M] = g
            mean, sd = g.mean(0), g.std(0, ddof=1)
            se = np.hypot(sd / math.sqrt(reps), exact_se)   # the reference's own error where it has one
            var = sd**2
            bias_se = (mean - exact_grad) / se
            results.append({"estimator": name, "M": M,
                            "mean": dict(zip(names, mean.tolist(), strict=True)),
                            "std": dict(zip(names, sd.tolist(), strict=True)),
                            "bias_se": dict(zip(names, bias_se.tolist(), strict=True)),
                            "variance": dict(zip(names, var.tolist(), strict=True)),
                            "seconds": secs})
            for k, pname in enumerate(names):
                long_rows.append({"estimator": name, "M": M, "param": pname, "mean": mean[k],
                                  "std": sd[k], "exact": exact_grad[k],
                                  "bias/se": bias_se[k], "variance": var[k],
                                  "seconds": secs, "variance x seconds": var[k] * secs})
    long = pd.DataFrame(long_rows)
    folder.write_table("gradients_long", long.set_index(["estimator", "M", "param"]))
    quad = lab.exact_method == "quadrature"
    exact_row = pd.DataFrame([exact_grad] if quad else [exact_grad, exact_se], columns=list(names),
                             index=["exact"] if quad else ["reference", "reference se"])
    folder.write_table("exact_gradient", exact_row)
    reporter.table(f"{'Exact' if quad else 'Reference'} ELBO gradient ({lab.exact_method}; {family} guide at "
                   f"{_short(point)}); ELBO = {exact_elbo:.6f}", exact_row.T if len(names) > 4 else exact_row)
    for name in estimators:
        sub = long[long.estimator == name]
        wide = _notebook_table(sub, names)
        folder.write_table(f"gradients_{name}", wide)
        reporter.table(f"{name}: mean and std of each gradient component over {reps} repetitions; "
                       f"bias/se = (mean - exact) / standard error", wide, floatfmt=".4g")
    eff = long.pivot_table(index=["estimator"], columns=["param"], values="variance x seconds",
                           aggfunc="median")[list(names)]
    folder.write_table("work_normalised_variance", eff)
    reporter.table("Work-normalised variance (variance x seconds per estimate; median over M; lower is better)",
                   eff, floatfmt=".3g")
    if boxplots:
        for name in estimators:
            folder.save_figure(_boxplots(name, Ms, draws, exact_grad, reps, names,
                                         "exact gradient" if quad else "reference gradient"), f"boxplots_{name}")
    folder.save_figure(_variance_plot(long, estimators, names), "variance_vs_M")
    exact_json = {"elbo": exact_elbo, "grad": dict(zip(names, exact_grad.tolist(), strict=True))}
    if not quad:
        exact_json.update({"elbo_se": lab.exact_elbo_se, "grad_se": dict(zip(names, exact_se.tolist(), strict=True)),
                           "method": lab.exact_method})
    return {"point": dict(zip(names, point, strict=True)), "family": family, "exact": exact_json, "results": results}


def _short(point) -> str:
    text = ",".join(f"{v:g}" for v in point)
    return text if len(text) < 60 else text[:57] + "..."


def _notebook_table(sub: pd.DataFrame, names=PARAM_NAMES) -> pd.DataFrame:
    cols = {}
    for pname in names:
        s = sub[sub.param == pname].set_index("M")
        cols[f"mean({pname})"] = s["mean"]
        cols[f"std({pname})"] = s["std"]
        cols[f"bias/se({pname})"] = s["bias/se"]
    wide = pd.DataFrame(cols)
    wide["ms/estimate"] = sub[sub.param == names[0]].set_index("M")["seconds"] * 1e3
    return wide


#: parameters drawn in the figures (the tables and JSON have all)
MAX_FIGURE_PARAMS = 8


def _boxplots(name, Ms, draws, exact_grad, reps, names=PARAM_NAMES, label="exact gradient"):
    shown = list(names)[:MAX_FIGURE_PARAMS]
    cols = 2
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 4.5 * rows), squeeze=False)
    # the notebook's arrangement: each latent's loc above its scale, one latent per column
    layout = {k: ((k % 2) + 2 * (k // 4), (k // 2) % 2) for k in range(len(shown))}
    for k, pname in enumerate(shown):
        ax = axes[layout[k]]
        ax.boxplot([draws[name, M][:, k] for M in Ms], positions=range(1, len(Ms) + 1), showfliers=False)
        ax.axhline(exact_grad[k], color="tab:red", lw=1.2, label=label)
        ax.set_xticks(range(1, len(Ms) + 1), [str(M) for M in Ms])
        ax.set_xlabel("M (samples per estimate)")
        ax.set_ylabel(f"dELBO / d{pname}")
        ax.legend(fontsize=8)
    used = set(layout.values())
    for idx in np.ndindex(*axes.shape):
        if idx not in used:
            axes[idx].axis("off")
    more = f"; first {len(shown)} of {len(names)} parameters" if len(shown) < len(names) else ""
    fig.suptitle(f"{name}: gradient estimates over {reps} repetitions (whiskers 1.5 IQR, outliers hidden{more})")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def _variance_plot(long: pd.DataFrame, estimators, names=PARAM_NAMES):
    shown = list(names)[:MAX_FIGURE_PARAMS]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 4.6 * rows), sharex=True, squeeze=False)
    axes = axes.ravel()
    for k, pname in enumerate(shown):
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
    for ax in axes[len(shown):]:
        ax.axis("off")
    axes[len(shown) - 1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Estimator variance against M (parallel to the dotted line: the Monte Carlo 1/M rate)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- CLI
def _common(p):
    add_model_args(p, user_model=True)
    p.add_argument("--family", choices=["normal", "lognormal", "gaussian"], default=None,
                   help="mean-field guide: Normal truncated to (0, inf) (default), or LogNormal; with --model the "
                        "family is 'gaussian', a Normal per coordinate of the model's unconstrained space")
    p.add_argument("--point", default=None, metavar="MU_U,SIGMA_U,MU_V,SIGMA_V",
                   help="guide parameters (default: the notebook's 5,0.5,1,0.2 for normal); with --model "
                        "loc_1,scale_1,loc_2,scale_2,... per unconstrained coordinate (default: loc 0, scale 0.1, "
                        "where AutoNormal starts)")
    p.add_argument("--reps", type=int, default=1000, help="repetitions per M")
    p.add_argument("--dtype", choices=list(DTYPES), default="float64",
                   help="precision of the estimators' arithmetic (Poisson-Gamma model): float32 is about 2x "
                        "faster; the exact reference stays float64 (benchmarks/bench_gradients.py)")
    p.add_argument("--reference-samples", type=int, default=REFERENCE_SAMPLES,
                   help="with --model and more than 2 latent dims: samples behind the reference gradient")
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
    from svilab.models.user import UserModel, float64_default

    model = model_from_args(args)
    reporter = Reporter(args.json)
    with float64_default():
        if isinstance(model, UserModel):
            if args.dtype != "float64":
                raise ValueError("--dtype float32 is for the Poisson-Gamma model; a --model runs in float64")
            if args.family not in (None, "gaussian"):
                raise ValueError(f"--family {args.family} is for the Poisson-Gamma model; with --model the family "
                                 "is gaussian (a Normal per unconstrained coordinate)")
            _check_common(args.M, args.reps)
            lab = user_lab(model, args.point, args.seed,
                           positive_int(args.reference_samples, "--reference-samples", 128))
        else:
            if args.family == "gaussian":
                raise ValueError("--family gaussian needs --model (the Poisson-Gamma latents are positive)")
            args.family = args.family or "normal"
            _check_common(args.M, args.reps)
            lab = poisson_gamma_lab(model, args.family, _point(args))
        folder = run_folder(args, command)
        folder.write_config({**_config(args, command), "family": lab.family, "point": lab.point,
                             "exact_method": lab.exact_method, **model.config()})
        res = run(lab, folder, reporter)
    folder.write_results(res)
    reporter.say(f"\nRun folder: {folder}")
    reporter.emit_json(res)
    return 0


def main_elbo(args) -> int:
    return _main(args, "elbo", lambda lab, folder, reporter: run_elbo(
        lab, args.M, args.reps, args.seed, folder, reporter, DTYPES[args.dtype]))


def main_gradients(args) -> int:
    return _main(args, "gradients", lambda lab, folder, reporter: run_gradients(
        lab, args.estimators, args.M, args.reps, args.seed, folder, reporter, boxplots=not args.no_boxplots,
        dtype=DTYPES[args.dtype]))
