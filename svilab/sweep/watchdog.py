"""Ends the local Ray instance of a sweep whose driver was killed (``python -m svilab.sweep.watchdog PID``).

A sweep started with no ``--address`` starts Ray itself and stops it when it ends, also on Ctrl-C
and SIGTERM. A driver killed with SIGKILL (or by the kernel's out-of-memory killer) runs no code:
Ray's GCS and raylet notice and exit, but its per-node agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) are left running, reparented to init. This small process, started in its
own session before Ray, records the driver's descendants (pid and start time) twice a second; once
the driver is gone it sends SIGTERM, then SIGKILL, to every recorded process still alive with the
same start time (never to a process that merely reused a pid), and exits. The driver stops it when
it shuts Ray down itself. Linux (``/proc``) only; elsewhere it does nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid`` from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2:].split()
    return int(rest[1]), int(rest[19])


def descendants(root: int) -> dict[int, int]:
    """``{pid: start time}`` of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    starts = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
                starts[int(name)] = st[1]
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out[child] = starts[child]
                todo.append(child)
    return out


def _alive_same(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def watch(driver: int, interval: float = 0.5) -> None:
    me = os.getpid()
    known: dict[int, int] = {}
    while True:
        if _stat(driver) is None:
            break
        known.update({p: s for p, s in descendants(driver).items() if p != me})
        known = {p: s for p, s in known.items() if _alive_same(p, s)}
        time.sleep(interval)
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
        left = {p: s for p, s in known.items() if _alive_same(p, s)}
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while wait and time.time() < deadline and any(_alive_same(p, s) for p, s in left.items()):
            time.sleep(0.1)


def main() -> int:
    if not os.path.isdir("/proc"):
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C is the driver's to handle
    watch(int(sys.argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["descendants", "main", "watch"]
