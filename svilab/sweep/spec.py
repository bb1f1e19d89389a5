"""The sweep spec: a TOML file naming a command, its fixed options, a grid and the seeds.

::

    command = "posterior"          # "posterior", "vae train", "gradients", "elbo"
    model = "schools.py"           # optional: --model FILE.py[:FUNC], relative to the spec's folder
    seeds = 5                      # a count (seeds 0..4) or a list: [0, 1, 2]
    baseline = { guides = "gamma" }  # the setting every other one is paired with (optional)
    metrics = ["kl", "seconds"]    # optional: keep only these metrics (default: the command's own)
    title = "Guides on the Poisson-Gamma model"   # optional, for the report

    [options]                      # fixed for every trial: the command's options, without the dashes
    steps = 300

    [grid]                         # the cartesian product of these
    guides = ["gamma", "lognormal", "mvn"]
    lr = [0.01, 0.03]

    [[grid.posterior]]             # an axis whose values are tables: options that go together
    name = "earnings"              # (a model, its data and its reference), labelled by name
    model = "earnings.py"
    data = "earnings.json"

An option's name is the command's long option without the dashes (``prior_u`` or ``prior-u``
both mean ``--prior-u``); ``true``/``false`` turn a switch on or off (``jit = false`` is
``--no-jit``), a list fills an option that takes several values (``M = [10, 100]``). Paths
(``model``, ``reference``, ``data_root``, and ``data`` with a ``model``) are relative to the spec's
folder. The sweep owns ``seed``, ``out``, ``overwrite``, ``resume``, ``json`` and ``threads``.

Everything is checked before anything runs: the spec's keys, every option name and value against
the command's parser, and every setting against the command's typed config (its ``prepare``:
the same checks the command makes before it creates a run folder). A problem is one
:class:`SpecError` line naming the key (``grid.lr = -1: --lr must be a finite positive number``).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

#: the commands a sweep runs (the CLI's command words)
COMMANDS = ("posterior", "vae train", "gradients", "elbo")
TOP_KEYS = ("command", "model", "seeds", "baseline", "options", "grid", "metrics", "title")
#: options the sweep sets itself, and why a spec may not
RESERVED = {"seed": "the seeds are the spec's `seeds`",
            "out": "each trial's folder is SWEEP/trials/<setting>/seed-<s>",
            "overwrite": "use `svilab sweep --overwrite`",
            "resume": "use `svilab sweep --resume SWEEP`: it runs the unfinished trials",
            "json": "every trial's results are in sweep.json",
            "threads": "each trial has one torch thread; --max-concurrent sets how many run at once"}
#: options whose values are paths, resolved against the spec's folder (``data`` only with a model)
PATH_OPTIONS = ("model", "reference", "data_root")


class SpecError(ValueError):
    """A spec that cannot run, in one line naming the key."""


def _label(value: Any) -> str:
    """How a grid value reads in a setting's name and tables."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "+".join(_label(v) for v in value)
    if isinstance(value, dict):
        return str(value.get("name"))
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=,-]", "_", text)


def setting_key(setting: dict) -> str:
    """The folder name of a setting: ``guides=gamma,lr=0.01`` (``default`` without a grid); long
    names are cut and made unique by a hash."""
    if not setting:
        return "default"
    key = _safe(",".join(f"{k}={_label(v)}" for k, v in setting.items()))
    if len(key) > 120:
        key = key[:100] + "-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    return key


@dataclass(frozen=True)
class Axis:
    """One grid axis: its values as the spec gives them and their labels."""

    name: str
    values: tuple
    tables: bool = False

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(_label(v) for v in self.values)

    def setting_value(self, value):
        """The value as the setting records it (a table by its name)."""
        return value.get("name") if isinstance(value, dict) else value


@dataclass(frozen=True)
class Trial:
    """One run of the command: a setting (a value per grid axis) and a seed.

    :ivar setting: ``{axis: value}`` (a table value by its name).
    :ivar options: every option of the run (fixed and grid), paths resolved.
    :ivar argv: the command's arguments (without the command words), ``--seed`` included.
    """

    index: int
    setting: dict
    seed: int
    options: dict
    argv: tuple[str, ...]
    sources: dict = field(default_factory=dict, compare=False)   # option -> "options" or "grid.<axis>"

    @property
    def setting_key(self) -> str:
        return setting_key(self.setting)

    @property
    def key(self) -> str:
        return f"{self.setting_key}/seed-{self.seed}"

    @property
    def folder(self) -> str:
        """The trial's run folder, relative to the sweep folder."""
        return f"trials/{self.key}"

    def as_dict(self) -> dict:
        return {"index": self.index, "setting": self.setting, "seed": self.seed, "folder": self.folder,
                "argv": list(self.argv)}


# ----------------------------------------------------------------------------- options -> argv
def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{"--steps": action, ...}``: the long options of a command's parser.

    argparse has no public list of a parser's actions; ``parser._actions`` is the one it keeps
    (unchanged since Python 2.7, read by argcomplete and sphinx-argparse as well; checked with
    Python 3.10-3.12). ``tests/test_sweep.py`` fails if it stops listing the options."""
    return {s: a for a in parser._actions for s in a.option_strings if s.startswith("--")}


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse.BooleanOptionalAction):
        return "bool"
    if action.nargs == 0:
        return "flag"
    if action.nargs in ("+", "*"):
        return "list"
    return "value"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def option_argv(key: str, value: Any, actions: dict[str, argparse.Action], where: str) -> list[str]:
    """The command-line words of one spec option (``where`` names it in errors, e.g. ``grid.lr``)."""
    name = key.replace("_", "-")
    opt = next((o for o in (f"--{key}", f"--{name}") if o in actions), None)
    if opt is None:
        close = [o[2:] for o in actions if o[2:].replace("-", "") == name.replace("-", "")]
        raise SpecError(f"{where}: the command has no option --{name}" + (f" (did you mean {close[0]}?)" if close
                                                                         else ""))
    kind = _kind(actions[opt])
    if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict | list) for v in value)):
        raise SpecError(f"{where}: expected a value or a list of values, got a table")
    if kind in ("flag", "bool"):
        if not isinstance(value, bool):
            raise SpecError(f"{where}: {opt} is a switch; give true or false, got {value!r}")
        if value:
            return [opt]
        return [f"--no-{opt[2:]}"] if kind == "bool" else []
    if isinstance(value, bool):
        raise SpecError(f"{where}: {opt} takes a value, not {str(value).lower()}")
    if hasattr(value, "isoformat"):
        raise SpecError(f"{where}: a date or time is not an option value")
    if isinstance(value, list):
        if kind != "list":
            raise SpecError(f"{where}: {opt} takes one value, got a list (put the values in [grid] to run each)")
        if not value:
            raise SpecError(f"{where}: an empty list")
        return [opt, *map(_scalar, value)]
    if kind == "list":
        return [opt, _scalar(value)]
    return [f"{opt}={_scalar(value)}"]


def is_path_option(key: str, value: Any, options: dict) -> bool:
    """Whether option ``key`` names a file (``data`` only next to a ``model``)."""
    norm = key.replace("-", "_")
    return isinstance(value, str) and (norm in PATH_OPTIONS or (norm == "data" and options.get("model") is not None))


def split_model(key: str, value: str) -> tuple[str, str]:
    """``("FILE.py", ":FUNC")`` of a ``model`` value (``("FILE.py", "")`` without a function), ``(value, "")``
    for any other path option."""
    if key.replace("-", "_") == "model":
        from svilab.models.user import split_model_spec

        path, func = split_model_spec(value)         # the --model command's own rule
        return path, "" if func is None else f":{func}"
    return value, ""


def _resolve(key: str, value: Any, base: Path, options: dict) -> Any:
    if not is_path_option(key, value, options):
        return value
    text, func = split_model(key, value)
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve()) + func


# ----------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep spec (see the module docstring); :meth:`trials` expands it."""

    command: str
    options: dict
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...]
    baseline: dict | None = None
    metrics: tuple[str, ...] | None = None
    title: str | None = None
    text: str = ""
    base: Path = Path(".")

    # -------------------------------------------------------------- reading
    @classmethod
    def from_file(cls, path: str | Path) -> SweepSpec:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"spec {path}: cannot read it ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise SpecError(f"spec {path}: not a text file") from None
        return cls.from_text(text, path.resolve().parent, str(path))

    @classmethod
    def from_text(cls, text: str, base: str | Path = ".", name: str = "spec") -> SweepSpec:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{name}: not TOML: {exc}") from None
        return cls.from_dict(raw, text, Path(base))

    @classmethod
    def from_dict(cls, raw: dict, text: str = "", base: Path = Path(".")) -> SweepSpec:
        from svilab.cli import MAX_SEED

        unknown = [k for k in raw if k not in TOP_KEYS]
        if unknown:
            raise SpecError(f"unknown key {unknown[0]!r} (a spec has: {', '.join(TOP_KEYS)}; a command's options go "
                            "in [options] or [grid])")
        command = raw.get("command")
        if not isinstance(command, str) or " ".join(command.split()) not in COMMANDS:
            raise SpecError(f"command: expected one of {', '.join(repr(c) for c in COMMANDS)}, got {command!r}")
        command = " ".join(command.split())
        options = raw.get("options", {})
        if not isinstance(options, dict):
            raise SpecError("options: expected a table ([options])")
        options = dict(options)
        if "model" in raw:
            if "model" in options:
                raise SpecError("model: given twice (top level and [options])")
            options = {"model": raw["model"], **options}
        grid = raw.get("grid")
        if grid is None:
            grid = {}
        elif not isinstance(grid, dict):
            raise SpecError("grid: expected a table ([grid])")
        elif not grid:
            raise SpecError("grid: empty (leave [grid] out for a single setting, or list values to try)")
        axes = []
        for name, values in grid.items():
            where = f"grid.{name}"
            if not isinstance(values, list):
                raise SpecError(f"{where}: expected a list of values, got {values!r}")
            if not values:
                raise SpecError(f"{where}: an empty list (a grid axis needs at least one value)")
            tables = all(isinstance(v, dict) for v in values)
            if any(isinstance(v, dict) for v in values) and not tables:
                raise SpecError(f"{where}: mixes tables and plain values")
            if tables:
                for i, v in enumerate(values):
                    if not isinstance(v.get("name"), str) or not v["name"]:
                        raise SpecError(f"{where}[{i}]: a table value needs a name (name = \"...\")")
            elif name.replace("-", "_") in {k.replace("-", "_") for k in options}:
                raise SpecError(f"{where}: also given in [options]; an option is either fixed or a grid axis")
            axis = Axis(name, tuple(values), tables)
            twice = sorted({lab for lab in axis.labels if axis.labels.count(lab) > 1})
            if twice:
                raise SpecError(f"{where}: {twice[0]} given twice")
            axes.append(axis)
        for key in [*options, *(a.name for a in axes if not a.tables),
                    *(k for a in axes if a.tables for v in a.values for k in v if k != "name")]:
            norm = key.replace("-", "_")
            if norm in RESERVED:
                raise SpecError(f"{_where_key(key, options, axes)}: not allowed in a sweep ({RESERVED[norm]})")
        seeds = raw.get("seeds", 1)
        if isinstance(seeds, bool) or not isinstance(seeds, int | list):
            raise SpecError(f"seeds: expected a count or a list of seeds, got {seeds!r}")
        if isinstance(seeds, int):
            if seeds < 1:
                raise SpecError(f"seeds: must be at least 1, got {seeds}")
            seeds = list(range(seeds))
        if not seeds:
            raise SpecError("seeds: an empty list")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
                raise SpecError(f"seeds: each seed must be an integer in [0, {MAX_SEED}], got {s!r}")
        if len(set(seeds)) != len(seeds):
            raise SpecError(f"seeds: {sorted(s for s in set(seeds) if seeds.count(s) > 1)[0]} given twice")
        baseline = raw.get("baseline")
        if baseline is not None:
            if not isinstance(baseline, dict) or not baseline:
                raise SpecError("baseline: expected a table naming a grid value, e.g. "
                                "baseline = { guides = \"gamma\" }")
            names = {a.name: a for a in axes}
            for k, v in baseline.items():
                if k not in names:
                    raise SpecError(f"baseline.{k}: not a grid axis (axes: {', '.join(names) or 'none'})")
                if _label(v) not in names[k].labels:
                    raise SpecError(f"baseline.{k} = {v!r}: not one of the grid's values "
                                    f"({', '.join(names[k].labels)})")
            baseline = {k: names[k].setting_value(names[k].values[names[k].labels.index(_label(v))])
                        for k, v in baseline.items()}
        metrics = raw.get("metrics")
        if metrics is not None:
            if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
                raise SpecError("metrics: expected a list of metric names")
            from svilab.sweep.metrics import known_metrics

            known = known_metrics(command)
            for m in metrics:
                if m not in known:
                    raise SpecError(f"metrics: {m!r} is not a metric of {command} (known: {', '.join(known)})")
            metrics = tuple(metrics)
        title = raw.get("title")
        if title is not None and not isinstance(title, str):
            raise SpecError("title: expected a string")
        return cls(command, options, tuple(axes), tuple(seeds), baseline, metrics, title, text, base)

    # -------------------------------------------------------------- expanding
    def settings(self) -> list[dict]:
        """Every setting ``{axis: value}``, in the grid's order (the last axis varies fastest)."""
        out = [{}]
        for axis in self.axes:
            out = [{**s, axis.name: axis.setting_value(v)} for s in out for v in axis.values]
        return out

    def _setting_options(self, setting: dict) -> tuple[dict, dict]:
        options, sources = {}, {}
        for k, v in self.options.items():
            options[k], sources[k] = v, "options"
        for axis in self.axes:
            value = axis.values[[axis.setting_value(v) for v in axis.values].index(setting[axis.name])]
            if axis.tables:
                for k, v in value.items():
                    if k != "name":
                        options[k], sources[k] = v, f"grid.{axis.name}[{value['name']}]"
            else:
                options[axis.name], sources[axis.name] = value, f"grid.{axis.name}"
        return options, sources

    def trials(self) -> list[Trial]:
        """Every (setting, seed), settings in grid order, seeds innermost; options turned into the
        command's arguments (a :class:`SpecError` for an option the command does not have)."""
        from svilab.cli import command_parsers

        actions = option_actions(command_parsers()[self.command])
        out = []
        for setting in self.settings():
            options, sources = self._setting_options(setting)
            options = {k: _resolve(k, v, self.base, options) for k, v in options.items()}
            argv = []
            for k, v in options.items():
                argv += option_argv(k, v, actions, _cite(sources[k], k, v))
            for seed in self.seeds:
                out.append(Trial(len(out), setting, seed, options, (*argv, f"--seed={seed}"), sources))
        return out

    def check(self, trials: list[Trial] | None = None) -> list[Trial]:
        """Check every setting against the command (its parser and its typed config, as the command
        itself does before it makes a folder); returns the trials. Seeds only change ``--seed``, so
        each setting is checked once."""
        from svilab.cli import UsageError, parse_command

        trials = self.trials() if trials is None else trials
        cache: dict = {}
        seen = set()
        for t in trials:
            if t.setting_key in seen:
                continue
            seen.add(t.setting_key)
            try:
                args = parse_command(self.command, list(t.argv))
                check_command(self.command, args, cache)
            except UsageError as exc:
                raise SpecError(f"{self._blame(t, str(exc))}: {exc}") from None
            except ValueError as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SpecError(f"{self._blame(t, msg)}: {msg}") from None
        return trials

    def _blame(self, trial: Trial, message: str) -> str:
        """The spec key a command's message is about (``grid.lr = -1``), else the setting."""
        for opt in re.findall(r"--([A-Za-z0-9][A-Za-z0-9-]*)", message):
            for k, v in trial.options.items():
                if k.replace("_", "-") == opt or (opt.startswith("no-") and k.replace("_", "-") == opt[3:]):
                    return _cite(trial.sources.get(k, "options"), k, v)
        # a message that quotes a value ("unknown guide 'banana'"): the grid's value first, then a fixed one
        for k, v in sorted(trial.options.items(), key=lambda kv: trial.sources.get(kv[0], "") == "options"):
            for item in (v if isinstance(v, list) else [v]):
                if isinstance(item, str) and len(item) > 1 and repr(item) in message:
                    return _cite(trial.sources.get(k, "options"), k, v)
        return f"setting {trial.setting_key}" if trial.setting else "options"

    # -------------------------------------------------------------- recording
    def as_dict(self) -> dict:
        """The spec as ``sweep.json`` and ``config.json`` record it."""
        return {"command": self.command, "options": self.options,
                "grid": {a.name: list(a.values) for a in self.axes}, "seeds": list(self.seeds),
                "baseline": self.baseline, "metrics": list(self.metrics) if self.metrics else None,
                "title": self.title}


def _cite(source: str, key: str, value: Any) -> str:
    shown = value if not isinstance(value, float) or math.isfinite(value) else str(value)
    if source.startswith("grid.") and "[" in source:
        return f"{source}.{key} = {shown!r}"
    if source.startswith("grid."):
        return f"{source} = {shown!r}"
    return f"options.{key} = {shown!r}"


def _where_key(key: str, options: dict, axes) -> str:
    if key in options:
        return f"options.{key}"
    for a in axes:
        if a.name == key:
            return f"grid.{key}"
        if a.tables and any(key in v for v in a.values):
            return f"grid.{a.name}.{key}"
    return key


def check_command(command: str, args: argparse.Namespace, cache: dict | None = None) -> None:
    """The checks ``svilab COMMAND`` makes before it creates its run folder (its ``prepare``)."""
    from svilab.cli import MAX_SEED

    if not 0 <= getattr(args, "seed", 0) <= MAX_SEED:
        raise ValueError(f"--seed must be an integer in [0, {MAX_SEED}], got {args.seed}")
    if command == "posterior":
        from svilab.experiments import posterior

        posterior.prepare(args)
    elif command in ("elbo", "gradients"):
        from svilab.experiments import gradients

        gradients.prepare(args, command)
    elif command == "vae train":
        from svilab.experiments import vae

        vae.prepare_train(args, cache)
    else:  # pragma: no cover - COMMANDS lists the others
        raise SpecError(f"unknown command {command!r}")


__all__ = ["COMMANDS", "SpecError", "SweepSpec", "Trial", "check_command", "option_argv", "setting_key"]
