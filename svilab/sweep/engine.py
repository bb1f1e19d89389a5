"""Ray for a sweep: a local instance started and stopped by the command, or an existing cluster.

Why Ray core tasks and not Ray Tune. Tune's grid search is a cartesian product (one line of
``itertools.product``), and its failure handling and resume are what a sweep needs; but since
Ray 2.7 Tune keeps trial results and checkpoints only in a storage path that every node shares
(cloud storage or NFS: syncing to the head node was removed, ray-project/ray#37177), while a
sweep's results must come back to the driver when the nodes share no disk. Tune also runs each
trial in an actor with its own experiment directory, logger and state snapshots, which svilab's
run folders already are. So each trial is one Ray task (``num_cpus=1``) whose return value carries
its run folder back; Ray retries a task whose worker died (``max_retries``); resume is svilab's own
(a trial folder appears atomically when its trial ends, so the unfinished ones are the folders
that are missing); Ray's worker pool keeps worker processes alive between tasks, so the imports
(torch, Pyro, svilab: about 6 s) are paid once per worker, not once per trial.

Local Ray (no ``--address``): ``ray.init`` with ``num_cpus`` (the concurrency), no dashboard, no
usage statistics, Ray's logs kept out of the terminal; :func:`ray.shutdown` at the end, on Ctrl-C
and on SIGTERM, and :mod:`svilab.sweep.watchdog` for a driver killed outright.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass


class EngineError(ValueError):
    """Ray is not installed, or the cluster at ``--address`` cannot be reached (one line)."""


def require_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EngineError("svilab sweep needs Ray: pip install 'svilab[sweep]' (or pip install 'ray[client]' "
                          "tensorboard)") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    text = address.split("://", 1)[-1]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host or "127.0.0.1", int(port)


def check_address(address: str, timeout: float = 3.0) -> None:
    """A one-line :class:`EngineError` when ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``)
    cannot be reached; nothing is started."""
    if address == "auto":
        return                                   # ray.init says whether one runs here
    hp = _host_port(address)
    if hp is None:
        raise EngineError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as exc:
        raise EngineError(f"--address {address}: cannot connect to {hp[0]}:{hp[1]} "
                          f"({exc.strerror or type(exc).__name__})") from None


@dataclass
class RaySession:
    """An initialised Ray: ``local`` (started by this process) or connected to ``address``."""

    address: str | None
    num_cpus: int
    watchdog: subprocess.Popen | None = None

    @property
    def local(self) -> bool:
        return self.address is None


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[RaySession]:
    """Start a local Ray with ``num_cpus`` CPUs (``address`` None) or connect to ``address``; shut it
    down on leaving, whatever the reason (the watchdog covers a SIGKILL of this process)."""
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    watchdog = None
    if ray.is_initialized():
        raise EngineError("Ray is already initialised in this process; svilab sweep starts its own (or pass --address)")
    if address is None:
        watchdog = subprocess.Popen([sys.executable, "-m", "svilab.sweep.watchdog", str(os.getpid())],
                                    start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    before = signal.getsignal(signal.SIGTERM)
    try:
        try:
            if address is None:
                # address "local": always a new instance of our own. With no address, ray.init connects to
                # the cluster named in /tmp/ray/ray_current_cluster or $RAY_ADDRESS when there is one (another
                # sweep's, a `ray start`), whose shutdown then kills this sweep's workers
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", configure_logging=True)
            else:
                check_address(address)
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except EngineError:
            raise
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"--address {address}: cannot connect: {first[:200]}" if address else
                              f"cannot start Ray: {first[:200]}") from None
        if callable(before) and threading.current_thread() is threading.main_thread():
            # ray.init installs its own SIGTERM handlers (a C++ one that prints a stack dump and exits): put
            # svilab's back, so SIGTERM stops the sweep as Ctrl-C does (trials cancelled, Ray shut down)
            signal.signal(signal.SIGTERM, before)
        cpus = int(ray.cluster_resources().get("CPU", num_cpus or 1))
        yield RaySession(address, cpus, watchdog)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if watchdog is not None:
            watchdog.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=5)


__all__ = ["EngineError", "RaySession", "check_address", "ray_session", "require_ray"]
