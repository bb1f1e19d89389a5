"""Run folders: every experiment writes its configuration, results, tables and figures here.

Layout of a run folder (default ``runs/<command>-<timestamp>/``)::

    status.json     running / finished / failed / interrupted, with the command, process and times
    config.json     the full configuration (command-line options, data, priors, seed, versions)
    results.json    the numbers the command printed, machine-readable
    *.csv / *.md    tables (pandas), one pair per table
    *.png           figures
    .svilab.lock    while a process writes there: which one (removed when it ends)

**The protocol every writer follows** (commands, their sub-runs in ``demo``/``vae compare``,
``--resume``, ``--overwrite``, ``svilab sweep``):

- *one writer per folder*: a process takes the folder's lock (``.svilab.lock``, created with
  ``O_EXCL``, holding its process id and host) before it writes, and a folder whose lock belongs
  to a live process, or that lies *inside* such a folder, is refused with the process named. A
  lock whose process has ended (same host) is stale and taken over.
- *a status that says what happened*: ``status.json`` is ``running`` from the moment the folder
  is taken, and ``finished``, ``failed`` (with the error) or ``interrupted`` at the end. A folder
  left ``running`` by a process that is gone was killed (:func:`read_status` says so).
- *no half files*: every file is written to a per-process temporary name, flushed to disk and
  renamed (:func:`svilab.files.atomic_write`), so a kill or a full disk leaves the previous version
  or none, never a truncated one. A write that fails says why in one line (no space left, the
  folder was removed while the command ran, no permission), as a :class:`svilab.files.WriteError`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import platform
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from svilab.files import atomic_write, write_error


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return str(obj)


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON text for results: numpy/torch scalars become numbers, NaN and inf become null."""
    return json.dumps(_jsonable(obj), indent=indent, allow_nan=False)


def markdown(df: pd.DataFrame, floatfmt: str = ".6g", index: bool = True) -> str:
    """A Markdown table of ``df``; missing values (NaN) print as empty cells."""
    clean = df.astype(object).where(df.notna(), None)
    return clean.to_markdown(floatfmt=floatfmt, missingval="", index=index)


def versions() -> dict[str, str]:
    import arviz
    import pyro
    import scipy
    import torch

    from svilab import __version__

    return {"svilab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "pyro": pyro.__version__, "arviz": arviz.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "pandas": pd.__version__, "platform": platform.platform()}


LOCK = ".svilab.lock"
STATUS = "status.json"
#: the states of ``status.json``
STATES = ("running", "finished", "failed", "interrupted")
#: folders this process created (removed again by :func:`discard_unfinished` when a command fails)
_CREATED: list[Path] = []
#: folders this process holds (locked, status ``running``) until :func:`close_all`
_OPEN: list[RunFolder] = []


class RunFolderError(ValueError):
    """A run folder that cannot be used, said in one line (a ``ValueError``: the command line prints
    it and exits with status 2). A file that cannot be written raises :class:`svilab.files.WriteError`."""


# ----------------------------------------------------------------------------- locks and status
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _host() -> str:
    return socket.gethostname()


def read_lock(folder: Path) -> dict | None:
    """The lock of ``folder`` (``{"pid", "host"}``), or None when there is none (a bare process id,
    as older versions wrote it, counts as this host's)."""
    try:
        text = (Path(folder) / LOCK).read_text().strip()
    except OSError:
        return None
    try:
        got = json.loads(text)
    except ValueError:
        got = None
    if isinstance(got, int):
        return {"pid": got, "host": _host()}
    if isinstance(got, dict) and isinstance(got.get("pid"), int):
        return {"pid": got["pid"], "host": got.get("host") or _host()}
    return {"pid": 0, "host": _host()}


def _create_lock(lock: Path, content: str) -> None:
    """Create ``lock`` holding ``content``, atomically: the content goes to a file of this process's own, which
    is then hard-linked to the lock's name (``FileExistsError`` when another process holds it). Created empty
    and written after (``O_EXCL``), a second process could read the lock before its content, take it for stale
    and remove it: two runs in one folder. Where the file system has no hard links, ``O_EXCL`` it is."""
    tmp = lock.with_name(f"{LOCK}.{os.getpid()}.{threading.get_ident()}")
    try:
        tmp.write_text(content)
    except OSError as exc:
        raise write_error(lock, exc) from None
    try:
        os.link(tmp, lock)                 # FileExistsError: another process holds it
        return
    except FileExistsError:
        raise
    except OSError:                        # no hard links on this file system
        pass
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(content)


def lock_holder(folder: Path) -> dict | None:
    """The live process (``{"pid", "host"}``) holding ``folder``'s lock, other than this one; None when
    the folder is free or its lock is stale (its process has ended on this host)."""
    lock = read_lock(folder)
    if lock is None or not lock["pid"]:
        return None
    if lock["host"] != _host():
        return lock                      # cannot tell from here: assume it runs
    if lock["pid"] == os.getpid() or not _pid_alive(lock["pid"]):
        return None
    return lock


def read_status(folder: str | Path) -> dict | None:
    """``status.json`` of ``folder`` with the status as it really is: a folder still marked
    ``running`` whose process has ended (no live lock) reads ``killed``. None when there is none."""
    folder = Path(folder)
    try:
        st = json.loads((folder / STATUS).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(st, dict):
        return None
    if st.get("status") == "running" and lock_holder(folder) is None and not _held_here(folder):
        st = {**st, "status": "killed", "note": f"process {st.get('pid')} ended without saying how"}
    return st


def _held_here(folder: Path) -> bool:
    return any(f.path.resolve() == folder.resolve() for f in _OPEN)


def describe_status(folder: Path) -> str:
    """``' (its status: finished 2026-12-02 10:01)'`` or ``''``: for messages about a folder."""
    st = read_status(folder)
    if st is None:
        return ""
    when = st.get("ended") or st.get("updated") or st.get("started") or ""
    return f" (its run: {st.get('status')}{' ' + when if when else ''})"


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds an svilab run (its ``config.json`` names svilab's version, or it has a
    ``status.json``)."""
    if (Path(path) / STATUS).is_file():
        return True
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "svilab" in (cfg.get("versions") or {})


def _enclosing_holder(path: Path) -> tuple[Path, dict] | None:
    """The nearest folder above ``path`` locked by another live process."""
    for parent in path.resolve().parents:
        if (parent / LOCK).exists():
            holder = lock_holder(parent)
            if holder is not None:
                return parent, holder
    return None


def _holder_text(holder: dict) -> str:
    where = "" if holder["host"] == _host() else f" on host {holder['host']}"
    return f"svilab process {holder['pid']}{where}"


_COMMAND_LINE: list[str] = []


def set_command_line(words: list[str]) -> None:
    """The command that opens run folders from now on (:func:`svilab.cli.main` sets it)."""
    _COMMAND_LINE[:] = list(words)


def command_line() -> str:
    """The command that opened the folder, for ``status.json``: the svilab command line when there is one,
    else this process's."""
    import shlex

    words = _COMMAND_LINE or [Path(sys.argv[0]).name or "python", *sys.argv[1:]]
    return " ".join(shlex.quote(str(w)) for w in words)


class RunFolder:
    """A folder for one experiment's outputs, never shared and never clobbered by accident.

    :param command: the command name, used in the default folder name.
    :param out: an explicit folder; default ``runs/<command>-<timestamp>`` (a new name, created
        atomically, so two runs started in the same second get two folders).
    :param mode: ``"new"`` (default): ``out`` must not exist or be empty; ``"overwrite"``: ``out``
        may be an earlier svilab run folder, whose contents are removed first (any other non-empty
        folder is refused); ``"resume"``: ``out`` must be an existing run folder, kept as it is.
    :raises RunFolderError: one line naming the folder and the problem (not empty, a file, not
        writable, in use by another running svilab process or inside a folder that is, not a run
        folder to resume).

    The folder is locked and its ``status.json`` says ``running`` until :meth:`finish` (or
    :func:`close_all` when the command ends) writes how it ended (see the module docstring).
    """

    def __init__(self, command: str, out: str | Path | None = None, root: str | Path = "runs",
                 mode: str = "new", _parent: RunFolder | None = None):
        if mode not in ("new", "overwrite", "resume"):
            raise ValueError(f"unknown run-folder mode {mode!r}")
        self.command = command
        self.closed = False
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            k = 1
            while True:
                path = Path(root) / (f"{command}-{stamp}" + ("" if k == 1 else f"-{k}"))
                self._check_enclosing(path)
                if self._make(path, exist_ok=False):
                    break
                k += 1
            created = True
        else:
            path = Path(out)
            created = False
            if path.exists() and not path.is_dir():
                raise RunFolderError(f"cannot create run folder {path}: it exists and is a file")
            if _parent is None:
                self._check_enclosing(path)
            if path.is_dir() and _parent is None:
                holder = lock_holder(path)
                if holder is not None:
                    raise RunFolderError(f"run folder {path} is in use by {_holder_text(holder)} (if that process "
                                         f"is gone, remove {path / LOCK})")
            if mode == "resume":
                if not path.is_dir():
                    raise RunFolderError(f"cannot resume {path}: no such run folder")
            elif path.is_dir() and any(not p.name.startswith(LOCK) for p in path.iterdir()):
                if mode == "new":
                    raise RunFolderError(
                        f"run folder {path} is not empty{describe_status(path)}; choose a new --out, or pass "
                        "--overwrite to replace an earlier run there"
                        + (" (or --resume to continue it)" if (path / "checkpoint.pt").exists() else "")
                        + (f" (or `svilab sweep --resume {path}` to continue that sweep)"
                           if (path / "spec.toml").exists() and (path / "trials.json").exists() else ""))
                if not is_run_folder(path):
                    raise RunFolderError(f"--overwrite: {path} is not an svilab run folder (no svilab config.json); "
                                         "not removing its contents")
            else:
                created = self._make(path, exist_ok=True)
        self.path = path
        try:
            self._lock()
        except RunFolderError:
            if created:                    # the empty folder this process made; never one another process
                with contextlib.suppress(OSError):       # holds: its lock file is in it, so rmdir fails
                    path.rmdir()
            raise
        if created:
            _CREATED.append(path)          # ours to remove on bad input only once it is locked by us: a folder
            #                                a racing process made first and locked is never ours to remove
        if mode == "overwrite" and out is not None:
            for p in path.iterdir():
                if not p.name.startswith(LOCK):
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        previous = read_status(path) if mode == "resume" else None
        self.started = _now()
        self._status = {"status": "running", "command": command_line(), "pid": os.getpid(), "host": _host(),
                        "started": self.started, "updated": self.started}
        if previous:
            self._status["previous"] = {k: previous.get(k) for k in ("status", "started", "ended", "error")
                                        if previous.get(k) is not None}
        self._write_status()
        _OPEN.append(self)

    @staticmethod
    def _check_enclosing(path: Path) -> None:
        found = _enclosing_holder(path)
        if found is not None:
            raise RunFolderError(f"run folder {path} is inside {found[0]}, which is in use by "
                                 f"{_holder_text(found[1])}; choose a folder outside it")

    @staticmethod
    def _make(path: Path, exist_ok: bool) -> bool:
        """Create ``path``; whether this call created it (False: it existed, and ``exist_ok``)."""
        existed = path.exists()
        try:
            path.mkdir(parents=True, exist_ok=exist_ok)
        except FileExistsError:
            if not exist_ok:
                return False
            raise RunFolderError(f"cannot create run folder {path}: it exists and is not a folder") from None
        except OSError as exc:
            raise RunFolderError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
        return not existed

    def _lock(self) -> None:
        lock = self.path / LOCK
        for _ in range(2):
            try:
                _create_lock(lock, json.dumps({"pid": os.getpid(), "host": _host()}))
            except FileExistsError:
                holder = lock_holder(self.path)
                if holder is not None:
                    raise RunFolderError(f"run folder {self.path} is in use by {_holder_text(holder)} (if that "
                                         f"process is gone, remove {lock})") from None
                for f in [f for f in _OPEN if f.path.resolve() == self.path.resolve()]:
                    f.closed = True                # this process takes its own folder again: the old handle goes
                    _OPEN.remove(f)
                lock.unlink(missing_ok=True)       # stale (its process has ended) or ours
                continue
            except OSError as exc:
                raise RunFolderError(f"cannot create run folder {self.path}: {exc.strerror or exc}") from None
            return
        raise RunFolderError(f"run folder {self.path}: could not take its lock {lock}")

    def _write_status(self) -> None:
        self.write_json(STATUS, self._status)

    @property
    def status(self) -> str:
        return self._status["status"]

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """Record how the run ended in ``status.json`` and release the lock (idempotent)."""
        if self.closed:
            return
        if status not in STATES[1:]:
            raise ValueError(f"unknown final status {status!r}; known: {', '.join(STATES[1:])}")
        self.closed = True
        with contextlib.suppress(ValueError):
            _OPEN.remove(self)
        self._status.update(status=status, ended=_now(), updated=_now())
        if error:
            self._status["error"] = error
        try:
            if self.path.is_dir():
                self._write_status()
        except ValueError:
            pass                       # a full disk: the lock still goes, the folder reads "killed"
        finally:
            self._unlock()

    def _unlock(self) -> None:
        lock = read_lock(self.path)
        if lock and lock["pid"] == os.getpid() and lock["host"] == _host():
            with contextlib.suppress(OSError):
                (self.path / LOCK).unlink()

    def sub(self, name: str) -> RunFolder:
        """A sub-folder (one per experiment of ``demo``/``vae compare``), with its own lock and status;
        a name given twice is an error."""
        path = self.path / name
        if path.exists():
            raise RunFolderError(f"run folder {path} already exists in this run (was it asked for twice?)")
        return RunFolder(name, out=path, _parent=self)

    # ------------------------------------------------------------------ writing files
    def file(self, name: str) -> Path:
        """The path of ``name`` in the folder (sub-folders created); raises when the folder is gone."""
        p = self.path / name
        if not self.path.is_dir():
            raise write_error(p, FileNotFoundError(2, "No such file or directory"))
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_file(self, name: str, write: Callable[[Path], Any], sync: bool = True) -> Path:
        """Write ``name`` by ``write(tmp)`` atomically (:func:`atomic_write`)."""
        return atomic_write(self.file(name), write, sync)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` atomically (a per-process temporary file, then a rename)."""
        text = dumps(obj) + "\n"
        return self.write_file(name, lambda tmp: tmp.write_text(text))

    def write_config(self, config: dict) -> Path:
        import torch

        return self.write_json("config.json", {**config, "versions": versions(), "threads": torch.get_num_threads()})

    def write_results(self, results: dict) -> Path:
        return self.write_json("results.json", results)

    def write_csv(self, name: str, df: pd.DataFrame, **kwargs) -> Path:
        return self.write_file(name, lambda tmp: df.to_csv(tmp, **kwargs))

    def write_table(self, name: str, df: pd.DataFrame, floatfmt: str = ".6g") -> Path:
        self.write_csv(f"{name}.csv", df)
        md = markdown(df, floatfmt) + "\n"
        self.write_file(f"{name}.md", lambda tmp: tmp.write_text(md))
        return self.path / f"{name}.csv"

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        import matplotlib.pyplot as plt

        try:
            return self.write_file(f"{name}.png", lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight",
                                                                           format="png"), sync=False)
        finally:
            plt.close(fig)

    def write_netcdf(self, name: str, idata) -> Path:
        """An ArviZ InferenceData as netCDF, atomically."""
        return self.write_file(name, lambda tmp: idata.to_netcdf(str(tmp)))

    def __str__(self) -> str:
        return str(self.path)


def close_all(status: str, error: str | None = None) -> None:
    """End every run folder this process still holds with ``status`` (innermost first)."""
    for folder in reversed(list(_OPEN)):
        folder.finish(status, error)


def _at_exit() -> None:
    # a process that ends without saying how (sys.exit from a library, a bug outside the CLI)
    close_all("failed", "the process ended before the command finished")


atexit.register(_at_exit)


def discard_unfinished() -> list[Path]:
    """Remove the run folders this process created that hold no result yet (no ``results.json`` and
    no ``checkpoint.pt`` anywhere inside): what a command that failed on bad input leaves behind.
    Returns the folders removed."""
    removed = []
    for path in reversed(_CREATED):
        if (not path.is_dir() or any(path.rglob("results.json")) or any(path.rglob("checkpoint.pt"))
                or lock_holder(path) is not None):
            continue
        for f in [f for f in _OPEN if f.path == path or path in f.path.parents]:
            f.closed = True
            _OPEN.remove(f)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    _CREATED.clear()
    return removed


@contextlib.contextmanager
def command_folders() -> Iterator[None]:
    """Run a command: on success every folder it opened ends ``finished``; on bad input (a
    ``ValueError``) the folders without results are removed and the rest end ``failed`` with the
    message; Ctrl-C/SIGTERM ends them ``interrupted``; any other exception ``failed``."""
    try:
        yield
    except ValueError as exc:
        discard_unfinished()
        close_all("failed", str(exc))
        raise
    except KeyboardInterrupt:
        _CREATED.clear()
        close_all("interrupted")
        raise
    except BaseException as exc:
        discard_unfinished()
        close_all("failed", f"{type(exc).__name__}: {exc}")
        raise
    else:
        _CREATED.clear()
        close_all("finished")
