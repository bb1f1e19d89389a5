"""``svilab vae``: train, evaluate and compare MNIST VAEs under the ELBO (its KL in closed form), the
importance-weighted bound (IWAE, with the DReG gradient as an option), Pyro's Renyi bound, and the skew
geometric Jensen-Shannon objectives with a fixed or a learned skew (``svilab vae train --help``,
``svilab vae compare --help``), on the CPU or a GPU (``--device``).

Every run is judged with the same yardstick whatever its training objective: the test ELBO (with
the KL), the importance-weighted log-likelihood (k samples), the reconstruction error and the
number of active latent units.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import pyro
import torch

from svilab.data.mnist import MNISTData, load_mnist
from svilab.devices import resolve_device
from svilab.experiments.common import Reporter
from svilab.experiments.loss_choice import command_loss
from svilab.experiments.runs import RunFolder, lock_holder, read_status
from svilab.experiments.vae_config import VAE_LOSSES, VAERunConfig, absolute, parse_alpha, time_limit, vae_loss
from svilab.experiments.vae_figures import label as _label
from svilab.experiments.vae_figures import save_figures
from svilab.inference import vae_eval
from svilab.inference.losses import make_loss
from svilab.inference.optim import GuardedAdam
from svilab.inference.svi import DivergenceError
from svilab.inference.vae_training import TrainingResult, save_checkpoint, train_vae
from svilab.models.vae import PRESETS, VAE, count_parameters
from svilab.validation import positive_int

CHECKPOINT = "checkpoint.pt"
#: what ``svilab vae compare`` trains by default
COMPARE_LOSSES = ("elbo", "iwae", "gjs", "dgjs")


# ----------------------------------------------------------------------------- configuration
def run_config(args: argparse.Namespace, loss: str, alpha: float | None, strict: bool = True) -> VAERunConfig:
    """The typed configuration of one training run from the command line (:meth:`VAERunConfig.build`).
    ``strict=False`` (``vae compare``): ``--beta``, ``--k`` and ``--dreg`` go to the losses that take them."""
    objective = vae_loss(loss)
    k = args.k if strict or objective in ("iwae", "renyi") else None
    dreg = args.dreg if strict or objective == "iwae" else False
    return VAERunConfig.build(
        args.preset, loss=loss, alpha=alpha, beta=args.beta, k=k, dreg=dreg,
        device=args.device or "cpu", epochs=args.epochs, seed=args.seed,
        particles=args.particles, jit=args.jit, limit=args.limit, validation=args.validation,
        time_limit_minutes=args.time_limit, data_root=args.data_root, eval_k=args.eval_k, eval_limit=args.eval_limit,
        strict=strict, latent_dim=args.latent_dim, hidden=args.hidden, likelihood=args.likelihood, sigma=args.sigma,
        batch_size=args.batch_size, lr=args.lr)


def make_vae(config: VAERunConfig, device=None) -> VAE:
    """The configuration's network, on ``device`` (None: the configuration's, checked to be here)."""
    return VAE(config.vae).to(resolve_device(config.device) if device is None else device)


def get_data(config: VAERunConfig) -> MNISTData:
    return load_mnist(config.data_root, binary=config.vae.binarize, validation=config.validation,
                      limit=config.limit, seed=0)


def make_vae_loss(loss: str, jit: bool, particles: int = 1, alpha: float | None = None, beta: float = 1.0,
                  k: int | None = None, dreg: bool = False, learn_alpha: bool = False):
    """The Pyro ELBO that trains objective ``loss`` (``elbo``: ``meanfield_elbo``, with the analytic KL;
    ``iwae``/``renyi``: ``k`` draws per image)."""
    name = command_loss(loss, "vae").name
    return make_loss(name, num_particles=particles if k is None else k, vectorize_particles=True,
                     max_plate_nesting=1, jit=jit, alpha=alpha, beta=beta, dreg=dreg, learn_alpha=learn_alpha)


def _loss(config: VAERunConfig, jit: bool):
    return make_vae_loss(config.loss, jit, config.particles, config.alpha, config.beta, config.k, config.dreg,
                         config.learn_alpha)


# ----------------------------------------------------------------------------- training
def train(config: VAERunConfig, folder: RunFolder, data: MNISTData, reporter: Reporter, resume: dict | None = None,
          progress: bool | None = None, device=None) -> TrainingResult:
    """Train one VAE as ``config`` says (:func:`svilab.inference.vae_training.train_vae`) on ``device``
    (None: the configuration's), writing ``folder/checkpoint.pt`` after every epoch.

    :raises DivergenceError: a NaN/inf loss or gradient (the last checkpoint stays in the folder).
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    jit = config.jit and command_loss(config.loss, "vae").jit and not config.dreg   # renyi and DReG run eager
    stored = config.as_dict()

    used = str(device if device is not None else resolve_device(config.device))

    def checkpoint(state: dict) -> None:
        save_checkpoint(folder.file(CHECKPOINT), {**state, "config": stored, "device": used})

    limit = config.time_limit_minutes
    try:
        return train_vae(make_vae(config, device), data, _loss(config, jit), _loss(config, False),
                         epochs=config.epochs,
                         seed=config.seed, lr=config.vae.lr, batch_size=config.vae.batch_size,
                         jit=jit, resume=resume, time_limit_s=None if limit is None else 60 * limit,
                         on_epoch=checkpoint, say=reporter.say, label=config.loss, progress=progress)
    except DivergenceError as exc:
        done = len(exc.result.history)
        raise DivergenceError(f"{exc} The last checkpoint (end of epoch {done}) is in {folder}", exc.result) from None


def evaluate(vae: VAE, data: MNISTData, config: VAERunConfig) -> dict:
    """Test-set metrics (the same for every objective); see :mod:`svilab.inference.vae_eval`."""
    x = data.test_x if config.eval_limit is None else data.test_x[:config.eval_limit]
    t0 = time.perf_counter()
    test_elbo, elbo_se = vae_eval.elbo(vae, data.test_x, samples=config.eval_elbo_samples)
    ll, ll_se = vae_eval.iwae_log_likelihood(vae, x, k=config.eval_k)
    return {"test_elbo": test_elbo, "test_elbo_se": elbo_se, "test_log_likelihood": ll, "test_log_likelihood_se": ll_se,
            "iwae_k": config.eval_k, "iwae_images": len(x),
            "reconstruction_error": vae_eval.reconstruction_error(vae, data.test_x),
            "active_units": vae_eval.active_units(vae, data.test_x), "eval_seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- one run, end to end
def run_one(config: VAERunConfig, folder: RunFolder, data: MNISTData, reporter: Reporter,
            resume: dict | None = None) -> dict:
    """Train, evaluate, and write one run's results, history and figures; returns the run's row."""
    folder.write_config(config.as_dict())
    net = config.vae
    device = resolve_device(config.device)
    data = data.to(device)
    reporter.say(f"VAE {config.preset} (K={net.latent_dim}, hidden {list(net.hidden)}, "
                 f"{net.likelihood}), loss {config.label}; data {data.sizes()} from {data.root}; on {device}")
    try:
        out = train(config, folder, data, reporter, resume, device=device)
    except KeyboardInterrupt:
        if (folder.path / CHECKPOINT).exists():
            reporter.say(f"interrupted: the last finished epoch is checkpointed; continue with "
                         f"`svilab vae train --resume {folder}`")
        else:
            reporter.say(f"interrupted before the first epoch finished: nothing to resume in {folder}")
        raise
    vae = out.vae
    metrics = evaluate(vae, data, config)
    result = {"loss": config.loss, "alpha": config.alpha, "learn_alpha": config.learn_alpha, "k": config.k,
              "dreg": config.dreg, "label": config.label, **metrics,
              "alpha_final": out.history[-1].get(ALPHA_PARAM) if config.learn_alpha and out.history else None,
              "seconds_per_epoch": out.seconds_per_epoch, "epochs": len(out.history),
              "parameters": count_parameters(vae), "device": str(device), "history": out.history}
    folder.write_results(result)
    folder.write_csv("history.csv", pd.DataFrame(out.history).set_index("epoch"))
    run = {**result, "model": vae}
    save_figures(folder, [run], data)
    return run


SUMMARY_KEYS = ("loss", "alpha", "test_elbo", "test_log_likelihood", "reconstruction_error", "active_units",
                "seconds_per_epoch")
#: the Pyro parameter that holds a learned skew (``GeometricJSD_ELBO``'s default name)
ALPHA_PARAM = "gjs_alpha"


def summary_table(runs: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([{k: r[k] for k in SUMMARY_KEYS} for r in runs])
    df.insert(0, "run", [_label(r) for r in runs])
    if any(r.get("alpha_final") is not None for r in runs):
        df.insert(len(df.columns) - 1, "final_alpha", [r.get("alpha_final") for r in runs])
    return df.set_index("run").drop(columns=["loss", "alpha"])


def _json_run(r: dict) -> dict:
    return {k: r[k] for k in SUMMARY_KEYS} | {
        "label": r.get("label", _label(r)), "learn_alpha": r.get("learn_alpha", False), "k": r.get("k"),
        "dreg": r.get("dreg", False), "alpha_final": r.get("alpha_final"), "device": r.get("device"),
        "active_units": r["active_units"], "test_elbo_se": r["test_elbo_se"],
        "test_log_likelihood_se": r["test_log_likelihood_se"], "iwae_k": r["iwae_k"], "epochs": r["epochs"]}


# ----------------------------------------------------------------------------- CLI
def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (a preset, with overrides)")
    g.add_argument("--preset", default="notebook", help=f"one of: {', '.join(PRESETS)}")
    g.add_argument("--latent-dim", type=int, default=None, help="latent size K (default: the preset's)")
    g.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden layer sizes (default: the preset's)")
    g.add_argument("--likelihood", choices=["gaussian", "bernoulli"], default=None,
                   help="p(x | z): Gaussian on grey levels or Bernoulli on binarized images (default: the preset's)")
    g.add_argument("--sigma", type=float, default=None,
                   help="Gaussian likelihood scale (gaussian likelihood only; default: the preset's)")
    g.add_argument("--batch-size", type=int, default=None, help="images per step (default: the preset's)")
    g.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the preset's)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None, help="epochs (default 10; with --resume: the run's own)")
    t.add_argument("--beta", type=float, default=1.0, help="weight of the divergence term (gjs/dgjs)")
    t.add_argument("--particles", type=int, default=1, help="samples of z per image and step")
    t.add_argument("--jit", action=argparse.BooleanOptionalAction, default=True,
                   help="Pyro's JIT-compiled ELBO, compiled once (the same numbers as eager; see "
                        "benchmarks/bench_vae.py for the speed)")
    t.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                   help="stop after the epoch during which this many minutes of training have passed")
    t.add_argument("--seed", type=int, default=0, help="seed of the initial weights, batches and draws")
    t.add_argument("--k", type=int, default=None,
                   help="importance samples per image for iwae and renyi (default 5; other losses take none)")
    t.add_argument("--dreg", action="store_true",
                   help="iwae: the doubly reparameterized gradient for the encoder (Tucker et al. 2018)")
    t.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N, mps or auto (the first of cuda, mps, cpu here); default cpu, and with "
                        "--resume the run's own")
    d = p.add_argument_group("data")
    d.add_argument("--data-root", default=None,
                   help="folder containing MNIST/raw/ (default: $SVILAB_DATA, else ~/.cache/svilab/data)")
    d.add_argument("--limit", type=int, default=None, help="use at most N training images (N/5 validation and test)")
    d.add_argument("--validation", type=int, default=10_000, help="training images held out for validation")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-k", type=int, default=5000, help="importance samples for the test log-likelihood")
    e.add_argument("--eval-limit", type=int, default=None,
                   help="test images for the log-likelihood (default: all); the ELBO uses all of them")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="run folder (default runs/vae-<command>-<timestamp>)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an earlier svilab run in --out (default: refuse a folder that is not empty)")
    o.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def register(sub) -> None:
    p = sub.add_parser("vae", help="MNIST VAE: train, compare objectives", description=__doc__)
    vsub = p.add_subparsers(dest="vae_command", metavar="VAE_COMMAND")
    vsub.required = True
    t = vsub.add_parser("train", help="train one VAE and evaluate it on the test set",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--loss", default="elbo", help=f"training objective: {', '.join(VAE_LOSSES)}")
    t.add_argument("--alpha", default=None,
                   help="gjs/dgjs: the skew in [0, 1] (default 0.5), or 'learned' (trained with the networks from "
                        "0.5) or 'learned:A' (from A); renyi: the order (default 0, the IWAE bound)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a stopped run from its checkpoint (its config.json is used; --epochs may raise "
                        "the number of epochs)")
    _add_common(t)
    t.set_defaults(func=main_train)
    c = vsub.add_parser("compare", help="train elbo, iwae, gjs and dgjs with the same seed and preset; one table",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("--losses", nargs="+", default=list(COMPARE_LOSSES),
                   help=f"objectives to train, of: {', '.join(VAE_LOSSES)}")
    c.add_argument("--alphas", nargs="+", default=None,
                   help="the alphas of the losses that take one (gjs/dgjs skews, 'learned' or 'learned:A' too; "
                        "renyi orders), each such loss run once per alpha (default: gjs/dgjs 0.5, renyi 0)")
    _add_common(c)
    c.set_defaults(func=main_compare)


#: options a resumed run may change; any other given option must match the run's configuration
RESUME_MAY_CHANGE = {"epochs", "time_limit", "data_root", "json", "resume", "func", "command", "vae_command",
                     "threads", "device"}
_RESUME_KEYS = {"epoch", "model", "optim", "rng", "history", "config"}


def _conflicts(args: argparse.Namespace, config: VAERunConfig) -> list[str]:
    """Options given (different from their defaults) that differ from the stored configuration."""
    parser_defaults = {"loss": "elbo", "alpha": None, "preset": "notebook", "beta": 1.0, "particles": 1,
                       "k": None, "dreg": False, "seed": 0, "jit": True, "limit": None, "validation": 10_000,
                       "eval_k": 5000, "eval_limit": None, "out": None, "overwrite": False}
    stored = {key: getattr(config, key) for key in parser_defaults if key not in ("out", "overwrite")}
    out = []
    for key, default in parser_defaults.items():
        value = getattr(args, key, default)
        if value == default:
            continue
        if key in ("out", "overwrite"):
            out.append(f"--{key} (a resumed run stays in its own folder)")
        elif key == "loss" and vae_loss(value) == stored["loss"]:
            continue
        elif key == "alpha":
            given, learned = parse_alpha(value)
            if (given, learned) != (config.alpha, config.learn_alpha):
                have = (f"learned:{config.alpha:g}" if config.learn_alpha else
                        "none" if config.alpha is None else f"{config.alpha:g}")
                out.append(f"--alpha {value} (the run has {have})")
        elif value != stored[key]:
            out.append(f"--{key.replace('_', '-')} {value} (the run has {stored[key]})")
    for key in ("latent_dim", "hidden", "likelihood", "sigma", "batch_size", "lr"):
        value = getattr(args, key, None)
        have = config.vae.as_dict()[key]
        if value is not None and (list(value) if key == "hidden" else value) != have:
            out.append(f"--{key.replace('_', '-')} {value} (the run has {have})")
    return out


def _resume_device(args: argparse.Namespace, config: VAERunConfig, state: dict):
    """The device a resumed run continues on: ``--device``, else the run's own, which must be here."""
    from svilab.devices import check_device

    wanted = check_device(args.device) if args.device is not None else config.device
    try:
        device = resolve_device(wanted)
    except ValueError as exc:
        if args.device is not None:
            raise
        raise ValueError(f"--resume {args.resume}: the run was trained with --device {wanted}, which is not here "
                         f"({str(exc).split(': ', 1)[-1]}); give --device cpu (or auto) to continue it on this "
                         "machine") from None
    return wanted, device


def _resume(args: argparse.Namespace) -> tuple[VAERunConfig, dict, RunFolder]:
    """Read and check a run's checkpoint; every problem is a one-line ValueError naming the file. The folder
    is taken (locked, ``status.json`` running) only once everything checks, so a refused resume leaves the
    run's own status as it was. A checkpoint written on a GPU loads on the CPU and back (``--device``)."""
    path = Path(args.resume)
    if not path.is_dir():
        raise ValueError(f"cannot resume {path}: no such run folder")
    holder = lock_holder(path)
    if holder is not None:
        raise ValueError(f"run folder {path} is in use by svilab process {holder['pid']}")
    ckpt_path = path / CHECKPOINT
    if not ckpt_path.exists():
        previous = (read_status(path) or {}).get("status")
        why = (f"its run was {previous} before its first epoch finished, so there is nothing to resume: start it "
               "again with --overwrite" if previous in ("killed", "interrupted", "failed") else
               "is it a `svilab vae train` run folder, and did its first epoch finish?")
        raise ValueError(f"--resume {args.resume}: no {CHECKPOINT} there ({why})")
    try:
        state = torch.load(ckpt_path, weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read checkpoint {ckpt_path}: {first[:200]}") from None
    if not isinstance(state, dict) or not _RESUME_KEYS <= set(state):
        missing = sorted(_RESUME_KEYS - set(state)) if isinstance(state, dict) else sorted(_RESUME_KEYS)
        raise ValueError(f"checkpoint {ckpt_path} is not an svilab VAE checkpoint (missing {', '.join(missing)})")
    try:
        config = VAERunConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"checkpoint {ckpt_path} does not fit its own configuration: {first[:200]}") from None
    bad = _conflicts(args, config)
    if bad:
        raise ValueError(f"--resume keeps the run's configuration; these options conflict with it: {'; '.join(bad)}. "
                         "Only --epochs, --time-limit, --data-root and --device may change")
    wanted, device = _resume_device(args, config, state)
    config = config.with_(device=wanted)
    try:
        vae = make_vae(config, device)
        vae.load_state_dict(state["model"])
        extra = [t.detach().to(device).requires_grad_() for t in state.get("params", {}).values()]
        GuardedAdam([*vae.parameters(), *extra], lr=config.vae.lr).load_state_dict(state["optim"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"checkpoint {ckpt_path} does not fit its own configuration: {first[:200]}") from None
    done = int(state["epoch"]) + 1
    if args.epochs is not None:
        config = config.with_(epochs=positive_int(args.epochs, "--epochs"))
    if config.epochs <= done:
        raise ValueError(f"--resume {args.resume}: the run has done {done} epoch(s) of {config.epochs}; "
                         + (f"--epochs {args.epochs} would not continue it" if args.epochs is not None
                            else "give a larger --epochs to continue it"))
    if args.time_limit is not None:
        config = config.with_(time_limit_minutes=time_limit(args.time_limit))
    if args.data_root is not None:                 # the option wins over the stored root
        config = config.with_(data_root=absolute(args.data_root))
    folder = RunFolder("vae-train", out=path, mode="resume")
    return config, state, folder


def prepare_train(args: argparse.Namespace, data_cache: dict | None = None) -> tuple[VAERunConfig, MNISTData]:
    """The configuration of a new training run and its data, checked (options, MNIST files); nothing
    is trained and no folder is made. ``data_cache``: data already loaded, by ``(root, binary,
    validation, limit)`` (``svilab sweep`` checks many settings against the same files)."""
    config = run_config(args, args.loss, args.alpha)
    resolve_device(config.device)                       # a device that is not here: before any folder exists
    from svilab.memory import check_memory

    hidden = " ".join(map(str, config.vae.hidden))
    draws = config.particles if config.k is None else config.k
    check_memory(config.vae.memory_bytes(draws),
                 f"the network (--latent-dim {config.vae.latent_dim}, --hidden {hidden}, "
                 f"{config.vae.parameter_count():,} weights) with --batch-size {config.vae.batch_size} and "
                 + (f"--particles {config.particles}" if config.k is None else f"--k {config.k}"))
    if args.data_root is None and os.environ.get("SVILAB_DATA"):
        config = config.with_(data_root=absolute(os.environ["SVILAB_DATA"]))
    key = (config.data_root, config.vae.binarize, config.validation, config.limit)
    if data_cache is not None and key in data_cache:
        return config, data_cache[key]
    data = get_data(config)
    if data_cache is not None:
        data_cache[key] = data
    return config, data


def main_train(args: argparse.Namespace) -> int:
    reporter = Reporter(args.json)
    if args.resume:
        config, state, folder = _resume(args)
        reporter.say(f"resuming {folder} after epoch {state['epoch'] + 1}, to {config.epochs} epochs")
    else:
        config, data = prepare_train(args)      # data problems are reported before a run folder exists
        state, folder = None, RunFolder("vae-train", out=args.out, mode="overwrite" if args.overwrite else "new")
    if state is not None:
        data = get_data(config)
        trained_on = state.get("device", "cpu")
        if resolve_device(config.device) != torch.device(trained_on):
            reporter.say(f"note: the run was trained on {trained_on} and continues on "
                         f"{resolve_device(config.device)}: the same weights and optimizer state, but its random "
                         "draws differ from an uninterrupted run")
    try:
        run = run_one(config, folder, data, reporter, state)
    except DivergenceError as exc:
        raise ValueError(str(exc)) from None
    reporter.table("Test-set evaluation", summary_table([run]))
    reporter.say(f"\nRun folder: {folder}")
    reporter.emit_json({"runs": [_json_run(run)]})
    return 0


def main_compare(args: argparse.Namespace) -> int:
    reporter = Reporter(args.json)
    losses = [vae_loss(x) for x in args.losses]
    takes_alpha = ("gjs", "dgjs", "renyi")
    if args.alphas is not None and not any(loss in takes_alpha for loss in losses):
        raise ValueError("--alphas are the skews of gjs/dgjs (or the orders of renyi); --losses has none of them "
                         "(add gjs or dgjs, or drop --alphas)")
    for name, values in (("--losses", losses), ("--alphas", [str(a).lower() for a in args.alphas or []])):
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"{name}: {', '.join(twice)} given twice (synonyms count: trace_elbo is elbo)")
    plan = [(loss, None) for loss in losses if loss not in takes_alpha]
    plan += [(loss, a) for loss in losses if loss in takes_alpha for a in (args.alphas or [None])]
    configs = [run_config(args, loss, a, strict=False) for loss, a in plan]   # --beta: for gjs/dgjs only
    if args.k is not None and not any(cfg.k is not None for cfg in configs):
        raise ValueError("--k is the number of importance samples of iwae/renyi; --losses has neither")
    if args.dreg and not any(cfg.loss == "iwae" for cfg in configs):
        raise ValueError("--dreg is the doubly reparameterized gradient of iwae; --losses has no iwae")
    if args.data_root is None and os.environ.get("SVILAB_DATA"):
        configs = [cfg.with_(data_root=absolute(os.environ["SVILAB_DATA"])) for cfg in configs]
    resolve_device(configs[0].device)                   # a device that is not here: before any folder exists
    data = get_data(configs[0])
    folder = RunFolder("vae-compare", out=args.out, mode="overwrite" if args.overwrite else "new")
    folder.write_config({"command": "vae compare", "runs": [cfg.as_dict() for cfg in configs]})
    runs = []
    for cfg in configs:
        name = cfg.name
        try:
            sub = folder.sub(name)
            runs.append(run_one(cfg, sub, data, reporter))
            sub.finish()
        except DivergenceError as exc:
            raise ValueError(f"run {name}: {exc}") from None
    table = summary_table(runs)
    folder.write_table("comparison", table)
    save_figures(folder, runs, data)
    folder.write_results({"runs": [_json_run(r) for r in runs]})
    reporter.table("VAE objectives compared on the test set (higher ELBO / log-likelihood is better)", table,
                   floatfmt=".4g")
    reporter.say(f"\nRun folder: {folder}")
    reporter.emit_json({"runs": [_json_run(r) for r in runs]})
    return 0


__all__ = ["VAERunConfig", "evaluate", "make_vae_loss", "prepare_train", "register", "run_config", "train"]
