"""Benchmark: seconds per SVI fit of each Poisson-Gamma guide, and what makes it fast.

For each guide, side by side in one process, with the settings ``svilab posterior`` uses
(2000 steps x 16 particles; the flow 800 x 128):

* ``plain``: ``pyro.infer.SVI`` + ``Trace_ELBO`` with Pyro's default validation, 2 threads;
* ``svilab``: :func:`svilab.inference.svi.fit` as ``svilab posterior`` runs it: JIT ELBO where the
  guide allows it (then one torch thread), validation on the first step only.

    python benchmarks/bench_svi.py [--guides normal lognormal gamma mvn flow]
"""

from __future__ import annotations

import argparse
import time

import pyro
import torch

from svilab.experiments.posterior import GUIDE_DEFAULTS
from svilab.guides import GUIDES, JIT_GUIDES, make_guide
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
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if name in JIT_GUIDES else threads)
    try:
        r = fit(pg.model, guide, steps=cfg["steps"], num_particles=cfg["particles"], lr=cfg["lr"],
                lr_final=cfg["lr"] / 40, jit=name in JIT_GUIDES, max_plate_nesting=1, seed=0)
    finally:
        torch.set_num_threads(threads)
    return r.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guides", nargs="+", default=list(GUIDES))
    args = p.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    pg = PoissonGamma()
    print(f"{'guide':10s} {'steps x particles':>18s} {'plain (s)':>10s} {'svilab (s)':>11s} {'ratio':>6s}")
    for name in args.guides:
        cfg = GUIDE_DEFAULTS.get(name, GUIDE_DEFAULTS["default"])
        a, b = plain(pg, name, cfg), svilab(pg, name, cfg)
        print(f"{name:10s} {cfg['steps']:>9d} x {cfg['particles']:<6d} {a:10.2f} {b:11.2f} {b / a:6.2f}", flush=True)


if __name__ == "__main__":
    main()
