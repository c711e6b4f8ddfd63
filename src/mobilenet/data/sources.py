"""The data named by --data: the embedded Fashion-MNIST, a folder of images or a label file. Both give the
training loop the same batches (batches.py)."""

from __future__ import annotations

from .batches import Source
from .fashion import fashion_mnist
from .folder import FolderSource
from .images import FASHION_MNIST


def open_source(data: str, resolution: int, seed: int, limit: int | None = None, test_split: float = 0.2,
                workers: int | None = None, augment: str = "flip-shift", val_split: float | None = None) -> Source:
    """The data named by --data: 'fashion-mnist', a folder or a label file; with val_split, a
    validation part held out of its training images."""
    if data == FASHION_MNIST:
        return fashion_mnist(resolution, seed, limit, augment, val_split)
    return FolderSource(data, resolution, seed, test_split, limit, workers, augment=augment, val_split=val_split)
