"""The sweep itself: its folder, the trials on Ray, progress, resume.

A sweep folder (``runs/sweep-<timestamp>/`` or ``--out``) is a run folder (lock, ``status.json``,
``config.json``) that holds::

    spec.toml        the spec as given (the sweep is resumed from it)
    trials.json      every trial: setting, seed, the command's arguments, its folder
    trials/<setting>/seed-<s>/   each trial's own run folder (what the command writes alone, plus
                     log.txt, TensorBoard events and trial.json); it appears atomically when the
                     trial ends, so a missing one is an unfinished trial
    sweep.json, summary.*, paired.*, trials.csv, *.png   the report (:mod:`svilab.sweep.report`)

Only the driver writes there; workers send their folders back as task results.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from svilab.experiments.runs import RunFolder, dumps
from svilab.files import atomic_write
from svilab.sweep import report
from svilab.sweep.spec import SpecError, SweepSpec, Trial
from svilab.sweep.trial import collect_inputs, unpack

SPEC_FILE = "spec.toml"
TRIALS_FILE = "trials.json"
#: how often Ray retries a trial whose worker process died (killed, out of memory, node lost)
DEFAULT_RETRIES = 2


@dataclass
class SweepRun:
    """A sweep's spec, trials, folder and the records of its finished trials."""

    spec: SweepSpec
    trials: list[Trial]
    path: Path
    records: dict

    def report(self) -> dict:
        return report.sweep_json(self.spec, self.trials, self.records)


def load_saved(path: Path) -> tuple[SweepSpec, dict]:
    """The spec a sweep folder was started with, and its ``config.json``."""
    try:
        config = json.loads((path / "config.json").read_text())
        text = (path / SPEC_FILE).read_text()
    except (OSError, ValueError):
        raise SpecError(f"{path} is not a sweep folder (no {SPEC_FILE} and config.json from `svilab sweep`)") from None
    if not isinstance(config, dict) or config.get("command") != "sweep":
        raise SpecError(f"{path} is not a sweep folder (its config.json is from `svilab {config.get('command')}`)"
                        if isinstance(config, dict) else f"{path} is not a sweep folder")
    return SweepSpec.from_text(text, config.get("spec_dir") or path, str(path / SPEC_FILE)), config


def same_spec(a: SweepSpec, b: SweepSpec) -> str | None:
    """None when the two specs make the same trials, else the first difference."""
    da, db = a.as_dict(), b.as_dict()
    for k in da:
        if da[k] != db[k]:
            return k
    ta, tb = [t.argv for t in a.trials()], [t.argv for t in b.trials()]
    return None if ta == tb else "options (a path resolves elsewhere)"


def install(path: Path, trial: Trial, spec: SweepSpec, result: dict) -> dict:
    """Put a finished trial's folder in place atomically (unpacked beside it, ``trial.json`` written,
    then renamed): a reader sees the whole trial or none of it. Returns its record."""
    record = report.trial_record(trial, spec, result)
    final = path / trial.folder
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if result.get("archive"):
        unpack(result["archive"], tmp)
    else:
        tmp.mkdir(parents=True)
        atomic_write(tmp / "status.json", lambda t: t.write_text(dumps({"status": "failed", "error": result.get(
            "error")}) + "\n"))
    stored = {k: v for k, v in record.items() if k not in ("metrics", "units")}
    atomic_write(tmp / report.TRIAL_RECORD, lambda t: t.write_text(dumps(stored) + "\n"))
    if final.exists():                      # --retry-failed: the failed attempt goes
        shutil.rmtree(final)
    os.replace(tmp, final)
    return record


def clean_partial(path: Path) -> None:
    """Remove trial folders half-unpacked by a driver that was killed."""
    trials = path / "trials"
    if trials.is_dir():
        for p in trials.glob("*/.*.tmp"):
            shutil.rmtree(p, ignore_errors=True)


def _eta(done_secs: list[float], left: int, slots: int) -> str:
    if not done_secs or left <= 0:
        return ""
    secs = sum(done_secs) / len(done_secs) * left / max(1, slots)
    m, s = divmod(int(secs + 0.5), 60)
    return f", ETA {m}:{s:02d}"


def _metric_text(record: dict, limit: int = 3) -> str:
    parts = []
    for label, values in (record.get("metrics") or {}).items():
        shown = [f"{k} {v:.4g}" for k, v in values.items() if v is not None][:limit]
        if shown:
            parts.append((f"{label}: " if label != "vae" else "") + ", ".join(shown))
        if len(parts) >= 2:
            break
    return "; ".join(parts)


#: seconds between rewrites of the tables while a sweep runs (``--report`` reads the records at any time;
#: the caller writes the final tables)
TABLES_EVERY = 5.0


def execute(run: SweepRun, folder: RunFolder, *, address: str | None, max_concurrent: int | None,
            retries: int, say, json_mode: bool = False) -> None:
    """Run every trial of ``run`` not finished yet on Ray, installing each as it ends and rewriting
    the tables after each; figures at the end. Ctrl-C/SIGTERM cancel the running trials (they run
    again on ``--resume``)."""
    from tqdm.auto import tqdm

    from svilab.sweep.engine import ray_session
    from svilab.sweep.trial import run_trial

    pending = deque(t for t in run.trials if t.key not in run.records)
    if not pending:
        return
    t0 = time.perf_counter()
    out = sys.stderr if json_mode else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    # Ray's own messages (a worker that died, ...) are printed on stdout by its threads: send them to stderr,
    # so that stdout carries only what svilab prints (the JSON with --json)
    with contextlib.redirect_stdout(sys.stderr), ray_session(address, num_cpus=max_concurrent) as session:
        import ray
        from ray.exceptions import RayError, RayTaskError

        slots = max_concurrent or session.num_cpus
        where = "local Ray" if session.local else f"Ray at {address}"
        say(f"{where}: {session.num_cpus} CPUs, {slots} trials at a time; started in "
            f"{time.perf_counter() - t0:.1f} s. {len(pending)} trials to run"
            + (f" ({len(run.records)} already finished)" if run.records else ""))
        task = ray.remote(num_cpus=1, max_retries=retries)(run_trial)
        inflight: dict = {}
        secs: list[float] = []
        tables_at = time.perf_counter()
        total = len(run.trials)
        bar = tqdm(total=total, initial=len(run.records), desc="trials", unit="trial", file=sys.stderr,
                   disable=not sys.stderr.isatty(), dynamic_ncols=True)
        try:
            while pending or inflight:
                while pending and len(inflight) < slots:
                    t = pending.popleft()
                    ref = task.remote(run.spec.command, list(t.argv), collect_inputs(t.options), run.spec.metrics)
                    inflight[ref] = t
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    t = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayTaskError as exc:
                        result = {"status": "failed", "error": f"the trial raised: {str(exc).splitlines()[-1][:300]}"}
                    except RayError as exc:
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        result = {"status": "failed",
                                  "error": f"its worker died ({type(exc).__name__}: {first[:200]}), {retries} "
                                           "retries used"}
                    rec = install(run.path, t, run.spec, result)
                    run.records[t.key] = rec
                    if result.get("seconds"):
                        secs.append(result["seconds"])
                    if time.perf_counter() - tables_at > TABLES_EVERY:   # the report is O(trials): not each trial
                        report.write_tables(run.path, run.report())
                        tables_at = time.perf_counter()
                    n_done = len(run.records)
                    failed = sum(r["status"] == "failed" for r in run.records.values())
                    line = (f"[{n_done:>{len(str(total))}}/{total}] {rec['status']:6s} {t.setting_key} seed {t.seed}"
                            + (f" ({result['seconds']:.1f} s)" if result.get("seconds") else "")
                            + (f": {_metric_text(rec)}" if rec["status"] == "done" else f": {rec['error']}")
                            + f" | {len(inflight)} running, {failed} failed"
                            + _eta(secs, len(pending) + len(inflight), slots))
                    tqdm.write(line, file=out)
                    bar.update(1)
                    bar.set_postfix(running=len(inflight), failed=failed)
        except KeyboardInterrupt:
            for ref in inflight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished
                    pass
            left = len(pending) + len(inflight)
            report.write_tables(run.path, run.report())      # every finished trial is in the tables
            say(f"sweep interrupted: {len(run.records)} of {total} trials finished, {left} left; continue with "
                f"`svilab sweep --resume {folder}`")
            raise
        finally:
            bar.close()


def dry_run(run: SweepRun, max_concurrent: int | None, say) -> dict:
    """The trials that would run and an estimate of their time; nothing runs."""
    from svilab.sweep.estimate import trial_seconds
    from svilab.threads import available_cores

    slots = max_concurrent or available_cores()
    pending = [t for t in run.trials if t.key not in run.records]
    per_setting = {}
    for t in pending:
        per_setting.setdefault(t.setting_key, (t, []))[1].append(t.seed)
    total = 0.0
    rows = []
    for key, (t, seeds) in per_setting.items():
        secs = trial_seconds(run.spec.command, t)
        total += secs * len(seeds)
        rows.append({"setting": t.setting, "folder": f"trials/{key}", "seeds": seeds, "seconds_each": secs})
    wall = total / slots
    for r in rows:
        say(f"  {r['folder']:<50s} seeds {','.join(map(str, r['seeds']))}  ~{r['seconds_each']:.0f} s each")
    say(f"{len(pending)} trials ({len(run.trials) - len(pending)} already finished) of `svilab {run.spec.command}`; "
        f"about {_duration(total)} of work, {_duration(wall)} on {slots} at a time, plus Ray's start "
        "(a rough model of each command's cost on one core of a laptop; the first finished trials give the real "
        "figure, with an ETA, when it runs)")
    return {"trials": [t.as_dict() for t in pending], "seconds": total, "wall_seconds": wall, "slots": slots}


def _duration(secs: float) -> str:
    if secs < 90:
        return f"{secs:.0f} s"
    if secs < 5400:
        return f"{secs / 60:.0f} min"
    return f"{secs / 3600:.1f} h"


__all__ = ["DEFAULT_RETRIES", "SweepRun", "clean_partial", "dry_run", "execute", "install", "load_saved",
           "same_spec"]
