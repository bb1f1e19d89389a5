"""The ``svilab`` command line: ``svilab <command> --help`` describes each command."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import warnings

#: seeds are offset by up to ~10^5 for independent streams and must stay valid numpy seeds (< 2^32)
MAX_SEED = 2**32 - 1 - 1_000_000


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so that every command stops the same way (checkpoints kept)."""


def _on_sigterm(signum, frame):
    raise Terminated()


class UsageError(ValueError):
    """A command line argparse cannot read (raised instead of exiting by parsers made with
    ``raise_errors=True``, as :func:`parse_command` makes them)."""


class SvilabParser(argparse.ArgumentParser):
    """argparse's parser, remembering its sub-commands (``subcommands.choices``) and, with
    ``raise_errors``, raising :class:`UsageError` instead of printing the usage and exiting."""

    raise_errors = False
    subcommands = None

    def add_subparsers(self, **kwargs):
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def error(self, message):
        if self.raise_errors:
            raise UsageError(message)
        super().error(message)


def command_parsers(parser: argparse.ArgumentParser | None = None, prefix: str = "") -> dict[str, SvilabParser]:
    """``{"posterior": parser, "vae train": parser, ...}``: the parser of every command (leaves only)."""
    parser = parser or build_parser()
    out = {}
    for name, p in (parser.subcommands.choices.items() if parser.subcommands else ()):
        full = f"{prefix}{name}"
        if p.subcommands is not None:
            out.update(command_parsers(p, full + " "))
        else:
            out[full] = p
    return out


def parse_command(command: str, argv: list[str]) -> argparse.Namespace:
    """The options of ``svilab COMMAND ARGV`` as argparse reads them, without running anything.

    :raises UsageError: one line, argparse's own message (an unknown option, a value of the wrong
        type or not among the choices).
    """
    words = command.split()
    parser = build_parser()
    for p in [parser, *command_parsers(parser).values()]:
        p.raise_errors = True
    if command not in command_parsers(parser):
        raise UsageError(f"unknown command {command!r}")
    threads, rest = _take_threads([*words, *argv])
    args = parser.parse_args(rest)
    args.threads = threads if threads is not None else args.threads
    return args


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` for users: one default per option (none where the help already gives it, or the
    default is None/False), lists shown as the command line takes them."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default is None or default is False
                or default is argparse.SUPPRESS):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default))
        return f"{text} (default: {str(default).replace('%', '%%')})"


_INTERNAL = re.compile(r"\s*(Layers:|The layers:)[^\n]*(\n(?!\s*\n)[^\n]*)*")


def describe(doc: str | None) -> str | None:
    """A module docstring as a ``--help`` description: the reader's part only (the paragraph tail from
    "Layers:" on is for developers), Sphinx roles and literal quotes removed."""
    if not doc:
        return doc
    text = _INTERNAL.sub("", doc.strip())
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: m.group(1).split(".")[-1], text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return text


def _user_help(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter
    parser.description = describe(parser.description)
    for sub in (parser.subcommands.choices.values() if parser.subcommands else ()):
        _user_help(sub)


def build_parser() -> argparse.ArgumentParser:
    from svilab import __version__
    from svilab.experiments import demo, exact, gradients, posterior, sweep, vae

    parser = SvilabParser(
        prog="svilab",
        description="Variational-inference experiments on top of Pyro. Each command writes a "
                    "run folder (config.json, results.json, tables, figures).")
    parser.add_argument("--version", action="version", version=f"svilab {__version__}")
    parser.add_argument("--threads", default=None, metavar="N",
                        help="CPU threads for torch: a number or 'auto' (all cores); also accepted after the "
                             "command. Default: $SVILAB_THREADS, else $OMP_NUM_THREADS, else 1, so that "
                             "several runs at once share the cores")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (demo, exact, gradients, posterior, vae, sweep):
        module.register(sub)
    _user_help(parser)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """``posterior``, ``vae train``, ...: the command ``args`` were parsed for."""
    return " ".join(w for w in (args.command, getattr(args, "vae_command", None)) if w)


def main(argv: list[str] | None = None, handle_signals: bool = True) -> int:
    """Run ``svilab ARGV`` in this process; returns the exit status (0 done, 2 bad input or a run that
    cannot go on, 130/143 interrupted). Every run folder the command opened ends with its status
    (:func:`svilab.experiments.runs.command_folders`). ``handle_signals``: turn SIGTERM into a clean
    stop (off where the caller owns the signals, as a Ray worker does)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.*is deprecated")  # Pyro's JIT ELBOs/NUTS
    previous = signal.signal(signal.SIGTERM, _on_sigterm) \
        if handle_signals and threading.current_thread() is threading.main_thread() else None
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    """:func:`main` with its SIGTERM handler in place: parse, run, and turn bad input and signals into one line."""
    try:            # the commands' imports (torch, Pyro, ArviZ) take seconds: Ctrl-C there is one line too
        parser = build_parser()
    except (KeyboardInterrupt, Terminated) as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"svilab: {what} while starting; nothing was written", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    argv = sys.argv[1:] if argv is None else list(argv)
    threads, argv = _take_threads(argv)
    args = parser.parse_args(argv)
    if threads is None:
        threads = args.threads
    from svilab.experiments.runs import command_folders, set_command_line

    set_command_line(["svilab", *argv])
    try:
        with command_folders():
            from svilab.threads import apply_thread_policy

            apply_thread_policy(threads)
            seed = getattr(args, "seed", None)
            if seed is not None and not 0 <= seed <= MAX_SEED:
                raise ValueError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed}")
            if getattr(args, "json", False):        # stdout is the JSON's alone: a model's prints go to stderr
                from svilab.experiments.common import json_stdout

                with json_stdout():
                    return int(args.func(args) or 0)
            return int(args.func(args) or 0)
    except ValueError as exc:  # bad input: a clear message, no stack trace, no half-written run folder
        print(f"svilab {command_name(args)}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"svilab {command_name(args)}: terminated (SIGTERM); files already written are kept", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"svilab {command_name(args)}: interrupted", file=sys.stderr)
        return 130


def _take_threads(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--threads N`` / ``--threads=N`` after the command (argparse only knows it before)."""
    threads, rest, i = None, [], 0
    first_command = next((j for j, a in enumerate(argv) if not a.startswith("-")), len(argv))
    while i < len(argv):
        a = argv[i]
        if i > first_command and a == "--threads" and i + 1 < len(argv):
            threads, i = argv[i + 1], i + 2
            continue
        if i > first_command and a.startswith("--threads="):
            threads, i = a.split("=", 1)[1], i + 1
            continue
        rest.append(a)
        i += 1
    return threads, rest


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["HelpFormatter", "SvilabParser", "Terminated", "UsageError", "build_parser", "command_name",
           "command_parsers", "describe", "main", "parse_command"]
