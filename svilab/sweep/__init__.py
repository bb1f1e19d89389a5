"""Studies, not single runs: ``svilab sweep SPEC.toml`` runs one svilab command over a grid of
settings and several seeds on Ray, and summarises every metric with honest intervals.

The pieces, one concept per module:

- :mod:`svilab.sweep.spec` -- the TOML spec, checked against the command's own options and typed
  config, expanded into :class:`~svilab.sweep.spec.Trial` s (setting x seed);
- :mod:`svilab.sweep.metrics` -- what a finished trial measured (per unit: a method of
  ``posterior``, an estimator at an M of ``gradients``) and its histories (loss traces);
- :mod:`svilab.sweep.stats` -- per setting the mean with its Student-t interval, and the paired
  difference to the baseline on the same seeds;
- :mod:`svilab.sweep.trial` -- one trial, run in a Ray worker: the command's own config -> run ->
  write in this process, its folder packed to travel back to the driver;
- :mod:`svilab.sweep.engine` -- Ray: a local instance started and stopped by the command (with a
  watchdog that ends it if the driver is killed), or an existing cluster at ``--address``;
- :mod:`svilab.sweep.report` -- the sweep folder's tables, figures and ``sweep.json``, from the
  trial folders (``svilab sweep --report`` re-aggregates without running anything);
- :mod:`svilab.sweep.runner` -- the sweep itself: folder, trials, progress, resume.
"""

from svilab.sweep.spec import SweepSpec, Trial

__all__ = ["SweepSpec", "Trial"]
