r"""Statistics of a sweep: per setting the mean of each metric over seeds with a 95% interval, and
the paired difference to the baseline setting on the same seeds.

**Per setting** (the values :math:`x_1..x_n` of one metric over the seeds whose trial finished
with a finite value):

.. math:: \bar x \pm t_{0.975,\,n-1}\, s / \sqrt{n}

Student's t interval for the mean (:math:`s` the sample sd, ddof 1), exact when the values are
Normal and close to it for means of a few values otherwise. With :math:`n = 2` the interval has one
degree of freedom (:math:`t = 12.7`): honest, and wide; the tables mark every row with
:math:`n < 3`. With :math:`n = 1` there is no sd and no interval (null), only the value.

**Paired** (a setting S against the baseline B(S): S with the baseline's grid values, everything
else equal): the per-seed differences :math:`d_i = x_i(S) - x_i(B(S))` over the seeds where both
finished, with the same t interval for :math:`\bar d` (a paired t interval: the seed's shared
luck cancels, so it is narrower than comparing two independent means). ``excludes_zero`` flags an
interval that does not contain 0. No correction for multiple comparisons is made: with many
settings and metrics some 95% intervals miss 0 by chance (one in twenty).

**Nothing is dropped silently**: ``failed`` counts the setting's seeds without a value (a failed
trial, a method left out of its trial, a non-finite number).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd


def t_interval(values: Iterable[float], level: float = 0.95) -> dict:
    """``{"n", "mean", "sd", "ci_low", "ci_high"}`` of the finite values (see the module docstring);
    sd and the interval are None for fewer than 2 values, everything but n None for none."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "ci_low": None, "ci_high": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def long_table(trials: list[dict]) -> pd.DataFrame:
    """One row per (trial, unit, metric) with its value (None when missing), from the trial records
    (``setting_key``, ``setting``, ``seed``, ``status``, ``metrics``, ``units``)."""
    rows = []
    for t in trials:
        for label, values in (t.get("metrics") or {}).items():
            for metric, value in values.items():
                rows.append({"setting_key": t["setting_key"], "seed": t["seed"], "unit_label": label,
                             "unit": (t.get("units") or {}).get(label, {}), "metric": metric, "value": value})
    return pd.DataFrame(rows, columns=["setting_key", "seed", "unit_label", "unit", "metric", "value"])


def summarize(trials: list[dict], settings: list[tuple[str, dict]], seeds: list[int]) -> list[dict]:
    """Per (setting, unit, metric): ``n``, ``failed``, ``mean``, ``sd``, ``ci_low``, ``ci_high``, in
    the order of ``settings`` (``[(setting_key, setting)]``), units and metrics as first seen."""
    df = long_table(trials)
    out = []
    for key, setting in settings:
        sub = df[df.setting_key == key]
        ended = [t for t in trials if t["setting_key"] == key]
        if sub.empty and ended:          # every trial of the setting failed: say so, with no metric
            out.append({"setting": setting, "unit": {}, "unit_label": None, "metric": None, "n": 0, "mean": None,
                        "sd": None, "ci_low": None, "ci_high": None, "failed": len(seeds)})
            continue
        for label in dict.fromkeys(sub.unit_label):
            u = sub[sub.unit_label == label]
            for metric in dict.fromkeys(u.metric):
                vals = u[u.metric == metric]["value"].tolist()
                stats = t_interval(vals)
                out.append({"setting": setting, "unit": u["unit"].iloc[0], "unit_label": label, "metric": metric,
                            **stats, "failed": len(seeds) - stats["n"]})
    return out


def paired(trials: list[dict], settings: list[tuple[str, dict]], baseline: dict | None) -> list[dict]:
    """Per setting other than the baseline, unit and metric: the paired difference to the baseline
    setting (``mean_diff``, ``sd``, ``ci_low``, ``ci_high``, ``n`` pairs, ``excludes_zero``).

    A unit is paired with the baseline's unit of the same label; when the setting and its baseline
    each measured a single unit (a grid over guides: ``mvn`` against ``gamma``) those two are paired."""
    if not baseline:
        return []
    df = long_table(trials)
    keys = {k: s for k, s in settings}
    index = {tuple(sorted(s.items())): k for k, s in settings}
    out = []
    for key, setting in settings:
        base_setting = {**setting, **baseline}
        base_key = index.get(tuple(sorted(base_setting.items())))
        if base_key is None or base_key == key:
            continue
        mine, theirs = df[df.setting_key == key], df[df.setting_key == base_key]
        my_units, their_units = list(dict.fromkeys(mine.unit_label)), list(dict.fromkeys(theirs.unit_label))
        for label in my_units:
            if label in their_units:
                other = label
            elif len(my_units) == 1 and len(their_units) == 1:
                other = their_units[0]
            else:
                continue
            a, b = mine[mine.unit_label == label], theirs[theirs.unit_label == other]
            for metric in dict.fromkeys(a.metric):
                x = a[a.metric == metric].set_index("seed")["value"]
                y = b[b.metric == metric].set_index("seed")["value"]
                common = [s for s in x.index if s in y.index and _finite(x[s]) and _finite(y[s])]
                d = [float(x[s]) - float(y[s]) for s in common]
                st = t_interval(d)
                out.append({"setting": keys[key], "unit": a["unit"].iloc[0], "unit_label": label,
                            "baseline": keys[base_key], "baseline_unit_label": other, "metric": metric,
                            "n": st["n"], "mean_diff": st["mean"], "sd": st["sd"], "ci_low": st["ci_low"],
                            "ci_high": st["ci_high"],
                            "excludes_zero": None if st["ci_low"] is None else bool(st["ci_low"] > 0
                                                                                    or st["ci_high"] < 0)})
    return out


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and not math.isfinite(v))


__all__ = ["long_table", "paired", "summarize", "t_interval"]
