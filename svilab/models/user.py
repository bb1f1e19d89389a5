r"""A model the user writes: ``--model FILE.py[:FUNC] --data DATA.json``.

``FILE.py`` is any Python file; ``FUNC`` (default ``model``) is a Pyro model that takes one
argument, the data dict read from ``DATA.json`` (posteriordb's and Stan's JSON layout):

* an array of numbers becomes a float64 tensor, an array of integers an int64 tensor (nested
  arrays become matrices: ``X`` with shape ``(N, D)``);
* an integer scalar becomes a Python ``int``, a real scalar a ``float``; strings stay strings.

The model is called as ``FUNC(data)``; :class:`UserModel` binds the data so the rest of svilab
sees a model with no arguments. User models run with float64 as torch's default dtype (Stan
computes in double precision; ``Normal(0, 1000)`` priors and raw-scale predictors need it):
:func:`float64_default` is the context the CLI runs them in.

Every problem with the files is a :class:`ValueError` with one line that names the file and what
is wrong (missing file, syntax error, no such function, a function that does not take the data,
JSON that is not an object, ragged arrays, NaN), never a traceback from deep inside.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class UserModel:
    """A user's Pyro model with its data bound: ``model()`` runs ``fn(data)``."""

    fn: Any
    data: dict[str, Any]
    path: Path | None = None
    func: str = "model"
    data_path: Path | None = None
    info: dict = field(default_factory=dict)

    def model(self, *args, **kwargs):
        return self.fn(self.data, *args, **kwargs)

    @property
    def name(self) -> str:
        return self.path.stem if self.path else getattr(self.fn, "__name__", "model")

    def config(self) -> dict:
        return {"model": f"{self.path}:{self.func}" if self.path else self.name,
                "data_file": None if self.data_path is None else str(self.data_path),
                "data_shapes": {k: (list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__)
                                for k, v in self.data.items()}}

    def __repr__(self) -> str:
        return f"UserModel({self.name})"


def split_model_spec(spec: str) -> tuple[str, str | None]:
    """``"path/to/file.py:func"`` -> ``("path/to/file.py", "func")``; ``(spec, None)`` without a ``:FUNC``
    (a ``:`` followed by a path or a ``.py`` name is part of the path, as in ``C:/models/m.py``)."""
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head and tail and "/" not in tail and "\\" not in tail and not tail.endswith(".py"):
        return head, tail
    return text, None


def parse_model_spec(spec: str) -> tuple[Path, str]:
    """``"path/to/file.py:func"`` -> (path, func); func defaults to ``model``."""
    path, func = split_model_spec(spec)
    func = "model" if func is None else func
    if not func.isidentifier():
        raise ValueError(f"--model {spec}: {func!r} is not a Python function name")
    return Path(path), func


def load_function(spec: str):
    """Import ``FILE.py`` and return ``(function, path, name)`` for ``FILE.py[:FUNC]``."""
    path, func = parse_model_spec(spec)
    if not path.exists():
        raise ValueError(f"model file {path}: not found")
    if not path.is_file():
        raise ValueError(f"model file {path}: not a file")
    if path.suffix != ".py":
        raise ValueError(f"model file {path}: expected a Python file (.py)")
    module_name = f"svilab_user_model_{abs(hash(str(path.resolve())))}"
    try:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        loader_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ValueError(f"model file {path}: syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:  # noqa: BLE001 - anything the user's module raises on import
        raise ValueError(f"model file {path}: importing it failed: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, func):
        found = [n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module_name]
        raise ValueError(f"model file {path}: no function {func!r} (functions defined there: "
                         f"{', '.join(found) or 'none'})")
    fn = getattr(module, func)
    if not callable(fn):
        raise ValueError(f"model file {path}: {func!r} is not a function")
    try:
        inspect.signature(fn).bind({})
    except TypeError as exc:
        raise ValueError(f"model file {path}: {func}() must take one argument, the data dict ({exc})") from exc
    except ValueError:
        pass  # no signature available (builtins, some callables): try it
    return fn, path, func


def _convert(name: str, value: Any, where: str):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {name!r} is {value}")
        return value
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, list):
        if not value:
            return torch.zeros(0, dtype=torch.float64)
        try:
            import numpy as np

            arr = np.array(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {name!r} is a ragged array (rows of different lengths)") from exc
        if arr.dtype == object:
            raise ValueError(f"{where}: {name!r} is a ragged or mixed array")
        if arr.dtype.kind == "b":
            return torch.as_tensor(arr)
        if arr.dtype.kind in "iu":
            return torch.as_tensor(arr.astype(np.int64))
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                raise ValueError(f"{where}: {name!r} contains NaN or inf")
            return torch.as_tensor(arr.astype(np.float64))
        raise ValueError(f"{where}: {name!r} is not an array of numbers")
    if isinstance(value, dict):
        return {k: _convert(f"{name}.{k}", v, where) for k, v in value.items()}
    raise ValueError(f"{where}: {name!r} has an unsupported type {type(value).__name__}")


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} {path}: not found")
    if not path.is_file():
        raise ValueError(f"{what} {path}: not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path}: cannot read it ({exc})") from exc
    if not text.strip():
        raise ValueError(f"{what} {path}: the file is empty")
    try:
        return json.loads(text, parse_constant=lambda c: float(c))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc


def load_data(path: str | Path) -> dict[str, Any]:
    """Read a Stan/posteriordb data JSON file into the dict a user model takes (module docstring)."""
    raw = read_json(path, "data file")
    if not isinstance(raw, dict):
        raise ValueError(f"data file {path}: expected a JSON object of named values, got {type(raw).__name__}")
    return {k: _convert(k, v, f"data file {path}") for k, v in raw.items()}


def load_user_model(spec: str, data_path: str | Path | None = None) -> UserModel:
    """``--model FILE.py[:FUNC] [--data DATA.json]`` as a :class:`UserModel` (data ``{}`` without a file)."""
    fn, path, func = load_function(spec)
    data = {} if data_path is None else load_data(data_path)
    return UserModel(fn, data, path, func, None if data_path is None else Path(data_path))


@contextlib.contextmanager
def float64_default():
    """Run with float64 as torch's default dtype (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


__all__ = ["UserModel", "float64_default", "load_data", "load_function", "load_user_model", "parse_model_spec",
           "read_json", "split_model_spec"]
