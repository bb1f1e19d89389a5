"""Devices by name: ``--device cpu|cuda|cuda:N|mps|auto``, checked with a message that names the option.

``auto`` is the first of CUDA, MPS and the CPU that this machine has. :func:`check_device` checks the
spelling only (a configuration may name a device of another machine: a checkpoint is resumed
elsewhere with ``--device``); :func:`resolve_device` also checks that the device is here.
"""

from __future__ import annotations

import re

DEVICES = ("cpu", "cuda", "mps", "auto")


def check_device(name: str | None) -> str:
    """``name`` lower-cased if it is ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``, else a ValueError."""
    text = "cpu" if name is None else str(name).strip().lower()
    if text in DEVICES or re.fullmatch(r"cuda:\d+", text):
        return text
    raise ValueError(f"--device must be one of cpu, cuda, cuda:N, mps, auto; got {name!r}")


def resolve_device(name: str | None):
    """The ``torch.device`` for ``name`` (:func:`check_device`), or a ValueError that says the device is
    not on this machine (and what is)."""
    import torch

    text = check_device(name)
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if text == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    have = ", ".join(["cpu"] + (["cuda"] if cuda else []) + (["mps"] if mps else []))
    if text.startswith("cuda"):
        if not cuda:
            raise ValueError(f"--device {text}: this machine has no CUDA device (this torch sees: {have})")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    if text == "mps" and not mps:
        raise ValueError(f"--device mps: this machine has no Apple MPS device (this torch sees: {have})")
    return torch.device(text)


__all__ = ["DEVICES", "check_device", "resolve_device"]
