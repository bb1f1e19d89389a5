"""How many CPU threads torch uses in an svilab process: the thread policy.

Decided once, when a command starts, and saved in each run's ``config.json`` (``"threads"``):

1. ``--threads N`` (``svilab --threads N COMMAND ...`` or after the command) wins; ``--threads
   auto`` means every core this process may run on;
2. else ``SVILAB_THREADS``, then ``OMP_NUM_THREADS`` (the variable every OpenMP program reads);
3. else **one thread**.

One thread is the default because users run several experiments at once (and sweeps do): on the
2-core machine three concurrent ``svilab vae train --preset notebook`` runs with torch's default
(one thread per core each) took 10-20x longer per epoch than alone, and with one thread each they
take about 3x, the fair share of 2 cores (``benchmarks/bench_concurrency.py``). A run alone on an
idle machine loses little: the notebook preset gains nothing from a second thread and the
standard preset about 1.5x (``benchmarks/bench_vae.py --threads 2``). The count is fixed for the
whole run, so a rerun with the same options gives the same numbers whatever else is running.
"""

from __future__ import annotations

import os

ENV = "SVILAB_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:       # not on Linux
        return max(1, os.cpu_count() or 1)


def parse_threads(value: str | int | None, source: str = "--threads") -> int | None:
    """``value`` as a thread count (``auto``: :func:`available_cores`; None/empty: None).

    :raises ValueError: not a positive integer or ``auto``, naming ``source``.
    """
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return available_cores()
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1 or str(n) != text:
        raise ValueError(f"{source} must be a positive integer or 'auto', got {value!r}")
    cap = max(64, 4 * available_cores())
    if n > cap:
        raise ValueError(f"{source} {n}: more than {cap} threads (this process may run on {available_cores()} "
                         "cores; use 'auto' for all of them)")
    return n


def choose_threads(option: str | int | None = None, environ: dict | None = None) -> int:
    """The number of threads the policy gives (see the module docstring)."""
    env = os.environ if environ is None else environ
    for value, source in ((option, "--threads"), (env.get(ENV), ENV), (env.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")):
        n = parse_threads(value, source)
        if n is not None:
            return n
    return 1


def apply_thread_policy(option: str | int | None = None) -> int:
    """Set torch's intra-op threads, and the BLAS/OpenMP threads numpy and SciPy use (threadpoolctl),
    by :func:`choose_threads`; returns the number. Both matter for the numbers: a BLAS sum split over
    another number of threads rounds differently in the last bit."""
    import torch

    n = choose_threads(option)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:        # an install without threadpoolctl: torch's threads only
        pass
    return n


__all__ = ["apply_thread_policy", "available_cores", "choose_threads", "parse_threads"]
