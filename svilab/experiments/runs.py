"""Run folders: every experiment writes its configuration, results, tables and figures here.

Layout of a run folder (default ``runs/<command>-<timestamp>/``)::

    config.json     the full configuration (command-line options, data, priors, seed, versions)
    results.json    the numbers the command printed, machine-readable
    *.csv / *.md    tables (pandas), one pair per table
    *.png           figures
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return str(obj)


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON text for results: numpy/torch scalars become numbers, NaN and inf become null."""
    return json.dumps(_jsonable(obj), indent=indent, allow_nan=False)


def markdown(df: pd.DataFrame, floatfmt: str = ".6g") -> str:
    """A Markdown table of ``df``; missing values (NaN) print as empty cells."""
    clean = df.astype(object).where(df.notna(), None)
    return clean.to_markdown(floatfmt=floatfmt, missingval="")


def versions() -> dict[str, str]:
    import arviz
    import pyro
    import scipy
    import torch

    from svilab import __version__

    return {"svilab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "pyro": pyro.__version__, "arviz": arviz.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "pandas": pd.__version__, "platform": platform.platform()}


class RunFolder:
    """A folder for one experiment's outputs.

    :param command: the command name, used in the default folder name.
    :param out: an explicit folder (created if needed); default ``runs/<command>-<timestamp>``.
    """

    def __init__(self, command: str, out: str | Path | None = None, root: str | Path = "runs"):
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(root) / f"{command}-{stamp}"
            k = 1
            while path.exists():
                k += 1
                path = Path(root) / f"{command}-{stamp}-{k}"
        else:
            path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path

    def sub(self, name: str) -> RunFolder:
        return RunFolder(name, out=self.path / name)

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        p.write_text(dumps(obj) + "\n")
        return p

    def write_config(self, config: dict) -> Path:
        import torch

        return self.write_json("config.json", {**config, "versions": versions(), "threads": torch.get_num_threads()})

    def write_results(self, results: dict) -> Path:
        return self.write_json("results.json", results)

    def write_table(self, name: str, df: pd.DataFrame, floatfmt: str = ".6g") -> Path:
        df.to_csv(self.path / f"{name}.csv")
        (self.path / f"{name}.md").write_text(markdown(df, floatfmt) + "\n")
        return self.path / f"{name}.csv"

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        import matplotlib.pyplot as plt

        p = self.path / f"{name}.png"
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return p

    def __str__(self) -> str:
        return str(self.path)
