"""A rough cost model of one trial, for ``svilab sweep --dry-run``: seconds on one core of the 2-core
project machine, from the trial's own configuration. Good to a factor of about two on the
built-in models; a user's model costs what it costs (its per-step time is not known before it
runs), so the first finished trials of a sweep give the real figure (the progress line's ETA).
"""

from __future__ import annotations

#: ms per SVI step at 16 particles on the Poisson-Gamma model (JIT), by guide; user models x USER_FACTOR
STEP_MS = {"normal": 0.85, "lognormal": 0.9, "gamma": 0.8, "mvn": 1.15, "flow": 6.9}
USER_FACTOR = 2.0
#: seconds per guide for its evaluation (ELBO from 100k draws, 4000 draws, ArviZ, figures)
EVAL_S = 1.5
#: ms per NUTS iteration (one chain): Poisson-Gamma, a user's model
NUTS_MS = {"pg": 4.0, "user": 30.0}
#: seconds per epoch of 50,000 training images, by preset (one thread)
EPOCH_S = {"notebook": 8.0, "standard": 9.0}
#: microseconds per image and importance sample of the test log-likelihood, by preset
IWAE_US = {"notebook": 0.35, "standard": 2.0}
#: ns per sample of an estimator (Poisson-Gamma, float64)
SAMPLE_NS = 90.0


def trial_seconds(command: str, trial) -> float:
    """Estimated seconds of ``trial`` (a :class:`~svilab.sweep.spec.Trial`)."""
    from svilab.cli import parse_command

    args = parse_command(command, list(trial.argv))
    if command == "posterior":
        from svilab.experiments import posterior

        cfg = posterior.prepare(args).config
        factor = USER_FACTOR if cfg.user else 1.0
        secs = 2.0 + (1.0 if cfg.user else 0.0)
        for g in cfg.guides:
            s = cfg.svi[g]
            secs += s["steps"] * STEP_MS.get(g, 1.0) * factor * (s["particles"] / 16) ** 0.5 / 1000 + EVAL_S
            secs += EVAL_S * cfg.elbo_samples / 100_000 + EVAL_S * cfg.draws / 4000 - EVAL_S
        if cfg.nuts:
            n = cfg.nuts_settings
            per = NUTS_MS["user" if cfg.user else "pg"] / 1000
            secs += n["num_chains"] * (n["num_samples"] + n["warmup_steps"]) * per
        return secs
    if command == "vae train":
        from svilab.experiments import vae

        cfg = vae.run_config(args, args.loss, args.alpha)
        images = (cfg.limit or 60_000 - cfg.validation)
        test = 10_000 if cfg.limit is None else max(cfg.limit // 5, 1)
        iwae_images = min(cfg.eval_limit or test, test)
        preset = cfg.preset if cfg.preset in EPOCH_S else "standard"
        draws = cfg.particles if cfg.k is None else cfg.k
        epoch = EPOCH_S[preset] * images / 50_000 * (1 + 2 * (draws - 1)) ** 0.5   # the encoder runs once
        training = cfg.epochs * epoch
        if cfg.time_limit_minutes is not None:     # stops after the epoch in which the limit passes
            training = min(training, 60 * cfg.time_limit_minutes + epoch)
        return 5.0 + training + cfg.eval_k * iwae_images * IWAE_US[preset] / 1e6
    from svilab.experiments import gradients

    cfg = gradients.config_from_args(args, command)
    n_est = max(1, len(cfg.estimators)) if command == "gradients" else 1
    return 3.0 + cfg.reps * sum(cfg.M) * n_est * SAMPLE_NS / 1e9 * (0.7 if cfg.dtype == "float32" else 1.0)


__all__ = ["trial_seconds"]
