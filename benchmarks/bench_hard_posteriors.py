"""Benchmark: hard posteriors (issue #18), every method against the exact answer, and the gradient
evaluations each needs.

Posteriors (``examples/hard``, exact draws from ``examples/hard/exact.py``, a quadrature over one scale):
``years`` (a trend on raw calendar years, correlation -0.99996), ``collinear`` (8 collinear predictors,
condition number 4e4), ``eight_schools_centered`` (a funnel); with ``--posteriordb`` also the seven shared
posteriordb posteriors (their reference draws).

1. **Every method, defaults**: ``svilab posterior --model ... --reference ... --pathfinder --nuts`` (the
   guides lognormal, mvn, flow; Pathfinder; NUTS 4 x 500). Per method: the worst mean error in reference sds,
   whether it is within 0.3 sd or warned (the aim: no silent failure), R-hat, gradient evaluations, seconds,
   and the whole command's seconds.
2. **Gradient evaluations to reach 0.3 sd**: lognormal and mvn fitted with ``--steps`` 100, 300, 1000, 3000
   (16 particles), preconditioned (svilab's default: Laplace start, whitened coordinates) and not
   (``--init uniform``: Stan's start, no whitening, what a plain Pyro fit does); the fewest steps x particles
   whose worst mean error is within 0.3 sd (``>`` when none is), next to Pathfinder's count from part 1.

    .venv/bin/python benchmarks/bench_hard_posteriors.py [--only years collinear] [--posteriordb]
        [--skip-defaults] [--skip-evals] [--out runs/bench-hard]

Writes ``OUT/defaults.md``, ``OUT/evals.md`` (and ``.csv``) and the run folders; prints both tables.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import pandas as pd

from svilab.cli import main as svilab_main
from svilab.experiments.runs import markdown

ROOT = Path(__file__).resolve().parents[1]
HARD = ROOT / "examples" / "hard"
BUILT = ["years", "collinear", "eight_schools_centered"]
STEPS = [100, 300, 1000, 3000]
PARTICLES = 16


def posteriors(args) -> dict[str, tuple[Path, Path, Path]]:
    """name -> (model file, data file, reference draws file), the exact references written to OUT."""
    sys.path.insert(0, str(HARD))
    import exact

    out = {}
    for name in BUILT:
        if args.only and name not in args.only:
            continue
        ref = exact.write_reference(name, Path(args.out) / f"reference_{name}.json")
        out[name] = (HARD / f"{name}.py", HARD / f"{name}.json", ref)
    if args.posteriordb:
        sys.path.insert(0, str(ROOT / "examples" / "posteriordb"))
        from run_all import EXAMPLES

        for name, example in EXAMPLES.items():
            if args.only and name not in args.only:
                continue
            folder = Path(args.db) / name
            out[name] = (ROOT / "examples" / "posteriordb" / example, folder / "data.json",
                         folder / "reference_draws.json")
    return out


def posterior(files, out: Path, *options: str) -> tuple[dict | None, float]:
    """One ``svilab posterior`` in this process; its JSON (None if it failed) and its seconds."""
    model, data, ref = files
    argv = ["posterior", "--model", str(model), "--data", str(data), "--reference", str(ref), "--json",
            "--out", str(out), "--overwrite", *options]
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = svilab_main(argv)
    seconds = time.perf_counter() - t0
    return (json.loads(buf.getvalue()) if rc == 0 else None), seconds


def defaults(args, files) -> tuple[pd.DataFrame, dict]:
    rows, pathfinder = [], {}
    for name, f in files.items():
        result, seconds = posterior(f, Path(args.out) / name, "--pathfinder", "--nuts")
        if result is None:
            print(f"{name}: svilab posterior failed", file=sys.stderr)
            continue
        for m in result["methods"]:
            err = m["max_abs_mean_error_sd"]
            details = m.get("details") or {}
            rows.append({"posterior": name, "method": m["name"], "max |mean error| (sd)": err,
                         "within 0.3 sd or warned": "yes" if err <= 0.3 or m["warnings"] else "NO (silent)",
                         "warnings": len(m["warnings"]), "max R-hat": details.get("max_r_hat"),
                         "gradient evals": details.get("gradient_evals"), "seconds": m["seconds"],
                         "command seconds": seconds})
            if m["name"] == "pathfinder":
                pathfinder[name] = (details.get("gradient_evals"), err, bool(m["warnings"]))
        print(f"{name}: every method in {seconds:.0f} s", file=sys.stderr, flush=True)
    return pd.DataFrame(rows).set_index(["posterior", "method"]), pathfinder


def evals(args, files, pathfinder: dict) -> pd.DataFrame:
    rows = []
    for name, f in files.items():
        row = {"posterior": name}
        for guide in ("lognormal", "mvn"):
            for mode, extra in (("preconditioned", []), ("plain", ["--init", "uniform"])):
                reached = None
                for steps in STEPS:
                    result, _ = posterior(f, Path(args.out) / f"{name}-{guide}-{mode}-{steps}", "--guides", guide,
                                          "--steps", str(steps), "--particles", str(PARTICLES), "--draws", "2000",
                                          "--elbo-samples", "4000", *extra)
                    err = result["methods"][0]["max_abs_mean_error_sd"] if result else float("inf")
                    if err <= 0.3:
                        reached = steps * PARTICLES
                        break
                row[f"{guide} {mode}"] = reached if reached is not None else f"> {STEPS[-1] * PARTICLES}"
        pf = pathfinder.get(name)
        row["pathfinder"] = (f"{pf[0]}" + ("" if pf[1] <= 0.3 else f" (ends {pf[1]:.2f} sd off, warned)"
                                           if pf[2] else f" (ends {pf[1]:.2f} sd off)")) if pf else None
        rows.append(row)
        print(f"{name}: gradient evaluations done", file=sys.stderr, flush=True)
    return pd.DataFrame(rows).set_index("posterior")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-hard")
    p.add_argument("--only", nargs="+", default=None)
    p.add_argument("--posteriordb", action="store_true", help="also the seven shared posteriordb posteriors")
    p.add_argument("--db", default=str(ROOT.parent / "shared" / "posteriordb"))
    p.add_argument("--skip-defaults", action="store_true")
    p.add_argument("--skip-evals", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = posteriors(args)
    pathfinder = {}
    if not args.skip_defaults:
        table, pathfinder = defaults(args, files)
        table.to_csv(out / "defaults.csv")
        (out / "defaults.md").write_text(markdown(table, ".3g") + "\n")
        print(markdown(table, ".3g"), flush=True)
    if not args.skip_evals:
        table = evals(args, files, pathfinder)
        table.to_csv(out / "evals.csv")
        (out / "evals.md").write_text(markdown(table, ".3g") + "\n")
        print("\nGradient evaluations (steps x particles) to reach 0.3 reference sd on every mean\n")
        print(markdown(table, ".3g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
