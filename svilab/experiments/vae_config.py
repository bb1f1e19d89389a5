"""The typed configuration of one ``svilab vae`` training run, checked on construction.

:meth:`VAERunConfig.build` takes a preset and the options that override it (the messages name the
command-line option); :meth:`VAERunConfig.as_dict` is what the run folder's ``config.json`` and every
checkpoint hold, and :meth:`VAERunConfig.from_dict` reads it back for ``--resume`` (checkpoints written
before this class existed have the same layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from svilab.devices import check_device
from svilab.experiments.loss_choice import command_loss, command_losses
from svilab.inference.divergences import check_alpha
from svilab.models.vae import VAEConfig, preset
from svilab.validation import positive_int

#: the objectives ``svilab vae`` trains (:func:`svilab.experiments.loss_choice.command_losses`)
VAE_LOSSES = tuple(command_losses("vae"))


def vae_loss(name: str) -> str:
    """The objective ``name`` stands for in the VAE: ``elbo``, ``gjs`` or ``dgjs``; every estimator of
    the ELBO (``trace_elbo``, ``meanfield_elbo``) is ``elbo``, trained with its analytic KL
    (:func:`svilab.experiments.loss_choice.command_loss`)."""
    return command_loss(name, "vae").objective


def parse_alpha(value) -> tuple[float | None, bool]:
    """``--alpha``: a number, ``learned`` (a learned skew starting at 0.5, the official code's default) or
    ``learned:A`` (starting at A) -> ``(alpha or start, learned)``; None -> ``(None, False)``."""
    if value is None:
        return None, False
    if isinstance(value, str) and value.strip().lower().startswith("learned"):
        rest = value.strip()[len("learned"):]
        if rest and not rest.startswith(":"):
            raise ValueError(f"--alpha {value!r}: write learned or learned:START (e.g. learned:0.3)")
        try:
            start = float(rest[1:]) if rest else 0.5
        except ValueError:
            raise ValueError(f"--alpha {value!r}: the start of a learned alpha must be a number, e.g. "
                             "learned:0.3") from None
        if not 0.0 < start < 1.0:
            raise ValueError(f"--alpha {value!r}: a learned alpha starts inside (0, 1)")
        return start, True
    try:
        return float(value), False
    except (TypeError, ValueError):
        raise ValueError(f"--alpha must be a number or learned[:START], got {value!r}") from None


def time_limit(minutes: float | None) -> float | None:
    if minutes is None:
        return None
    m = float(minutes)
    if not (m > 0 and math.isfinite(m)):
        raise ValueError(f"--time-limit must be a positive number of minutes, got {minutes}")
    return m


def absolute(path: str | None) -> str | None:
    """A data root as an absolute path (a run resumed from another directory still finds its data)."""
    return None if path is None else str(Path(path).expanduser().resolve())


@dataclass(frozen=True)
class VAERunConfig:
    """One training run: the network (a preset with overrides), the objective, training, data and
    evaluation settings.

    :ivar loss: the objective (``elbo``, ``renyi``, ``iwae``, ``gjs``, ``dgjs``); ``alpha`` the GJS skew
        (the start value when ``learn_alpha``) or the Renyi order (None for the ELBO and IWAE).
    :ivar learn_alpha: the skew is trained with the networks (gjs/dgjs).
    :ivar k: importance samples per image of ``iwae``/``renyi`` (None for the others); ``dreg``: the doubly
        reparameterized gradient (iwae).
    :ivar beta: weight of the divergence term (1 for the others).
    :ivar device: where the networks and data live (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``), as
        asked; the device used is in ``results.json``.
    :ivar limit: training images used (None: all); ``validation`` of them held out.
    :ivar time_limit_minutes: stop after the epoch during which this much training time has passed.
    :ivar data_root: absolute MNIST root (None: ``$SVILAB_DATA``, else the default cache).
    :ivar eval_k, eval_limit, eval_elbo_samples: IWAE samples, test images for it, samples for the test ELBO.
    """

    preset: str
    vae: VAEConfig
    loss: str = "elbo"
    alpha: float | None = None
    beta: float = 1.0
    learn_alpha: bool = False
    k: int | None = None
    dreg: bool = False
    device: str = "cpu"
    epochs: int = 10
    seed: int = 0
    particles: int = 1
    jit: bool = True
    limit: int | None = None
    validation: int = 10_000
    time_limit_minutes: float | None = None
    data_root: str | None = None
    eval_k: int = 5000
    eval_limit: int | None = None
    eval_elbo_samples: int = 10

    @classmethod
    def build(cls, preset_name: str = "notebook", *, loss: str = "elbo", alpha: float | str | None = None,
              beta: float = 1.0, k: int | None = None, dreg: bool = False, device: str = "cpu",
              epochs: int | None = None, seed: int = 0, particles: int = 1, jit: bool = True,
              limit: int | None = None, validation: int = 10_000, time_limit_minutes: float | None = None,
              data_root: str | None = None, eval_k: int = 5000, eval_limit: int | None = None,
              strict: bool = True, **network) -> VAERunConfig:
        """The configuration of these options, checked. ``network``: overrides of the preset
        (``latent_dim``, ``hidden``, ``likelihood``, ``sigma``, ``batch_size``, ``lr``; None: the
        preset's). ``strict``: a ``beta`` other than 1 with the ELBO is an error (``vae compare`` applies
        ``--beta`` to gjs/dgjs only)."""
        likelihood = network.get("likelihood")
        cfg = preset(preset_name, **network, binarize=(likelihood == "bernoulli") if likelihood else None)
        if network.get("sigma") is not None and cfg.likelihood != "gaussian":
            raise ValueError(f"--sigma is the scale of the Gaussian likelihood; the {preset_name} preset's is "
                             f"{cfg.likelihood} (add --likelihood gaussian, or drop --sigma)")
        loss = vae_loss(loss)
        alpha, learn_alpha = parse_alpha(alpha)
        gjs = loss in ("gjs", "dgjs")
        if alpha is not None and loss in ("elbo", "iwae"):
            raise ValueError(f"--alpha is the skew of gjs/dgjs or the order of renyi; {loss} has none (drop "
                             "--alpha or choose --loss gjs)")
        if learn_alpha and not gjs:
            raise ValueError(f"--alpha learned trains the skew of gjs/dgjs; {loss} has no skew to learn")
        if beta != 1.0 and strict and not gjs:
            raise ValueError(f"--beta weighs the divergence of gjs/dgjs; {loss} is trained with beta 1")
        if gjs:
            alpha = check_alpha(0.5 if alpha is None else alpha)
        if loss == "renyi":
            alpha = 0.0 if alpha is None else alpha
            if not math.isfinite(alpha) or alpha == 1.0:
                raise ValueError(f"--alpha {alpha:g}: the Renyi order must be finite and not 1 (1 is the ELBO)")
        samples = loss in ("iwae", "renyi")
        if k is not None and not samples:
            raise ValueError(f"--k is the number of importance samples of iwae/renyi; {loss} takes none (use "
                             "--particles for its Monte Carlo samples)")
        if samples:
            k = positive_int(5 if k is None else k, "--k")
            if loss == "renyi" and k < 2:
                raise ValueError("--k must be >= 2 for renyi (with one sample it is the ELBO)")
            if particles != 1:
                raise ValueError(f"--particles is for the ELBO and gjs/dgjs; {loss} draws --k samples per image")
        if dreg and loss != "iwae":
            raise ValueError(f"--dreg is the doubly reparameterized gradient of iwae; {loss} has none")
        return cls(preset=preset_name, vae=cfg, loss=loss, alpha=alpha, beta=beta if gjs else 1.0,
                   learn_alpha=learn_alpha, k=k, dreg=bool(dreg), device=check_device(device),
                   epochs=positive_int(10 if epochs is None else epochs, "--epochs"), seed=seed,
                   particles=positive_int(particles, "--particles"), jit=bool(jit),
                   limit=None if limit is None else positive_int(limit, "--limit"),
                   validation=positive_int(validation, "--validation"),
                   time_limit_minutes=time_limit(time_limit_minutes), data_root=absolute(data_root),
                   eval_k=positive_int(eval_k, "--eval-k"),
                   eval_limit=None if eval_limit is None else positive_int(eval_limit, "--eval-limit"))

    @property
    def name(self) -> str:
        """The run's sub-folder name in ``vae compare``: ``elbo``, ``gjs-alpha0.5``, ``gjs-alpha-learned0.5``,
        ``iwae-k5-dreg``, ``renyi-alpha0.5-k5``."""
        name = self.loss
        if self.alpha is not None:
            name += f"-alpha-learned{self.alpha:g}" if self.learn_alpha else f"-alpha{self.alpha:g}"
        if self.k is not None:
            name += f"-k{self.k}"
        return name + ("-dreg" if self.dreg else "")

    @property
    def label(self) -> str:
        """The run's label in tables and figures: ``gjs (alpha learned from 0.5)``, ``iwae (k=5, DReG)``."""
        parts = []
        if self.alpha is not None:
            parts.append(f"alpha learned from {self.alpha:g}" if self.learn_alpha else f"alpha={self.alpha:g}")
        if self.k is not None:
            parts.append(f"k={self.k}")
        if self.dreg:
            parts.append("DReG")
        return self.loss + (f" ({', '.join(parts)})" if parts else "")

    def with_(self, **changes) -> VAERunConfig:
        """A copy with ``changes`` (e.g. ``epochs`` raised on ``--resume``)."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """``config.json`` and the checkpoint's ``config``."""
        return {"command": "vae train", "preset": self.preset, "vae": self.vae.as_dict(), "loss": self.loss,
                "alpha": self.alpha, "beta": self.beta, "learn_alpha": self.learn_alpha, "k": self.k,
                "dreg": self.dreg, "device": self.device, "epochs": self.epochs, "seed": self.seed,
                "particles": self.particles, "jit": self.jit, "limit": self.limit, "validation": self.validation,
                "time_limit_minutes": self.time_limit_minutes, "data_root": self.data_root,
                "eval": {"k": self.eval_k, "limit": self.eval_limit, "elbo_samples": self.eval_elbo_samples}}

    @classmethod
    def from_dict(cls, d: dict) -> VAERunConfig:
        """The inverse of :meth:`as_dict` (a ``KeyError``/``TypeError`` for a dict of another layout)."""
        net = dict(d["vae"])
        net["hidden"] = tuple(net["hidden"])
        ev = d["eval"]
        return cls(preset=d["preset"], vae=VAEConfig(**net).validated(), loss=d["loss"], alpha=d["alpha"],
                   beta=d["beta"], learn_alpha=d.get("learn_alpha", False), k=d.get("k"), dreg=d.get("dreg", False),
                   device=d.get("device", "cpu"), epochs=d["epochs"], seed=d["seed"], particles=d["particles"],
                   jit=d.get("jit", False), limit=d["limit"], validation=d["validation"],
                   time_limit_minutes=d.get("time_limit_minutes"), data_root=d.get("data_root"),
                   eval_k=ev["k"], eval_limit=ev["limit"], eval_elbo_samples=ev.get("elbo_samples", 10))


__all__ = ["VAE_LOSSES", "VAERunConfig", "absolute", "parse_alpha", "time_limit", "vae_loss"]
