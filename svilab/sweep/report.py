"""A sweep's report: ``sweep.json``, the tables and the figures, from its trial records.

Files in the sweep folder (every one written atomically, after each finished trial for the tables
and ``sweep.json``, at the end for the figures; ``svilab sweep --report SWEEP`` writes them again
from the trial folders without running anything):

- ``sweep.json``: ``{"spec", "trials": [{"setting", "seed", "status", "error", "folder", "metrics",
  ...}], "summary": [...], "paired": [...], "counts"}`` (:func:`sweep_json`);
- ``summary.csv`` (long: one row per setting, unit and metric with n, failed, mean, sd, ci_low,
  ci_high) and ``summary.md`` (one row per setting and unit, one column per metric: ``mean [low,
  high]``, ``n<3`` marked);
- ``paired.csv``/``.md``: the paired difference to the baseline, ``*`` where the interval excludes 0;
- ``trials.csv``: every trial's status, seconds, node and error;
- ``metric_<name>.png``: each metric by setting, the mean with its 95% interval and every seed's
  value as a dot; ``paired.png``: the paired differences with their intervals; ``curves.png``: the
  curve of :data:`svilab.sweep.metrics.CURVE` (the VAE's validation ELBO per epoch, the SVI loss per
  step), the mean over seeds with its 95% band.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from svilab.experiments.runs import dumps, markdown
from svilab.files import atomic_write
from svilab.sweep import metrics as metrics_mod
from svilab.sweep.spec import SweepSpec, Trial
from svilab.sweep.stats import paired, summarize, t_interval

TRIAL_RECORD = "trial.json"
#: the most metric figures a report draws (gradients of a user model have two metrics per parameter)
MAX_METRIC_FIGURES = 8


# ----------------------------------------------------------------------------- records
def trial_record(trial: Trial, spec: SweepSpec, result: dict) -> dict:
    """The record of a finished trial (what ``trial.json`` holds, plus its metrics)."""
    return {"index": trial.index, "setting": trial.setting, "setting_key": trial.setting_key, "seed": trial.seed,
            "status": result["status"], "error": result.get("error"), "folder": trial.folder,
            "seconds": result.get("seconds"), "node": result.get("node"), "host": result.get("host"),
            "started_at": result.get("started_at"), "import_seconds": result.get("import_seconds"),
            "command": spec.command, "argv": list(trial.argv),
            "metrics": result.get("metrics") or {}, "units": result.get("units") or {}}


def read_records(folder: Path, spec: SweepSpec, trials: list[Trial]) -> dict[str, dict]:
    """``{trial key: record}`` of every finished trial in ``folder`` (a trial folder holds
    ``trial.json`` once its trial ended); metrics re-read from each trial's ``results.json``."""
    out = {}
    for t in trials:
        path = folder / t.folder
        try:
            rec = json.loads((path / TRIAL_RECORD).read_text())
        except (OSError, ValueError):
            continue
        if rec.get("status") == "done":
            rec["metrics"], rec["units"] = metrics_mod.extract(spec.command, path, spec.metrics)
        out[t.key] = rec
    return out


def settings_of(spec: SweepSpec) -> list[tuple[str, dict]]:
    from svilab.sweep.spec import setting_key

    return [(setting_key(s), s) for s in spec.settings()]


def sweep_json(spec: SweepSpec, trials: list[Trial], records: dict[str, dict]) -> dict:
    """The whole sweep as one JSON object (see the module docstring); trials not run yet have
    status ``pending``."""
    rows = []
    for t in trials:
        r = records.get(t.key)
        if r is None:
            rows.append({"setting": t.setting, "seed": t.seed, "status": "pending", "error": None,
                         "folder": t.folder, "metrics": {}})
        else:
            rows.append({"setting": t.setting, "seed": t.seed, "status": r["status"], "error": r.get("error"),
                         "folder": t.folder, "metrics": r.get("metrics") or {}, "units": r.get("units") or {},
                         "seconds": r.get("seconds"), "node": r.get("node")})
    # in the trials' order, not the order they finished in: the statistics (floating-point sums) then do
    # not depend on which worker was faster, and --report re-aggregates to the same numbers
    finished = [records[t.key] for t in trials if t.key in records]
    settings = settings_of(spec)
    counts = {"trials": len(trials), "done": sum(r["status"] == "done" for r in finished),
              "failed": sum(r["status"] == "failed" for r in finished)}
    counts["pending"] = counts["trials"] - counts["done"] - counts["failed"]
    with_keys = [{**r, "setting_key": r.get("setting_key") or _key(r["setting"])} for r in finished]
    return {"spec": spec.as_dict(), "counts": counts, "trials": rows,
            "summary": summarize(with_keys, settings, list(spec.seeds)),
            "paired": paired(with_keys, settings, spec.baseline)}


def _key(setting: dict) -> str:
    from svilab.sweep.spec import setting_key

    return setting_key(setting)


# ----------------------------------------------------------------------------- tables
def _setting_columns(rows: list[dict], axes: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{a: r["setting"].get(a) for a in axes} for r in rows], columns=axes)


def summary_frame(sj: dict) -> pd.DataFrame:
    """``summary.csv``: one row per setting, unit and metric."""
    axes = list(sj["spec"]["grid"])
    rows = sj["summary"]
    df = _setting_columns(rows, axes)
    df["unit"] = [r["unit_label"] for r in rows]
    for k in ("metric", "n", "failed", "mean", "sd", "ci_low", "ci_high"):
        df[k] = [r[k] for r in rows]
    return df


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.4g}"


def summary_wide(sj: dict) -> pd.DataFrame:
    """``summary.md``: one row per setting and unit, one column per metric (``mean [low, high]``)."""
    axes = list(sj["spec"]["grid"])
    cells: dict[tuple, dict] = {}
    for r in sj["summary"]:
        key = (*(str(r["setting"].get(a)) for a in axes), r["unit_label"])
        row = cells.setdefault(key, {})
        if r["metric"] is None:
            row["trials"] = f"all {r['failed']} failed"
            continue
        text = _fmt(r["mean"])
        if r["ci_low"] is not None:
            text += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        if r["n"] < 3:
            text += f" (n={r['n']})"
        if r["failed"]:
            text += f" ({r['failed']} failed)"
        row[r["metric"]] = text
    return _wide(cells, axes)


def _wide(cells: dict, axes: list[str]) -> pd.DataFrame:
    """A table with one column per grid axis (and ``unit`` where a setting's units say more than its
    grid values), then the cells."""
    keys = list(cells)
    df = pd.DataFrame(list(cells.values()))
    front = pd.DataFrame(keys, columns=[*axes, "unit"]) if keys else pd.DataFrame(columns=[*axes, "unit"])
    redundant = not len(front) or front["unit"].nunique() <= 1 or any(
        (front["unit"] == front[a]).all() for a in axes)
    if redundant:
        front = front.drop(columns=["unit"])
    return pd.concat([front, df], axis=1)


def paired_frame(sj: dict) -> pd.DataFrame:
    axes = list(sj["spec"]["grid"])
    rows = sj["paired"]
    df = _setting_columns(rows, axes)
    df["unit"] = [r["unit_label"] for r in rows]
    df["baseline"] = [",".join(f"{k}={v}" for k, v in r["baseline"].items() if r["setting"].get(k) != v)
                      for r in rows]
    for k in ("metric", "n", "mean_diff", "sd", "ci_low", "ci_high", "excludes_zero"):
        df[k] = [r[k] for r in rows]
    return df


def paired_wide(sj: dict) -> pd.DataFrame:
    axes = list(sj["spec"]["grid"])
    cells: dict[tuple, dict] = {}
    for r in sj["paired"]:
        key = (*(str(r["setting"].get(a)) for a in axes), r["unit_label"])
        text = _fmt(r["mean_diff"])
        if r["ci_low"] is not None:
            text += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" + (" *" if r["excludes_zero"] else "")
        cells.setdefault(key, {})[r["metric"]] = text + (f" (n={r['n']})" if r["n"] < 3 else "")
    return _wide(cells, axes)


def trials_frame(sj: dict) -> pd.DataFrame:
    axes = list(sj["spec"]["grid"])
    rows = sj["trials"]
    df = _setting_columns(rows, axes)
    for k in ("seed", "status", "seconds", "node", "error", "folder"):
        df[k] = [r.get(k) for r in rows]
    return df


def write_tables(folder: Path, sj: dict) -> None:
    """``sweep.json``, ``summary``, ``paired`` and ``trials`` tables, atomically."""
    text = dumps(sj) + "\n"
    atomic_write(folder / "sweep.json", lambda tmp: tmp.write_text(text))
    for name, frame in (("summary", summary_frame(sj)), ("paired", paired_frame(sj)),
                        ("trials", trials_frame(sj))):
        atomic_write(folder / f"{name}.csv", lambda tmp, f=frame: f.to_csv(tmp, index=False), sync=False)
    for name, frame in (("summary", summary_wide(sj)), ("paired", paired_wide(sj))):
        md = markdown(frame, index=False) + "\n" if len(frame) else "(nothing yet)\n"
        atomic_write(folder / f"{name}.md", lambda tmp, t=md: tmp.write_text(t), sync=False)


# ----------------------------------------------------------------------------- figures
def _labels(row: dict) -> dict:
    out = dict(row["setting"])
    out.update(row.get("unit") or {})
    base, _, param = row["metric"].partition("[")
    if param:
        out["parameter"] = param.rstrip("]")
    return out


def _numeric(values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _text(v) -> str:
    return "+".join(map(str, v)) if isinstance(v, list) else str(v)


def figure_metric(sj: dict, metric: str, seeds_values: dict):
    """One metric (a base name): the mean over seeds with its 95% interval per setting, seed values
    as dots; x is a numeric grid axis or M when there is one, else the settings."""
    import matplotlib.pyplot as plt

    rows = [r for r in sj["summary"] if r["metric"] is not None and metrics_mod.base_name(r["metric"]) == metric
            and r["mean"] is not None]
    if not rows:
        return None
    labels = [_labels(r) for r in rows]
    keys = list(dict.fromkeys(k for lab in labels for k in lab))
    varying = [k for k in keys if len({_text(lab.get(k)) for lab in labels}) > 1]
    # a unit field that only repeats a grid value (method = the guide of a grid over guides) says nothing new
    varying = [k for i, k in enumerate(varying)
               if not any(all(_text(lab.get(k)) == _text(lab.get(j)) for lab in labels) for j in varying[:i])]
    panel_key = "parameter" if "parameter" in varying else None
    varying = [k for k in varying if k != panel_key]
    x_key = next((k for k in (["M"] + varying) if k in varying and _numeric([lab.get(k) for lab in labels])), None)
    series_keys = [k for k in varying if k != x_key]
    panels = list(dict.fromkeys(lab.get(panel_key) for lab in labels)) if panel_key else [None]
    panels = panels[:8]
    ncol = min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.0 * nrow), squeeze=False)
    categories = list(dict.fromkeys(",".join(_text(lab.get(k)) for k in series_keys) for lab in labels)) \
        if x_key is None else None
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        sel = [(r, lab) for r, lab in zip(rows, labels, strict=True)
               if panel_key is None or lab.get(panel_key) == panel]
        if x_key is None:               # categorical: one point per setting and unit
            pos = {c: i for i, c in enumerate(categories)}
            for r, lab in sel:
                c = ",".join(_text(lab.get(k)) for k in series_keys)
                i = pos[c]
                lo, hi = r["ci_low"], r["ci_high"]
                ax.errorbar([i], [r["mean"]], yerr=None if lo is None else [[r["mean"] - lo], [hi - r["mean"]]],
                            fmt="o", color="tab:blue", capsize=4)
                vals = seeds_values.get((r["unit_label"], r["metric"], _key(r["setting"])), [])
                ax.plot(np.full(len(vals), i) + np.linspace(-0.12, 0.12, len(vals)) if vals else [], vals, ".",
                        color="0.6", ms=4, zorder=0)
            ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 3 else 0,
                          ha="right" if len(categories) > 3 else "center", fontsize=8)
        else:
            groups: dict[str, list] = {}
            for r, lab in sel:
                groups.setdefault(",".join(f"{k}={_text(lab.get(k))}" for k in series_keys), []).append((lab[x_key], r))
            for name, pts in groups.items():
                name = ",".join(part.split("=", 1)[1] for part in name.split(",")) if len(series_keys) == 1 else name
                pts.sort(key=lambda p: p[0])
                xs = [p[0] for p in pts]
                ms = [p[1]["mean"] for p in pts]
                lo = [p[1]["ci_low"] if p[1]["ci_low"] is not None else p[1]["mean"] for p in pts]
                hi = [p[1]["ci_high"] if p[1]["ci_high"] is not None else p[1]["mean"] for p in pts]
                line, = ax.plot(xs, ms, "o-", label=name or None, ms=4)
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
            xs_all = [lab[x_key] for _, lab in sel]
            if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10:
                ax.set_xscale("log")
            ax.set_xlabel(x_key)
            if any(groups):
                ax.legend(fontsize=7)
        ys = [r["mean"] for r, _ in sel]
        if ys and min(ys) > 0 and (metric == "variance" or max(ys) / min(ys) > 30):
            ax.set_yscale("log")       # values over orders of magnitude (KL of mean-field vs full-rank guides)
        ax.set_ylabel(metric)
        if panel is not None:
            ax.set_title(f"{metric}[{panel}]", fontsize=10)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    n_seeds = len(sj["spec"]["seeds"])
    fig.suptitle(f"{metric}: mean over {n_seeds} seed{'s' if n_seeds > 1 else ''} with its 95% interval "
                 f"({sj['spec']['command']})", fontsize=11)
    fig.tight_layout()
    return fig


def figure_paired(sj: dict, metrics: list[str]):
    """The paired differences to the baseline, one panel per metric, with their 95% intervals."""
    import matplotlib.pyplot as plt

    rows = [r for r in sj["paired"] if r["mean_diff"] is not None]
    if not rows:
        return None
    shown = [m for m in metrics if any(metrics_mod.base_name(r["metric"]) == m and "[" not in r["metric"]
                                       for r in rows)][:6]
    if not shown:
        return None
    ncol = min(3, len(shown))
    nrow = math.ceil(len(shown) / ncol)
    height = 1.2 + 0.35 * max(len([r for r in rows if r["metric"] == m]) for m in shown)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.0 * ncol, height * nrow + 0.6), squeeze=False)
    for ax in axes.ravel()[len(shown):]:
        ax.axis("off")
    for ax, m in zip(axes.ravel(), shown, strict=False):
        sel = [r for r in rows if r["metric"] == m]
        names = [",".join(_text(v) for k, v in r["setting"].items() if r["baseline"].get(k) != v
                          or k not in (sj["spec"]["baseline"] or {}))
                 + (f" [{r['unit_label']}]" if r["unit_label"] not in ("vae",) else "") for r in sel]
        for i, r in enumerate(sel):
            color = "tab:red" if r["excludes_zero"] else "tab:blue"
            err = None if r["ci_low"] is None else [[r["mean_diff"] - r["ci_low"]], [r["ci_high"] - r["mean_diff"]]]
            ax.errorbar([r["mean_diff"]], [i], xerr=err, fmt="o", color=color, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(sel)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("difference to the baseline")
    base = ", ".join(f"{k}={v}" for k, v in (sj["spec"]["baseline"] or {}).items())
    fig.suptitle(f"Paired differences to the baseline ({base}) on the same seeds, 95% intervals "
                 "(red: excludes 0)", fontsize=10)
    fig.tight_layout()
    return fig


def figure_curves(sj: dict, curves: dict):
    """``curves[(setting_key, unit)] = (setting, [series per seed])``: mean over seeds with its 95% band."""
    import matplotlib.pyplot as plt

    if not curves:
        return None
    command = sj["spec"]["command"]
    name = metrics_mod.CURVE.get(command)
    units = list(dict.fromkeys(u for _, u in curves))
    fig, axes = plt.subplots(1, len(units[:6]), figsize=(5.5 * len(units[:6]), 4.2), squeeze=False)
    for ax, unit in zip(axes[0], units[:6], strict=False):
        for (_key, u), (setting, series) in curves.items():
            if u != unit or not series:
                continue
            length = min(len(s) for s in series)
            arr = np.array([s[:length] for s in series], dtype=float)
            if command == "posterior" and length > 50:          # SVI losses are noisy: a running mean
                w = max(1, length // 50)
                kernel = np.ones(w) / w
                arr = np.array([np.convolve(a, kernel, mode="valid") for a in arr])
            x = np.arange(1, arr.shape[1] + 1)
            st = [t_interval(arr[:, j]) for j in range(arr.shape[1])]
            mean = np.array([s["mean"] for s in st], dtype=float)
            lo = np.array([s["ci_low"] if s["ci_low"] is not None else s["mean"] for s in st], dtype=float)
            hi = np.array([s["ci_high"] if s["ci_high"] is not None else s["mean"] for s in st], dtype=float)
            label = ",".join(f"{k}={_text(v)}" for k, v in setting.items()) or "default"
            line, = ax.plot(x, mean, label=f"{label} (n={arr.shape[0]})", lw=1.2)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_xlabel("epoch" if command == "vae train" else "step")
        ax.set_ylabel(name)
        if unit != "vae":
            ax.set_title(unit, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: mean over seeds with its 95% band", fontsize=11)
    fig.tight_layout()
    return fig


def write_figures(folder: Path, spec: SweepSpec, trials: list[Trial], records: dict, sj: dict) -> list[str]:
    """The metric, paired and curve figures; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds_values: dict = {}
    for t in trials:
        rec = records.get(t.key)
        if rec is None or rec["status"] != "done":
            continue
        for label, values in (rec.get("metrics") or {}).items():
            for m, v in values.items():
                if v is not None:
                    seeds_values.setdefault((label, m, t.setting_key), []).append(v)
    metric_names = list(dict.fromkeys(metrics_mod.base_name(r["metric"]) for r in sj["summary"] if r["metric"]))
    figs = {f"metric_{m}": figure_metric(sj, m, seeds_values) for m in metric_names[:MAX_METRIC_FIGURES]}
    figs["paired"] = figure_paired(sj, metric_names)
    if spec.command in metrics_mod.CURVE:
        curves: dict = {}
        for t in trials:
            rec = records.get(t.key)
            if rec is None or rec["status"] != "done":
                continue
            for unit, series in metrics_mod.histories(spec.command, folder / t.folder).items():
                values = series.get(metrics_mod.CURVE[spec.command])
                if values:
                    curves.setdefault((t.setting_key, unit), (t.setting, []))[1].append(values)
        figs["curves"] = figure_curves(sj, curves)
    written = []
    for name, fig in figs.items():
        if fig is None:
            continue
        try:
            atomic_write(folder / f"{name}.png", lambda tmp, f=fig: f.savefig(tmp, dpi=110, bbox_inches="tight",
                                                                            format="png"), sync=False)
            written.append(f"{name}.png")
        finally:
            plt.close(fig)
    return written


__all__ = ["TRIAL_RECORD", "figure_curves", "figure_metric", "figure_paired", "paired_frame", "read_records",
           "summary_frame", "summary_wide", "sweep_json", "trial_record", "trials_frame", "write_figures",
           "write_tables"]
