"""Benchmark: one training step of svilab's Pyro VAE vs a hand-written PyTorch step, side by side.

Same network, same batch, same objective (one reparameterized sample of log p(x | z) minus the
analytic KL, summed over the batch), same optimizer (torch Adam over all parameters):

* ``torch``: the loss written out by hand on the encoder/decoder;
* ``svilab``: :class:`svilab.experiments.vae.TrainStep`, i.e. Pyro's ``TraceMeanField_ELBO`` on
  ``VAE.model``/``VAE.guide`` (validation off, as in training after the first step);
* ``svilab+jit``: the same with ``JitTraceMeanField_ELBO``.

Prints ms per step, the ratio svilab / torch, and seconds per epoch (50,000 training images).

    python benchmarks/bench_vae.py [--steps 200] [--presets notebook standard]
"""

from __future__ import annotations

import argparse
import time
import warnings

import pyro
import torch
import torch.nn.functional as F

from svilab.experiments.vae import TrainStep, _loss
from svilab.models.vae import PRESETS, VAE


def torch_step(vae: VAE, optim, x):
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
    optim.step()
    optim.zero_grad(set_to_none=True)
    return float(loss)


def timed(fn, steps: int) -> float:
    for _ in range(20):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    pyro.enable_validation(False)
    print(f"{'preset':9s} {'batch':>5s} {'torch ms':>9s} {'svilab ms':>10s} {'ratio':>6s} {'jit ms':>8s} "
          f"{'torch s/epoch':>14s} {'svilab s/epoch':>15s}")
    for name in args.presets:
        cfg = PRESETS[name]
        g = torch.Generator().manual_seed(0)
        x = torch.rand(cfg.batch_size, 784, generator=g)
        if cfg.binarize:
            x = (x < 0.3).float()
        results = {}
        for kind in ("torch", "svilab", "svilab+jit", "torch2", "svilab2"):   # interleaved twice
            pyro.clear_param_store()
            torch.manual_seed(0)
            vae = VAE(cfg)
            optim = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
            if kind.startswith("torch"):
                fn = lambda vae=vae, optim=optim: torch_step(vae, optim, x)  # noqa: E731, B023
            else:
                step = TrainStep(vae, optim, _loss({"loss": "elbo", "particles": 1, "alpha": None, "beta": 1.0},
                                                   jit=kind.endswith("jit")))
                fn = lambda step=step: step(x)  # noqa: E731, B023
            results[kind] = timed(fn, args.steps)
        t = min(results["torch"], results["torch2"])
        s = min(results["svilab"], results["svilab2"])
        per_epoch = 50_000 // cfg.batch_size
        jit = results["svilab+jit"]
        print(f"{name:9s} {cfg.batch_size:5d} {1e3 * t:9.2f} {1e3 * s:10.2f} {s / t:6.2f} {1e3 * jit:8.2f} "
              f"{t * per_epoch:14.1f} {s * per_epoch:15.1f}", flush=True)


if __name__ == "__main__":
    main()
