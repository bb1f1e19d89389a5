r"""Training a VAE by SVI: the step, the epoch loop and its result, with hooks for checkpoints.

One step is Pyro's ELBO of the model/guide pair (``loss_fn.differentiable_loss(vae.model,
vae.guide, x)``, JIT-compiled once when ``loss_fn`` is a JIT ELBO) and one fused Adam update of
every network parameter (:class:`svilab.inference.optim.GuardedAdam`, which skips every update
from the first non-finite loss or gradient on). An epoch is one pass over a fixed random
permutation of the training images (seeded by ``(seed, epoch)``, so a resumed run sees the same
batches), binarized afresh each epoch when the data are binary (dynamic binarization), followed by
the validation objective and the validation ELBO. :func:`train_vae` hands the state after every
epoch to ``on_epoch`` (``svilab vae train`` writes its checkpoint there) and raises
:class:`~svilab.inference.svi.DivergenceError` at a non-finite step, naming it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from svilab.data.mnist import MNISTData, binarize
from svilab.files import atomic_write
from svilab.inference import vae_eval
from svilab.inference.jit_elbo import compile_quietly
from svilab.inference.optim import GuardedAdam
from svilab.inference.svi import DivergenceError, FitResult
from svilab.models.vae import VAE


class TrainStep:
    """One optimisation step (see the module docstring); the caller reads ``optim.diverged`` now
    and then. The model and guide are bound once: ``vae.model`` is a new bound-method object each
    time it is read."""

    def __init__(self, vae, optim: GuardedAdam, loss_fn, jit: bool = False) -> None:
        self.model, self.guide = vae.model, vae.guide
        self.optim, self.loss_fn = optim, loss_fn
        self.compile = jit

    def __call__(self, x: torch.Tensor) -> None:
        if self.compile:
            compile_quietly(self.loss_fn, self.model, self.guide, x)
            self.compile = False
        if hasattr(self.loss_fn, "differentiable_loss"):
            loss = self.loss_fn.differentiable_loss(self.model, self.guide, x)
            loss.backward()
        else:                      # e.g. pyro.infer.RenyiELBO: its loss_and_grads computes the gradient
            loss = torch.as_tensor(self.loss_fn.loss_and_grads(self.model, self.guide, x),
                                   device=self.optim.found_inf.device)
        self.optim.step(loss)


def epoch_batches(n: int, batch: int, seed: int, epoch: int,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Generator]:
    """The epoch's batches of indices, ``(n // batch, batch)`` (the last partial batch is dropped:
    JIT graphs are shape-specialised), and the generator that binarizes them, on ``device`` (on the
    CPU the permutation's own generator; elsewhere one seeded from the same numbers)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    full = (n // batch) * batch
    if torch.device(device).type != "cpu":
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)
    return perm[:full].view(-1, batch), g


def loss_parameters(module, loss_fn, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Pyro parameters that ``loss_fn`` on ``(module.model, module.guide, x)`` uses besides the
    module's own weights (a learned GJS skew, a guide's ``pyro.param``), by name in sorted order, as the
    unconstrained tensors the optimizer steps. Found by one trace of ``loss_fn.loss`` (no gradient,
    every random number generator put back)."""
    state = pyro.util.get_rng_state()
    try:
        with torch.no_grad(), poutine.trace(param_only=True) as capture:
            loss_fn.loss(module.model, module.guide, x)
    finally:
        pyro.util.set_rng_state(state)
    unconstrained = dict(pyro.get_param_store().named_parameters())
    own = {id(p) for p in module.parameters()}
    names = sorted(n for n, site in capture.trace.nodes.items() if site["type"] == "param")
    return {n: unconstrained[n] for n in names if n in unconstrained and id(unconstrained[n]) not in own}


@torch.no_grad()
def objective_per_image(loss_fn, vae, x: torch.Tensor, batch: int = 1000) -> float:
    """The training objective (``loss_fn.loss``) per image on ``x``."""
    total = sum(loss_fn.loss(vae.model, vae.guide, x[i:i + batch]) for i in range(0, len(x), batch))
    return total / len(x)


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a per-process temporary name, flushed and renamed (:func:`svilab.files.atomic_write`):
    an interrupted save or a full disk never leaves a broken checkpoint (the previous one stays), and two
    writers never share a temporary file. A failed write raises :class:`svilab.files.WriteError`."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


@dataclass
class TrainingResult:
    """What :func:`train_vae` returns.

    :ivar vae: the trained network.
    :ivar history: one row per finished epoch (resumed runs included): ``epoch`` (1-based),
        ``train_loss`` and ``val_loss`` (the objective per image), ``val_elbo``, ``seconds``, and the
        value of every scalar parameter of the loss (a learned skew: ``gjs_alpha``).
    :ivar stopped_by_time: the time limit ended the run before ``epochs``.
    """

    vae: object
    history: list[dict]
    stopped_by_time: bool = False

    @property
    def seconds_per_epoch(self) -> float | None:
        secs = [h["seconds"] for h in self.history]
        return float(np.mean(secs)) if secs else None


def _as_data(data) -> MNISTData:
    if isinstance(data, tuple):
        if len(data) != 2 or not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in data):
            raise ValueError("data must be an MNISTData or a pair (train_x, val_x) of (N, D) tensors")
        empty = torch.zeros(0, dtype=torch.long)
        return MNISTData(train_x=data[0], train_y=empty, val_x=data[1], val_y=empty, test_x=data[1][:0],
                         test_y=empty, binary=False, root="")
    for attr in ("train_x", "val_x"):
        if not hasattr(data, attr):
            raise ValueError(f"data has no {attr!r}: give an MNISTData or a pair (train_x, val_x) of tensors")
    return data


def train_vae(vae, data, loss_fn, eval_loss_fn=None, *, epochs: int, seed: int, lr: float,
              batch_size: int, jit: bool = False, resume: dict | None = None, time_limit_s: float | None = None,
              on_epoch: Callable[[dict], None] | None = None, say: Callable[[str], None] | None = None,
              label: str = "loss", progress: bool | None = None) -> TrainingResult:
    """Train ``vae`` on ``data.train_x`` for ``epochs`` epochs (from ``resume["epoch"] + 1``).

    :param vae: svilab's :class:`~svilab.models.vae.VAE` or any ``torch.nn.Module`` with Pyro
        ``model(x)`` and ``guide(x)`` methods whose networks are its submodules (all of its
        parameters are trained, and so is every other ``pyro.param`` the loss, model or guide uses,
        such as a learned skew: :func:`loss_parameters`; the images must sit in a ``pyro.plate``).
        Training runs on the module's device; the data are moved there.
    :param data: an :class:`~svilab.data.mnist.MNISTData` (binarized afresh each epoch when
        ``data.binary``) or a pair ``(train_x, val_x)`` of ``(N, D)`` tensors.
    :param loss_fn: the training ELBO (a Pyro ELBO object; JIT when ``jit``).
    :param eval_loss_fn: the same objective, eager, for the validation loss (default ``loss_fn``).
    :param resume: a state from ``on_epoch`` (``model``, ``optim``, ``rng``, ``history``, ``epoch``,
        ``params``), possibly saved on another device.
    :param time_limit_s: stop after the epoch during which this much training time has passed.
    :param on_epoch: called after every epoch with ``{"epoch" (0-based), "model", "optim", "rng",
        "history", "params"}``, everything a bit-identical resume on the same device needs (``rng``
        holds the CUDA generator too when training on CUDA).
    :param say: one line per epoch (None: silent).
    :raises DivergenceError: a NaN/inf loss or gradient (``on_epoch`` was last called for the epoch before).
    :raises ValueError: fewer training images than one batch.
    """
    data = _as_data(data)
    eval_loss_fn = loss_fn if eval_loss_fn is None else eval_loss_fn
    if not (hasattr(vae, "model") and hasattr(vae, "guide") and hasattr(vae, "parameters")):
        raise TypeError(f"vae must be a torch.nn.Module with Pyro model(x) and guide(x) methods, got "
                        f"{type(vae).__name__}")
    if len(data.train_x) < batch_size:
        raise ValueError(f"only {len(data.train_x)} training images for batch size {batch_size}")
    device = next(vae.parameters()).device
    data = data.to(device) if isinstance(data, MNISTData) else data
    steps_per_epoch = len(data.train_x) // batch_size
    history: list[dict] = []
    start = 0
    if resume is not None:
        vae.load_state_dict(resume["model"])
    extra = loss_parameters(vae, eval_loss_fn, data.train_x[:2])
    if resume is not None:
        saved = resume.get("params", {})
        if sorted(saved) != sorted(extra):
            raise ValueError(f"the checkpoint holds the loss parameters {sorted(saved) or 'none'}, this loss has "
                             f"{sorted(extra) or 'none'} (a learned alpha cannot be resumed as a fixed one, or back)")
        with torch.no_grad():
            for name, value in extra.items():
                value.copy_(saved[name])
    optim = GuardedAdam([*vae.parameters(), *extra.values()], lr=lr, steps=steps_per_epoch)
    if resume is not None:
        optim.load_state_dict(resume["optim"])
        pyro.util.set_rng_state(resume["rng"])
        if device.type == "cuda" and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"].cpu(), device)
        history = resume["history"]
        start = resume["epoch"] + 1
    scalars = [n for n, p in extra.items() if p.numel() == 1]
    step = TrainStep(vae, optim, loss_fn, jit=jit)
    if progress is None:
        progress = sys.stderr.isatty()
    t_start = time.perf_counter() - sum(h["seconds"] for h in history)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        idx, g = epoch_batches(len(data.train_x), batch_size, seed, epoch, device)
        first = optim.t
        bar = tqdm(idx, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for steps, b in enumerate(bar, start=1):
            xb = data.train_x[b]
            if data.binary:
                xb = binarize(xb, g)
            with pyro.validation_enabled(epoch == start and steps == 1):  # check the first step only
                step(xb)
            if steps % 50 == 0 or steps == len(idx):                     # read the guard now and then
                if optim.diverged:
                    bad = optim.first_bad_step() - first
                    value = optim.losses(first + bad, first + bad + 1)[0]
                    raise DivergenceError(
                        f"the loss or its gradient became non-finite ({value}) in epoch {epoch + 1}, step "
                        f"{bad + 1}; stopped.", FitResult(np.array([h["train_loss"] for h in history]), 0.0, {}, epoch))
                if progress:
                    bar.set_postfix(loss=f"{optim.losses(first).mean() / batch_size:.2f}")
        total = float(optim.losses(first).sum())
        seconds = time.perf_counter() - t0
        val_elbo, _ = (vae_eval.elbo(vae, data.val_x) if isinstance(vae, VAE)
                       else vae_eval.elbo(vae.model, vae.guide, data.val_x))
        row = {"epoch": epoch + 1, "train_loss": total / (len(idx) * batch_size),
               "val_loss": objective_per_image(eval_loss_fn, vae, data.val_x), "val_elbo": val_elbo,
               "seconds": seconds, **{n: float(pyro.param(n).detach()) for n in scalars}}
        history.append(row)
        if on_epoch is not None:
            on_epoch({"epoch": epoch, "model": vae.state_dict(), "optim": optim.state_dict(),
                      "rng": pyro.util.get_rng_state(), "history": history,
                      "params": {n: p.detach().clone() for n, p in extra.items()},
                      "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None})
        if say is not None:
            shown = "".join(f", {n} {row[n]:.4f}" for n in scalars)
            say(f"epoch {epoch + 1:3d}/{epochs}: train {label} loss {row['train_loss']:.3f}, "
                f"validation loss {row['val_loss']:.3f}, validation ELBO {val_elbo:.3f}{shown} ({seconds:.1f} s)")
        if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
            if say is not None:
                say(f"time limit of {time_limit_s / 60:g} min reached after epoch {epoch + 1}")
            return TrainingResult(vae, history, stopped_by_time=True)
    return TrainingResult(vae, history)


__all__ = ["TrainStep", "TrainingResult", "epoch_batches", "loss_parameters", "objective_per_image", "save_checkpoint",
           "train_vae"]
