"""What every data source gives the training loop: batches of normalised float images at the
model's input size with their labels and the files that did not decode, and the seeded
orders and shares behind them. Randomness is a function of (seed, epoch, step or image
index) only (seeds.py), so an interrupted run resumes exactly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..seeds import BALANCED, LIMIT, generator, mix, stratified_split


@dataclass
class Batch:
    images: torch.Tensor  # (N, C, R, R) float, normalised
    labels: torch.Tensor  # (N,) int64, or (N, classes) float 0/1 for several labels per image
    bad_files: list[str] = field(default_factory=list)  # "path: reason" of files left out

    def __iter__(self):  # images, labels, bad_files: what metrics.evaluate_batches reads
        return iter((self.images, self.labels, self.bad_files))


@runtime_checkable
class Source(Protocol):
    """A data set as the loop, evaluate and the report read it: fashion.TensorSource (in
    memory) and folder.FolderSource (files) both are one."""

    name: str  # "fashion-mnist", or the folder's absolute path
    classes: list[str]
    resolution: int
    in_channels: int
    same_batches_on_every_rank: bool  # False where a file that does not decode shrinks its batch
    multi_label: bool  # labels are 0/1 per class (several per image), not one class index

    @property
    def num_train(self) -> int: ...

    @property
    def num_val(self) -> int: ...

    @property
    def num_test(self) -> int: ...

    def class_counts(self) -> dict[str, list[int]]:
        """Images per class in each split: train, validation (zeros without one) and test."""
        ...

    def set_sampler(self, sampler: str) -> None:
        """How train_batches draws: "shuffle" (each image once an epoch, the default) or
        "balanced" (epoch_order's weighted draw)."""
        ...

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        return steps(self.num_train // world, batch_size)

    def to(self, device) -> "Source":
        """The source with its images on `device`; files stay where they are (the loop moves
        each batch), so by default nothing moves."""
        return self

    def train_batches(self, epoch: int, batch_size: int, start_step: int = 0, rank: int = 0,
                      world: int = 1) -> Iterator[Batch]: ...

    def val_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[Batch]: ...

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[Batch]: ...

    def input_spec(self) -> dict:
        """What predict and export need to prepare an image like the test images."""
        ...

    def provenance(self) -> dict: ...


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


def class_counts(labels: list, num_classes: int) -> list[int]:
    """Images per class; an image with several labels (a tuple) counts for each."""
    flat = [c for label in labels for c in (label if isinstance(label, tuple) else (label,))]
    return np.bincount(np.asarray(flat, np.int64), minlength=num_classes).tolist()


def subset(n: int, limit: int, seed: int) -> torch.Tensor:
    """--limit: a seeded choice of `limit` of the n training images."""
    return torch.randperm(n, generator=generator("cpu", seed, LIMIT))[:limit]


def balanced_weights(labels, sampler: str = "shuffle") -> torch.Tensor | None:
    """--sampler balanced: each training image's chance of being drawn, 1 / its class's
    images, so that every class is drawn equally often; None for a shuffle."""
    if sampler != "balanced":
        return None
    labels = torch.as_tensor(labels, dtype=torch.long)
    return 1.0 / torch.bincount(labels)[labels].double()


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """This process's indices for one epoch. One process: a permutation seeded by
    (seed, epoch). Several (torchrun): torch's DistributedSampler with set_epoch, each rank
    an equal, disjoint share (the remainder is dropped, so no image is seen twice).
    With `weights` (balanced_weights), n images drawn with replacement by weight, the same
    draw on every rank, of which each takes every world-th."""
    if weights is not None:
        drawn = torch.multinomial(weights, n, replacement=True, generator=generator("cpu", seed, epoch, BALANCED))
        return drawn[rank:(n // world) * world:world]
    if world == 1:
        return torch.randperm(n, generator=generator("cpu", seed, epoch))
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                                  seed=mix(seed) % 2**31, drop_last=True)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def test_share(n: int, rank: int, world: int) -> torch.Tensor:
    # Every test image exactly once across the ranks: a strided share, no padding.
    return torch.arange(rank, n, world)


def steps(n: int, batch_size: int) -> int:
    # A last batch of one image is dropped: BatchNorm needs two.
    steps = n // batch_size
    return steps + (n % batch_size > 1)


def validation_split(samples: list, fraction: float | None, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded, stratified `fraction` of the (item, label) training
    samples held out; all of them kept when fraction is None."""
    if not fraction:
        return samples, []
    return stratified_split(samples, fraction, seed, "val")
