"""The ``svilab`` command line: ``svilab <command> --help`` describes each command."""

from __future__ import annotations

import argparse
import os
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
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        from svilab.threads import apply_thread_policy

        apply_thread_policy(threads)
        seed = getattr(args, "seed", None)
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise ValueError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed}")
        return int(args.func(args) or 0)
    except ValueError as exc:  # bad input: a clear message, no stack trace, no half-written run folder
        from svilab.experiments.runs import discard_unfinished

        discard_unfinished()
        print(f"svilab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # a bug: the traceback is shown, but no half-written run folder is left
        from svilab.experiments.runs import discard_unfinished

        discard_unfinished()
        raise
    except Terminated:
        print(f"svilab {args.command}: terminated (SIGTERM); files already written are kept", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"svilab {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
