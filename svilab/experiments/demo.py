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
    sub = folder.sub("exact")
    results["exact"] = exact.write(exact.run(model), sub, reporter)
    sub.finish()

    reporter.say("\n== 2. Monte Carlo ELBO estimator (notebook 1.1) ==")
    lab = gradients.poisson_gamma_lab(model, "normal", gradients.NOTEBOOK_POINT)
    for command, title, reps, write, run in (
            ("elbo", None, 1000, gradients.write_elbo, gradients.run_elbo),
            ("gradients", "\n== 3. Gradient estimators (notebook 1.2-1.3, with variance reduction) ==", 500,
             gradients.write_gradients, gradients.run_gradients)):
        if title:
            reporter.say(title)
        cfg = gradients.SweepConfig(command, (5, 10, 100, 1000), reps=reps, seed=args.seed, family="normal",
                                    point=gradients.NOTEBOOK_POINT)
        sub = folder.sub(command)
        sub.write_config({"command": command, **cfg.as_dict(), **model.config()})
        results[command] = write(run(lab, cfg), sub, reporter)
        sub.write_results(results[command])
        sub.finish()

    reporter.say("\n== 4. SVI with five guides and NUTS vs the exact posterior ==")
    sub = folder.sub("posterior")
    cfg = posterior.PosteriorConfig.for_model(model, nuts=True, seed=args.seed)
    sub.write_config(cfg.as_dict())
    results["posterior"] = posterior.write(posterior.run(model, cfg, reporter), sub, reporter)
    sub.write_results(results["posterior"])
    sub.finish()

    results["seconds"] = time.perf_counter() - t0
    folder.write_results(results)
    reporter.say(f"\nDemo finished in {results['seconds']:.1f} s. Run folder: {folder}")
    reporter.emit_json(results)
    return 0
