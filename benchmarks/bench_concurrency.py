"""Benchmark: several ``svilab vae train`` runs at once on a small machine, by thread policy.

For each policy, one run alone and then ``--runs`` runs started together (different seeds), each a
real ``svilab vae train`` process on MNIST (``--limit`` training images, a few epochs; the first
epoch, which includes the JIT compilation, is left out). Prints seconds per epoch alone and
concurrently, and the worst ratio concurrent / alone (the aim: <= 3 for three runs on 2 cores):

* ``svilab default``: no option, one thread per run (svilab/threads.py);
* ``all cores``: ``--threads auto`` in every run, i.e. what torch does by itself.

    python benchmarks/bench_concurrency.py [--runs 3] [--preset notebook] [--limit 20000] [--epochs 3]
        [--data-root DIR]   (default: $SVILAB_DATA, else ../shared/data)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

POLICIES = {"svilab default": [], "all cores": ["--threads", "auto"]}


def launch(n: int, extra: list[str], args, root: Path) -> list[float]:
    """Start ``n`` runs together; mean seconds per epoch (after the first) of each."""
    env = {**os.environ, "SVILAB_DATA": args.data_root}
    env.pop("OMP_NUM_THREADS", None)
    env.pop("SVILAB_THREADS", None)
    procs, outs = [], []
    for k in range(n):
        out = root / f"run{time.monotonic_ns()}-{k}"
        cmd = [sys.executable, "-m", "svilab", *extra, "vae", "train", "--preset", args.preset, "--limit",
               str(args.limit), "--epochs", str(args.epochs), "--eval-k", "10", "--eval-limit", "100",
               "--seed", str(k), "--out", str(out), "--json"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        outs.append(out)
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a run failed ({p.returncode}): {err.strip().splitlines()[-1] if err else ''}")
    secs = []
    for out in outs:
        hist = json.loads((out / "results.json").read_text())["history"]
        secs.append(float(np.mean([h["seconds"] for h in hist[1:]])))
    return secs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--preset", default="notebook")
    p.add_argument("--limit", type=int, default=20_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data-root", default=os.environ.get("SVILAB_DATA") or str(Path(__file__).resolve().parents[2]
                                                                                / "shared" / "data"))
    args = p.parse_args()
    print(f"{os.cpu_count()} cores; {args.runs} concurrent runs of `svilab vae train --preset {args.preset} "
          f"--limit {args.limit}`; seconds per epoch (epochs 2..{args.epochs})")
    print(f"{'policy':15s} {'alone':>7s} {'concurrent (each)':>24s} {'worst ratio':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in POLICIES.items():
            alone = launch(1, extra, args, Path(tmp))[0]
            together = launch(args.runs, extra, args, Path(tmp))
            print(f"{name:15s} {alone:7.2f} {', '.join(f'{s:.2f}' for s in together):>24s} "
                  f"{max(together) / alone:12.1f}", flush=True)


if __name__ == "__main__":
    main()
