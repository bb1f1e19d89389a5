r"""Fitting a guide by stochastic variational inference: :func:`fit`, over ``pyro.infer.SVI``.

``fit`` works with any Pyro model and guide (``fit(model, guide, *model_args, ...)``). Each step
is Pyro's :meth:`pyro.infer.SVI.step` with one extra check between the gradient and the update:
if the loss or any gradient is NaN or infinite, the update is *not* applied, the run stops with a
message naming the step (:class:`DivergenceError`, which carries the partial result), and the
parameter store keeps the last finite parameters.

Stopping rule (optional, ``stop_tol``): the loss is smoothed by an exponential moving average
:math:`\bar\ell_t = \rho\,\bar\ell_{t-1} + (1 - \rho)\,\ell_t`; every ``check_every`` steps the
decrease of :math:`\bar\ell` since the previous check is compared with ``stop_tol`` (nats); after
``patience`` checks in a row below it the run stops.

Learning rate: Pyro's ``ClippedAdam`` with an exponential decay from ``lr`` to ``lr_final`` over
``steps`` (constant when ``lr_final`` is None). Decaying the step size is what lets the final
parameters settle at the optimum instead of jittering around it.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.infer.util import zero_grads
from tqdm.auto import tqdm

from svilab.inference.losses import make_loss
from svilab.validation import positive, positive_int


class DivergenceError(RuntimeError):
    """The loss or a gradient became NaN/inf; ``.result`` holds the run up to the last finite step."""

    def __init__(self, message: str, result: FitResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class FitResult:
    """What :func:`fit` returns.

    :ivar history: loss per step (numpy, length ``steps_done``).
    :ivar seconds: wall time of the optimisation.
    :ivar params: constrained parameter values at the end (``{name: tensor}``, detached copies).
    :ivar stopped_early: the stopping rule ended the run.
    :ivar message: why the run ended.
    """

    history: np.ndarray
    seconds: float
    params: dict[str, torch.Tensor]
    steps_done: int
    stopped_early: bool = False
    message: str = ""
    config: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 10% of the steps (a less noisy end value than the last step)."""
        n = max(1, len(self.history) // 10)
        return float(np.mean(self.history[-n:]))


def make_optimizer(lr: float = 0.01, lr_final: float | None = None, steps: int = 1000,
                   clip_norm: float = 10.0) -> pyro.optim.PyroOptim:
    """``ClippedAdam`` with learning rate decaying exponentially from ``lr`` to ``lr_final``."""
    lr = positive(lr, "lr")
    lrd = 1.0 if lr_final is None else (positive(lr_final, "lr_final") / lr) ** (1.0 / max(steps, 1))
    return pyro.optim.ClippedAdam({"lr": lr, "lrd": lrd, "clip_norm": clip_norm})


def update_is_finite(loss: float, params) -> bool:
    """True when ``loss`` and every gradient of ``params`` are finite (one reduction, one sync).

    The check both :class:`GuardedSVI` and the VAE trainer make before applying an update."""
    grads = [p.grad for p in params if p.grad is not None]
    return math.isfinite(loss) and (not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))))


class GuardedSVI(SVI):
    """:class:`pyro.infer.SVI` whose step skips the update when the loss or a gradient is not finite."""

    def guarded_step(self, *args, **kwargs) -> tuple[float, bool]:
        with poutine.trace(param_only=True) as param_capture:
            loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        loss = float(loss)
        ok = update_is_finite(loss, params)
        if ok:
            self.optim(params)
        zero_grads(params)
        return loss, ok


def fit(model, guide, *args, loss="trace_elbo", optimizer: pyro.optim.PyroOptim | None = None,
        lr: float = 0.01, lr_final: float | None = None, steps: int = 1000, num_particles: int = 1,
        vectorize_particles: bool = True, max_plate_nesting: int | None = None, jit: bool = False,
        alpha: float | None = None, seed: int | None = None, progress: bool | None = None,
        stop_tol: float | None = None, check_every: int = 100, patience: int = 3, smoothing: float = 0.95,
        validate: bool = True, description: str = "SVI", **kwargs) -> FitResult:
    """Fit ``guide`` to ``model(*args, **kwargs)`` by SVI.

    :param loss: a loss name (:data:`svilab.inference.losses.LOSSES`) or a Pyro ELBO object.
    :param optimizer: a Pyro optimizer; default :func:`make_optimizer` ``(lr, lr_final, steps)``.
    :param steps: maximum number of steps (>= 1).
    :param num_particles: samples per step (vectorized over a particle plate when
        ``vectorize_particles``, which needs the model to be written with ``pyro.plate``).
    :param jit: use Pyro's JIT ELBO (faster for small models; the guide is run once first so
        that all parameters exist before compilation).
    :param validate: check distribution arguments and supports on the first step (Pyro's
        validation); later steps run without it, which halves the per-step time of small models.
    :param seed: passed to ``pyro.set_rng_seed`` before the first step (None: leave the RNG).
    :param progress: tqdm progress bar; default: only when stderr is a terminal.
    :param stop_tol: stop when the smoothed loss decreased by less than this over ``patience``
        consecutive windows of ``check_every`` steps (None: run all steps).
    :returns: :class:`FitResult`; the fitted parameters stay in Pyro's param store.
    :raises DivergenceError: the loss or a gradient became NaN/inf (the update is skipped, so the
        param store holds the last finite parameters; ``exc.result`` has the history so far).
    :raises ValueError: ``steps < 1``, ``num_particles < 1``, unknown loss, bad lr.
    """
    steps = positive_int(steps, "steps")
    num_particles = positive_int(num_particles, "particles")
    check_every = positive_int(check_every, "check_every")
    if stop_tol is not None:
        stop_tol = positive(stop_tol, "stop_tol")
    if isinstance(loss, str):
        if max_plate_nesting is None:  # read it off one trace instead of letting Pyro guess
            from svilab.inference.sites import model_sites

            max_plate_nesting = model_sites(model, *args, **kwargs).max_plate_nesting
        loss_fn = make_loss(loss, num_particles=num_particles, vectorize_particles=vectorize_particles,
                            max_plate_nesting=max_plate_nesting, jit=jit, alpha=alpha)
    else:
        loss_fn = loss
    optim = optimizer if optimizer is not None else make_optimizer(lr, lr_final, steps)
    if seed is not None:
        pyro.set_rng_seed(seed)
    if jit:  # create every parameter before the JIT traces the ELBO
        with poutine.block(), torch.no_grad():
            guide(*args, **kwargs)
    svi = GuardedSVI(model, guide, optim, loss_fn)
    if progress is None:
        progress = sys.stderr.isatty()
    history = np.empty(steps)
    smooth = prev_check = math.nan
    calm = 0
    stopped, message = False, f"ran all {steps} steps"
    bar = tqdm(total=steps, desc=description, disable=not progress, leave=False, mininterval=0.5)
    t0 = time.perf_counter()
    step = 0
    try:
        for step in range(steps):
            with pyro.validation_enabled(validate and step == 0):
                value, ok = svi.guarded_step(*args, **kwargs)
            if not ok:
                history = history[:step]
                result = FitResult(history, time.perf_counter() - t0, _params(), step, message="diverged")
                raise DivergenceError(
                    f"the loss or its gradient became {value if not math.isfinite(value) else 'non-finite'} "
                    f"at step {step + 1} of {steps}; stopped, keeping the parameters after step {step} "
                    "(try a smaller --lr or more particles)", result)
            history[step] = value
            smooth = value if step == 0 else smoothing * smooth + (1 - smoothing) * value
            if (step + 1) % check_every == 0:
                bar.update(check_every)
                bar.set_postfix(loss=f"{smooth:.4g}")
                if stop_tol is not None:
                    calm = calm + 1 if prev_check - smooth < stop_tol else 0
                    prev_check = smooth
                    if calm >= patience:
                        stopped = True
                        message = (f"stopping rule: smoothed loss changed < {stop_tol:g} "
                                   f"over {patience * check_every} steps")
                        break
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    n = step + 1
    return FitResult(history[:n], seconds, _params(), n, stopped, message if stopped else f"ran all {steps} steps",
                     config={"steps": steps, "num_particles": num_particles, "jit": jit, "seed": seed,
                             "loss": loss if isinstance(loss, str) else type(loss).__name__,
                             "lr": lr, "lr_final": lr_final, "stop_tol": stop_tol})


def _params() -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {name: store[name].detach().clone() for name in store.keys()}
