"""The figures of ``svilab vae``: training curves, reconstructions, latent means, prior samples.

Each takes the runs as dicts with the run's ``loss``, ``alpha``, ``history`` and trained ``model``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from svilab.data.mnist import MNISTData
from svilab.experiments.runs import RunFolder
from svilab.inference import vae_eval


def label(run: dict) -> str:
    """The run's label (``gjs (alpha learned from 0.5)``, ``iwae (k=5)``), or ``gjs (alpha=0.5)`` from its
    loss and alpha."""
    if run.get("label"):
        return run["label"]
    return run["loss"] if run.get("alpha") is None else f"{run['loss']} (alpha={run['alpha']:g})"


#: the history column of a learned skew
ALPHA_COLUMN = "gjs_alpha"


def figure_curves(runs: list[dict]):
    """The training objective and the validation ELBO per epoch, and a third panel with the learned skew's
    trajectory when a run learns it."""
    learned = [r for r in runs if ALPHA_COLUMN in pd.DataFrame(r["history"])]
    fig, axes = plt.subplots(1, 3 if learned else 2, figsize=(18 if learned else 12, 4.2))
    for run in runs:
        h = pd.DataFrame(run["history"])
        line, = axes[0].plot(h["epoch"], h["train_loss"], label=f"{label(run)} train")
        axes[0].plot(h["epoch"], h["val_loss"], ls="--", color=line.get_color(), label=f"{label(run)} validation")
        axes[1].plot(h["epoch"], h["val_elbo"], color=line.get_color(), label=label(run))
        if ALPHA_COLUMN in h:
            axes[2].plot(h["epoch"], h[ALPHA_COLUMN], color=line.get_color(), marker=".", label=label(run))
    axes[0].set_title("Training objective per image (each run's own loss)")
    axes[1].set_title("Validation ELBO per image (the same yardstick for all)")
    if learned:
        axes[2].set_title("Learned skew alpha at the end of each epoch")
        axes[2].set_ylabel("alpha")
        axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("loss (nats)")
    axes[1].set_ylabel("ELBO (nats)")
    fig.tight_layout()
    return fig


def _grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    from torchvision.utils import make_grid

    images = images.detach().cpu().reshape(-1, 1, 28, 28).clamp(0, 1)
    return make_grid(images, nrow=nrow, padding=1, pad_value=1.0)[0].numpy()


@torch.no_grad()
def figure_reconstructions(runs: list[dict], x: torch.Tensor, n: int = 12):
    fig, axes = plt.subplots(len(runs) + 1, 1, figsize=(n * 0.7, 0.9 * (len(runs) + 1) + 0.4))
    axes = np.atleast_1d(axes)
    axes[0].imshow(_grid(x[:n], n), cmap="gray_r")
    axes[0].set_title("test images", fontsize=9, loc="left")
    for ax, run in zip(axes[1:], runs, strict=True):
        vae = run["model"]
        rec = vae.mean_image(vae.decode(vae.encode(x[:n])[0]))
        ax.imshow(_grid(rec, n), cmap="gray_r")
        ax.set_title(f"reconstructions: {label(run)}", fontsize=9, loc="left")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


@torch.no_grad()
def figure_latents(runs: list[dict], x: torch.Tensor, y: torch.Tensor, n: int = 5000):
    k = runs[0]["model"].config.latent_dim
    cols = 2 if k > 2 else 1
    fig, axes = plt.subplots(len(runs), cols, figsize=(5.2 * cols, 4.4 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs, strict=True):
        m = vae_eval.latent_means(run["model"], x[:n]).cpu()
        views = [(m[:, :2], "z1", "z2", "first two latent dimensions")]
        if k > 2:
            centred = m - m.mean(0)
            _, _, v = torch.linalg.svd(centred, full_matrices=False)
            views.append((centred @ v[:2].T, "PC 1", "PC 2", "PCA projection"))
        for ax, (pts, xl, yl, title) in zip(row, views, strict=True):
            sc = ax.scatter(pts[:, 0], pts[:, 1], c=y[:n], cmap="tab10", s=2, alpha=0.6, vmin=-0.5, vmax=9.5)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.set_title(f"{label(run)}: {title}", fontsize=9)
        fig.colorbar(sc, ax=row[-1], ticks=range(10), label="digit")
    fig.tight_layout()
    return fig


@torch.no_grad()
def figure_samples(runs: list[dict], n: int = 32, seed: int = 0):
    fig, axes = plt.subplots(len(runs), 1, figsize=(n * 0.35, 1.1 * len(runs) + 0.3), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        vae = run["model"]
        z = torch.randn(n, vae.config.latent_dim, generator=torch.Generator().manual_seed(seed))
        z = z.to(next(vae.parameters()).device)
        ax.imshow(_grid(vae.mean_image(vae.decode(z)), n // 2 if n > 16 else n), cmap="gray_r")
        ax.set_title(f"samples from the prior (decoder mean): {label(run)}", fontsize=9, loc="left")
        ax.axis("off")
    fig.tight_layout()
    return fig


def save_figures(folder: RunFolder, runs: list[dict], data: MNISTData) -> None:
    folder.save_figure(figure_curves(runs), "curves")
    folder.save_figure(figure_reconstructions(runs, data.test_x), "reconstructions")
    folder.save_figure(figure_latents(runs, data.test_x, data.test_y), "latents")
    folder.save_figure(figure_samples(runs), "prior_samples")
