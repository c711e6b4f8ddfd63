"""Data: the embedded Fashion-MNIST default (in memory, augmented as whole batches) and
any folder of images (torchvision ImageFolder convention, read by a DataLoader).

Both give the training loop the same thing: batches of normalised float images at the
model's input size, and a list of files that did not decode. Randomness is a function of
(seed, epoch, step or image index) only (seeds.py), so an interrupted run resumes exactly.
"""

from __future__ import annotations

import io
import os
import signal
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MobileNetError
from ..seeds import LIMIT, TRIAL_ORDER, generator, mix, stratified_split
from .augment import FASHION_PRESET, check_fashion_preset, flip_and_shift, flips, folder_transforms, shift_pixels
from .images import (
    FASHION_CLASSES, FASHION_MNIST, IMAGENET_MEAN, IMAGENET_STD, crop_input_spec, fashion_files, fashion_mnist_dir,
    folder_splits, load_image, read_idx,
)

FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)  # of the 60,000 training images
PREFETCH = 4  # batches each DataLoader worker prepares ahead (benchmarks/train_throughput.py --folder)


# --- Fashion-MNIST ------------------------------------------------------------------

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


# --- what every source gives the training loop -------------------------------------

@dataclass
class Batch:
    images: torch.Tensor  # (N, C, R, R) float, normalised
    labels: torch.Tensor  # (N,) int64
    bad_files: list[str] = field(default_factory=list)  # "path: reason" of files left out

    def __iter__(self):  # images, labels, bad_files: what metrics.evaluate_batches reads
        return iter((self.images, self.labels, self.bad_files))


def normalize_resize(x: torch.Tensor, mean, std, resolution: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> normalised float at resolution×resolution (bilinear), on x's
    device. mean and std: sequences, or float32 tensors there (made once: a tensor made from
    a list on a GPU is a blocking copy)."""
    x = x.float().div_(255)
    mean, std = (torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for v in (mean, std))
    x = (x - mean) / std
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x


class TensorSource:
    """A data set held in memory as uint8 tensors (Fashion-MNIST): no per-image Python.
    After .to(device) the images live there (a GPU's memory) and batches are sliced,
    augmented and normalised there: a step waits on no copy from the host."""

    same_batches_on_every_rank = True  # every rank's share has the same size; no file can fail

    def __init__(self, name, train, test, classes, mean, std, resolution, seed, shift=2, val=None, flip=True):
        # shift: pixels of random translation (0: none; -1: no augmentation at all); flip: random mirroring
        (self.train_x, self.train_y), (self.test_x, self.test_y) = train, test
        self.flip = flip
        self.val_x, self.val_y = val or (None, None)
        self.name, self.classes, self.mean, self.std = name, classes, mean, std
        self.resolution, self.seed, self.shift = resolution, seed, shift
        self.in_channels = self.train_x.shape[1]
        self._mean_std = tuple(torch.tensor(v, dtype=torch.float32) for v in (mean, std))

    @property
    def num_train(self) -> int:
        return len(self.train_y)

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

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        return _steps(self.num_train // world, batch_size)

    def train_batches(self, epoch: int, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1):
        # the epoch's order is drawn on the host (as on the CPU) and copied once
        order = _epoch_order(self.num_train, self.seed, epoch, rank, world).to(self.device)
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
        share = _test_share(len(labels), rank, world).to(self.device)  # every image exactly once across the ranks
        for i in range(0, len(share), batch_size):
            idx = share[i:i + batch_size]
            yield Batch(normalize_resize(images[idx], *self._mean_std, self.resolution), labels[idx])

    def input_spec(self) -> dict:
        """What predict and export need to prepare an image like the test images."""
        return {"channels": self.in_channels, "image_size": self.train_x.shape[-1],
                "resolution": self.resolution, "mean": list(self.mean), "std": list(self.std)}

    def provenance(self) -> dict:
        return {"name": self.name}


def class_counts(labels: list[int], num_classes: int) -> list[int]:
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes).tolist()


def _subset(n: int, limit: int, seed: int) -> torch.Tensor:
    """--limit: a seeded choice of `limit` of the n training images."""
    return torch.randperm(n, generator=generator("cpu", seed, LIMIT))[:limit]


def _epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> torch.Tensor:
    """This process's indices for one epoch. One process: a permutation seeded by
    (seed, epoch). Several (torchrun): torch's DistributedSampler with set_epoch, each rank
    an equal, disjoint share (the remainder is dropped, so no image is seen twice)."""
    if world == 1:
        return torch.randperm(n, generator=generator("cpu", seed, epoch))
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                                  seed=mix(seed) % 2**31, drop_last=True)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def _test_share(n: int, rank: int, world: int) -> torch.Tensor:
    # Every test image exactly once across the ranks: a strided share, no padding.
    return torch.arange(rank, n, world)


def _steps(n: int, batch_size: int) -> int:
    # A last batch of one image is dropped: BatchNorm needs two.
    steps = n // batch_size
    return steps + (n % batch_size > 1)


def fashion_mnist(resolution: int, seed: int, limit: int | None = None, augment: str = "flip-shift",
                  val_split: float | None = None) -> TensorSource:
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    if limit:
        keep = _subset(len(train[1]), limit, seed)
        train = (train[0][keep], train[1][keep])
    kept, held = _validation(list(zip(range(len(train[1])), train[1].tolist())), val_split, seed)
    val = None
    if held:
        val = tuple(t[torch.tensor([i for i, _ in held])] for t in train)
        train = tuple(t[torch.tensor([i for i, _ in kept])] for t in train)
    augment = FASHION_PRESET if augment == "auto" else augment
    check_fashion_preset(augment)
    shift = -1 if augment == "none" else shift_pixels(train[0].shape[-1]) if augment.endswith("shift") else 0
    return TensorSource(FASHION_MNIST, train, test, FASHION_CLASSES, FASHION_MEAN, FASHION_STD, resolution, seed,
                        shift, val, flips(augment))


def _validation(samples: list, fraction: float | None, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded, stratified `fraction` of the (item, label) training
    samples held out; all of them kept when fraction is None."""
    if not fraction:
        return samples, []
    return stratified_split(samples, fraction, seed, "val")


# --- any folder of images -----------------------------------------------------------

class _ImageFiles(torch.utils.data.Dataset):
    """(epoch, index) -> (tensor | None, label, error | None) of the (path, label) samples.
    Augmentation is seeded by (seed, epoch, index), so it does not depend on workers or on
    resuming; the epoch comes with the index because persistent workers keep their own copy."""

    def __init__(self, samples, transform, channels, seed):
        self.samples, self.transform, self.channels, self.seed = samples, transform, channels, seed

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        epoch, i = key
        path, label = self.samples[i]
        try:
            image = load_image(path, self.channels)
        except MobileNetError as e:
            return None, label, str(e)
        torch.manual_seed(mix(self.seed, epoch, i))
        return self.transform(image), label, None


def _collate(items):
    good = [(x, y) for x, y, err in items if err is None]
    bad = [err for _, _, err in items if err is not None]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), bad)
    return Batch(torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad)


class _InOrder(torch.utils.data.Sampler):
    """(epoch, index) for exactly these indices, in this order (an epoch's shuffle, from its
    resume point); set anew before each pass, since a loader with persistent workers is reused."""

    def __init__(self):
        self.epoch, self.order = 0, torch.empty(0, dtype=torch.long)

    def __iter__(self):
        epoch = self.epoch  # taken now: the next pass may set its own while this one's last batches load
        return ((epoch, i) for i in self.order.tolist())

    def __len__(self):
        return len(self.order)


def _start_workers(loader):
    """iter(loader), with SIGINT and SIGTERM blocked in the workers it forks: a terminal's
    Ctrl-C or a job scheduler signals every process of the job, and a worker killed by it
    would crash the trainer before it could save. The trainer alone handles them and stops its
    workers; they exit by themselves if it is killed."""
    if not loader.num_workers or not hasattr(signal, "pthread_sigmask"):
        return iter(loader)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:  # the forked workers inherit the mask; a signal that comes meanwhile waits for us
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _loader(dataset, batch_size: int, workers: int, kept: bool):
    """A DataLoader over `dataset` in the order of an _InOrder sampler (set per pass by
    _set_pass). kept: one for the whole run, with persistent workers and, with a GPU,
    pinned batches for non-blocking copies."""
    extra = dict(pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                 prefetch_factor=PREFETCH if workers else None) if kept else {}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=_InOrder(), num_workers=workers,
                                       collate_fn=_collate, **extra)


def _set_pass(loader, epoch: int, order):
    loader.sampler.epoch, loader.sampler.order = epoch, order
    return loader


def _stop_workers(loaders: dict) -> None:
    """Ends the persistent workers of these DataLoaders (as the loader does when collected)."""
    for loader in loaders.values():
        if getattr(loader, "_iterator", None) is not None:
            loader._iterator._shutdown_workers()
            loader._iterator = None


class FolderSource:
    """Images on disk, one sub-folder per class, read by a DataLoader with workers."""

    same_batches_on_every_rank = False  # a file that does not decode shrinks its batch

    def __init__(self, root, resolution: int, seed: int, test_split: float = 0.2, limit: int | None = None,
                 workers: int | None = None, channels: int = 3, augment: str = "flip-shift",
                 val_split: float | None = None):
        found = folder_splits(root, test_split, seed)
        self.classes, train, test, self.split = found["classes"], found["train"], found["test"], found["split"]
        self.skipped = found["skipped"]  # links out of the folder and names that are no regular file
        # absolute, so that evaluate finds the data from any working directory
        self.name, self.resolution, self.seed, self.in_channels = str(Path(root).resolve()), resolution, seed, channels
        self.mean, self.std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
        if limit:
            train = [train[i] for i in _subset(len(train), limit, seed).tolist()]
        train, val = _validation(train, val_split, seed)
        self.workers = min(4, os.cpu_count() or 1) if workers is None else workers
        self._loaders = {}  # (split, batch size) -> DataLoader: its workers live from epoch to epoch
        # Its workers ignore SIGTERM (_start_workers), so multiprocessing's exit handler, which
        # terminates and then joins them, would wait forever for any still alive at exit.
        weakref.finalize(self, _stop_workers, self._loaders)
        self.train_set = _ImageFiles(train, None, channels, seed)
        self.set_augment(augment)
        plain = folder_transforms(resolution, self.mean, self.std)
        self.test_set = _ImageFiles(test, plain, channels, seed)
        self.val_set = _ImageFiles(val, plain, channels, seed) if val else None
        self.samples = train, val or None  # (path, label) of the training and validation images: the trial's

    def set_augment(self, preset: str) -> None:
        """The training images' augmentation (augment.PRESETS; "auto" is decided by the trial)."""
        self.train_set.transform = folder_transforms(self.resolution, self.mean, self.std,
                                                     "none" if preset == "auto" else preset)
        stale = {key: self._loaders.pop(key) for key in list(self._loaders) if key[0] == "train"}
        _stop_workers(stale)  # their workers hold a copy of the old transform

    @property
    def num_train(self) -> int:
        return len(self.train_set)

    def class_counts(self) -> dict[str, list[int]]:
        """Images per class in each split: train, validation (zeros without one) and test."""
        sets = (("train", self.train_set), ("validation", self.val_set), ("test", self.test_set))
        return {name: class_counts([label for _, label in (found.samples if found else [])], len(self.classes))
                for name, found in sets}

    @property
    def num_test(self) -> int:
        return len(self.test_set)

    @property
    def num_val(self) -> int:
        return len(self.val_set) if self.val_set else 0

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        return _steps(self.num_train // world, batch_size)

    def _batches(self, split: str, order, batch_size: int, epoch: int = 0):
        """The batches of `split` in `order`, from a DataLoader kept for the run (_loader)."""
        key = (split, batch_size)
        if key not in self._loaders:
            self._loaders[key] = _loader(getattr(self, split + "_set"), batch_size, self.workers, kept=True)
        yield from _start_workers(_set_pass(self._loaders[key], epoch, order))

    def sample_batches(self, samples, preset: str, batch_size: int, epoch: int = 0, shuffle: bool = False,
                       workers: int | None = None):
        """Batches of these (path, label) samples with `preset`'s augmentation, seeded by
        (seed, epoch, index): --augment auto's trial. A loader of its own, not kept."""
        dataset = _ImageFiles(samples, folder_transforms(self.resolution, self.mean, self.std, preset),
                              self.in_channels, self.seed)
        order = (_epoch_order(len(samples), mix(self.seed, TRIAL_ORDER), epoch, 0, 1) if shuffle
                 else torch.arange(len(samples)))
        loader = _loader(dataset, batch_size, self.workers if workers is None else workers, kept=False)
        yield from _start_workers(_set_pass(loader, epoch, order))

    def train_batches(self, epoch: int, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1):
        order = _epoch_order(self.num_train, self.seed, epoch, rank, world)
        order = order[start_step * batch_size: self.steps_per_epoch(batch_size, world) * batch_size]
        yield from self._batches("train", order, batch_size, epoch)

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1):
        yield from self._batches("test", _test_share(self.num_test, rank, world), batch_size)

    def val_batches(self, batch_size: int, rank: int = 0, world: int = 1):
        yield from self._batches("val", _test_share(self.num_val, rank, world), batch_size)

    def input_spec(self) -> dict:
        return crop_input_spec(self.in_channels, self.resolution, self.mean, self.std)

    def provenance(self) -> dict:
        return {"name": self.name, **self.split}


def open_source(data: str, resolution: int, seed: int, limit: int | None = None, test_split: float = 0.2,
                workers: int | None = None, augment: str = "flip-shift", val_split: float | None = None):
    """The data named by --data: 'fashion-mnist' or a folder path; with val_split, a
    validation part held out of its training images."""
    if data == FASHION_MNIST:
        return fashion_mnist(resolution, seed, limit, augment, val_split)
    return FolderSource(data, resolution, seed, test_split, limit, workers, augment=augment, val_split=val_split)


def write_samples(out, count: int = 5) -> list[Path]:
    """The first `count` Fashion-MNIST test images as PNG files named by their class, to
    try `mobilenet predict` on."""
    from PIL import Image

    from ..files import atomic_write_bytes, make_dir

    images, labels = load_fashion_mnist("test")
    out = make_dir(out)
    paths = []
    for i in range(min(count, len(labels))):
        name = FASHION_CLASSES[labels[i]].replace("/", "-").replace(" ", "-")
        path = out / f"{i:05d}_{name}.png"
        buf = io.BytesIO()
        Image.fromarray(images[i, 0].numpy(), "L").save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
