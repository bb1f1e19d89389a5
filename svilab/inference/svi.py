r"""Stochastic variational inference with Pyro's ELBOs, shaped like NumPyro's ``SVI``.

Three small pieces, each usable alone:

* :class:`SVI`: ``init`` (create every parameter, compile the JIT ELBO off the RNG stream, build the
  optimizer), ``step`` (one ELBO gradient and one fused Adam update; returns the loss as a tensor,
  no sync) and ``run`` (the loop: progress bar, divergence guard, stopping rule) returning a
  :class:`FitResult`. With any Pyro model and guide (``SVI(model, guide, loss_fn, ...)``); each
  step is what :meth:`pyro.infer.SVI.step` does, with every parameter in one fused update
  (:class:`svilab.inference.optim.GuardedAdam`) and one extra guard: if the loss or any gradient
  is NaN or infinite, no update is applied from that step on, the run stops with a message naming
  the step (:class:`DivergenceError`, which carries the partial result), and the parameter store
  keeps the last finite parameters.
* :class:`StoppingRule`: the loss is smoothed by an exponential moving average
  :math:`\bar\ell_t = \rho\,\bar\ell_{t-1} + (1 - \rho)\,\ell_t`; every ``check_every`` steps the
  decrease of :math:`\bar\ell` since the previous check is compared with ``tol`` (nats); after
  ``patience`` checks in a row below it the run stops.
* :func:`fit`: the one call that builds the loss by name, an :class:`SVI` and a stopping rule, and
  runs it.

Optimizer: Pyro's ``ClippedAdam`` rule (gradients clamped elementwise) with an exponential decay
from ``lr`` to ``lr_final`` over ``steps`` (constant when ``lr_final`` is None). Decaying the step
size is what lets the final parameters settle at the optimum instead of jittering around it.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

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
    """What :meth:`SVI.run` and :func:`fit` return.

    :ivar history: loss per step (numpy, length ``steps_done``; for a diverged run, up to the last
        finite step).
    :ivar seconds: wall time of the optimisation.
    :ivar params: constrained parameter values at the end (``{name: tensor}``, detached copies).
    :ivar steps_done: steps whose update was applied.
    :ivar stopped_early: the stopping rule ended the run.
    :ivar message: why the run ended (``ran all N steps``, the stopping rule, ``diverged``).
    """

    history: np.ndarray
    seconds: float
    params: dict[str, torch.Tensor]
    steps_done: int
    stopped_early: bool = False
    message: str = ""

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 10% of the steps (a less noisy end value than the last step)."""
        n = max(1, len(self.history) // 10)
        return float(np.mean(self.history[-n:]))


class StoppingRule:
    """Stop when the smoothed loss decreased by less than ``tol`` (nats) over ``patience``
    consecutive windows of ``check_every`` steps (see the module docstring).

    :param tol: the decrease per window below which a window counts as calm (> 0).
    :param check_every: window length in steps (>= 1).
    :param patience: calm windows in a row that stop the run (>= 1).
    :param smoothing: the weight :math:`\rho \\in [0, 1)` of the previous smoothed loss.
    """

    def __init__(self, tol: float, check_every: int = 100, patience: int = 3, smoothing: float = 0.95) -> None:
        self.tol = positive(tol, "stop_tol")
        self.check_every = positive_int(check_every, "check_every")
        self.patience = positive_int(patience, "patience")
        self.smoothing = check_smoothing(smoothing)
        self.reset()

    def reset(self) -> None:
        self.smooth = self.previous = math.nan
        self.calm = 0

    def update(self, losses: np.ndarray, at_check: bool = True) -> bool:
        """Feed the next block of per-step losses; True when the run should stop. ``at_check``: the
        block ends a window of ``check_every`` steps (else only the average is updated)."""
        for v in losses:
            self.smooth = v if math.isnan(self.smooth) else self.smoothing * self.smooth + (1 - self.smoothing) * v
        if not at_check:
            return False
        self.calm = self.calm + 1 if self.previous - self.smooth < self.tol else 0
        self.previous = self.smooth
        return self.calm >= self.patience

    @property
    def message(self) -> str:
        return (f"stopping rule: smoothed loss changed < {self.tol:g} "
                f"over {self.patience * self.check_every} steps")


def check_smoothing(smoothing: float) -> float:
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1) (the weight of the previous smoothed loss), got {smoothing}")
    return float(smoothing)


def make_optimizer(lr: float = 0.01, lr_final: float | None = None, steps: int = 1000,
                   clip_norm: float = 10.0) -> pyro.optim.PyroOptim:
    """Pyro's ``ClippedAdam`` with the schedule :func:`fit` uses, for a plain ``pyro.infer.SVI``
    (what ``benchmarks/bench_svi.py`` compares :func:`fit` with)."""
    lr = positive(lr, "lr")
    lrd = 1.0 if lr_final is None else (positive(lr_final, "lr_final") / lr) ** (1.0 / max(steps, 1))
    return pyro.optim.ClippedAdam({"lr": lr, "lrd": lrd, "clip_norm": clip_norm})


def _param_tensors(trace) -> set[torch.Tensor]:
    return {site["value"].unconstrained() for site in trace.nodes.values()}


class SVI:
    """Fit ``guide`` to ``model(*args, **kwargs)`` with the Pyro ELBO ``loss_fn``.

    :param lr, lr_final, steps, clip: :class:`~svilab.inference.optim.GuardedAdam`'s schedule
        (``steps`` is the length of the learning-rate decay).
    :param jit: ``loss_fn`` is a JIT ELBO: :meth:`init` compiles it once with the random generators
        put back (so the JIT run draws the eager run's numbers), and :meth:`step` skips the
        parameter-capture trace (a compiled ELBO's parameters are fixed at compilation).
    :param validate: Pyro's validation on the first step only (it halves a small model's step time).
    """

    def __init__(self, model, guide, loss_fn, *, lr: float = 0.01, lr_final: float | None = None,
                 steps: int = 1000, clip: float | None = 10.0, jit: bool = False, validate: bool = True) -> None:
        self.model, self.guide, self.loss_fn = model, guide, loss_fn   # stable references: Pyro's JIT keys on them
        self.lr, self.lr_final, self.steps, self.clip = positive(lr, "lr"), lr_final, positive_int(steps, "steps"), clip
        self.jit, self.validate = jit, validate
        self.differentiable = hasattr(loss_fn, "differentiable_loss")
        self.optim: GuardedAdam | None = None
        self.known: set[torch.Tensor] = set()
        self.steps_taken = 0

    def init(self, *args, **kwargs) -> SVI:
        """Create every parameter (run the guide once, unrecorded), compile a JIT ELBO, and build the
        optimizer over the parameters found."""
        with poutine.block(), torch.no_grad(), poutine.trace(param_only=True) as created:
            self.guide(*args, **kwargs)          # the JIT needs every parameter before tracing
        self.known = _param_tensors(created.trace)
        if self.jit:
            with poutine.trace(param_only=True) as compiled:    # the model's parameters too
                compile_quietly(self.loss_fn, self.model, self.guide, *args, **kwargs)
            self.known |= _param_tensors(compiled.trace)
        if self.known:
            self.optim = GuardedAdam(self.known, lr=self.lr, lr_final=self.lr_final, steps=self.steps, clip=self.clip)
        return self

    def _loss(self, args, kwargs) -> torch.Tensor:
        if self.differentiable:
            return self.loss_fn.differentiable_loss(self.model, self.guide, *args, **kwargs)
        return torch.as_tensor(self.loss_fn.loss_and_grads(self.model, self.guide, *args, **kwargs))  # e.g. Renyi

    def step(self, *args, **kwargs) -> torch.Tensor:
        """One ELBO gradient and one guarded Adam update; the loss as a tensor (no sync). Parameters
        the model or guide create in this step join the optimizer."""
        with pyro.validation_enabled(self.validate and self.steps_taken == 0):
            if self.jit:
                loss, new = self._loss(args, kwargs), set()
            else:
                with poutine.trace(param_only=True) as capture:
                    loss = self._loss(args, kwargs)
                new = _param_tensors(capture.trace) - self.known
        if self.differentiable and loss.requires_grad:
            loss.backward()
        if new:
            self.known |= new
            if self.optim is None:
                self.optim = GuardedAdam(new, lr=self.lr, lr_final=self.lr_final, steps=self.steps, clip=self.clip)
            else:
                self.optim.add_params(new)
        if self.optim is None:
            raise ValueError("the model and guide have no parameters to fit (no pyro.param or module)")
        self.optim.step(loss)
        self.steps_taken += 1
        return loss

    def run(self, *args, steps: int | None = None, stopping: StoppingRule | None = None, check_every: int = 100,
            progress: bool | None = None, description: str = "SVI", **kwargs) -> FitResult:
        """:meth:`init`, then up to ``steps`` (default: the schedule's) :meth:`step` calls. The losses and
        the divergence flag are read every ``check_every`` steps (the stopping rule's window when given).

        :raises DivergenceError: the loss or a gradient became NaN/inf (``exc.result`` holds the run up
            to the last finite step, whose parameters stay in the param store).
        """
        steps = self.steps if steps is None else positive_int(steps, "steps")
        check_every = stopping.check_every if stopping is not None else positive_int(check_every, "check_every")
        self.init(*args, **kwargs)
        if progress is None:
            progress = sys.stderr.isatty()
        history = np.empty(0)
        bar = tqdm(total=steps, desc=description, disable=not progress, leave=False, mininterval=0.5)
        stopped = False
        t0 = time.perf_counter()
        try:
            for step in range(steps):
                self.step(*args, **kwargs)
                at_check = (step + 1) % check_every == 0
                if not at_check and step + 1 < steps:
                    continue
                block = self.optim.losses(len(history))
                if self.optim.diverged:
                    bad = self.optim.first_bad_step()
                    history = np.concatenate([history, block])[:bad]
                    value = self.optim.losses(bad, bad + 1)[0]
                    result = FitResult(history, time.perf_counter() - t0, _params(), bad, message="diverged")
                    raise DivergenceError(
                        f"the loss or its gradient became {value if not math.isfinite(value) else 'non-finite'} "
                        f"at step {bad + 1} of {steps}; stopped, keeping the parameters after step {bad} "
                        "(try a smaller --lr or more particles)", result)
                history = np.concatenate([history, block])
                bar.update(len(block))
                if stopping is not None:
                    stopped = stopping.update(block, at_check)
                    bar.set_postfix(loss=f"{stopping.smooth:.4g}")
                    if stopped:
                        break
                else:
                    bar.set_postfix(loss=f"{block[-1]:.4g}")
        finally:
            bar.close()
        return FitResult(history, time.perf_counter() - t0, _params(), len(history), stopped,
                         stopping.message if stopped else f"ran all {steps} steps")


def fit(model, guide, *args, loss="trace_elbo", lr: float = 0.01, lr_final: float | None = None,
        steps: int = 1000, clip: float | None = 10.0, num_particles: int = 1, vectorize_particles: bool = True,
        max_plate_nesting: int | None = None, jit: bool = False, alpha: float | None = None,
        seed: int | None = None, progress: bool | None = None, stop_tol: float | None = None,
        check_every: int = 100, patience: int = 3, smoothing: float = 0.95, validate: bool = True,
        description: str = "SVI", model_kwargs: dict | None = None) -> FitResult:
    """Fit ``guide`` to ``model(*args, **model_kwargs)`` by SVI: :func:`~svilab.inference.losses.make_loss`,
    :class:`SVI` and, with ``stop_tol``, a :class:`StoppingRule`, in one call.

    :param loss: a loss name (:data:`svilab.inference.losses.LOSSES`) or a Pyro ELBO object.
    :param steps: maximum number of steps (>= 1), also the length of the lr decay.
    :param clip: elementwise gradient clamp (None: none).
    :param num_particles: samples per step (vectorized over a particle plate when
        ``vectorize_particles``, which needs the model to be written with ``pyro.plate``).
    :param max_plate_nesting: the model's (None: read off one trace of the model).
    :param jit: use Pyro's JIT ELBO, compiled once before the first step with the random
        generators put back, so that it gives the eager run's numbers, faster.
    :param seed: passed to ``pyro.set_rng_seed`` before the first step (None: leave the RNG).
    :param progress: tqdm progress bar; default: only when stderr is a terminal.
    :param stop_tol, check_every, patience, smoothing: the :class:`StoppingRule` (None: run all steps;
        the losses are still read every ``check_every`` steps).
    :param model_kwargs: keyword arguments of the model and guide (a misspelt option of ``fit`` is
        an error, not a model argument).
    :returns: :class:`FitResult`; the fitted parameters stay in Pyro's param store.
    :raises DivergenceError: see :meth:`SVI.run`.
    :raises ValueError: ``steps < 1``, ``num_particles < 1``, unknown loss, bad lr, a meaningless rule.
    """
    kwargs = dict(model_kwargs or {})
    steps = positive_int(steps, "steps")
    num_particles = positive_int(num_particles, "particles")
    check_every = positive_int(check_every, "check_every")
    patience = positive_int(patience, "patience")
    check_smoothing(smoothing)
    stopping = None if stop_tol is None else StoppingRule(stop_tol, check_every, patience, smoothing)
    positive(lr, "lr")
    if isinstance(loss, str):
        from svilab.inference.losses import loss_spec

        jit = jit and loss_spec(loss).jit       # e.g. renyi has no JIT variant: eager
        if max_plate_nesting is None:  # read it off one trace instead of letting Pyro guess
            from svilab.inference.sites import model_sites

            max_plate_nesting = model_sites(model, *args, **kwargs).max_plate_nesting
        loss_fn = make_loss(loss, num_particles=num_particles, vectorize_particles=vectorize_particles,
                            max_plate_nesting=max_plate_nesting, jit=jit, alpha=alpha)
    else:
        loss_fn = loss
    if seed is not None:
        pyro.set_rng_seed(seed)
    svi = SVI(model, guide, loss_fn, lr=lr, lr_final=lr_final, steps=steps, clip=clip, jit=jit, validate=validate)
    return svi.run(*args, stopping=stopping, check_every=check_every, progress=progress, description=description,
                   **kwargs)


def _params() -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {name: store[name].detach().clone() for name in store.keys()}
