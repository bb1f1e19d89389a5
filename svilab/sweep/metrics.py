"""What a finished trial measured, read back from its run folder (``results.json``).

A trial measures one or more **units**, each with its metrics: a method of ``posterior`` (a
guide or NUTS), an estimator at one M of ``gradients``, one M of ``elbo``, the trained model of
``vae train``. A unit has a label (``mvn``, ``reparam M=100``) and fields (``{"method": "mvn"}``,
``{"estimator": "reparam", "M": 100}``) that the tables and figures group by.

Default metrics per command:

============  =====================================================================================
posterior     ``kl`` (Poisson-Gamma: log p(x) - ELBO), ``elbo`` (a user's model), ``max_abs_mean_error_sd``
              (worst |mean error| in exact/reference sds), ``pareto_k``, ``seconds``, ``warnings``
              (how many); NUTS: ``max_r_hat``, ``divergences``
vae train     ``test_elbo``, ``test_log_likelihood``, ``reconstruction_error``, ``active_units``,
              ``seconds_per_epoch``, ``epochs``, ``alpha_final`` (a learned skew's last value)
gradients     ``variance[p]`` and ``bias[p]`` (estimate's mean minus the exact gradient) per
              parameter p, ``seconds`` per estimate
elbo          ``variance``, ``bias`` (mean minus the exact ELBO)
============  =====================================================================================

Histories (the curves a trial traces, for TensorBoard and the sweep's curve figure): the SVI loss
per step of each guide (``svi_loss.csv``), the VAE's per-epoch ``train_loss``, ``val_loss`` and
``val_elbo``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

KNOWN = {
    "posterior": ("kl", "elbo", "max_abs_mean_error_sd", "pareto_k", "seconds", "warnings", "max_r_hat",
                  "divergences"),
    "vae train": ("test_elbo", "test_log_likelihood", "reconstruction_error", "active_units", "seconds_per_epoch",
                  "epochs", "alpha_final"),
    "gradients": ("variance", "bias", "seconds"),
    "elbo": ("variance", "bias"),
}
#: the history a sweep's curve figure draws, per command
CURVE = {"vae train": "val_elbo", "posterior": "loss"}


def known_metrics(command: str) -> tuple[str, ...]:
    """The metric names (without a parameter) that a command's trials report."""
    return KNOWN[command]


def base_name(metric: str) -> str:
    """``variance[mu_u]`` -> ``variance``."""
    return metric.split("[", 1)[0]


def _num(x) -> float | None:
    if x is None or isinstance(x, bool):
        return None if x is None else float(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _read_results(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / "results.json").read_text())
    except (OSError, ValueError):
        return None


def _posterior(res: dict) -> list[tuple[str, dict, dict]]:
    exact = res.get("exact")
    units = []
    for m in res.get("methods", []):
        values = {"kl": m.get("kl"), "elbo": m.get("elbo"), "pareto_k": m.get("pareto_k"),
                  "seconds": m.get("seconds"), "warnings": len(m.get("warnings") or [])}
        if exact is not None:        # the Poisson-Gamma model: errors in exact posterior sds
            errs = [abs(m[k]["mean"] - exact[k]["mean"]) / exact[k]["sd"] for k in ("u", "v")
                    if m.get(k) and m[k].get("mean") is not None and exact[k].get("sd")]
            values["max_abs_mean_error_sd"] = max(errs) if errs else None
        else:
            values["max_abs_mean_error_sd"] = m.get("max_abs_mean_error_sd")
        details = m.get("details") or {}
        if m.get("name") == "nuts":
            values.update(max_r_hat=details.get("max_r_hat"), divergences=details.get("divergences"))
        units.append((m["name"], {"method": m["name"]}, values))
    return units


def _vae(res: dict) -> list[tuple[str, dict, dict]]:
    run = (res.get("runs") or [res])[0]
    # a metric a run does not have (alpha_final of a fixed skew) is left out, not counted as failed
    return [("vae", {}, {k: run[k] for k in KNOWN["vae train"] if run.get(k) is not None})]


def _gradients(res: dict) -> list[tuple[str, dict, dict]]:
    exact = (res.get("exact") or {}).get("grad") or {}
    units = []
    for r in res.get("results", []):
        values = {"seconds": r.get("seconds")}
        for p, var in (r.get("variance") or {}).items():
            values[f"variance[{p}]"] = var
            mean = (r.get("mean") or {}).get(p)
            values[f"bias[{p}]"] = None if mean is None or p not in exact else mean - exact[p]
        units.append((f"{r['estimator']} M={r['M']}", {"estimator": r["estimator"], "M": r["M"]}, values))
    return units


def _elbo(res: dict) -> list[tuple[str, dict, dict]]:
    exact = (res.get("exact") or {}).get("elbo")
    units = []
    for r in res.get("results", []):
        std = _num(r.get("std"))
        units.append((f"M={r['M']}", {"M": r["M"]},
                      {"variance": None if std is None else std**2,
                       "bias": None if exact is None or r.get("mean") is None else r["mean"] - exact}))
    return units


_EXTRACT = {"posterior": _posterior, "vae train": _vae, "gradients": _gradients, "elbo": _elbo}


def extract(command: str, folder: str | Path, keep: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """``(metrics, units)`` of a finished trial folder: ``metrics[label][metric]`` (finite floats or
    None) and ``units[label]`` (the unit's fields). Empty when there is no ``results.json``.
    ``keep``: only metrics with these base names (default: all of :func:`known_metrics`)."""
    res = _read_results(Path(folder))
    if res is None:
        return {}, {}
    metrics, units = {}, {}
    for label, fields, values in _EXTRACT[command](res):
        values = {k: _num(v) for k, v in values.items() if keep is None or base_name(k) in keep}
        metrics[label] = values
        units[label] = fields
    return metrics, units


def histories(command: str, folder: str | Path) -> dict[str, dict[str, list[float]]]:
    """The curves of a finished trial: ``{unit label: {series: values per step/epoch}}``."""
    folder = Path(folder)
    if command == "posterior" and (folder / "svi_loss.csv").is_file():
        df = pd.read_csv(folder / "svi_loss.csv", index_col=0)
        return {c: {"loss": df[c].dropna().tolist()} for c in df.columns}
    if command == "vae train":
        res = _read_results(folder) or {}
        h = res.get("history") or []
        if h:
            df = pd.DataFrame(h)
            return {"vae": {k: df[k].tolist() for k in ("train_loss", "val_loss", "val_elbo", "gjs_alpha") if k in df}}
    return {}


__all__ = ["CURVE", "KNOWN", "base_name", "extract", "histories", "known_metrics"]
