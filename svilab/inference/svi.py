r"""Stochastic variational inference with Pyro's ELBOs, shaped like NumPyro's ``SVI``.

Three small pieces, each usable alone:

* :class:`SVI`: Pyro's ``SVI(model, guide, optim, loss)`` with ``step``/``evaluate_loss``, plus
  ``run(num_steps, *args, **kwargs)`` (the loop: progress bar, divergence guard, stopping rule)
  returning a :class:`FitResult`. Each step is what :meth:`pyro.infer.SVI.step` does, with every
  parameter in one fused update (:class:`svilab.inference.optim.GuardedAdam`) and one extra guard:
  if the loss or any gradient is NaN or infinite, no update is applied from that step on, the run
  stops with a message naming the step (:class:`DivergenceError`, which carries the partial
  result), and the parameter store keeps the last finite parameters.
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
import pyro.optim
import pyro.util
import torch
from pyro import poutine
from tqdm.auto import tqdm

from svilab.inference.jit_elbo import compile_quietly
from svilab.inference.losses import make_loss
from svilab.inference.optim import check_optim, make_stepper
from svilab.inference.sites import merge_model_kwargs
from svilab.progress import ProgressLines
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
        """Forget the losses seen (a new run starts from here)."""
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
        """Why the rule stopped a run, one phrase (``FitResult.message``)."""
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


def _is_jit(loss) -> bool:
    return any(c.__name__.startswith("Jit") for c in type(loss).__mro__)


class SVI:
    """Stochastic variational inference with Pyro's signature: ``SVI(model, guide, optim, loss)``.

    ``step(*args, **kwargs)`` takes one gradient step of ``loss`` (a Pyro ELBO object, or a loss name
    of :func:`~svilab.inference.losses.make_loss`) and returns the loss, as :class:`pyro.infer.SVI`
    does; every argument goes to the model and the guide. Two things are added:

    * the update: with :class:`~svilab.inference.optim.ClippedAdam`, or ``pyro.optim.ClippedAdam`` /
      ``pyro.optim.Adam`` (run exactly by the same fused kernel), every parameter is updated in one
      fused Adam step that stops applying updates once the loss or a gradient is NaN/inf (any other
      ``pyro.optim`` optimizer runs as Pyro runs it, with the same guard at one sync per step);
    * :meth:`run`: the loop with a progress bar, the divergence guard (:class:`DivergenceError`,
      which carries the partial result; the param store keeps the last finite parameters) and,
      with ``stopping``, a :class:`StoppingRule`; it returns a :class:`FitResult`.

    A JIT ELBO (``svilab.inference.jit_elbo``, or Pyro's ``JitTrace_ELBO``/``JitTraceMeanField_ELBO``)
    is compiled once by :meth:`init` with the random generators put back, so it draws the eager
    run's numbers. Pyro's own ``JitTrace_ELBO`` is stepped through its ``loss_and_grads`` (its
    ``differentiable_loss`` doubles the gradient; see :mod:`svilab.inference.jit_elbo`).

    :param model, guide: Pyro callables taking the same arguments.
    :param optim: ``svilab.ClippedAdam(...)`` or a ``pyro.optim`` optimizer.
    :param loss: a Pyro ELBO (``Trace_ELBO()``, ``TraceMeanField_ELBO()``, ``RenyiELBO()``,
        :class:`svilab.GJS_ELBO`, ...) or a loss name.
    :param stopping: a :class:`StoppingRule` for :meth:`run` (None: run every step).
    :param check_every: how often :meth:`run` reads the losses and the divergence flag (the stopping
        rule's window when one is given).
    :param progress: tqdm bar in :meth:`run`; default: when stderr is a terminal, else a line on stderr
        every 30 s (step, loss, time left) for a run that lasts that long; False: nothing.
    :param validate: Pyro's validation on the first step only (it halves a small model's step time).

    >>> import pyro, pyro.distributions as dist, torch, svilab
    >>> from pyro.infer import Trace_ELBO
    >>> from pyro.infer.autoguide import AutoNormal
    >>> def model(x):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(mu, 1.0), obs=x)
    >>> pyro.clear_param_store(); pyro.set_rng_seed(0)
    >>> x = torch.tensor([1.0, 2.0, 3.0])
    >>> guide = AutoNormal(model)
    >>> optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.996})      # lr decays to 0.001
    >>> svi = svilab.SVI(model, guide, optim, Trace_ELBO(num_particles=4))
    >>> result = svi.run(1000, x)                  # or: for _ in range(1000): svi.step(x)
    >>> round(float(guide.median()["mu"]), 1)       # the posterior mean is 6/3.01 = 1.99
    2.0
    """

    def __init__(self, model, guide, optim, loss, *, stopping: StoppingRule | None = None, check_every: int = 100,
                 progress: bool | None = None, description: str = "SVI", validate: bool = True) -> None:
        if isinstance(loss, str):
            loss = make_loss(loss)
        if not (hasattr(loss, "differentiable_loss") or hasattr(loss, "loss_and_grads")):
            raise TypeError(f"loss must be a Pyro ELBO (e.g. pyro.infer.Trace_ELBO()) or a loss name, "
                            f"got {type(loss).__name__}")
        check_optim(optim)
        if stopping is not None and not isinstance(stopping, StoppingRule):
            raise TypeError(f"stopping must be a svilab.StoppingRule, got {type(stopping).__name__}")
        self.model, self.guide, self.optim, self.loss = model, guide, optim, loss  # stable: Pyro's JIT keys on them
        self.stopping, self.progress, self.description, self.validate = stopping, progress, description, validate
        self.check_every = stopping.check_every if stopping is not None else positive_int(check_every, "check_every")
        from svilab.inference.jit_elbo import _CompiledPerPair

        self.jit = _is_jit(loss)
        # Pyro's own JitTrace_ELBO has the wrong differentiable_loss; its loss_and_grads is right
        self.differentiable = hasattr(loss, "differentiable_loss") and (not self.jit
                                                                        or isinstance(loss, _CompiledPerPair))
        self.stepper = None
        self.known: set[torch.Tensor] = set()
        self.steps_taken = 0
        self._schedule: int | None = None
        self._initialised = False

    def init(self, *args, **kwargs) -> SVI:
        """Reset the optimizer; for a JIT ELBO, create every parameter (run the guide once) and compile,
        with the random generators put back, so that the run draws what Pyro's ``SVI`` would draw.
        An eager ELBO's parameters join the optimizer as the first step creates them, as in Pyro.
        :meth:`step` calls it when needed."""
        self.known, self.stepper, self.steps_taken = set(), None, 0
        if self.jit:
            state = pyro.util.get_rng_state()
            try:
                with poutine.block(), torch.no_grad(), poutine.trace(param_only=True) as created:
                    self.guide(*args, **kwargs)          # the JIT needs every parameter before tracing
            finally:
                pyro.util.set_rng_state(state)
            self.known = _param_tensors(created.trace)
            with poutine.trace(param_only=True) as compiled:    # the model's parameters too
                compile_quietly(self.loss, self.model, self.guide, *args, **kwargs)
            self.known |= _param_tensors(compiled.trace)
            if self.known:
                self.stepper = make_stepper(self.optim, self.known, self._schedule)
        self._initialised = True
        return self

    def _loss(self, args, kwargs) -> torch.Tensor:
        if self.differentiable:
            return self.loss.differentiable_loss(self.model, self.guide, *args, **kwargs)
        return torch.as_tensor(self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs))  # e.g. Renyi

    def _step(self, args, kwargs) -> torch.Tensor:
        if not self._initialised:
            self.init(*args, **kwargs)
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
            if self.stepper is None:
                self.stepper = make_stepper(self.optim, new, self._schedule)
            else:
                self.stepper.add_params(new)
        if self.stepper is None:
            raise ValueError("the model and guide have no parameters to fit (no pyro.param or module)")
        self.stepper.step(loss)
        self.steps_taken += 1
        return loss

    def step(self, *args, **kwargs) -> float:
        """One gradient step; returns the loss (a float, as :meth:`pyro.infer.SVI.step`). Every argument
        goes to the model and guide. Parameters they create in this step join the optimizer. After a
        non-finite loss or gradient no update is applied (see :attr:`diverged`)."""
        return float(self._step(args, kwargs).detach())

    @property
    def diverged(self) -> bool:
        """A step so far had a NaN/inf loss or gradient (the updates stopped at the step before)."""
        return self.stepper is not None and self.stepper.diverged

    def evaluate_loss(self, *args, **kwargs) -> float:
        """The loss without a gradient step (as :meth:`pyro.infer.SVI.evaluate_loss`)."""
        with torch.no_grad():
            loss = self.loss.loss(self.model, self.guide, *args, **kwargs)
        return float(loss)

    def run(self, num_steps: int, *args, **kwargs) -> FitResult:
        """:meth:`init`, then up to ``num_steps`` steps; every other argument goes to the model and
        guide. The losses and the divergence flag are read every ``check_every`` steps, when the
        stopping rule (if any) is consulted too.

        :raises DivergenceError: the loss or a gradient became NaN/inf (``exc.result`` holds the run up
            to the last finite step, whose parameters stay in the param store).
        """
        steps = positive_int(num_steps, "num_steps")
        stopping, check_every = self.stopping, self.check_every
        if stopping is not None:
            stopping.reset()
        self._schedule = steps
        self.init(*args, **kwargs)
        progress = sys.stderr.isatty() if self.progress is None else self.progress
        lines = ProgressLines(steps, LINE_EVERY) if self.progress is None and not progress else None  # no terminal
        history = np.empty(0)
        bar = tqdm(total=steps, desc=self.description, disable=not progress, leave=False, mininterval=0.5)
        stopped = False
        t0 = time.perf_counter()
        try:
            for step in range(steps):
                self._step(args, kwargs)
                at_check = (step + 1) % check_every == 0
                if not at_check and step + 1 < steps:
                    continue
                block = self.stepper.losses(len(history))
                if self.stepper.diverged:
                    bad = self.stepper.first_bad_step()
                    history = np.concatenate([history, block])[:bad]
                    value = self.stepper.losses(bad, bad + 1)[0]
                    result = FitResult(history, time.perf_counter() - t0, _params(), bad, message="diverged")
                    raise DivergenceError(
                        f"the loss or its gradient became {value if not math.isfinite(value) else 'non-finite'} "
                        f"at step {bad + 1} of {steps}; stopped, keeping the parameters after step {bad} "
                        "(try a smaller learning rate or more particles)", result)
                history = np.concatenate([history, block])
                bar.update(len(block))
                if lines is not None:
                    lines.update(step + 1, f"{self.description}: step {step + 1}/{steps}, loss {block[-1]:.4g}")
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


#: seconds between progress lines when stderr is not a terminal (a log file, a sweep trial)
LINE_EVERY = 30.0

#: fit's own options (a keyword of fit that is not one of these goes to the model)
_LOSS_OPTIONS = ("num_particles", "vectorize_particles", "max_plate_nesting", "alpha", "jit")


def _model_kwargs(model, extra: dict, model_kwargs: dict | None) -> dict:
    """The model's keyword arguments: ``model_kwargs`` and fit's unrecognised keywords, each checked
    against the model's signature (a misspelt option of fit is an error, not a model argument)."""
    import inspect

    merged = merge_model_kwargs(extra, model_kwargs, "fit()")
    if extra:
        try:
            params = inspect.signature(model).parameters
        except (TypeError, ValueError):
            params = None
        if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = [k for k in extra if k not in params or params[k].kind is params[k].POSITIONAL_ONLY]
            if unknown:
                raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}: it is neither an option "
                                f"of fit nor an argument of the model {getattr(model, '__name__', model)!r}")
    return merged


def fit(model, guide, *args, loss="trace_elbo", optim=None, lr: float | None = None, lr_final: float | None = None,
        steps: int = 1000, clip: float | None = 10.0, num_particles: int | None = None,
        vectorize_particles: bool | None = None, max_plate_nesting: int | None = None, jit: bool | None = None,
        alpha: float | None = None, seed: int | None = None, progress: bool | None = None,
        stop_tol: float | None = None, check_every: int = 100, patience: int = 3, smoothing: float = 0.95,
        validate: bool = True, description: str = "SVI", model_kwargs: dict | None = None, **kwargs) -> FitResult:
    """Fit ``guide`` to ``model(*args, **kwargs)`` by SVI in one call: the loss by name
    (:func:`~svilab.inference.losses.make_loss`) or object, :class:`SVI`, and with ``stop_tol`` a
    :class:`StoppingRule`.

    Keywords that are not options of ``fit`` go to the model and guide (checked against the model's
    signature); a model argument whose name is an option of ``fit`` (``steps``, ``seed``, ...) goes
    in ``model_kwargs``. Every option is either used or refused: the particle options, ``alpha`` and
    ``jit`` belong to a loss built by name (with a loss object, set them on the object); ``lr``,
    ``lr_final`` and ``clip`` build svilab's :class:`~svilab.inference.optim.ClippedAdam` (with
    ``optim`` given, set them there).

    :param loss: a loss name (:data:`svilab.inference.losses.LOSSES`) or a Pyro ELBO object.
    :param optim: an optimizer for :class:`SVI` (default ``ClippedAdam(lr, lr_final, steps, clip)``).
    :param lr: initial learning rate (default 0.01); ``lr_final``: after ``steps`` (geometric decay).
    :param steps: maximum number of steps (>= 1), also the length of the lr decay.
    :param clip: elementwise gradient clamp (None: none).
    :param num_particles: samples per step (default 1; vectorized over a particle plate unless
        ``vectorize_particles=False``, which needs the model to be written with ``pyro.plate``).
    :param max_plate_nesting: the model's (None: read off one trace of the model).
    :param jit: use the loss's JIT-compiled variant (an error for a loss or guide without one),
        compiled once with the random generators put back, so it gives the eager run's numbers, faster.
    :param alpha: the Renyi order (default 0, the IWAE bound, as in Pyro) or the GJS skew (default 0.5).
    :param seed: ``pyro.set_rng_seed`` before the first step (None: leave the RNG alone).
    :param progress: tqdm progress bar; default: only when stderr is a terminal.
    :param stop_tol, check_every, patience, smoothing: the :class:`StoppingRule` (None: run all steps;
        the losses are still read every ``check_every`` steps).
    :param model_kwargs: keyword arguments of the model and guide, for names that ``fit`` uses itself.
    :returns: :class:`FitResult`; the fitted parameters stay in Pyro's param store.
    :raises DivergenceError: see :meth:`SVI.run`.
    :raises ValueError: ``steps < 1``, ``num_particles < 1``, unknown loss, bad lr, a meaningless rule,
        an option that the loss object or optimizer object would ignore.

    >>> import pyro, pyro.distributions as dist, torch, svilab
    >>> def model(x, scale=1.0):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(mu, scale), obs=x)
    >>> pyro.clear_param_store()
    >>> guide = svilab.make_guide("meanfield", model)    # AutoNormal
    >>> result = svilab.fit(model, guide, torch.tensor([1.0, 2.0, 3.0]), scale=1.0, steps=1500,
    ...                     num_particles=8, lr=0.05, lr_final=0.002, seed=0)
    >>> round(float(guide.median(torch.tensor([1.0, 2.0, 3.0]))["mu"]), 1)
    2.0
    """
    kwargs = _model_kwargs(model, kwargs, model_kwargs)
    steps = positive_int(steps, "steps")
    check_every = positive_int(check_every, "check_every")
    patience = positive_int(patience, "patience")
    check_smoothing(smoothing)
    stopping = None if stop_tol is None else StoppingRule(stop_tol, check_every, patience, smoothing)
    if optim is None:
        from svilab.inference.optim import ClippedAdam

        optim = ClippedAdam(lr=0.01 if lr is None else lr, lr_final=lr_final, steps=steps, clip=clip)
    else:
        given = {k: v for k, v in (("lr", lr), ("lr_final", lr_final)) if v is not None}
        if clip != 10.0:
            given["clip"] = clip
        if given:
            k, v = next(iter(given.items()))
            raise ValueError(f"fit(optim=...) was given {k}={v}, which that optimizer would ignore: set it on the "
                             f"optimizer (e.g. svilab.ClippedAdam({k}={v}))")
    if isinstance(loss, str):
        from svilab.inference.losses import loss_spec

        spec = loss_spec(loss)
        if jit and not spec.jit:
            raise ValueError(f"loss {spec.name!r} has no JIT-compiled variant: use jit=False")
        if jit and not getattr(guide, "jit_compatible", True):
            raise ValueError(f"the guide {type(guide).__name__} cannot be compiled by Pyro's JIT (it creates its "
                             "parameters on its first call): use jit=False")
        num_particles = positive_int(1 if num_particles is None else num_particles, "num_particles")
        from svilab.inference.sites import model_sites
        from svilab.memory import check_particles

        sites = model_sites(model, *args, **kwargs)       # one sample-free trace: plates and sizes
        check_particles(sites, num_particles)
        if max_plate_nesting is None:  # read it off the trace instead of letting Pyro guess
            max_plate_nesting = sites.max_plate_nesting
        loss = make_loss(spec.name, num_particles=num_particles,
                         vectorize_particles=True if vectorize_particles is None else vectorize_particles,
                         max_plate_nesting=max_plate_nesting, jit=bool(jit), alpha=alpha)
    else:
        ignored = {k: v for k, v in zip(_LOSS_OPTIONS, (num_particles, vectorize_particles, max_plate_nesting,
                                                        alpha, jit), strict=True) if v is not None}
        if ignored:
            k, v = next(iter(ignored.items()))
            raise ValueError(f"fit(loss={type(loss).__name__}(...)) was given {k}={v}, which a loss object would "
                             f"ignore: set it on the loss (e.g. {type(loss).__name__}({k}={v})), or give the loss "
                             "by name")
    if seed is not None:
        pyro.set_rng_seed(seed)
    svi = SVI(model, guide, optim, loss, stopping=stopping, check_every=check_every, progress=progress,
              description=description, validate=validate)
    return svi.run(steps, *args, **kwargs)


def _params() -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {name: store[name].detach().clone() for name in store.keys()}


__all__ = ["SVI", "DivergenceError", "FitResult", "StoppingRule", "fit", "make_optimizer"]
