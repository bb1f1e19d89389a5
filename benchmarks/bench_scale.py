"""Benchmark: memory and time of one SVI step as the model grows (issue #21).

Each configuration runs in its own process (so its peak memory is its own: ``ru_maxrss`` of the child), builds
the guide, takes ``--steps`` SVI steps (``Trace_ELBO``, 4 particles, float64 as user models run, one torch
thread) and reports the median seconds per step and the peak resident memory:

* against the latent dimension D (a Normal model ``z ~ N(0, I_D)``, one observation per dimension) for the
  guides ``lognormal``, ``lowrank`` and ``flow`` (sized from D);
* against the number of observations N (a logistic regression with 5 predictors, ``examples/big/logistic.py``)
  with every row per step, and with ``subsample_size=1000`` (Pyro's plate; ``svilab posterior --batch-size``).

Prints one line per configuration and, per series, the slope of log(seconds) and log(memory above the
smallest size's peak) against log(size) between the two largest sizes (1: linear).

    python benchmarks/bench_scale.py [--dims 10 100 1000 10000 100000] [--rows 1000 10000 100000 1000000 10000000]
        [--steps 20] [--max-gb 8]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

from svilab.guides.sizing import guide_memory_bytes

CHILD = r"""
import json, resource, sys, time
import torch, pyro, pyro.distributions as dist
torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
kind, size, guide_name, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
from svilab.guides import make_guide
if kind == "dim":
    def model():
        z = pyro.sample("z", dist.Normal(torch.zeros(size), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=torch.zeros(size))
    args = ()
else:
    sys.path.insert(0, "examples/big")
    from logistic import model as logistic
    data = {"n": size, "p": 5, "seed": 0}
    batch = None if guide_name == "full" else 1000
    def model():
        return logistic(data, subsample_size=batch)
    guide_name = "lognormal"
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pyro.set_rng_seed(0)
guide = make_guide(guide_name, model)
elbo = pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
optim = pyro.optim.Adam({"lr": 0.01})
svi = pyro.infer.SVI(model, guide, optim, elbo)
svi.step()
times = []
for _ in range(steps):
    t0 = time.perf_counter(); svi.step(); times.append(time.perf_counter() - t0)
times.sort()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": times[len(times) // 2], "peak_mb": peak / 1024, "base_mb": base / 1024}))
"""


def run(kind: str, size: int, guide: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(size), guide, str(steps)], capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(rows: list[tuple[int, dict]], key: str) -> str:
    """log-log slope between the two largest sizes; memory above the smallest size's peak (the process and
    one step's fixed cost), so that what grows with the size is measured."""
    ok = [(n, r) for n, r in rows if "error" not in r]
    if len(ok) < 3:
        return "n/a"
    floor = ok[0][1][key] if key == "peak_mb" else 0.0
    (n1, r1), (n2, r2) = ok[-2], ok[-1]
    a, b = r1[key] - floor, r2[key] - floor
    if a <= 0 or b <= 0:
        return "n/a"
    return f"{math.log(b / a) / math.log(n2 / n1):.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="*", default=[10, 100, 1000, 10_000, 100_000])
    p.add_argument("--rows", type=int, nargs="*", default=[1000, 10_000, 100_000, 1_000_000, 10_000_000])
    p.add_argument("--guides", nargs="+", default=["lognormal", "lowrank", "flow"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-gb", type=float, default=8.0, help="skip a guide whose estimated step exceeds this")
    args = p.parse_args()
    print(f"{'series':22s} {'size':>9s} {'s/step':>9s} {'peak MB':>9s}")
    for guide in args.guides:
        rows = []
        for d in args.dims:
            need = guide_memory_bytes(guide, d, particles=4)
            if need > args.max_gb * 2**30:
                print(f"{'D, ' + guide:22s} {d:9d}   (skipped: svilab's estimate for one step is "
                      f"{need / 2**30:.0f} GB, over --max-gb {args.max_gb:g}; svilab refuses it up front)")
                continue
            r = run("dim", d, guide, args.steps)
            rows.append((d, r))
            print(f"{'D, ' + guide:22s} {d:9d} " + (f"{r['seconds']:9.4f} {r['peak_mb']:9.0f}" if "error" not in r
                                                     else r["error"]), flush=True)
        print(f"  slope in D: time {slope(rows, 'seconds')}, memory {slope(rows, 'peak_mb')}")
    for mode in ("full", "batch") if args.rows else ():
        rows = []
        for n in args.rows:
            r = run("rows", n, mode, args.steps)
            rows.append((n, r))
            label = "N, every row" if mode == "full" else "N, batches of 1000"
            print(f"{label:22s} {n:9d} " + (f"{r['seconds']:9.4f} {r['peak_mb']:9.0f}" if "error" not in r
                                            else r["error"]), flush=True)
        print(f"  slope in N: time {slope(rows, 'seconds')}, memory {slope(rows, 'peak_mb')}")


if __name__ == "__main__":
    main()
