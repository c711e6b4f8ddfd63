"""The data named by --data: the embedded Fashion-MNIST, a folder of images or a label file. Both give the
training loop the same batches (batches.py)."""

from __future__ import annotations

from ..errors import MobileNetError
from .batches import Source
from .fashion import fashion_mnist
from .folder import FolderSource
from .images import FASHION_MNIST


def open_source(data: str, resolution: int, seed: int, limit: int | None = None, test_split: float = 0.2,
                workers: int | None = None, augment: str = "flip-shift", val_split: float | None = None,
                multi_label: bool | None = None) -> Source:
    """The data named by --data: 'fashion-mnist', a folder or a label file; with val_split, a
    validation part held out of its training images. multi_label: several labels per image
    (True), one (False), or as the label file says (None)."""
    if data == FASHION_MNIST:
        if multi_label:
            raise MobileNetError("Fashion-MNIST gives each image one class; several labels per image come from a "
                                 "label file (--data labels.csv)")
        return fashion_mnist(resolution, seed, limit, augment, val_split)
    return FolderSource(data, resolution, seed, test_split, limit, workers, augment=augment, val_split=val_split,
                        multi_label=multi_label)
