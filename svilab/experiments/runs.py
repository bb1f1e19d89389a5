"""Run folders: every experiment writes its configuration, results, tables and figures here.

Layout of a run folder (default ``runs/<command>-<timestamp>/``)::

    config.json     the full configuration (command-line options, data, priors, seed, versions)
    results.json    the numbers the command printed, machine-readable
    *.csv / *.md    tables (pandas), one pair per table
    *.png           figures
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


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


def markdown(df: pd.DataFrame, floatfmt: str = ".6g") -> str:
    """A Markdown table of ``df``; missing values (NaN) print as empty cells."""
    clean = df.astype(object).where(df.notna(), None)
    return clean.to_markdown(floatfmt=floatfmt, missingval="")


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
#: folders this process created (removed again by :func:`discard_unfinished` when a command fails)
_CREATED: list[Path] = []
_LOCKS: list[Path] = []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release_locks() -> None:
    for lock in _LOCKS:
        try:
            if lock.read_text().strip() == str(os.getpid()):
                lock.unlink()
        except OSError:
            pass
    _LOCKS.clear()


atexit.register(_release_locks)


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds an svilab run (its ``config.json`` names svilab's version)."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "svilab" in (cfg.get("versions") or {})


class RunFolder:
    """A folder for one experiment's outputs, never shared and never clobbered by accident.

    :param command: the command name, used in the default folder name.
    :param out: an explicit folder; default ``runs/<command>-<timestamp>`` (a new name, created
        atomically, so two runs started in the same second get two folders).
    :param mode: ``"new"`` (default): ``out`` must not exist or be empty; ``"overwrite"``: ``out``
        may be an earlier svilab run folder, whose contents are removed first (any other non-empty
        folder is refused); ``"resume"``: ``out`` must be an existing run folder, kept as it is.
    :raises ValueError: one line naming the folder and the problem (not empty, a file, not
        writable, in use by another running svilab process, not a run folder to resume).

    The folder is locked (``.svilab.lock`` with the process id) until the process ends: a second
    process asking for it gets an error instead of mixing its files into the first one's.
    """

    def __init__(self, command: str, out: str | Path | None = None, root: str | Path = "runs",
                 mode: str = "new", _parent: RunFolder | None = None):
        if mode not in ("new", "overwrite", "resume"):
            raise ValueError(f"unknown run-folder mode {mode!r}")
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            k = 1
            while True:
                path = Path(root) / (f"{command}-{stamp}" + ("" if k == 1 else f"-{k}"))
                if self._make(path, exist_ok=False):
                    break
                k += 1
        else:
            path = Path(out)
            if path.exists() and not path.is_dir():
                raise ValueError(f"cannot create run folder {path}: it exists and is a file")
            if mode == "resume":
                if not path.is_dir():
                    raise ValueError(f"cannot resume {path}: no such run folder")
            elif path.is_dir() and any(p.name != LOCK for p in path.iterdir()):
                if mode == "new":
                    raise ValueError(f"run folder {path} is not empty; choose a new --out, or pass --overwrite to "
                                     "replace an earlier run there" + (" (or --resume to continue it)"
                                                                         if (path / "checkpoint.pt").exists() else ""))
                if not is_run_folder(path):
                    raise ValueError(f"--overwrite: {path} is not an svilab run folder (no svilab config.json); "
                                     "not removing its contents")
            else:
                self._make(path, exist_ok=True)
        self.path = path
        if _parent is None:
            self._lock()
            if mode == "overwrite" and out is not None:
                for p in path.iterdir():
                    if p.name != LOCK:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

    @staticmethod
    def _make(path: Path, exist_ok: bool) -> bool:
        existed = path.exists()
        try:
            path.mkdir(parents=True, exist_ok=exist_ok)
        except FileExistsError:
            if not exist_ok:
                return False
            raise ValueError(f"cannot create run folder {path}: it exists and is not a folder") from None
        except OSError as exc:
            raise ValueError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
        if not existed:
            _CREATED.append(path)
        return True

    def _lock(self) -> None:
        lock = self.path / LOCK
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise ValueError(f"run folder {self.path} is in use by svilab process {pid} (if that process "
                                     f"is gone, remove {lock})") from None
                lock.unlink(missing_ok=True)       # stale: its process has ended
                continue
            except OSError as exc:
                raise ValueError(f"cannot create run folder {self.path}: {exc.strerror or exc}") from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            _LOCKS.append(lock)
            return
        raise ValueError(f"run folder {self.path}: could not take its lock {lock}")

    def sub(self, name: str) -> RunFolder:
        """A sub-folder (one per experiment of ``demo``/``vae compare``); a name given twice is an error."""
        path = self.path / name
        if path.exists():
            raise ValueError(f"run folder {path} already exists in this run (was it asked for twice?)")
        return RunFolder(name, out=path, _parent=self)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` atomically (a per-process temporary file, then a rename)."""
        p = self.path / name
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(dumps(obj) + "\n")
        os.replace(tmp, p)
        return p

    def write_config(self, config: dict) -> Path:
        import torch

        return self.write_json("config.json", {**config, "versions": versions(), "threads": torch.get_num_threads()})

    def write_results(self, results: dict) -> Path:
        return self.write_json("results.json", results)

    def write_table(self, name: str, df: pd.DataFrame, floatfmt: str = ".6g") -> Path:
        df.to_csv(self.path / f"{name}.csv")
        (self.path / f"{name}.md").write_text(markdown(df, floatfmt) + "\n")
        return self.path / f"{name}.csv"

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        import matplotlib.pyplot as plt

        p = self.path / f"{name}.png"
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return p

    def __str__(self) -> str:
        return str(self.path)


def discard_unfinished() -> list[Path]:
    """Remove the run folders this process created that hold no result yet (no ``results.json`` and
    no ``checkpoint.pt`` anywhere inside): what a command that failed on bad input leaves behind.
    Returns the folders removed."""
    removed = []
    for path in reversed(_CREATED):
        if not path.is_dir() or any(path.rglob("results.json")) or any(path.rglob("checkpoint.pt")):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    _CREATED.clear()
    _release_locks()
    return removed
