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
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, lr_final: float | None = None,
                 steps: int = 1000, clip: float | None = None, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params: list[torch.Tensor] = []
        self.lr = positive(lr, "lr")
        steps = positive_int(steps, "steps")
        self.decay = 1.0 if lr_final is None else (positive(lr_final, "lr_final") / self.lr) ** (1.0 / steps)
        self.clip = None if clip is None else positive(clip, "clip")
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
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
                                   lr=lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
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


__all__ = ["GuardedAdam"]
