"""svilab sweep SPEC.toml: run one svilab command over a grid of settings and several seeds, on Ray, and
summarise every metric per setting (mean, sd, 95% Student-t interval) and against a baseline
setting on the same seeds (paired difference with its interval).

The spec (TOML) names the command (posterior, vae train, gradients, elbo), its fixed [options],
a [grid] whose cartesian product gives the settings, the seeds (a count or a list) and the
baseline setting, for example:

    command = "posterior"
    seeds = 5
    baseline = { guides = "gamma" }
    [options]
    steps = 300
    [grid]
    guides = ["gamma", "lognormal", "mvn"]
    lr = [0.01, 0.03]

Every trial is the command's own run (the same numbers as running it alone with that seed) in its
own folder SWEEP/trials/<setting>/seed-<s>/. Ray runs as many trials at once as there are cores
(--max-concurrent), locally (started and stopped by this command) or on a cluster (--address).
A trial that fails is recorded with its error and the others go on; after Ctrl-C or a kill,
--resume SWEEP runs only the unfinished trials. Progress: one line per finished trial with an ETA;
curves in TensorBoard (tensorboard --logdir SWEEP). Results: sweep.json, summary.md/.csv,
paired.md/.csv, trials.csv and figures in the sweep folder; --report SWEEP writes them again
(also while the sweep runs, printing only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from svilab.experiments.common import Reporter
from svilab.experiments.runs import RunFolder, lock_holder
from svilab.files import atomic_write


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a command over a grid of settings and seeds on Ray, with intervals",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="?", metavar="SPEC.toml", help="the sweep's spec (see above)")
    p.add_argument("--out", default=None, metavar="DIR", help="the sweep folder (default: runs/sweep-<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier svilab run in --out")
    p.add_argument("--resume", default=None, metavar="SWEEP",
                   help="run the unfinished trials of the sweep in SWEEP (with a SPEC: it must be the same spec)")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: run the failed trials again too")
    p.add_argument("--report", default=None, metavar="SWEEP",
                   help="write the tables and figures of SWEEP again from its trial folders; nothing runs")
    p.add_argument("--dry-run", action="store_true",
                   help="check the spec, print the trials and an estimate of their time; nothing runs")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="trials at a time (default: the CPUs Ray has; one torch thread each)")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster: auto (one started here with `ray start`), HOST:PORT or "
                        "ray://HOST:PORT (default: a local Ray started and stopped by this command)")
    p.add_argument("--retries", type=int, default=None, metavar="N",
                   help="times a trial whose worker process died is run again (default 2)")
    p.add_argument("--json", action="store_true", help="print sweep.json on stdout (progress goes to stderr)")
    p.set_defaults(func=main)


def _check_options(args: argparse.Namespace) -> None:
    modes = [m for m in ("resume", "report") if getattr(args, m)]
    if len(modes) > 1:
        raise ValueError("--resume and --report are two different things; give one")
    if not modes and not args.spec:
        raise ValueError("give a SPEC.toml to run (or --resume SWEEP / --report SWEEP)")
    if args.report:
        given = [o for o, v in (("SPEC", args.spec), ("--out", args.out), ("--dry-run", args.dry_run),
                                ("--max-concurrent", args.max_concurrent), ("--address", args.address),
                                ("--retries", args.retries), ("--retry-failed", args.retry_failed),
                                ("--overwrite", args.overwrite)) if v]
        if given:
            raise ValueError(f"--report only re-aggregates a sweep's folder; {', '.join(given)} do not apply")
    if args.resume and (args.out or args.overwrite):
        raise ValueError("--resume continues the sweep in its own folder; --out/--overwrite do not apply")
    if args.retry_failed and not args.resume:
        raise ValueError("--retry-failed applies to --resume")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be at least 1, got {args.max_concurrent}")
    if args.retries is not None and args.retries < 0:
        raise ValueError(f"--retries must be 0 or more, got {args.retries}")
    if args.address is not None:
        from svilab.sweep.engine import _host_port

        if args.address != "auto" and _host_port(args.address) is None:
            raise ValueError(f"--address {args.address}: expected auto, HOST:PORT or ray://HOST:PORT")


def _print_report(sj: dict, reporter: Reporter) -> None:
    from svilab.sweep.report import paired_wide, summary_wide

    c = sj["counts"]
    title = sj["spec"].get("title") or f"svilab {sj['spec']['command']}"
    summ = summary_wide(sj)
    if len(summ):
        reporter.table(f"{title}: mean over seeds [95% interval] ({c['done']} trials done, {c['failed']} failed, "
                       f"{c['pending']} pending)", summ, index=False)
    pair = paired_wide(sj)
    if len(pair):
        base = ", ".join(f"{k}={v}" for k, v in (sj["spec"]["baseline"] or {}).items())
        reporter.table(f"Paired difference to the baseline ({base}) on the same seeds [95% interval], "
                       "* where it excludes 0", pair, index=False)
    if c["failed"]:
        print(f"warning: {c['failed']} of {c['trials']} trials failed (their errors: trials.csv)", file=sys.stderr)


def main_report(args: argparse.Namespace, reporter: Reporter) -> int:
    from svilab.sweep import report
    from svilab.sweep.runner import load_saved

    path = Path(args.report)
    spec, _ = load_saved(path)
    trials = spec.trials()
    records = report.read_records(path, spec, trials)
    sj = report.sweep_json(spec, trials, records)
    _print_report(sj, reporter)
    holder = lock_holder(path)
    if holder is None:
        report.write_tables(path, sj)
        report.write_figures(path, spec, trials, records, sj)
        reporter.say(f"\nReport written in {path}")
    else:
        reporter.say(f"\nThe sweep is still running (process {holder['pid']}): printed only; it rewrites its tables "
                     "after every trial and its figures at the end")
    reporter.emit_json(sj)
    return 0


def main(args: argparse.Namespace) -> int:
    from svilab.sweep import report
    from svilab.sweep.engine import check_address, require_ray
    from svilab.sweep.runner import (
        DEFAULT_RETRIES,
        SPEC_FILE,
        TRIALS_FILE,
        SweepRun,
        clean_partial,
        dry_run,
        execute,
        load_saved,
        same_spec,
    )
    from svilab.sweep.spec import SweepSpec

    _check_options(args)
    reporter = Reporter(args.json)
    if args.report:
        return main_report(args, reporter)
    retries = DEFAULT_RETRIES if args.retries is None else args.retries
    if args.resume:
        path = Path(args.resume)
        spec, saved = load_saved(path)
        if args.spec:
            given = SweepSpec.from_file(args.spec)
            diff = same_spec(given, spec)
            if diff:
                raise ValueError(f"--resume {path}: {args.spec} is not the spec this sweep was started with "
                                 f"(they differ in {diff})")
    else:
        spec = SweepSpec.from_file(args.spec)
    trials = spec.check()
    if args.resume:
        if args.address is None and saved.get("address") and not args.dry_run:
            args.address = saved["address"]
        if args.max_concurrent is None:
            args.max_concurrent = saved.get("max_concurrent")

    def finished() -> dict:
        """The trials already done (read once, after a resume has cleaned its partial folders)."""
        if not args.resume:
            return {}
        records = report.read_records(path, spec, trials)
        return {k: r for k, r in records.items() if r.get("status") != "failed"} if args.retry_failed else records

    if args.dry_run:
        run = SweepRun(spec, trials, Path(args.resume or "."), finished())
        out = dry_run(run, args.max_concurrent, reporter.say)
        reporter.emit_json(out)
        return 0
    require_ray()
    if args.address:
        check_address(args.address)
    if args.resume:
        folder = RunFolder("sweep", out=path, mode="resume")
        clean_partial(path)
        records = finished()
    else:
        records = {}
        folder = RunFolder("sweep", out=args.out, mode="overwrite" if args.overwrite else "new")
        spec_path = Path(args.spec).resolve()
        folder.write_config({"command": "sweep", "spec": spec.as_dict(), "spec_file": str(spec_path),
                             "spec_dir": str(spec_path.parent), "address": args.address,
                             "max_concurrent": args.max_concurrent, "retries": retries})
        text = spec.text
        atomic_write(folder.path / SPEC_FILE, lambda tmp: tmp.write_text(text))
        folder.write_json(TRIALS_FILE, [t.as_dict() for t in trials])
    run = SweepRun(spec, trials, folder.path, records)
    report.write_tables(folder.path, run.report())
    execute(run, folder, address=args.address, max_concurrent=args.max_concurrent, retries=retries,
            say=reporter.say, json_mode=args.json)
    sj = run.report()
    report.write_tables(folder.path, sj)
    figures = report.write_figures(folder.path, spec, trials, run.records, sj)
    _print_report(sj, reporter)
    reporter.say(f"\nSweep folder: {folder} (figures: {', '.join(figures) or 'none'}; "
                 f"TensorBoard: tensorboard --logdir {folder})")
    reporter.emit_json(sj)
    return 0


__all__ = ["main", "register"]
