r"""Reference posteriors given as draws (posteriordb's gold standard) and comparison against them.

A reference file is JSON, either ``{"draws": {"name[i]": [values]}, ...}`` (posteriordb's
``reference_draws.json``, with ``chains`` and ``draws_per_chain``) or the bare
``{"name[i]": [values]}``; names use Stan's 1-based indices (``beta[1]``, ``L[2,1]``), the names
:func:`svilab.inference.draws.flat_draws` gives every scalar of a Pyro site.

:func:`compare` measures each parameter of an approximation against the reference in units of
the reference sd, which is what matters for a posterior summary:

.. math::

    \text{mean error} = \frac{\hat{\mathbb E}_q[\theta] - \bar\theta_{\rm ref}}{\mathrm{sd}_{\rm ref}(\theta)},
    \qquad \text{sd ratio} = \frac{\widehat{\mathrm{sd}}_q(\theta)}{\mathrm{sd}_{\rm ref}(\theta)}.

With 10,000 reference draws the Monte Carlo error of the reference mean is about 0.01 sd.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(\[\d+(,\d+)*\])?$")


def normalise_name(name: str) -> str:
    """``"beta[1, 2]"`` -> ``"beta[1,2]"`` (the form :func:`~svilab.inference.draws.flat_draws` uses)."""
    return str(name).replace(" ", "")


@dataclass
class Reference:
    """Means and sds of every reference parameter (``{name: value}``), and where they came from."""

    mean: dict[str, float]
    sd: dict[str, float]
    source: str = ""
    num_draws: int = 0
    draws: dict[str, np.ndarray] | None = None

    @property
    def names(self) -> list[str]:
        return list(self.mean)

    @classmethod
    def from_draws(cls, draws: Mapping[str, np.ndarray], source: str = "draws") -> Reference:
        arrays = {normalise_name(k): np.asarray(v, dtype=np.float64) for k, v in draws.items()}
        means = {k: float(v.mean()) for k, v in arrays.items()}
        sds = {k: float(v.std(ddof=1)) for k, v in arrays.items()}
        return cls(means, sds, source, len(next(iter(arrays.values()))) if arrays else 0, arrays)

    @classmethod
    def from_moments(cls, moments: Mapping[str, tuple[float, float]], source: str = "moments") -> Reference:
        return cls({k: float(m) for k, (m, _) in moments.items()}, {k: float(s) for k, (_, s) in moments.items()},
                   source)

    def check_names(self, available: set[str], where: str = "reference") -> None:
        """Every reference parameter must be one the model produces, else a one-line error."""
        missing = [k for k in self.names if k not in available]
        if missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise ValueError(f"{where}: parameters not produced by the model: {shown} "
                             f"(the model has: {', '.join(sorted(available)[:12])}"
                             f"{' ...' if len(available) > 12 else ''})")


def read_reference(path: str | Path) -> Reference:
    """Read a reference-draws JSON file (module docstring); every problem is a one-line ValueError."""
    from svilab.models.user import read_json

    raw = read_json(path, "reference file")
    where = f"reference file {path}"
    if isinstance(raw, dict) and "draws" in raw:
        raw = raw["draws"]
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f'{where}: expected {{"name[i]": [values], ...}} or {{"draws": {{...}}}}')
    arrays, length = {}, None
    for name, values in raw.items():
        if not _NAME.match(normalise_name(name)):
            raise ValueError(f"{where}: {name!r} is not a parameter name like beta[1]")
        if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                   for v in values):
            raise ValueError(f"{where}: {name!r} must be a list of numbers")
        arr = np.asarray(values, dtype=np.float64)
        if len(arr) < 2:
            raise ValueError(f"{where}: {name!r} has {len(arr)} draws; at least 2 are needed")
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: {name!r} contains NaN or inf")
        if length is not None and len(arr) != length:
            raise ValueError(f"{where}: {name!r} has {len(arr)} draws, others have {length}")
        length = len(arr)
        if arr.std() == 0:
            raise ValueError(f"{where}: {name!r} is constant; its sd (the comparison's unit) is 0")
        arrays[name] = arr
    return Reference.from_draws(arrays, source=str(path))


def compare(moments: Mapping[str, tuple[float, float]], reference: Reference) -> dict[str, dict[str, float]]:
    """``{name: {"mean", "sd", "mean_error_sd", "sd_ratio"}}`` for every reference parameter that
    ``moments`` (``{name: (mean, sd)}``) has; the others get ``mean``/``sd`` only."""
    out = {}
    for name, (mean, sd) in moments.items():
        row = {"mean": float(mean), "sd": float(sd)}
        if name in reference.mean:
            row["mean_error_sd"] = (mean - reference.mean[name]) / reference.sd[name]
            row["sd_ratio"] = sd / reference.sd[name]
        out[name] = row
    return out


def worst_mean_error(params: Mapping[str, Mapping[str, float]]) -> float | None:
    """max |mean error| in reference sds over the compared parameters (None when none compared)."""
    errors = [abs(p["mean_error_sd"]) for p in params.values() if "mean_error_sd" in p
              and math.isfinite(p["mean_error_sd"])]
    return max(errors) if errors else None


__all__ = ["Reference", "compare", "normalise_name", "read_reference", "worst_mean_error"]
