"""Datasets: MNIST as in-memory tensors (:mod:`svilab.data.mnist`)."""

from svilab.data.mnist import MNISTData, MNISTNotFoundError, as_images, binarize, data_root, load_mnist

__all__ = ["MNISTData", "MNISTNotFoundError", "as_images", "binarize", "data_root", "load_mnist"]
