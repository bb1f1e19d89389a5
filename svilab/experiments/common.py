"""Command-line plumbing shared by the experiments: model options, run folders, output."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from svilab.experiments.runs import RunFolder, dumps, markdown
from svilab.models.poisson_gamma import DEFAULT_DATA, DEFAULT_PRIOR_U, DEFAULT_PRIOR_V, PoissonGamma
from svilab.validation import parse_floats


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Poisson-Gamma model")
    g.add_argument("--data", default=",".join(map(str, DEFAULT_DATA)),
                   help="comma-separated counts x_i (default: the notebook's %(default)s)")
    g.add_argument("--prior-u", default="{:g},{:g}".format(*DEFAULT_PRIOR_U), metavar="A,B",
                   help="Gamma(shape A, rate B) prior of u (default %(default)s)")
    g.add_argument("--prior-v", default="{:g},{:g}".format(*DEFAULT_PRIOR_V), metavar="A,B",
                   help="Gamma(shape A, rate B) prior of v (default %(default)s)")


def model_from_args(args: argparse.Namespace) -> PoissonGamma:
    data = parse_floats(args.data, "--data")
    return PoissonGamma(data, parse_floats(args.prior_u, "--prior-u", 2),
                        parse_floats(args.prior_v, "--prior-v", 2))


def add_run_args(p: argparse.ArgumentParser, seed: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default: runs/<command>-<timestamp>/)")
    g.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout instead of tables")
    if seed:
        g.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")


def run_folder(args: argparse.Namespace, command: str) -> RunFolder:
    return RunFolder(command, out=args.out)


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

    def table(self, title: str, df: pd.DataFrame, floatfmt: str = ".6g") -> None:
        self.say(f"\n{title}\n" + markdown(df, floatfmt))

    def emit_json(self, obj) -> None:
        if self.json_mode:
            print(dumps(obj), flush=True)
