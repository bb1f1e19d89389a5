"""Benchmark: one VAE training step under each objective, side by side, on any device.

The step is :class:`svilab.inference.vae_training.TrainStep` (the one ``svilab vae train`` runs), same
network, same batch, same fused Adam, for:

* ``elbo``: the ELBO with its KL in closed form, JIT-compiled (the default of ``svilab vae train``);
* ``elbo-eager``: the same without the JIT (the importance-weighted objectives run eager);
* ``iwae-k5``: :class:`svilab.IWAE_ELBO` with k = 5, vectorized over the draws (the encoder runs once,
  the decoder on a ``(5, B, K)`` batch); ``iwae-k5-dreg``: the same with the DReG gradient;
* ``renyi-k5``: Pyro's ``RenyiELBO(alpha=0)`` with 5 particles (the same bound, Pyro's code);
* ``gjs``: the skew geometric JS objective at alpha 0.5, JIT; ``gjs-learned``: with the skew learned.

Each variant is built once and warmed up, then timed in ``--rounds`` rounds of ``--steps`` steps, one
variant after another within a round (the order rotating), in one process. Prints the median ms per step,
the median over rounds of each round's ratio to ``elbo`` (adjacent blocks: a machine that slows down for a
while slows both sides of a ratio) and seconds per epoch (50,000 images). The aim of issue #19: ``iwae-k5``
at most 3x ``elbo``.

    python benchmarks/bench_vae_objectives.py [--preset standard] [--device cpu|cuda|mps|auto]
        [--steps 100] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pyro
import torch

from svilab.devices import resolve_device
from svilab.experiments.vae import make_vae_loss
from svilab.inference.optim import GuardedAdam
from svilab.inference.vae_training import TrainStep, loss_parameters
from svilab.models.vae import PRESETS, VAE

#: name -> (loss, jit, k, dreg, alpha, learn_alpha)
VARIANTS = {
    "elbo": ("elbo", True, None, False, None, False),
    "elbo-eager": ("elbo", False, None, False, None, False),
    "iwae-k5": ("iwae", False, 5, False, None, False),
    "iwae-k5-dreg": ("iwae", False, 5, True, None, False),
    "renyi-k5": ("renyi", False, 5, False, 0.0, False),
    "gjs": ("gjs", True, None, False, 0.5, False),
    "gjs-learned": ("gjs", True, None, False, 0.5, True),
}


def build(name: str, preset: str, device, x: torch.Tensor):
    loss, jit, k, dreg, alpha, learn = VARIANTS[name]
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(PRESETS[preset]).to(device)
    loss_fn = make_vae_loss(loss, jit, 1, alpha, 1.0, k, dreg, learn)
    extra = loss_parameters(vae, make_vae_loss(loss, False, 1, alpha, 1.0, k, dreg, learn), x[:2])
    optim = GuardedAdam([*vae.parameters(), *extra.values()], lr=PRESETS[preset].lr)
    step = TrainStep(vae, optim, loss_fn, jit=jit)
    return lambda: step(x)


def timed(fn, steps: int, device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="standard", choices=list(PRESETS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (svilab's default policy: 1)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    pyro.enable_validation(False)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = PRESETS[args.preset]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(cfg.batch_size, 784, generator=g)
    x = ((x < 0.3).float() if cfg.binarize else x).to(device)
    names = ["elbo", *[n for n in args.variants if n != "elbo"]]
    fns = {}
    for n in names:
        fns[n] = build(n, args.preset, device, x)
        for _ in range(10):                              # warm-up (and the JIT's compilation)
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            times[n].append(timed(fns[n], args.steps, device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"preset {args.preset} (batch {cfg.batch_size}), device {name}, {args.threads} CPU thread(s), "
          f"{args.rounds} rounds of {args.steps} steps")
    print(f"{'objective':14s} {'ms/step':>9s} {'x elbo':>7s} {'s/epoch':>8s}")
    base = np.array(times["elbo"])
    for n in names:
        t = np.array(times[n])
        print(f"{n:14s} {1e3 * float(np.median(t)):9.2f} {float(np.median(t / base)):7.2f} "
              f"{float(np.median(t)) * 50_000 / cfg.batch_size:8.1f}", flush=True)


if __name__ == "__main__":
    main()
