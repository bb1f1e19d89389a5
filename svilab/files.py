"""Writing files so that a kill, a crash or a full disk never leaves half of one.

:func:`atomic_write` writes to a per-process temporary name in the same folder, flushes it to disk
and renames it into place: a reader sees the previous file or the whole new one. A write that
fails raises :class:`WriteError`, one line that says why (no space left, the folder was removed,
no permission), never a traceback from deep inside matplotlib, pandas, torch or h5py.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class WriteError(ValueError):
    """A file that could not be written, said in one line (a ``ValueError``: the command line prints
    it and exits with status 2)."""


def write_error(path: Path, exc: BaseException) -> WriteError:
    """The one-line error for a write of ``path`` that failed with ``exc``."""
    code = getattr(exc, "errno", None)
    if code is None and _free_bytes(path.parent) is not None and _free_bytes(path.parent) < 2**20:
        code = errno.ENOSPC          # torch and h5py wrap the OSError of a full disk in their own errors
    if code == errno.ENOSPC:
        return WriteError(f"no space left on the device writing {path} (the files written before it are "
                          "kept; free some space and run again)")
    if code == errno.EDQUOT:
        return WriteError(f"disk quota exceeded writing {path}")
    if code == errno.ENOENT and not path.parent.is_dir():
        return WriteError(f"the folder {path.parent} was removed while the command ran (writing {path.name}); "
                          "nothing more can be saved there")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(f"cannot write {path}: permission denied or read-only file system")
    text = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return WriteError(f"cannot write {path}: {text}")


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def atomic_write(path: str | Path, write: Callable[[Path], Any], sync: bool = True) -> Path:
    """Write ``path`` through ``write(tmp)`` to a per-process temporary file in the same folder, flush
    it to disk (``sync``) and rename it into place: readers see the old file or the whole new one.

    :raises WriteError: the write failed (one line: no space left, folder removed, ...); the
        temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        if sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not isinstance(exc, OSError) and (_free_bytes(path.parent) or 2**30) >= 2**20:
            raise                      # torch/h5py's own error, not a full disk: a bug to see
        raise write_error(path, exc) from None
    return path


def write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))



__all__ = ["WriteError", "atomic_write", "write_error", "write_text"]
