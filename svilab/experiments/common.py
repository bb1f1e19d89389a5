"""Command-line plumbing shared by the experiments: model options, run folders, output."""

from __future__ import annotations

import argparse
import contextlib
import sys

import pandas as pd

from svilab.experiments.runs import RunFolder, dumps, markdown
from svilab.models.poisson_gamma import DEFAULT_DATA, DEFAULT_PRIOR_U, DEFAULT_PRIOR_V, PoissonGamma
from svilab.validation import parse_floats

_DEFAULT_DATA = ",".join(map(str, DEFAULT_DATA))
_DEFAULT_PRIOR_U = "{:g},{:g}".format(*DEFAULT_PRIOR_U)
_DEFAULT_PRIOR_V = "{:g},{:g}".format(*DEFAULT_PRIOR_V)


def add_model_args(p: argparse.ArgumentParser, user_model: bool = False) -> None:
    """The Poisson-Gamma options; with ``user_model`` also ``--model FILE.py[:FUNC]`` (then ``--data``
    is the model's JSON data file)."""
    g = p.add_argument_group("model")
    if user_model:
        g.add_argument("--model", default=None, metavar="FILE.py[:FUNC]",
                       help="your own Pyro model: FUNC (default 'model') in FILE.py, called with the data dict "
                            "read from --data (default: the built-in Poisson-Gamma model)")
    g.add_argument("--data", default=None,
                   help=f"Poisson-Gamma: comma-separated counts x_i (default: the notebook's {_DEFAULT_DATA})"
                        + ("; with --model: the JSON data file (posteriordb/Stan layout)" if user_model else ""))
    g.add_argument("--prior-u", default=None, metavar="A,B",
                   help=f"Poisson-Gamma: Gamma(shape A, rate B) prior of u (default {_DEFAULT_PRIOR_U})")
    g.add_argument("--prior-v", default=None, metavar="A,B",
                   help=f"Poisson-Gamma: Gamma(shape A, rate B) prior of v (default {_DEFAULT_PRIOR_V})")


def model_from_args(args: argparse.Namespace):
    """The Poisson-Gamma model of the options, or the user's model (:class:`svilab.models.user.UserModel`)
    when ``--model`` is given."""
    if getattr(args, "model", None):
        from svilab.models.user import load_user_model

        given = [o for o, v in (("--prior-u", args.prior_u), ("--prior-v", args.prior_v)) if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to the Poisson-Gamma model only, not to --model")
        return load_user_model(args.model, args.data)
    data = parse_floats(_DEFAULT_DATA if args.data is None else args.data, "--data")
    return PoissonGamma(data, parse_floats(args.prior_u or _DEFAULT_PRIOR_U, "--prior-u", 2),
                        parse_floats(args.prior_v or _DEFAULT_PRIOR_V, "--prior-v", 2))


def add_run_args(p: argparse.ArgumentParser, seed: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default: runs/<command>-<timestamp>/)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier svilab run in --out (default: refuse a folder that is not empty)")
    g.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout instead of tables")
    if seed:
        g.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")


def run_folder(args: argparse.Namespace, command: str) -> RunFolder:
    """The run folder the options ask for (``--out``, ``--overwrite``); see :class:`RunFolder`."""
    return RunFolder(command, out=args.out, mode="overwrite" if getattr(args, "overwrite", False) else "new")


#: where ``--json`` output goes while the command's own stdout is sent to stderr (:func:`json_stdout`)
_json_stream = None


@contextlib.contextmanager
def json_stdout():
    """Under ``--json``: everything printed to stdout while the command runs (a user model's ``print``,
    a library's chatter) goes to stderr, and only :meth:`Reporter.emit_json` writes to the real stdout."""
    global _json_stream
    saved = _json_stream
    _json_stream = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stream = saved


class Reporter:
    """Prints tables for people, or one JSON object on stdout for tools (``--json``).

    With ``--json`` everything meant for people goes to stderr, so stdout parses as JSON.
    """

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet

    def say(self, text: str = "") -> None:
        if self.quiet:
            return
        print(text, file=sys.stderr if self.json_mode else sys.stdout, flush=True)

    def table(self, title: str, df: pd.DataFrame, floatfmt: str = ".6g", index: bool = True) -> None:
        self.say(f"\n{title}\n" + markdown(df, floatfmt, index=index))

    def emit_json(self, obj) -> None:
        if self.json_mode:
            print(dumps(obj), file=_json_stream or sys.stdout, flush=True)
