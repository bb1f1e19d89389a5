"""The ``svilab`` command line: ``svilab <command> --help`` describes each command."""

from __future__ import annotations

import argparse
import os
import sys
import warnings


def build_parser() -> argparse.ArgumentParser:
    from svilab import __version__
    from svilab.experiments import demo, exact, gradients, posterior, vae

    parser = argparse.ArgumentParser(
        prog="svilab",
        description="Variational-inference experiments on top of Pyro. Each command writes a "
                    "run folder (config.json, results.json, tables, figures).")
    parser.add_argument("--version", action="version", version=f"svilab {__version__}")
    parser.add_argument("--threads", default=None, metavar="N",
                        help="CPU threads for torch: a number or 'auto' (all cores); also accepted after the "
                             "command. Default: $SVILAB_THREADS, else $OMP_NUM_THREADS, else 1, so that "
                             "several runs at once share the cores (see svilab/threads.py)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (demo, exact, gradients, posterior, vae):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.*is deprecated")  # Pyro's JIT ELBOs/NUTS
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    threads, argv = _take_threads(argv)
    args = parser.parse_args(argv)
    if threads is None:
        threads = args.threads
    try:
        from svilab.threads import apply_thread_policy

        apply_thread_policy(threads)
        return int(args.func(args) or 0)
    except ValueError as exc:  # bad input: a clear message, no stack trace
        print(f"svilab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"svilab {args.command}: interrupted", file=sys.stderr)
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
