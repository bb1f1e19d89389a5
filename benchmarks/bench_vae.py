"""Benchmark: one training step of svilab's Pyro VAE vs a hand-written PyTorch step, side by side.

Same network, same batch, same objective (one reparameterized sample of log p(x | z) minus the
analytic KL, summed over the batch), same optimizer (:class:`svilab.inference.optim.GuardedAdam`:
torch's fused Adam kernel over all parameters, with the non-finite guard):

* ``torch``: the loss written out by hand on the encoder/decoder;
* ``eager``: :class:`svilab.inference.vae_training.TrainStep` with Pyro's ``TraceMeanField_ELBO`` on
  ``VAE.model``/``VAE.guide`` (validation off, as in training after the first step);
* ``jit``: the same with the JIT ELBO compiled once (``svilab vae train``'s default).

The three variants are built once, then timed in ``--rounds`` rounds of ``--steps`` steps each, one
after another within a round (the order rotating), in one process with one torch thread. Prints the
median ms per step, the median over rounds of each round's ratio to ``torch`` (adjacent blocks, so a
machine that slows down for a while slows both sides of a ratio), and seconds per epoch (50,000 images).

    python benchmarks/bench_vae.py [--steps 200] [--rounds 7] [--presets notebook standard] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pyro
import torch
import torch.nn.functional as F

from svilab.experiments.vae import make_vae_loss
from svilab.inference.optim import GuardedAdam
from svilab.inference.vae_training import TrainStep
from svilab.models.vae import PRESETS, VAE


def torch_step(vae: VAE, optim: GuardedAdam, x):
    loc, scale = vae.encode(x)
    z = loc + scale * torch.randn_like(loc)
    out = vae.decode(z)
    if vae.config.likelihood == "bernoulli":
        log_lik = -F.binary_cross_entropy_with_logits(out, x, reduction="sum")
    else:
        log_lik = torch.distributions.Normal(out, vae.config.sigma).log_prob(x).sum()
    kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum()
    loss = kl - log_lik
    loss.backward()
    optim.step(loss)


def timed(fn, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--threads", type=int, default=1, help="torch threads (svilab's default policy: 1)")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    pyro.enable_validation(False)
    torch.set_num_threads(args.threads)
    print(f"{'preset':9s} {'batch':>5s} {'torch ms':>9s} {'eager ms':>9s} {'jit ms':>7s} {'eager/torch':>12s} "
          f"{'jit/torch':>10s} {'torch s/epoch':>14s} {'jit s/epoch':>12s}")
    for name in args.presets:
        cfg = PRESETS[name]
        g = torch.Generator().manual_seed(0)
        x = torch.rand(cfg.batch_size, 784, generator=g)
        if cfg.binarize:
            x = (x < 0.3).float()
        variants = {}
        for kind in ("torch", "eager", "jit"):
            pyro.clear_param_store()
            torch.manual_seed(0)
            vae = VAE(cfg)
            optim = GuardedAdam(vae.parameters(), lr=cfg.lr)
            if kind == "torch":
                fn = lambda vae=vae, optim=optim, x=x: torch_step(vae, optim, x)  # noqa: E731
            else:
                step = TrainStep(vae, optim, make_vae_loss("elbo", jit=kind == "jit"), jit=kind == "jit")
                fn = lambda step=step, x=x: step(x)  # noqa: E731
            for _ in range(20):                  # warm-up (and the JIT's compilation)
                fn()
            variants[kind] = fn
        kinds = list(variants)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for kind in kinds[r % 3:] + kinds[:r % 3]:
                times[kind].append(timed(variants[kind], args.steps))
        t, e, j = (float(np.median(times[k])) for k in kinds)
        ratio = {k: float(np.median(np.array(times[k]) / np.array(times["torch"]))) for k in ("eager", "jit")}
        per_epoch = 50_000 // cfg.batch_size
        print(f"{name:9s} {cfg.batch_size:5d} {1e3 * t:9.2f} {1e3 * e:9.2f} {1e3 * j:7.2f} {ratio['eager']:12.2f} "
              f"{ratio['jit']:10.2f} {t * per_epoch:14.1f} {j * per_epoch:12.1f}", flush=True)


if __name__ == "__main__":
    main()
