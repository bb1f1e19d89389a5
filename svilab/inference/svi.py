r"""Fitting a guide by stochastic variational inference: :func:`fit`, with Pyro's ELBOs.

``fit`` works with any Pyro model and guide (``fit(model, guide, *model_args, ...)``). Each step
is what :meth:`pyro.infer.SVI.step` does (the ELBO's gradient, then an Adam update), with every
parameter in one fused update and one extra guard: if the loss or any gradient is NaN or
infinite, no update is applied from that step on, the run stops with a message naming the step
(:class:`DivergenceError`, which carries the partial result), and the parameter store keeps the
last finite parameters (:class:`svilab.inference.optim.GuardedAdam`).

Stopping rule (optional, ``stop_tol``): the loss is smoothed by an exponential moving average
:math:`\bar\ell_t = \rho\,\bar\ell_{t-1} + (1 - \rho)\,\ell_t`; every ``check_every`` steps the
decrease of :math:`\bar\ell` since the previous check is compared with ``stop_tol`` (nats); after
``patience`` checks in a row below it the run stops.

Optimizer: Pyro's ``ClippedAdam`` rule (gradients clamped elementwise) with an exponential decay
from ``lr`` to ``lr_final`` over ``steps`` (constant when ``lr_final`` is None). Decaying the step
size is what lets the final parameters settle at the optimum instead of jittering around it.
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
from tqdm.auto import tqdm

from svilab.inference.jit_elbo import compile_quietly
from svilab.inference.losses import make_loss
from svilab.inference.optim import GuardedAdam
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
    """Pyro's ``ClippedAdam`` with the schedule :func:`fit` uses, for a plain ``pyro.infer.SVI``
    (what ``benchmarks/bench_svi.py`` compares :func:`fit` with)."""
    lr = positive(lr, "lr")
    lrd = 1.0 if lr_final is None else (positive(lr_final, "lr_final") / lr) ** (1.0 / max(steps, 1))
    return pyro.optim.ClippedAdam({"lr": lr, "lrd": lrd, "clip_norm": clip_norm})


class _Objective:
    """``loss_fn`` evaluated for one step: the loss as a tensor, gradients accumulated, and the
    unconstrained parameters the step touched."""

    def __init__(self, loss_fn, model, guide, capture: bool = True) -> None:
        self.loss_fn, self.model, self.guide = loss_fn, model, guide   # stable references: Pyro's JIT keys on them
        self.differentiable = hasattr(loss_fn, "differentiable_loss")
        self.capture = capture          # False for a compiled ELBO: its parameters are fixed at compilation

    def _loss(self, args, kwargs) -> torch.Tensor:
        if self.differentiable:
            return self.loss_fn.differentiable_loss(self.model, self.guide, *args, **kwargs)
        return torch.as_tensor(self.loss_fn.loss_and_grads(self.model, self.guide, *args, **kwargs))  # e.g. Renyi

    def __call__(self, args, kwargs) -> tuple[torch.Tensor, set[torch.Tensor]]:
        if self.capture:
            with poutine.trace(param_only=True) as capture:
                loss = self._loss(args, kwargs)
            params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
        else:
            loss, params = self._loss(args, kwargs), set()
        if self.differentiable and loss.requires_grad:
            loss.backward()
        return loss, params


def fit(model, guide, *args, loss="trace_elbo", lr: float = 0.01, lr_final: float | None = None,
        steps: int = 1000, clip: float | None = 10.0, num_particles: int = 1, vectorize_particles: bool = True,
        max_plate_nesting: int | None = None, jit: bool = False, alpha: float | None = None,
        seed: int | None = None, progress: bool | None = None, stop_tol: float | None = None,
        check_every: int = 100, patience: int = 3, smoothing: float = 0.95, validate: bool = True,
        description: str = "SVI", **kwargs) -> FitResult:
    """Fit ``guide`` to ``model(*args, **kwargs)`` by SVI.

    Each step evaluates Pyro's ELBO (``loss_fn.differentiable_loss``), backpropagates, and takes
    one fused Adam step over every parameter (:class:`svilab.inference.optim.GuardedAdam`: Pyro's
    ``ClippedAdam`` rule, i.e. gradients clamped to ``[-clip, clip]`` and the learning rate decayed
    from ``lr`` to ``lr_final``). The loss and the finiteness flag stay on the tensor side; they
    are read every ``check_every`` steps.

    :param loss: a loss name (:data:`svilab.inference.losses.LOSSES`) or a Pyro ELBO object.
    :param steps: maximum number of steps (>= 1).
    :param clip: elementwise gradient clamp (None: none).
    :param num_particles: samples per step (vectorized over a particle plate when
        ``vectorize_particles``, which needs the model to be written with ``pyro.plate``).
    :param jit: use Pyro's JIT ELBO, compiled once before the first step with the random
        generators put back, so that it gives the eager run's numbers, faster (the guide is run
        once first, in both cases, so that all parameters exist before compilation).
    :param validate: check distribution arguments and supports on the first step (Pyro's
        validation); later steps run without it, which halves the per-step time of small models.
    :param seed: passed to ``pyro.set_rng_seed`` before the first step (None: leave the RNG).
    :param progress: tqdm progress bar; default: only when stderr is a terminal.
    :param stop_tol: stop when the smoothed loss decreased by less than this over ``patience``
        consecutive windows of ``check_every`` steps (None: run all steps).
    :returns: :class:`FitResult`; the fitted parameters stay in Pyro's param store.
    :raises DivergenceError: the loss or a gradient became NaN/inf (no update is applied from that
        step on, so the param store holds the parameters after the last finite step;
        ``exc.result`` has the history up to it).
    :raises ValueError: ``steps < 1``, ``num_particles < 1``, unknown loss, bad lr.
    """
    steps = positive_int(steps, "steps")
    num_particles = positive_int(num_particles, "particles")
    check_every = positive_int(check_every, "check_every")
    patience = positive_int(patience, "patience")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1) (the weight of the previous smoothed loss), got {smoothing}")
    if stop_tol is not None:
        stop_tol = positive(stop_tol, "stop_tol")
    positive(lr, "lr")
    if isinstance(loss, str):
        if max_plate_nesting is None:  # read it off one trace instead of letting Pyro guess
            from svilab.inference.sites import model_sites

            max_plate_nesting = model_sites(model, *args, **kwargs).max_plate_nesting
        loss_fn = make_loss(loss, num_particles=num_particles, vectorize_particles=vectorize_particles,
                            max_plate_nesting=max_plate_nesting, jit=jit, alpha=alpha)
    else:
        loss_fn = loss
    if seed is not None:
        pyro.set_rng_seed(seed)
    with poutine.block(), torch.no_grad(), poutine.trace(param_only=True) as created:
        guide(*args, **kwargs)               # create every parameter (the JIT needs them before tracing)
    known = {site["value"].unconstrained() for site in created.trace.nodes.values()}
    if jit:    # compile off the RNG stream: the JIT and the eager run draw the same numbers
        with poutine.trace(param_only=True) as compiled:    # the model's parameters too
            compile_quietly(loss_fn, model, guide, *args, **kwargs)
        known |= {site["value"].unconstrained() for site in compiled.trace.nodes.values()}
    objective = _Objective(loss_fn, model, guide, capture=not jit)
    if progress is None:
        progress = sys.stderr.isatty()
    history = np.empty(0)
    smooth = prev_check = math.nan
    calm = 0
    stopped, message = False, f"ran all {steps} steps"
    bar = tqdm(total=steps, desc=description, disable=not progress, leave=False, mininterval=0.5)
    t0 = time.perf_counter()
    optim = GuardedAdam(known, lr=lr, lr_final=lr_final, steps=steps, clip=clip) if known else None
    try:
        for step in range(steps):
            with pyro.validation_enabled(validate and step == 0):
                value, params = objective(args, kwargs)
            new = params - known                  # parameters the model or guide created in this step
            if new:
                known |= new
                if optim is None:
                    optim = GuardedAdam(new, lr=lr, lr_final=lr_final, steps=steps, clip=clip)
                else:
                    optim.add_params(new)
            if optim is None:
                raise ValueError("the model and guide have no parameters to fit (no pyro.param or module)")
            optim.step(value)
            if (step + 1) % check_every and step + 1 < steps:
                continue
            block = optim.losses(len(history))
            if optim.diverged:
                bad = optim.first_bad_step()
                history = np.concatenate([history, block])[:bad]
                value = optim.losses(bad, bad + 1)[0]
                result = FitResult(history, time.perf_counter() - t0, _params(), bad, message="diverged")
                raise DivergenceError(
                    f"the loss or its gradient became {value if not math.isfinite(value) else 'non-finite'} "
                    f"at step {bad + 1} of {steps}; stopped, keeping the parameters after step {bad} "
                    "(try a smaller --lr or more particles)", result)
            history = np.concatenate([history, block])
            for v in block:
                smooth = v if math.isnan(smooth) else smoothing * smooth + (1 - smoothing) * v
            bar.update(len(block))
            bar.set_postfix(loss=f"{smooth:.4g}")
            if stop_tol is not None and (step + 1) % check_every == 0:
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
    n = len(history)
    return FitResult(history, seconds, _params(), n, stopped, message if stopped else f"ran all {steps} steps",
                     config={"steps": steps, "num_particles": num_particles, "jit": jit, "seed": seed,
                             "loss": loss if isinstance(loss, str) else type(loss).__name__,
                             "lr": lr, "lr_final": lr_final, "stop_tol": stop_tol})


def _params() -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {name: store[name].detach().clone() for name in store.keys()}
