"""Any folder of images (torchvision's ImageFolder convention), read by a DataLoader whose
workers live from epoch to epoch."""

from __future__ import annotations

import os
import signal
import weakref
from pathlib import Path

import torch

from ..errors import MobileNetError
from ..seeds import TRIAL_ORDER, mix
from .augment import folder_transforms
from .batches import Batch, Source, balanced_weights, class_counts, epoch_order, subset, test_share, validation_split
from .images import IMAGENET_MEAN, IMAGENET_STD, crop_input_spec, load_image
from .labels import one_hot
from .splits import data_splits

PREFETCH = 4  # batches each DataLoader worker prepares ahead (benchmarks/train_throughput.py --folder)


class _ImageFiles(torch.utils.data.Dataset):
    """(epoch, index) -> (tensor | None, label, error | None) of the (path, label) samples.
    Augmentation is seeded by (seed, epoch, index), so it does not depend on workers or on
    resuming; the epoch comes with the index because persistent workers keep their own copy.
    With `classes` (a multi-label set), a label is a tuple of classes, given as 0/1 per class."""

    def __init__(self, samples, transform, channels, seed, classes: int | None = None):
        self.samples, self.transform, self.channels, self.seed = samples, transform, channels, seed
        self.classes = classes

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        epoch, i = key
        path, label = self.samples[i]
        if self.classes:
            label = torch.from_numpy(one_hot(label, self.classes))
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
    labels = [y for _, y in good]
    labels = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    return Batch(torch.stack([x for x, _ in good]), labels, bad)


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


class FolderSource(Source):
    """Images on disk, one sub-folder per class or named by a label file, read by a
    DataLoader with workers."""

    same_batches_on_every_rank = False  # a file that does not decode shrinks its batch

    def __init__(self, root, resolution: int, seed: int, test_split: float = 0.2, limit: int | None = None,
                 workers: int | None = None, channels: int = 3, augment: str = "flip-shift",
                 val_split: float | None = None, multi_label: bool | None = None):
        found = data_splits(root, test_split, seed)
        self.classes, train, test, self.split = found["classes"], found["train"], found["test"], found["split"]
        train, test, self.multi_label = _tasked(root, train, test, multi_label)
        many = len(self.classes) if self.multi_label else None
        self.skipped = found["skipped"]  # links out of the folder and names that are no regular file
        # absolute, so that evaluate finds the data from any working directory
        self.name, self.resolution, self.seed, self.in_channels = str(Path(root).resolve()), resolution, seed, channels
        self.mean, self.std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
        if limit:
            train = [train[i] for i in subset(len(train), limit, seed).tolist()]
        train, val = validation_split(train, val_split, seed)
        self.workers = min(4, os.cpu_count() or 1) if workers is None else workers
        self._loaders = {}  # (split, batch size) -> DataLoader: its workers live from epoch to epoch
        # Its workers ignore SIGTERM (_start_workers), so multiprocessing's exit handler, which
        # terminates and then joins them, would wait forever for any still alive at exit.
        weakref.finalize(self, _stop_workers, self._loaders)
        self.train_set = _ImageFiles(train, None, channels, seed, many)
        self.weights = None  # set_sampler's
        self.set_augment(augment)
        plain = folder_transforms(resolution, self.mean, self.std)
        self.test_set = _ImageFiles(test, plain, channels, seed, many)
        self.val_set = _ImageFiles(val, plain, channels, seed, many) if val else None
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

    def set_sampler(self, sampler: str) -> None:
        """How training images are drawn: "shuffle", or "balanced" (batches.balanced_weights)."""
        if sampler == "balanced" and self.multi_label:
            raise MobileNetError("--sampler balanced draws by an image's one class; with several labels per image "
                                 "use --sampler shuffle and --class-weights")
        self.weights = balanced_weights([label for _, label in self.train_set.samples], sampler)

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
                              self.in_channels, self.seed, self.train_set.classes)
        order = (epoch_order(len(samples), mix(self.seed, TRIAL_ORDER), epoch, 0, 1) if shuffle
                 else torch.arange(len(samples)))
        loader = _loader(dataset, batch_size, self.workers if workers is None else workers, kept=False)
        yield from _start_workers(_set_pass(loader, epoch, order))

    def train_batches(self, epoch: int, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1):
        order = epoch_order(self.num_train, self.seed, epoch, rank, world, self.weights)
        order = order[start_step * batch_size: self.steps_per_epoch(batch_size, world) * batch_size]
        yield from self._batches("train", order, batch_size, epoch)

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1):
        yield from self._batches("test", test_share(self.num_test, rank, world), batch_size)

    def val_batches(self, batch_size: int, rank: int = 0, world: int = 1):
        yield from self._batches("val", test_share(self.num_val, rank, world), batch_size)

    def input_spec(self) -> dict:
        return crop_input_spec(self.in_channels, self.resolution, self.mean, self.std)

    def provenance(self) -> dict:
        return {"name": self.name, **self.split}


def _tasked(root, train: list, test: list, multi_label: bool | None) -> tuple[list, list, bool]:
    """The samples as the task needs them: with several labels per image (multi_label, or
    None and the label file gives some image several), every label a tuple of classes."""
    several = any(isinstance(label, tuple) for _, label in train + test)
    if multi_label is False and several:
        raise MobileNetError(f"{root} gives some images several labels; train them with --task multi-label "
                             "(or auto)")
    if not (several or multi_label):
        return train, test, False
    as_tuples = [[(path, label if isinstance(label, tuple) else (label,)) for path, label in part]
                 for part in (train, test)]
    return *as_tuples, True
