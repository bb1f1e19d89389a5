"""``svilab demo``: every Poisson-Gamma experiment on the embedded data, in about a minute and a half.

Writes one run folder with a sub-folder per experiment and prints each summary table.
"""

from __future__ import annotations

import argparse
import time

from svilab.experiments import exact, gradients, posterior
from svilab.experiments.common import Reporter, add_run_args, run_folder
from svilab.models.poisson_gamma import PoissonGamma


def register(sub) -> None:
    p = sub.add_parser("demo", help="run every Poisson-Gamma experiment with quick settings",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    reporter = Reporter(args.json)
    folder = run_folder(args, "demo")
    model = PoissonGamma()
    t0 = time.perf_counter()
    results = {}
    folder.write_config({"command": "demo", "seed": args.seed, **model.config()})

    reporter.say("== 1. Exact posterior and mean-field CAVI ==")
    results["exact"] = exact.run(model, folder.sub("exact"), reporter,
                                 {"command": "exact", **model.config()})

    reporter.say("\n== 2. Monte Carlo ELBO estimator (notebook 1.1) ==")
    point = gradients.NOTEBOOK_POINT
    cfg = {"family": "normal", "point": point, "M": [5, 10, 100, 1000], "reps": 1000, "seed": args.seed}
    sub = folder.sub("elbo")
    sub.write_config({"command": "elbo", **cfg, **model.config()})
    lab = gradients.poisson_gamma_lab(model, "normal", point)
    results["elbo"] = gradients.run_elbo(lab, cfg["M"], cfg["reps"], args.seed, sub, reporter)
    sub.write_results(results["elbo"])

    reporter.say("\n== 3. Gradient estimators (notebook 1.2-1.3, with variance reduction) ==")
    cfg = {**cfg, "reps": 500, "estimators": list(gradients.GRADIENT_ESTIMATORS)}
    sub = folder.sub("gradients")
    sub.write_config({"command": "gradients", **cfg, **model.config()})
    results["gradients"] = gradients.run_gradients(lab, cfg["estimators"], cfg["M"], cfg["reps"], args.seed, sub,
                                                   reporter)
    sub.write_results(results["gradients"])

    reporter.say("\n== 4. SVI with five guides and NUTS vs the exact posterior ==")
    sub = folder.sub("posterior")
    cfg = posterior.config_from_args(posterior.default_args("--nuts", "--seed", str(args.seed)), model)
    sub.write_config(cfg)
    results["posterior"] = posterior.run(model, sub, reporter, cfg)
    sub.write_results(results["posterior"])

    results["seconds"] = time.perf_counter() - t0
    folder.write_results(results)
    reporter.say(f"\nDemo finished in {results['seconds']:.1f} s. Run folder: {folder}")
    reporter.emit_json(results)
    return 0
