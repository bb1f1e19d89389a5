"""svilab sweep against the same trials run as separate commands, on this machine's cores.

1. **Throughput**: 40 quick trials (``svilab posterior``, 300 steps, one guide each: 4 guides x 10
   seeds) as one ``svilab sweep`` against the same 40 commands run two at a time by ``xargs -P 2``
   (each paying Python's ~6 s import of torch, Pyro and ArviZ). Aim: the sweep <= 0.6x.
2. **Start-up**: from launching ``svilab sweep`` to the first trial started in a Ray worker
   (``started_at``) and to its command running (after the worker's imports). Aim: <= 10 s.
3. **Memory**: the peak resident memory of the sweep's whole process tree (driver, Ray's processes,
   workers; sampled every 0.2 s) for 50 and for 200 tiny ``svilab elbo`` trials. Aim: the same peak
   (bounded by the concurrency, not by the number of trials).

    .venv/bin/python benchmarks/bench_sweep.py [--skip-xargs] [--trials 40]

The two runs of (1) alternate in order over ``--rounds`` rounds (default 1; the sweep first), and the
ratio is of the sums. Writes nothing outside a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SVILAB = [sys.executable, "-m", "svilab"]
GUIDES = ("normal", "lognormal", "gamma", "mvn")


def tree_rss(root: int) -> int:
    """Resident memory (bytes) of ``root`` and all its descendants."""
    from svilab.sweep.watchdog import descendants

    total = 0
    for pid in [root, *descendants(root)]:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def run_sweep(spec_text: str, tmp: Path, name: str, sample_memory: bool = False) -> dict:
    spec = tmp / f"{name}.toml"
    spec.write_text(spec_text)
    out = tmp / name
    env = {**os.environ, "MPLBACKEND": "Agg"}
    t0 = time.time()
    proc = subprocess.Popen([*SVILAB, "sweep", str(spec), "--out", str(out), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        sampler.start()
    stdout, _ = proc.communicate()
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep {name} failed (rc {proc.returncode})")
    sj = json.loads(stdout)
    records = [json.loads((out / t["folder"] / "trial.json").read_text()) for t in sj["trials"]]
    first = min(records, key=lambda r: r["started_at"])
    return {"wall": wall, "first_started": first["started_at"] - t0,
            "first_command": first["started_at"] + first["import_seconds"] - t0, "peak_rss": peak[0],
            "done": sj["counts"]["done"], "failed": sj["counts"]["failed"]}


def run_xargs(commands: list[list[str]], tmp: Path) -> float:
    lines = "\n".join(" ".join(c) for c in commands) + "\n"
    t0 = time.time()
    subprocess.run(["xargs", "-P", "2", "-L", "1", "env", "MPLBACKEND=Agg"], input=lines, text=True, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=40, help="quick posterior trials (a multiple of 4)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--skip-xargs", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    seeds = args.trials // len(GUIDES)
    spec = (f'command = "posterior"\nseeds = {seeds}\n[options]\nsteps = 300\n'
            f'[grid]\nguides = {json.dumps(list(GUIDES))}\n')
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sweep_t, xargs_t = [], []
        for r in range(args.rounds):
            order = ("sweep", "xargs") if r % 2 == 0 else ("xargs", "sweep")
            for what in order:
                if what == "sweep":
                    res = run_sweep(spec, tmp, f"sweep{r}")
                    sweep_t.append(res["wall"])
                    print(f"round {r}: sweep of {res['done']} trials in {res['wall']:.1f} s; first trial started "
                          f"after {res['first_started']:.1f} s, its command after {res['first_command']:.1f} s",
                          flush=True)
                elif not args.skip_xargs:
                    cmds = [[*SVILAB, "posterior", "--steps=300", "--guides", g, f"--seed={s}", "--out",
                             str(tmp / f"x{r}" / f"{g}-{s}")] for g in GUIDES for s in range(seeds)]
                    xargs_t.append(run_xargs(cmds, tmp))
                    print(f"round {r}: {len(cmds)} commands by xargs -P 2 in {xargs_t[-1]:.1f} s", flush=True)
        if xargs_t:
            print(f"throughput: sweep {sum(sweep_t):.1f} s vs xargs -P 2 {sum(xargs_t):.1f} s = "
                  f"{sum(sweep_t) / sum(xargs_t):.2f}x (aim <= 0.6x)")
        if not args.skip_memory:
            peaks = {}
            for n in (50, 200):
                text = f'command = "elbo"\nseeds = {n}\n[options]\nM = [5]\nreps = 10\n'
                res = run_sweep(text, tmp, f"mem{n}", sample_memory=True)
                peaks[n] = res["peak_rss"]
                print(f"memory: {n} trials in {res['wall']:.0f} s, peak RSS of the process tree "
                      f"{res['peak_rss'] / 2**20:.0f} MiB", flush=True)
            print(f"memory: 200 vs 50 trials: {peaks[200] / peaks[50]:.2f}x the peak (aim: about 1x)")


if __name__ == "__main__":
    main()
