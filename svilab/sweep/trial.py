"""One trial of a sweep, as a Ray worker runs it: the command's own config -> run -> write, in this
process, into a temporary run folder that travels back to the driver.

:func:`run_trial` calls :func:`svilab.cli.main` with the trial's arguments (the same code path as
``svilab COMMAND ...`` in a shell, so a trial's results equal the command's run alone with the same
options and seed; ``tests/test_sweep.py`` checks it), one torch thread, its printout in
``log.txt``. It then writes the trial's histories and final metrics for TensorBoard (the standard
``torch.utils.tensorboard`` writer: ``tensorboard --logdir SWEEP`` shows every trial), reads its
metrics (:mod:`svilab.sweep.metrics`) and packs the folder into a gzip'd tar that the driver
unpacks into ``SWEEP/trials/<setting>/seed-<s>/``. Nothing is written to a path the driver has to
share: results come back as the task's return value.

Input files (a ``--model``, its data, reference draws) travel with the trial: a worker whose node
has no file at the same path, with the same content, gets a copy in its temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import shutil
import socket
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

#: at most this many points per curve go to TensorBoard (long SVI traces are thinned evenly)
MAX_CURVE_POINTS = 1000


def collect_inputs(options: dict) -> dict[str, bytes]:
    """``{absolute path: content}`` of the input files a trial's options name."""
    from svilab.sweep.spec import is_path_option, split_model

    out = {}
    for key, value in options.items():
        if not is_path_option(key, value, options):
            continue
        p = Path(split_model(key, value)[0])
        if p.is_file():
            out[str(p)] = p.read_bytes()
    return out


def localize_inputs(argv: list[str], inputs: dict[str, bytes], work: Path) -> list[str]:
    """``argv`` with every input path that does not exist here with the same content replaced by a
    copy under ``work/inputs``."""
    argv = list(argv)
    for path, content in inputs.items():
        p = Path(path)
        digest = hashlib.sha256(content).hexdigest()
        try:
            same = p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == digest
        except OSError:
            same = False
        if same:
            continue
        copy = work / "inputs" / digest[:16] / p.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(content)
        argv = [a.replace(path, str(copy)) for a in argv]
    return argv


def _node() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside Ray
        return None


def _error_line(log: str) -> str | None:
    lines = [ln for ln in log.splitlines() if ": error: " in ln and ln.startswith("svilab ")]
    return lines[-1].split(": error: ", 1)[1] if lines else None


def write_tensorboard(folder: Path, command: str, metrics: dict) -> bool:
    """The trial's curves (one scalar per step/epoch) and final metrics (``final/<unit>/<metric>``) as
    TensorBoard events in ``folder``; False when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return False
    from svilab.sweep.metrics import histories

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for label, series in histories(command, folder).items():
            for name, values in series.items():
                tag = name if label == "vae" else f"{label}/{name}"
                stride = max(1, math.ceil(len(values) / MAX_CURVE_POINTS))
                for step in range(0, len(values), stride):
                    v = values[step]
                    if v is not None and math.isfinite(v):
                        writer.add_scalar(tag, v, step + 1)
        for label, values in metrics.items():
            for metric, v in values.items():
                if v is not None:
                    writer.add_scalar(f"final/{label}/{metric}", v, 0)
    finally:
        writer.close()
    return True


def pack(folder: Path) -> bytes:
    """``folder`` as a gzip'd tar (paths relative to it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.endswith(".tmp") and p.name != ".svilab.lock":
                tar.add(p, arcname=str(p.relative_to(folder)))
    return buf.getvalue()


def unpack(archive: bytes, folder: Path) -> None:
    """The inverse of :func:`pack` (members outside ``folder`` are refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")


def run_trial(command: str, argv: list[str], inputs: dict[str, bytes] | None = None,
              keep: tuple[str, ...] | None = None) -> dict:
    """Run one trial here (in a Ray worker) and return its record: ``status`` (``done``/``failed``),
    ``error``, ``seconds``, ``node``, ``host``, ``pid``, ``metrics``, ``units`` and ``archive`` (the run
    folder, see :func:`pack`), ``started_at`` (wall clock) and ``import_seconds`` (the worker's first
    imports of torch, Pyro and svilab; 0 once the worker is warm). A KeyboardInterrupt (the task
    cancelled) propagates."""
    started_at, t0 = time.time(), time.perf_counter()
    from svilab import cli
    from svilab.experiments.runs import STATUS, dumps
    from svilab.sweep.metrics import extract

    cli.build_parser()                 # imports every command's modules (torch, Pyro, ArviZ...)
    import_seconds = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="svilab-trial-"))
    out = work / "run"
    try:
        argv = localize_inputs(argv, inputs or {}, work)
        log = io.StringIO()
        error = None
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                rc = cli.main([*command.split(), *argv, "--threads", "1", "--out", str(out), "--json"],
                              handle_signals=False)
            except (Exception, SystemExit) as exc:   # a bug in a command: the trial fails, the sweep goes on
                traceback.print_exc()
                rc, error = 1, f"{type(exc).__name__}: {exc}"
        text = log.getvalue()
        if rc != 0 and error is None:
            error = _error_line(text) or f"exit status {rc}"
        if not out.is_dir():                       # a command that failed on its input leaves no folder
            out.mkdir(parents=True)
            (out / STATUS).write_text(dumps({"status": "failed", "error": error, "pid": os.getpid(),
                                             "host": socket.gethostname()}) + "\n")
        (out / "log.txt").write_text(text)
        metrics, units = extract(command, out, keep) if rc == 0 else ({}, {})
        if rc == 0:
            write_tensorboard(out, command, metrics)
        return {"status": "done" if rc == 0 else "failed", "error": error, "seconds": time.perf_counter() - t0,
                "node": _node(), "host": socket.gethostname(), "pid": os.getpid(), "metrics": metrics,
                "units": units, "archive": pack(out), "started_at": started_at, "import_seconds": import_seconds}
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["collect_inputs", "localize_inputs", "pack", "run_trial", "unpack", "write_tensorboard"]
