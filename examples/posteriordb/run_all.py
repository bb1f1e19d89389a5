"""Every posteriordb posterior in ../shared/posteriordb through ``svilab posterior --model``, and one
summary table: per posterior and method the worst mean error in reference sds, the range of sd
ratios, Pareto k-hat, the number of warnings and the seconds.

    .venv/bin/python examples/posteriordb/run_all.py [--db ../shared/posteriordb] [--out DIR] [--quick]
        [-- extra svilab posterior options, e.g. --guides mvn]

Writes ``DIR/<posterior>/`` (each a normal ``svilab posterior`` run folder) and ``DIR/summary.md``/``.csv``.
``--quick`` uses the test suite's small settings. Default: all guides the CLI fits to a user
model (lognormal, mvn, flow) and NUTS (4 chains x 1000 draws).
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

HERE = Path(__file__).resolve().parent
EXAMPLES = {
    "eight_schools-eight_schools_noncentered": "eight_schools_noncentered.py",
    "earnings-logearn_height": "earnings_logearn_height.py",
    "arK-arK": "arK.py",
    "garch-garch11": "garch11.py",
    "low_dim_gauss_mix-low_dim_gauss_mix": "low_dim_gauss_mix.py",
    "mesquite-logmesquite": "logmesquite.py",
    "sblrc-blr": "sblrc_blr.py",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default=str(HERE.parents[1].parent / "shared" / "posteriordb"))
    p.add_argument("--out", default=f"runs/posteriordb-{time.strftime('%Y%m%d-%H%M%S')}")
    p.add_argument("--quick", action="store_true", help="small settings (as in the tests)")
    p.add_argument("--only", nargs="+", default=None, help="posterior names (folder names) to run")
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    settings = ["--steps", "1500", "--draws", "2000", "--elbo-samples", "4000", "--nuts-samples", "500",
                "--nuts-warmup", "400", "--chains", "2"] if args.quick else ["--nuts-samples", "1000",
                                                                             "--nuts-warmup", "1000"]
    rows = []
    for name, example in EXAMPLES.items():
        if args.only and name not in args.only:
            continue
        folder = Path(args.db) / name
        argv_run = ["posterior", "--model", str(HERE / example), "--data", str(folder / "data.json"),
                    "--reference", str(folder / "reference_draws.json"), "--nuts", "--json", "--out",
                    str(out / name), *settings, *extra]
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            rc = svilab_main(argv_run)
        if rc != 0:
            print(f"{name}: svilab posterior failed (rc {rc})", file=sys.stderr)
            continue
        result = json.loads(buf.getvalue())
        for m in result["methods"]:
            ratios = [q["sd_ratio"] for q in m["params"].values() if "sd_ratio" in q]
            rows.append({"posterior": name, "method": m["name"],
                         "max |mean error| (ref sd)": m["max_abs_mean_error_sd"], "sd ratio min": min(ratios),
                         "sd ratio max": max(ratios), "Pareto k": m["pareto_k"], "warnings": len(m["warnings"]),
                         "seconds": m["seconds"]})
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows).set_index(["posterior", "method"])
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "summary.csv")
    (out / "summary.md").write_text(markdown(table, ".3g") + "\n")
    print(markdown(table, ".3g"))
    print(f"\nRun folders and summary: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
