"""Benchmark: seconds per SVI fit of each Poisson-Gamma guide, Pyro's plain loop vs svilab's ``fit``.

For each guide, side by side in one process with one torch thread, with the settings ``svilab
posterior`` uses (2000 steps x 16 particles; the flow 800 x 128), alternating, best of ``--repeat``:

* ``plain``: ``pyro.infer.SVI`` + ``Trace_ELBO`` + Pyro's ``ClippedAdam`` (one optimizer per
  parameter) with the same schedule, Pyro's default validation;
* ``svilab``: :func:`svilab.inference.svi.fit` as ``svilab posterior`` runs it: the JIT ELBO
  compiled once where the guide allows it, validation on the first step only, one fused guarded
  Adam (:class:`svilab.inference.optim.GuardedAdam`) for all parameters, compilation included.

Before both, the first ``fit`` of the process is timed on its own (``first fit after imports``):
``svilab``'s optimizer never imports ``torch._dynamo``, which ``torch.optim`` (and so Pyro's
``ClippedAdam``) does on its first step, for about 1.2 s.

    python benchmarks/bench_svi.py [--guides normal lognormal gamma mvn flow] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import pyro
import torch

from svilab.guides import GUIDES, guide_spec, make_guide
from svilab.inference.svi import fit, make_optimizer
from svilab.models import PoissonGamma


def plain(pg, name, cfg) -> float:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = make_guide(name, pg.model)
    svi = pyro.infer.SVI(pg.model, guide, make_optimizer(cfg["lr"], cfg["lr"] / 40, cfg["steps"]),
                         pyro.infer.Trace_ELBO(num_particles=cfg["particles"], vectorize_particles=True,
                                               max_plate_nesting=1))
    t0 = time.perf_counter()
    for _ in range(cfg["steps"]):
        svi.step()
    return time.perf_counter() - t0


def svilab(pg, name, cfg) -> float:
    pyro.clear_param_store()
    guide = make_guide(name, pg.model)
    t0 = time.perf_counter()
    fit(pg.model, guide, steps=cfg["steps"], num_particles=cfg["particles"], lr=cfg["lr"],
        lr_final=cfg["lr"] / 40, jit=guide_spec(name).jit, max_plate_nesting=1, seed=0)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guides", nargs="+", default=list(GUIDES))
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (svilab's default policy: 1)")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    pg = PoissonGamma()
    first = svilab(pg, "lognormal", guide_spec("lognormal").schedule)
    print(f"first fit after imports (lognormal, 2000 x 16, compilation included): {first:.2f} s")
    print(f"{'guide':10s} {'steps x particles':>18s} {'plain (s)':>10s} {'svilab (s)':>11s} {'ratio':>6s}")
    for name in args.guides:
        cfg = guide_spec(name).schedule
        a, b = [], []
        for _ in range(args.repeat):
            a.append(plain(pg, name, cfg))
            b.append(svilab(pg, name, cfg))
        print(f"{name:10s} {cfg['steps']:>9d} x {cfg['particles']:<6d} {min(a):10.2f} {min(b):11.2f} "
              f"{min(b) / min(a):6.2f}", flush=True)


if __name__ == "__main__":
    main()
