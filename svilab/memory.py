"""A memory budget: requests that would need more memory than the machine has are refused up front,
with a one-line message naming the request and the memory it needs, instead of being killed by
the kernel (or swapping the machine to a halt) half-way through a run.

The budget is ``SVILAB_MEMORY_GB`` when set, else half the memory the kernel reports available
now (``MemAvailable`` in ``/proc/meminfo``), else 4 GB. Each check estimates the peak memory of one
request from its sizes (the constants are measured: see ``tests/test_reliability.py``).
"""

from __future__ import annotations

import math
import os

ENV = "SVILAB_MEMORY_GB"


def available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (bytes), or None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_budget() -> int:
    """The budget in bytes (see the module docstring)."""
    text = os.environ.get(ENV)
    if text:
        try:
            gb = float(text)
        except ValueError:
            gb = math.nan
        if not (gb > 0 and math.isfinite(gb)):
            raise ValueError(f"{ENV} must be a positive number of gigabytes, got {text!r}")
        return int(gb * 2**30)
    avail = available_bytes()
    return avail // 2 if avail else 4 * 2**30


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest unit that keeps a number >= 1 (kB, MB, GB, TB), three significant digits."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 2**10:.3g} kB"


def check_memory(nbytes: float, what: str) -> None:
    """Raise ValueError when ``nbytes`` exceeds the budget; ``what`` names the request
    (e.g. ``"--M 1000000000 (samples in one estimate)"``)."""
    budget = memory_budget()
    if nbytes > budget:
        source = f"{ENV}" if os.environ.get(ENV) else f"half the memory available now; set {ENV} to change it"
        raise ValueError(f"{what} needs about {format_bytes(nbytes)} of memory, more than svilab's budget of "
                         f"{format_bytes(budget)} ({source})")


#: peak bytes of one SVI step per particle and per latent or observed value, in floats of the data's size
#: (measured: 35-43 bytes in float32 with AutoNormal and AutoMultivariateNormal, eager and JIT;
#: tests/test_reliability.py)
SVI_FLOATS_PER_VALUE = 12


def check_particles(sites, num_particles: int, what: str = "num_particles") -> None:
    """Refuse ``num_particles`` samples per SVI step of a model whose sites are ``sites``
    (:class:`~svilab.inference.sites.ModelSites`) when one step would not fit the budget."""
    values = sites.latent_dim + sites.num_observed
    item = max([v.element_size() for v in sites.observed.values()] + [4])
    check_memory(SVI_FLOATS_PER_VALUE * item * max(values, 1) * num_particles,
                 f"{what} = {num_particles} (samples per SVI step, each of {values} latent and observed values)")


__all__ = ["SVI_FLOATS_PER_VALUE", "available_bytes", "check_memory", "check_particles", "format_bytes",
           "memory_budget"]
