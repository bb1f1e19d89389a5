"""MNIST as in-memory tensors, through :class:`torchvision.datasets.MNIST`.

Where the data lives (first match wins): the ``root`` argument (``--data-root``), the environment
variable ``SVILAB_DATA``, else ``~/.cache/svilab/data`` (``$XDG_CACHE_HOME/svilab/data``). torchvision
reads ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` and downloads them there when
they are missing and the network allows. The whole split is loaded once as a tensor (no
per-image transform pipeline): images ``(N, 784)`` float32 in [0, 1], labels ``(N,)`` int64.

Binarization: ``binarize(x, generator)`` draws :math:`b_{ij} \\sim \\mathrm{Bernoulli}(x_{ij})`;
training batches are binarized afresh each time they are drawn (dynamic binarization), the
validation and test sets once, with a fixed seed, so every model is scored on the same bits.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from svilab.validation import positive_int

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IMAGE_SIZE = 28 * 28


def data_root(root: str | Path | None = None) -> Path:
    """The data root: ``root``, else ``$SVILAB_DATA``, else the user's cache directory."""
    if root:
        return Path(root).expanduser()
    if os.environ.get("SVILAB_DATA"):
        return Path(os.environ["SVILAB_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "svilab" / "data"


#: MD5 of the four original files (as torchvision downloads them, uncompressed)
RAW_MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
           "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
           "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
           "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
_ORIGINAL_COUNT = {"train": 60_000, "t10k": 10_000}


def check_raw_files(root: Path) -> None:
    """Check the IDX files present in ``root/MNIST/raw``: magic number, header against the file
    size, image and label counts equal, and the MD5 of a file with the original count.

    :raises ValueError: one line naming the file and what is wrong with it.
    """
    raw = Path(root) / "MNIST" / "raw"
    counts = {}
    for name in RAW_FILES:
        path = raw / name
        if not path.is_file():
            continue
        images = "images" in name
        head = 16 if images else 8
        size = path.stat().st_size
        if size < head:
            raise ValueError(f"MNIST file {path} is {'empty' if size == 0 else 'truncated'} ({size} bytes, "
                             f"the header alone is {head}); delete it to download it again")
        with open(path, "rb") as f:
            header = struct.unpack(">IIII" if images else ">II", f.read(head))
        magic, n = header[0], header[1]
        if magic != (2051 if images else 2049):
            raise ValueError(f"MNIST file {path}: wrong magic number {magic} (expected {2051 if images else 2049} "
                             f"for {'images' if images else 'labels'}); it is not an MNIST IDX file "
                             "(a compressed .gz must be unpacked)")
        if images and header[2:] != (28, 28):
            raise ValueError(f"MNIST file {path}: images of {header[2]}x{header[3]} pixels, expected 28x28")
        expected = head + n * (IMAGE_SIZE if images else 1)
        if size != expected:
            raise ValueError(f"MNIST file {path}: the header says {n} {'images' if images else 'labels'} "
                             f"({expected} bytes) but the file has {size} bytes (truncated or damaged)")
        split = name.split("-")[0]
        if n == _ORIGINAL_COUNT[split]:
            digest = hashlib.md5(path.read_bytes()).hexdigest()
            if digest != RAW_MD5[name]:
                raise ValueError(f"MNIST file {path}: MD5 {digest} differs from the original's {RAW_MD5[name]} "
                                 "(damaged, or not MNIST); delete it to download it again")
        if split in counts and counts[split] != n:
            raise ValueError(f"MNIST files of the {split} split disagree: {counts[split]} images or labels in one, "
                             f"{n} in {path}")
        counts[split] = n


class MNISTNotFoundError(ValueError):
    """The MNIST files are missing and could not be downloaded."""


def _load_split(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    check_raw_files(root)
    try:
        ds = MNIST(str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise MNISTNotFoundError(_missing_message(root, "download disabled")) from None
        try:
            ds = MNIST(str(root), train=train, download=True)
        except Exception as exc:  # no network, mirror down, disk full ...
            raise MNISTNotFoundError(_missing_message(root, f"download failed: {exc}")) from None
    return ds.data, ds.targets


def _missing_message(root: Path, why: str) -> str:
    raw = root / "MNIST" / "raw"
    have = sorted(p.name for p in raw.iterdir()) if raw.is_dir() else []
    return (f"MNIST not found under data root {root} ({why}). Expected the four original files "
            f"{', '.join(RAW_FILES)} (uncompressed) in {raw}/" + (f"; found only: {', '.join(have)}" if have else "")
            + ". Set --data-root or SVILAB_DATA to the folder that contains MNIST/raw/.")


def as_images(x: torch.Tensor, name: str = "images") -> torch.Tensor:
    """``x`` as ``(N, 784)`` float in [0, 1]: accepts ``(N, 784)``, ``(N, 28, 28)``, ``(N, 1, 28, 28)``, uint8
    or float; anything else is a ValueError naming the shape."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if not ((x.dim() == 3 and tuple(x.shape[1:]) == (28, 28)) or (x.dim() == 2 and x.shape[1] == IMAGE_SIZE)):
        raise ValueError(f"{name}: wrong image shape {tuple(x.shape)}; expected (N, 784), (N, 28, 28) or "
                         "(N, 1, 28, 28) MNIST images")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: no images (empty tensor)")
    x = x.reshape(x.shape[0], IMAGE_SIZE)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name}: pixel values must be finite and in [0, 1] (or uint8)")
    return x


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli(x) draws, same shape and dtype as ``x``."""
    return (torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) < x).to(x.dtype)


@dataclass
class MNISTData:
    """Train/validation/test images ``(N, 784)`` and labels; ``binary``: training batches are
    dynamically binarized and ``val_x``/``test_x`` hold fixed binarizations."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    binary: bool
    root: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_x), "validation": len(self.val_x), "test": len(self.test_x)}

    def to(self, device) -> MNISTData:
        """The images on ``device`` (the labels stay on the CPU, for the figures); ``self`` if they are there."""
        device = torch.device(device)
        if self.train_x.device == device:
            return self
        return replace(self, train_x=self.train_x.to(device), val_x=self.val_x.to(device),
                       test_x=self.test_x.to(device))


def load_mnist(root: str | Path | None = None, *, binary: bool = False, validation: int = 10_000,
               limit: int | None = None, download: bool = True, seed: int = 0) -> MNISTData:
    """Load MNIST: 60,000 training images split into ``60000 - validation`` train and ``validation``
    held-out images (a fixed permutation from ``seed``), and the 10,000 test images.

    :param limit: keep at most ``limit`` training images, and at most ``max(limit // 5, 1)``
        validation and test images (quick runs).
    :raises MNISTNotFoundError: (a ValueError) the files are missing and cannot be downloaded; the
        message lists the expected files and folder.
    """
    root = data_root(root)
    x, y = _load_split(root, True, download)
    tx, ty = _load_split(root, False, download)
    x, tx = as_images(x, "MNIST train"), as_images(tx, "MNIST test")
    validation = positive_int(validation, "validation")
    if validation >= len(x):
        raise ValueError(f"validation ({validation}) must be smaller than the {len(x)} training images")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    val_idx, train_idx = perm[:validation], perm[validation:]
    train_x, train_y, val_x, val_y = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    if limit is not None:
        limit = positive_int(limit, "limit")
        small = max(limit // 5, 1)
        train_x, train_y = train_x[:limit], train_y[:limit]
        val_x, val_y, tx, ty = val_x[:small], val_y[:small], tx[:small], ty[:small]
    if binary:
        g_eval = torch.Generator().manual_seed(12345)
        val_x, tx = binarize(val_x, g_eval), binarize(tx, g_eval)
    return MNISTData(train_x, train_y, val_x, val_y, tx, ty, binary, str(root))


__all__ = ["MNISTData", "MNISTNotFoundError", "as_images", "binarize", "data_root", "load_mnist"]
