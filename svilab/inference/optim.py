r"""One fused Adam over every parameter, guarded against NaN/inf without a sync per step.

:class:`GuardedAdam` is what :func:`svilab.inference.svi.fit` and the VAE trainer step with. It
wraps ``torch.optim.Adam(fused=True)`` (one kernel for all parameters instead of Pyro's
per-parameter optimizers) and adds, per step and entirely in tensor ops:

* **the finiteness guard**: ``torch._amp_foreach_non_finite_check_and_unscale_`` (the kernel
  ``torch.amp.GradScaler`` uses, with scale 1) sets a *sticky* flag when the loss or any gradient
  is NaN/inf, and the fused kernel skips its update while the flag is set (``found_inf``, as under
  mixed precision; Adam's step counters are rolled back). Once a step is non-finite no later
  update is applied, so the parameters stay those of the last finite step, exactly as if the run
  had stopped there; the caller reads the flag (:attr:`GuardedAdam.diverged`, one sync) only
  every few dozen steps and then stops, naming the first bad step (:meth:`first_bad_step`);
* **the loss record**: each step's loss is copied into a buffer that is read in blocks
  (:meth:`losses`), so the Python loop never waits for a value;
* **Pyro's** ``ClippedAdam`` **conventions** when asked: gradients clamped elementwise to
  ``[-clip, clip]`` and the learning rate decayed geometrically,
  :math:`\mathrm{lr}_t = \mathrm{lr}\,(\mathrm{lr_{final}}/\mathrm{lr})^{t/T}` for steps t = 1..T (``T = steps``).

Measured in ``benchmarks/bench_svi.py`` and ``benchmarks/bench_vae.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from svilab.validation import positive, positive_int


class GuardedAdam:
    """Fused Adam over ``params`` with a sticky non-finite guard and a loss buffer (see module doc).

    The update is torch's own fused Adam kernel (``torch._fused_adam_``, what
    ``torch.optim.Adam(fused=True)`` runs), called directly: ``torch.optim.Optimizer.step``
    imports ``torch._dynamo`` on its first call, which costs 1.2 s, as long as a whole
    Poisson-Gamma fit.

    :param params: the leaf tensors to optimise (float dtypes, one device).
    :param lr: initial learning rate.
    :param lr_final: learning rate after ``steps`` steps (geometric decay); None: constant.
    :param steps: the length of the decay schedule (and the initial size of the loss buffer).
    :param clip: clamp every gradient element to ``[-clip, clip]`` before the update (Pyro's
        ``ClippedAdam`` rule); None: no clipping.
    :param betas, eps: Adam's.
    :param weight_decay: L2 penalty added to the (clamped) gradient, as in Pyro's ``ClippedAdam``.
    :param lrd: the decay factor per step given directly (Pyro's ``lrd``), instead of ``lr_final``.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, lr_final: float | None = None,
                 steps: int = 1000, clip: float | None = None, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, lrd: float | None = None) -> None:
        self.params: list[torch.Tensor] = []
        self.lr = positive(lr, "lr")
        steps = positive_int(steps, "steps")
        if lrd is not None and lr_final is not None:
            raise ValueError("give lr_final or lrd, not both")
        self.decay = (positive(lrd, "lrd") if lrd is not None else
                      1.0 if lr_final is None else (positive(lr_final, "lr_final") / self.lr) ** (1.0 / steps))
        self.clip = None if clip is None else positive(clip, "clip")
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        self.weight_decay = float(weight_decay)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.exp_avg: list[torch.Tensor] = []
        self.exp_avg_sq: list[torch.Tensor] = []
        self.step_count: list[torch.Tensor] = []     # per parameter, float32 (the kernel's convention)
        self.add_params(params)
        if not self.params:
            raise ValueError("no parameters to optimise (the guide and model register no pyro.param)")
        device = self.params[0].device
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)  # sticky: 1 after a bad step
        self._one = torch.ones((), dtype=torch.float32, device=device)
        self._losses = torch.full((steps,), math.nan, dtype=torch.float64, device=device)
        self._flags = torch.zeros(steps, dtype=torch.float32, device=device)
        self.t = 0                                            # steps taken (applied or skipped)

    def _grow(self, size: int) -> None:
        losses = torch.full((size,), math.nan, dtype=torch.float64, device=self._losses.device)
        flags = torch.zeros(size, dtype=torch.float32, device=self._flags.device)
        losses[:len(self._losses)] = self._losses
        flags[:len(self._flags)] = self._flags
        self._losses, self._flags = losses, flags

    def add_params(self, params: Iterable[torch.Tensor]) -> None:
        """Optimise further tensors too (e.g. parameters a guide created after the first step)."""
        for p in params:
            if not p.requires_grad:
                continue
            if not p.is_floating_point():
                raise ValueError(f"cannot optimise a tensor of dtype {p.dtype}")
            if self.params and p.device != self.params[0].device:
                raise ValueError(f"parameters on two devices ({self.params[0].device}, {p.device})")
            self.params.append(p)
            self.exp_avg.append(torch.zeros_like(p, memory_format=torch.preserve_format))
            self.exp_avg_sq.append(torch.zeros_like(p, memory_format=torch.preserve_format))
            self.step_count.append(torch.zeros((), dtype=torch.float32, device=p.device))

    @torch.no_grad()
    def step(self, loss: torch.Tensor) -> None:
        """Record ``loss``, update with the current gradients unless this or an earlier step was
        non-finite, and clear the gradients. Never synchronises."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        grads = [self.params[i].grad for i in live]
        loss = loss.detach()
        torch._amp_foreach_non_finite_check_and_unscale_([*grads, loss.reshape(1).float()], self.found_inf,
                                                         self._one)
        if self.t >= len(self._losses):
            self._grow(max(2 * len(self._losses), self.t + 1))
        self._losses[self.t] = loss
        self._flags[self.t] = self.found_inf
        if grads:
            if self.clip is not None:
                torch._foreach_clamp_min_(grads, -self.clip)
                torch._foreach_clamp_max_(grads, self.clip)
            lr = self.lr * self.decay ** (self.t + 1)     # Pyro decays before the step: step T uses lr_final
            by_dtype: dict[torch.dtype, list[int]] = {}
            for i in live:
                by_dtype.setdefault(self.params[i].dtype, []).append(i)
            for idx in by_dtype.values():
                steps = [self.step_count[i] for i in idx]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_([self.params[i] for i in idx], [self.params[i].grad for i in idx],
                                   [self.exp_avg[i] for i in idx], [self.exp_avg_sq[i] for i in idx], [], steps,
                                   lr=lr, beta1=self.betas[0], beta2=self.betas[1],
                                   weight_decay=self.weight_decay, eps=self.eps,
                                   amsgrad=False, maximize=False, grad_scale=None, found_inf=self.found_inf)
                torch._foreach_sub_(steps, [self.found_inf] * len(steps))   # a skipped step is not counted
            for i in live:
                self.params[i].grad = None
        self.t += 1

    @property
    def diverged(self) -> bool:
        """Whether any step so far had a non-finite loss or gradient (one sync)."""
        return bool(self.found_inf)

    def first_bad_step(self) -> int | None:
        """Index (0-based) of the first non-finite step, or None."""
        if not self.diverged:
            return None
        return int(torch.nonzero(self._flags[:self.t])[0, 0])

    def losses(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The recorded losses of steps ``start:stop`` (one copy to numpy)."""
        stop = self.t if stop is None else stop
        return self._losses[start:stop].cpu().numpy().copy()

    def state_dict(self) -> dict:
        """Adam's moments and step counts per parameter (in the order given), and the step index."""
        return {"t": self.t, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        """Load a :meth:`state_dict`, or the state dict of a ``torch.optim.Adam`` over the same
        parameters in the same order (checkpoints written before svilab 0.4)."""
        if "param_groups" in state:          # torch.optim.Adam
            per = state["state"]
            order = [i for g in state["param_groups"] for i in g["params"]]
            state = {"t": int(max((float(per[i]["step"]) for i in per), default=0)),
                     "exp_avg": [per[i]["exp_avg"] for i in order], "exp_avg_sq": [per[i]["exp_avg_sq"] for i in order],
                     "step": [torch.as_tensor(per[i]["step"], dtype=torch.float32).reshape(()) for i in order]}
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(f"optimizer state for {len(state['exp_avg'])} parameters, this model has "
                             f"{len(self.params)}")
        for mine, theirs in zip([self.exp_avg, self.exp_avg_sq, self.step_count],
                                [state["exp_avg"], state["exp_avg_sq"], state["step"]], strict=True):
            for a, b in zip(mine, theirs, strict=True):
                if a.shape != b.shape:
                    raise ValueError(f"optimizer state of shape {tuple(b.shape)} for a parameter of shape "
                                     f"{tuple(a.shape)}")
                a.copy_(b)
        self.t = int(state["t"])


class ClippedAdam:
    r"""svilab's optimizer for :class:`svilab.SVI`, the object to pass where Pyro takes
    ``pyro.optim.ClippedAdam``: the same rule (gradients clamped elementwise to ``[-clip, clip]``,
    Adam, the learning rate decayed geometrically) run as one fused update over every parameter with
    the non-finite guard of :class:`GuardedAdam`.

    The decay is given as the end value: :math:`\mathrm{lr}_t = \mathrm{lr}\,(\mathrm{lr_{final}}
    /\mathrm{lr})^{t/T}` over ``steps`` = T (default: the ``num_steps`` of :meth:`svilab.SVI.run`), or
    as Pyro's per-step factor ``lrd``.

    :param lr: initial learning rate (> 0).
    :param lr_final: learning rate after ``steps`` steps (None: constant, unless ``lrd``).
    :param steps: length of the decay (None: the run's number of steps).
    :param clip: elementwise gradient clamp (None: none; Pyro's ``clip_norm``).
    :param betas, eps, weight_decay: Adam's.
    :param lrd: per-step decay factor (Pyro's ``ClippedAdam`` option), instead of ``lr_final``.

    >>> import svilab
    >>> svilab.ClippedAdam(lr=0.05, lr_final=0.001)
    ClippedAdam(lr=0.05, lr_final=0.001, steps=None, clip=10.0)
    """

    def __init__(self, lr: float = 0.01, lr_final: float | None = None, steps: int | None = None,
                 clip: float | None = 10.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, lrd: float | None = None) -> None:
        self.lr = positive(lr, "lr")
        self.lr_final = None if lr_final is None else positive(lr_final, "lr_final")
        self.steps = None if steps is None else positive_int(steps, "steps")
        self.clip = None if clip is None else positive(clip, "clip")
        self.betas, self.eps, self.weight_decay = tuple(betas), float(eps), float(weight_decay)
        if lrd is not None and lr_final is not None:
            raise ValueError("give lr_final or lrd, not both")
        self.lrd = None if lrd is None else positive(lrd, "lrd")

    def __repr__(self) -> str:
        return f"ClippedAdam(lr={self.lr:g}, lr_final={self.lr_final}, steps={self.steps}, clip={self.clip})"

    def build(self, params: Iterable[torch.Tensor], steps: int | None) -> GuardedAdam:
        """The :class:`GuardedAdam` over ``params``; ``steps``: the run's length (used when the
        optimizer was given none)."""
        steps = self.steps or steps
        if steps is None and self.lr_final is not None:
            raise ValueError("ClippedAdam(lr_final=...) needs the decay's length: give steps=, or run "
                             "SVI.run(num_steps, ...)")
        return GuardedAdam(params, lr=self.lr, lr_final=self.lr_final, steps=steps or 1000, clip=self.clip,
                           betas=self.betas, eps=self.eps, weight_decay=self.weight_decay, lrd=self.lrd)

    @classmethod
    def from_pyro(cls, optim) -> ClippedAdam | None:
        """The same rule as a ``pyro.optim`` object when svilab's fused update can run it exactly:
        ``pyro.optim.ClippedAdam`` and ``pyro.optim.Adam`` with one dictionary of options (not a
        per-parameter callable) and no ``clip_args``; else None. (Pyro's ``ClippedAdam`` adds
        ``eps`` before the bias correction, torch's Adam after: the updates differ in the ninth
        digit, which ``tests/test_svi_api.py`` bounds.)"""
        import pyro.optim.clipped_adam

        ctor, args = getattr(optim, "pt_optim_constructor", None), getattr(optim, "pt_optim_args", None)
        if not isinstance(args, dict) or getattr(optim, "pt_clip_args", None):
            return None
        common = {"lr": args.get("lr", 1e-3), "betas": args.get("betas", (0.9, 0.999)), "eps": args.get("eps", 1e-8),
                  "weight_decay": args.get("weight_decay", 0.0)}
        if ctor is pyro.optim.clipped_adam.ClippedAdam and not args.get("centered_variance", False):
            known = {"lr", "betas", "eps", "weight_decay", "clip_norm", "lrd", "centered_variance"}
            if set(args) <= known:
                lrd = args.get("lrd", 1.0)
                return cls(clip=args.get("clip_norm", 10.0), lrd=None if lrd == 1.0 else lrd, **common)
        if ctor is torch.optim.Adam and set(args) <= {"lr", "betas", "eps", "weight_decay"}:
            return cls(clip=None, **common)
        return None


class PyroOptimStepper:
    """Any other ``pyro.optim`` optimizer (SGD, a scheduler, per-parameter options) behind
    :class:`GuardedAdam`'s interface: each step checks the loss and the gradients (one sync), and
    after the first non-finite step no update is applied, as with :class:`GuardedAdam`."""

    def __init__(self, optim, params: Iterable[torch.Tensor], steps: int | None = None) -> None:
        self.optim = optim
        self.params: list[torch.Tensor] = []
        self.add_params(params)
        self._losses: list[float] = []
        self._bad: int | None = None
        self.t = 0

    def add_params(self, params: Iterable[torch.Tensor]) -> None:
        self.params.extend(p for p in params if p.requires_grad)

    @torch.no_grad()
    def step(self, loss: torch.Tensor) -> None:
        live = [p for p in self.params if p.grad is not None]
        loss = loss.detach()
        found = torch.zeros((), dtype=torch.float32, device=loss.device)   # the guard GuardedAdam uses, one sync
        torch._amp_foreach_non_finite_check_and_unscale_([*(p.grad for p in live), loss.reshape(1).float()], found,
                                                         torch.ones((), device=loss.device))
        value, finite = float(loss), not bool(found)
        if not finite and self._bad is None:
            self._bad = self.t
        if self._bad is None and live:
            self.optim(live)
        for p in live:
            p.grad = None
        self._losses.append(value)
        self.t += 1

    @property
    def diverged(self) -> bool:
        return self._bad is not None

    def first_bad_step(self) -> int | None:
        return self._bad

    def losses(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.asarray(self._losses[start:stop], dtype=float)


def make_stepper(optim, params: Iterable[torch.Tensor], steps: int | None):
    """The object :class:`svilab.SVI` steps with: a :class:`GuardedAdam` for :class:`ClippedAdam` and
    for the ``pyro.optim`` objects it can run exactly (:meth:`ClippedAdam.from_pyro`), else a
    :class:`PyroOptimStepper`."""
    check_optim(optim)
    if isinstance(optim, ClippedAdam):
        return optim.build(params, steps)
    same = ClippedAdam.from_pyro(optim)
    return same.build(params, steps) if same is not None else PyroOptimStepper(optim, params, steps)


def check_optim(optim) -> None:
    """A TypeError unless ``optim`` is :class:`ClippedAdam` or a ``pyro.optim`` optimizer."""
    import pyro.optim

    if not isinstance(optim, (ClippedAdam, pyro.optim.PyroOptim)):
        raise TypeError(f"optim must be a pyro.optim optimizer (e.g. pyro.optim.Adam({{'lr': 0.01}})) or "
                        f"svilab.ClippedAdam(...), got {type(optim).__name__}")


__all__ = ["ClippedAdam", "GuardedAdam", "PyroOptimStepper", "check_optim", "make_stepper"]
