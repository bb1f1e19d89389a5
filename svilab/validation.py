"""Input checks shared by models, inference and the CLI.

Every function raises :class:`ValueError` with a message that names the offending input, so a
user sees what is wrong with *their* input instead of a stack trace from deep inside torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch


def as_counts(data: Iterable[float] | torch.Tensor | np.ndarray, name: str = "data") -> torch.Tensor:
    """Return ``data`` as a 1-D float64 tensor of non-negative integer counts, or raise.

    Rejects empty input, NaN/inf, negative and non-integer values, and non-1-D shapes.
    """
    if isinstance(data, str):
        data = parse_floats(data, name)
    try:
        arr = torch.as_tensor(np.asarray(data, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: counts must be numbers, got {data!r}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name}: counts must be a 1-D sequence, got shape {tuple(arr.shape)}")
    if arr.numel() == 0:
        raise ValueError(f"{name}: no counts given (empty data)")
    if torch.isnan(arr).any():
        raise ValueError(f"{name}: counts contain NaN at positions {_where(torch.isnan(arr))}")
    if torch.isinf(arr).any():
        raise ValueError(f"{name}: counts contain inf at positions {_where(torch.isinf(arr))}")
    if (arr < 0).any():
        raise ValueError(f"{name}: counts must be non-negative, got {_bad(arr, arr < 0)}")
    if (arr != torch.round(arr)).any():
        raise ValueError(f"{name}: counts must be integers, got {_bad(arr, arr != torch.round(arr))}")
    return arr


def _checked_float(value, name: str, what: str, ok, bad: str) -> float:
    """``float(value)`` if ``ok`` of it, else a ValueError: ``{name} must be {what}`` for what is not
    a number, ``{name} must be {bad}`` for a number that fails ``ok``."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be {what}, got {value!r}") from exc
    if not ok(v):
        raise ValueError(f"{name} must be {bad}, got {value!r}")
    return v


def positive(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise ValueError."""
    return _checked_float(value, name, "a positive number", lambda v: math.isfinite(v) and v > 0,
                          "a finite positive number")


def finite(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a finite number, else raise ValueError."""
    return _checked_float(value, name, "a number", math.isfinite, "finite")


def positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum``, else raise ValueError."""
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def choice(value: str, known: Sequence[str], what: str) -> str:
    """Return ``value`` if it is one of ``known`` (case-insensitive), else raise listing them."""
    lowered = {k.lower(): k for k in known}
    key = str(value).lower()
    if key not in lowered:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    return lowered[key]


def parse_floats(text: str, name: str, length: int | None = None) -> list[float]:
    """Parse ``"1,2,3"`` (commas and/or spaces) into floats, checking the count if given."""
    raw = str(text).strip()
    items = [p.strip() for p in raw.split(",")] if "," in raw else raw.split()
    if any(p == "" for p in items) or not items:
        raise ValueError(f"{name}: an empty item in {text!r} (two commas in a row, or a comma at an end?)")
    parts = [q for p in items for q in p.split()]
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from exc
    if length is not None and len(values) != length:
        raise ValueError(f"{name}: expected {length} comma-separated numbers, got {text!r}")
    return values


def _where(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()[:10]


def _bad(arr: torch.Tensor, mask: torch.Tensor) -> list[float]:
    return arr[mask].tolist()[:10]


__all__ = ["as_counts", "choice", "finite", "parse_floats", "positive", "positive_int"]
