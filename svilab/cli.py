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
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # bad input: a clear message, no stack trace
        print(f"svilab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"svilab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
