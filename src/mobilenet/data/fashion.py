"""The embedded Fashion-MNIST default: held in memory as uint8 tensors, on the training device,
and augmented as whole batches."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..errors import MobileNetError
from ..seeds import generator
from .augment import check_fashion_preset, flip_and_shift, preset_named, shift_pixels
from .batches import (
    Batch, Source, balanced_weights, class_counts, epoch_order, normalize_resize, subset, test_share, validation_split,
)
from .images import FASHION_CLASSES, FASHION_MNIST, fashion_files, fashion_mnist_dir, read_idx

FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)  # of the 60,000 training images


def load_fashion_mnist(split: str, folder: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of the 'train' or 'test' split."""
    folder = folder or fashion_mnist_dir()
    files = fashion_files(folder, split)
    if files is None:
        raise MobileNetError(f"Fashion-MNIST {split} files are missing in {folder}")
    images, labels = (read_idx(p) for p in files)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise MobileNetError(f"Fashion-MNIST files in {folder} have unexpected shapes {images.shape}, {labels.shape}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


class TensorSource(Source):
    """A data set held in memory as uint8 tensors (Fashion-MNIST): no per-image Python.
    After .to(device) the images live there (a GPU's memory) and batches are sliced,
    augmented and normalised there: a step waits on no copy from the host."""

    same_batches_on_every_rank = True  # every rank's share has the same size; no file can fail
    multi_label = False  # one class per image

    def __init__(self, name, train, test, classes, mean, std, resolution, seed, shift=2, val=None, flip=True):
        # shift: pixels of random translation (0: none; -1: no augmentation at all); flip: random mirroring
        (self.train_x, self.train_y), (self.test_x, self.test_y) = train, test
        self.weights = None  # set_sampler's
        self.flip = flip
        self.val_x, self.val_y = val or (None, None)
        self.name, self.classes, self.mean, self.std = name, classes, mean, std
        self.resolution, self.seed, self.shift = resolution, seed, shift
        self.in_channels = self.train_x.shape[1]
        self._mean_std = tuple(torch.tensor(v, dtype=torch.float32) for v in (mean, std))

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    def set_sampler(self, sampler: str) -> None:
        """How training images are drawn: "shuffle", or "balanced" (batches.balanced_weights)."""
        self.weights = balanced_weights(self.train_y.cpu(), sampler)  # on the host, where the order is drawn

    def class_counts(self) -> dict[str, list[int]]:
        """Images per class in each split: train, validation (zeros without one) and test."""
        return {name: class_counts(y.tolist() if y is not None else [], len(self.classes))
                for name, y in (("train", self.train_y), ("validation", self.val_y), ("test", self.test_y))}

    @property
    def num_test(self) -> int:
        return len(self.test_y)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device) -> "TensorSource":
        """Images and labels moved to `device` (uint8: Fashion-MNIST is 55 MB there)."""
        for name in ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        self._mean_std = tuple(t.to(device) for t in self._mean_std)
        return self

    def train_batches(self, epoch: int, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1):
        # the epoch's order is drawn on the host (as on the CPU) and copied once
        order = epoch_order(self.num_train, self.seed, epoch, rank, world, self.weights).to(self.device)
        for step in range(start_step, self.steps_per_epoch(batch_size, world)):
            idx = order[step * batch_size:(step + 1) * batch_size]
            g = generator(self.device, self.seed, epoch, step, *([rank] if world > 1 else []))
            x = flip_and_shift(self.train_x[idx], self.shift, g, self.flip)
            yield Batch(normalize_resize(x, *self._mean_std, self.resolution), self.train_y[idx])

    @property
    def num_val(self) -> int:
        return 0 if self.val_y is None else len(self.val_y)

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1):
        yield from self._plain_batches(self.test_x, self.test_y, batch_size, rank, world)

    def val_batches(self, batch_size: int, rank: int = 0, world: int = 1):
        yield from self._plain_batches(self.val_x, self.val_y, batch_size, rank, world)

    def _plain_batches(self, images, labels, batch_size: int, rank: int, world: int):
        share = test_share(len(labels), rank, world).to(self.device)  # every image exactly once across the ranks
        for i in range(0, len(share), batch_size):
            idx = share[i:i + batch_size]
            yield Batch(normalize_resize(images[idx], *self._mean_std, self.resolution), labels[idx])

    def input_spec(self) -> dict:
        """What predict and export need to prepare an image like the test images."""
        return {"channels": self.in_channels, "image_size": self.train_x.shape[-1],
                "resolution": self.resolution, "mean": list(self.mean), "std": list(self.std)}

    def provenance(self) -> dict:
        return {"name": self.name}


def fashion_mnist(resolution: int, seed: int, limit: int | None = None, augment: str = "flip-shift",
                  val_split: float | None = None) -> TensorSource:
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    if limit:
        keep = subset(len(train[1]), limit, seed)
        train = (train[0][keep], train[1][keep])
    kept, held = validation_split(list(zip(range(len(train[1])), train[1].tolist())), val_split, seed)
    val = None
    if held:
        val = tuple(t[torch.tensor([i for i, _ in held])] for t in train)
        train = tuple(t[torch.tensor([i for i, _ in kept])] for t in train)
    check_fashion_preset(augment)
    does = preset_named(augment)
    shift = -1 if augment == "none" else shift_pixels(train[0].shape[-1]) if does.shift else 0
    return TensorSource(FASHION_MNIST, train, test, FASHION_CLASSES, FASHION_MEAN, FASHION_STD, resolution, seed,
                        shift, val, does.flip)


def write_samples(out, count: int = 5, refuse=None) -> list[Path]:
    """The first `count` Fashion-MNIST test images as PNG files named by their class, to
    try `mobilenet predict` on. `refuse(paths)` is called before any is written: the
    caller's check that none of them is a file of the user's (run/ownership.py)."""
    from PIL import Image, PngImagePlugin

    from ..files import PRODUCER, atomic_write_bytes, make_dir

    images, labels = load_fashion_mnist("test")
    count = min(count, len(labels))
    paths = [Path(out) / f"{i:05d}_{FASHION_CLASSES[labels[i]].replace('/', '-').replace(' ', '-')}.png"
             for i in range(count)]
    if refuse:
        refuse(paths)
    make_dir(out)
    mark = PngImagePlugin.PngInfo()
    mark.add_text("Software", PRODUCER)  # the mark that makes them ours to replace
    for i, path in enumerate(paths):
        buf = io.BytesIO()
        Image.fromarray(images[i, 0].numpy(), "L").save(buf, format="PNG", pnginfo=mark)
        atomic_write_bytes(path, buf.getvalue())
    return paths
