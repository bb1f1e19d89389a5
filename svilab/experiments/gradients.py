"""``svilab elbo`` and ``svilab gradients``: the Monte Carlo ELBO and gradient estimators of the
exercise notebook, done properly, swept over M and checked against the exact values.

Layers: :class:`SweepConfig` (typed, checked) -> a :class:`Lab` (target, family, point, exact
values) -> :func:`run_elbo` / :func:`run_gradients` (computation only, returning
:class:`ELBOSweep` / :class:`GradientSweep`) -> :func:`write_elbo` / :func:`write_gradients` (tables,
figures, the JSON) -> the argparse layer (:func:`register`). ``svilab demo`` and tests build
configs directly.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from svilab.experiments.common import Reporter, add_model_args, add_run_args, model_from_args, run_folder
from svilab.experiments.runs import RunFolder
from svilab.inference.draws import vectorization_error
from svilab.inference.estimators import GRADIENT_ESTIMATORS, PARAM_NAMES, Target, estimate, get_estimator
from svilab.inference.estimators.reference import REFERENCE_SAMPLES, reference_gradient
from svilab.models.poisson_gamma import PoissonGamma
from svilab.validation import parse_floats, positive_int

NOTEBOOK_POINT = (5.0, 0.5, 1.0, 0.2)
DEFAULT_POINTS = {"normal": NOTEBOOK_POINT, "lognormal": (1.55, 0.1, -0.1, 0.2)}


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
    #: warnings about the model itself (improper priors), reported with the estimators'
    notes: tuple[str, ...] = ()


def exact_reference(target: Target, family: str, point, seed: int = 0, samples: int = REFERENCE_SAMPLES):
    """(elbo, elbo se, grad, grad se, method): :func:`svilab.inference.estimators.reference.reference_gradient`."""
    r = reference_gradient(target, family, point, seed, samples)
    return r.elbo, r.elbo_se, r.grad, r.grad_se, r.method


def poisson_gamma_lab(model: PoissonGamma, family: str, point) -> Lab:
    target = Target.from_poisson_gamma(model)
    elbo, elbo_se, grad, grad_se, method = exact_reference(target, family, point)
    return Lab(target, family, tuple(point), PARAM_NAMES, elbo, elbo_se, grad, grad_se, method)


def user_target_and_point(um, point_text: str | None):
    """The unconstrained target of a user model and the guide point (default: loc 0, scale 0.1 per
    coordinate, where AutoNormal starts SVI); a ``--point`` of the wrong length is a ValueError."""
    from svilab.experiments.posterior_user import check_user_model
    from svilab.inference.potential import UnconstrainedTarget

    sites = check_user_model(um)
    target = UnconstrainedTarget(um.model, sites)
    try:                                   # the estimators evaluate the model on many draws at once
        with torch.no_grad():
            target(torch.zeros(target.dim, 3, dtype=torch.float64))
    except Exception as exc:  # noqa: BLE001 - the user's code: one line naming the file
        raise vectorization_error(exc, 3, sites.max_plate_nesting,
                                  f"model {um.path}:{um.func}") from None
    if point_text is None:
        point = tuple(v for _ in range(target.dim) for v in (0.0, 0.1))
    else:
        point = tuple(parse_floats(point_text, "--point", 2 * target.dim))
    return target, point


def user_lab(um, point_text: str | None, seed: int, reference_samples: int = REFERENCE_SAMPLES) -> Lab:
    """The estimators on a user model's unconstrained space with the mean-field ``gaussian`` family."""
    target, point = user_target_and_point(um, point_text)
    names = tuple(f"{kind}[{n}]" for n in target.names for kind in ("loc", "scale"))
    elbo, elbo_se, grad, grad_se, method = exact_reference(target, "gaussian", point, seed, reference_samples)
    if not (np.isfinite(grad).all() and math.isfinite(elbo)):
        raise ValueError("the ELBO or its gradient is not finite at --point: the guide puts mass where the model "
                         "has none (try smaller scales)")
    improper = [n for n, site in target.sites.latent.items() if site.improper]
    notes = (f"latent site(s) {', '.join(improper)} have improper priors (ImproperUniform): the ELBO here is of an "
             "unnormalised joint density, not a bound on log p(x), and the posterior itself may be improper (a "
             "direction the data do not fix, as a + b with flat a and b); svilab cannot check that, and every "
             "number is still the exact ELBO of this guide",) if improper else ()
    return Lab(target, "gaussian", point, names, elbo, elbo_se, grad, grad_se, method, notes)


# ------------------------------------------------------------------------------------ config
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class SweepConfig:
    """One estimator sweep, checked on construction (a ValueError names the option).

    :ivar command: ``elbo`` (the ELBO value) or ``gradients``.
    :ivar M: samples per estimate, one sweep point each.
    :ivar reps: repetitions per M (>= 2, for a standard deviation).
    :ivar family: the mean-field family (``normal``, ``lognormal``; ``gaussian`` for a user model; None:
        the model's own, ``normal`` or ``gaussian``).
    :ivar point: guide parameters (None: the family's default point).
    :ivar estimators: gradient estimators (``gradients`` only; empty: all).
    """

    command: str
    M: tuple[int, ...]
    reps: int = 1000
    seed: int = 0
    family: str | None = None
    point: tuple[float, ...] | None = None
    dtype: str = "float64"
    estimators: tuple[str, ...] = ()
    boxplots: bool = True
    reference_samples: int | None = None        # a user model's reference gradient (None: REFERENCE_SAMPLES)
    extra: dict = field(default_factory=dict)   # what else the run folder's config.json records

    def __post_init__(self) -> None:
        if self.command not in ("elbo", "gradients"):
            raise ValueError(f"unknown sweep {self.command!r}; known: elbo, gradients")
        object.__setattr__(self, "M", tuple(positive_int(m, "M") for m in self.M))
        object.__setattr__(self, "reps", positive_int(self.reps, "--reps", 2))
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.command == "gradients":
            names = tuple(get_estimator(e).name for e in (self.estimators or GRADIENT_ESTIMATORS))
            twice = sorted({e for e in names if names.count(e) > 1})
            if twice:
                raise ValueError(f"--estimators: {', '.join(twice)} given twice")
            for e in names:
                if get_estimator(e).is_value:
                    raise ValueError(f"{e!r} estimates the ELBO value, not its gradient; use `svilab elbo`")
                bad = [M for M in self.M if M < get_estimator(e).min_samples]
                if bad:
                    raise ValueError(f"estimator {e!r} needs M >= {get_estimator(e).min_samples}, got {bad}")
            object.__setattr__(self, "estimators", names)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return {**self.extra, **d, "M": list(self.M), "estimators": list(self.estimators) or None}


# ---------------------------------------------------------------------------------------- elbo
@dataclass
class ELBOSweep:
    """What :func:`run_elbo` computed: one row per M (``mean``, ``std``, ``se``, ``exact``,
    ``bias/se``) and every repetition's estimate (``samples[M]``, shape ``(reps,)``)."""

    lab: Lab
    config: SweepConfig
    table: pd.DataFrame
    samples: dict[int, np.ndarray]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        lab = self.lab
        exact_json = {"elbo": lab.exact_elbo} if lab.exact_method == "quadrature" else \
            {"elbo": lab.exact_elbo, "elbo_se": lab.exact_elbo_se, "method": lab.exact_method}
        return {"point": dict(zip(lab.param_names, lab.point, strict=True)), "family": lab.family,
                "exact": exact_json,
                "results": [{"M": int(M), **{k: float(r[k]) for k in ("mean", "std", "se")}}
                            for M, r in self.table.iterrows()], "warnings": self.warnings}


#: an unbiased estimator's mean this many standard errors from the exact value is reported as rounding
#: error (about 1 in 10^9 by chance for one component)
BIAS_SE_LIMIT = 6.0


def _check_finite(values: np.ndarray, what: str, config: SweepConfig, point) -> None:
    """A ValueError naming the problem when estimates are NaN/inf (never a table of them)."""
    bad = ~np.isfinite(values)
    if bad.any():
        n = int(bad.reshape(len(values), -1).any(1).sum())
        hint = ("use --dtype float64" if config.dtype == "float32" else
                "the guide puts mass where the model's log density is not finite; move --point")
        raise ValueError(f"{what}: {n} of {len(values)} repetitions are not finite at --point {_short(point)} in "
                         f"{config.dtype} (the arithmetic overflows or underflows there: far in a tail, a tiny or "
                         f"huge scale); {hint}")


def _bias_warning(name: str, M: int, param: str, bias_se: float, config: SweepConfig) -> str:
    hint = "--dtype float64" if config.dtype == "float32" else "a point nearer the posterior"
    return (f"{name} at M={M}: the mean of {param} is {bias_se:+.0f} standard errors from the exact value, which an "
            f"unbiased estimator does not do: at this --point the arithmetic (of the estimates or of the "
            f"quadrature) loses the answer; the table is not to be trusted there (try {hint})")


def run_elbo(lab: Lab, config: SweepConfig) -> ELBOSweep:
    """The ELBO estimator ``config.reps`` times at every M (one generator, seeded by ``config.seed``)."""
    gen = torch.Generator().manual_seed(config.seed)
    rows, samples, warnings = [], {}, list(lab.notes)
    for M in config.M:
        v = estimate("elbo", lab.target, lab.family, lab.point, M, config.reps, generator=gen,
                     dtype=config.torch_dtype).double()
        _check_finite(v.numpy(), f"the ELBO estimates at M={M}", config, lab.point)
        samples[M] = v.numpy()
        mean, sd = v.mean().item(), v.std().item()
        se = sd / math.sqrt(config.reps)
        bias_se = (mean - lab.exact_elbo) / math.hypot(se, lab.exact_elbo_se) if se > 0 else 0.0
        rows.append({"M": M, "mean": mean, "std": sd, "se": se, "exact": lab.exact_elbo, "bias/se": bias_se})
        if abs(bias_se) > BIAS_SE_LIMIT:
            warnings.append(_bias_warning("the ELBO estimator", M, "the ELBO", bias_se, config))
    return ELBOSweep(lab, config, pd.DataFrame(rows).set_index("M"), samples, warnings)


def elbo_figure(sweep: ELBOSweep):
    """The notebook's boxplot of the estimates per M, with the exact (or reference) ELBO drawn."""
    lab, Ms, reps = sweep.lab, sweep.config.M, sweep.config.reps
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.boxplot([sweep.samples[M] for M in Ms], positions=range(1, len(Ms) + 1))
    label = "exact" if lab.exact_method == "quadrature" else "reference"
    ax.axhline(lab.exact_elbo, color="tab:red", lw=1.5, label=f"{label} ELBO = {lab.exact_elbo:.4f}")
    ax.set_xticks(range(1, len(Ms) + 1), [str(M) for M in Ms])
    ax.set_xlabel("M (samples per estimate)")
    ax.set_ylabel("ELBO estimate")
    ax.set_title(f"Monte Carlo ELBO estimator, {reps} repetitions per M ({lab.family} guide at {_short(lab.point)})")
    ax.legend()
    return fig


def write_elbo(sweep: ELBOSweep, folder: RunFolder, reporter: Reporter) -> dict:
    """Table, figure and printout of an ELBO sweep; returns its JSON."""
    lab = sweep.lab
    folder.write_table("elbo", sweep.table)
    folder.save_figure(elbo_figure(sweep), "elbo_boxplot")
    label = "exact" if lab.exact_method == "quadrature" else "reference"
    reporter.table(f"Monte Carlo ELBO estimate ({lab.family} guide at {_short(lab.point)}, {sweep.config.reps} "
                   f"repetitions; {label}: {lab.exact_method})", sweep.table)
    for w in sweep.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return sweep.to_json()


# ----------------------------------------------------------------------------------- gradients
@dataclass
class GradientSweep:
    """What :func:`run_gradients` computed: per (estimator, M) the mean, std, bias in standard errors,
    variance and seconds per estimate (``results``, the JSON rows; ``long``, one row per parameter)
    and every repetition's estimate (``draws[estimator, M]``, shape ``(reps, P)``)."""

    lab: Lab
    config: SweepConfig
    results: list[dict]
    long: pd.DataFrame
    draws: dict
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        lab, names = self.lab, self.lab.param_names
        exact_json = {"elbo": lab.exact_elbo, "grad": dict(zip(names, lab.exact_grad.tolist(), strict=True))}
        if lab.exact_method != "quadrature":
            exact_json.update({"elbo_se": lab.exact_elbo_se,
                               "grad_se": dict(zip(names, lab.exact_grad_se.tolist(), strict=True)),
                               "method": lab.exact_method})
        return {"point": dict(zip(names, lab.point, strict=True)), "family": lab.family, "exact": exact_json,
                "results": self.results, "warnings": self.warnings}


def run_gradients(lab: Lab, config: SweepConfig) -> GradientSweep:
    """Every estimator of ``config.estimators`` ``config.reps`` times at every M, timed."""
    target, family, point, names = lab.target, lab.family, lab.point, lab.param_names
    exact_grad, exact_se, reps = lab.exact_grad, lab.exact_grad_se, config.reps
    estimate("reparam", target, family, point, 10, 10, dtype=config.torch_dtype)   # warm-up, so timings are fair
    gen = torch.Generator().manual_seed(config.seed)
    results, long_rows, draws, warnings = [], [], {}, list(lab.notes)
    for name in config.estimators:
        for M in config.M:
            t0 = time.perf_counter()
            g = estimate(name, target, family, point, M, reps, generator=gen,
                         dtype=config.torch_dtype).double().numpy()
            secs = (time.perf_counter() - t0) / reps
            _check_finite(g, f"the {name} estimates at M={M}", config, point)
            draws[name, M] = g
            mean, sd = g.mean(0), g.std(0, ddof=1)
            se = np.hypot(sd / math.sqrt(reps), exact_se)   # the reference's own error where it has one
            var = sd**2
            bias_se = np.where(se > 0, (mean - exact_grad) / np.where(se > 0, se, 1.0), 0.0)
            worst = int(np.argmax(np.abs(bias_se)))
            if abs(bias_se[worst]) > BIAS_SE_LIMIT:
                warnings.append(_bias_warning(name, M, names[worst], float(bias_se[worst]), config))
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
    return GradientSweep(lab, config, results, pd.DataFrame(long_rows), draws, warnings)


def gradient_figures(sweep: GradientSweep) -> dict:
    """``{file name: figure}``: the 2x2 boxplots per estimator (when ``config.boxplots``) and the
    log-log variance-against-M plot of all estimators."""
    lab, cfg = sweep.lab, sweep.config
    label = "exact gradient" if lab.exact_method == "quadrature" else "reference gradient"
    figs = {}
    if cfg.boxplots:
        for name in cfg.estimators:
            figs[f"boxplots_{name}"] = _boxplots(name, cfg.M, sweep.draws, lab.exact_grad, cfg.reps,
                                                 lab.param_names, label)
    figs["variance_vs_M"] = _variance_plot(sweep.long, cfg.estimators, lab.param_names)
    return figs


def write_gradients(sweep: GradientSweep, folder: RunFolder, reporter: Reporter) -> dict:
    """Tables, figures and printout of a gradient sweep; returns its JSON."""
    lab, cfg, long = sweep.lab, sweep.config, sweep.long
    names, family, point = lab.param_names, lab.family, lab.point
    folder.write_table("gradients_long", long.set_index(["estimator", "M", "param"]))
    quad = lab.exact_method == "quadrature"
    exact_row = pd.DataFrame([lab.exact_grad] if quad else [lab.exact_grad, lab.exact_grad_se], columns=list(names),
                             index=["exact"] if quad else ["reference", "reference se"])
    folder.write_table("exact_gradient", exact_row)
    reporter.table(f"{'Exact' if quad else 'Reference'} ELBO gradient ({lab.exact_method}; {family} guide at "
                   f"{_short(point)}); ELBO = {lab.exact_elbo:.6f}", exact_row.T if len(names) > 4 else exact_row)
    for name in cfg.estimators:
        sub = long[long.estimator == name]
        wide = _notebook_table(sub, names)
        folder.write_table(f"gradients_{name}", wide)
        reporter.table(f"{name}: mean and std of each gradient component over {cfg.reps} repetitions; "
                       f"bias/se = (mean - exact) / standard error", wide, floatfmt=".4g")
    eff = long.pivot_table(index=["estimator"], columns=["param"], values="variance x seconds",
                           aggfunc="median")[list(names)]
    folder.write_table("work_normalised_variance", eff)
    reporter.table("Work-normalised variance (variance x seconds per estimate; median over M; lower is better)",
                   eff, floatfmt=".3g")
    for fname, fig in gradient_figures(sweep).items():
        folder.save_figure(fig, fname)
    for w in sweep.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return sweep.to_json()


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
    latents = math.ceil(len(shown) / 2)                    # (loc, scale) per latent
    cols = min(2, latents)
    rows = 2 * math.ceil(latents / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
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
    p.add_argument("--point", default=None, metavar="LOC,SCALE,...",
                   help="guide parameters, a loc and a scale per latent coordinate: mu_u,sigma_u,mu_v,sigma_v "
                        "(default: the notebook's 5,0.5,1,0.2 for normal); with --model "
                        "loc_1,scale_1,loc_2,scale_2,... per unconstrained coordinate (default: loc 0, scale 0.1, "
                        "where AutoNormal starts)")
    p.add_argument("--reps", type=int, default=1000, help="repetitions per M")
    p.add_argument("--dtype", choices=list(DTYPES), default="float64",
                   help="precision of the estimators' arithmetic (Poisson-Gamma model): float32 is about 2x "
                        "faster; the exact reference stays float64 (benchmarks/bench_gradients.py)")
    p.add_argument("--reference-samples", type=int, default=None,
                   help=f"with --model and more than 2 latent dims: samples behind the reference gradient "
                        f"(default {REFERENCE_SAMPLES})")
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


def config_from_args(args, command: str) -> SweepConfig:
    """The typed configuration of the command line (the model options are read by :func:`make_lab`)."""
    return SweepConfig(command, tuple(args.M), reps=args.reps, seed=args.seed, family=args.family,
                       dtype=args.dtype, estimators=tuple(getattr(args, "estimators", ()) or ()),
                       boxplots=not getattr(args, "no_boxplots", False),
                       reference_samples=args.reference_samples,
                       extra={k: v for k, v in vars(args).items()
                              if k not in ("func", "M", "estimators", "json", "overwrite", "out")})


def _reference_samples(config: SweepConfig) -> int:
    return REFERENCE_SAMPLES if config.reference_samples is None else config.reference_samples


def check_lab(model, config: SweepConfig, point_text: str | None) -> tuple[str, tuple[float, ...] | None]:
    """The family and point of the lab, checked against the model without computing anything
    (the point is None for a user model: it needs the model's dimension, checked in :func:`make_lab`)."""
    from svilab.models.user import UserModel

    if isinstance(model, UserModel):
        if config.dtype != "float64":
            raise ValueError("--dtype float32 is for the Poisson-Gamma model; a --model runs in float64")
        if config.family not in (None, "gaussian"):
            raise ValueError(f"--family {config.family} is for the Poisson-Gamma model; with --model the family "
                             "is gaussian (a Normal per unconstrained coordinate)")
        positive_int(_reference_samples(config), "--reference-samples", 128)
        return "gaussian", None
    if config.reference_samples is not None:
        raise ValueError("--reference-samples applies to --model (the Poisson-Gamma model's gradient is exact)")
    if config.family == "gaussian":
        raise ValueError("--family gaussian needs --model (the Poisson-Gamma latents are positive)")
    family = config.family or "normal"
    point = DEFAULT_POINTS[family] if point_text is None else tuple(parse_floats(point_text, "--point", 4))
    return family, point


def make_lab(model, config: SweepConfig, point_text: str | None) -> Lab:
    """The lab of the Poisson-Gamma model or a user's model (then the family is ``gaussian``)."""
    family, point = check_lab(model, config, point_text)
    if point is None:
        return user_lab(model, point_text, config.seed, _reference_samples(config))
    return poisson_gamma_lab(model, family, point)


def prepare(args, command: str):
    """The typed configuration and the model of the command line, checked (family, point, options)
    without computing the exact reference; nothing is run and no folder is made."""
    from svilab.models.user import UserModel, float64_default

    config = config_from_args(args, command)
    model = model_from_args(args)
    with float64_default():
        check_lab(model, config, args.point)
        if isinstance(model, UserModel):
            user_target_and_point(model, args.point)
    return config, model


def _main(args, command: str) -> int:
    """Shared body of both commands: config, model, lab, run folder, run, write, JSON. An exception a user's
    model raises for some draws only (its first runs passed) is one line naming it, not a traceback."""
    from svilab.experiments.posterior_user import model_errors
    from svilab.models.user import UserModel, float64_default

    config, model = prepare(args, command)
    reporter = Reporter(args.json)

    def guard():                           # the model's own computations only: svilab's writing is not the model's
        return model_errors(f"--model {model.path}:{model.func}") if isinstance(model, UserModel) \
            else contextlib.nullcontext()

    with float64_default():
        with guard():
            lab = make_lab(model, config, args.point)
        config = replace(config, family=lab.family, point=lab.point)
        folder = run_folder(args, command)
        folder.write_config({"command": command, **config.as_dict(), "exact_method": lab.exact_method,
                             **model.config()})
        with guard():
            result = run_elbo(lab, config) if command == "elbo" else run_gradients(lab, config)
        res = (write_elbo if command == "elbo" else write_gradients)(result, folder, reporter)
    folder.write_results(res)
    reporter.say(f"\nRun folder: {folder}")
    reporter.emit_json(res)
    return 0


def main_elbo(args) -> int:
    return _main(args, "elbo")


def main_gradients(args) -> int:
    return _main(args, "gradients")
