"""Every seed a run draws from its --seed, in one table, and the one stratified split.

A random choice is seeded by mix(seed, ...): the run's seed, then the numbers that tell it
apart from every other choice (epoch, step, image index, rank), and for a choice made once
per run its salt below. The salts' values are fixed for good: another value would pick
other images, and a model folder's test split is found again from the seed it records.

Seeded without a salt:
    the model's initial weights     torch.manual_seed(seed)
    the test split                  stratified_split(..., "test"): the seed as given
    an epoch's shuffle              mix(seed, epoch); under torchrun DistributedSampler's, mix(seed) % 2**31
                                    (--sampler balanced: mix(seed, epoch, BALANCED), on every rank)
    a batch's flips and shifts      mix(seed, epoch, step), then the rank under torchrun (Fashion-MNIST)
    an image's augmentation         mix(seed, epoch, index) (an image folder)

No torch at import: the test split is made on the deployed path too.
"""

from __future__ import annotations

import numpy as np

from .errors import MobileNetError

DROPOUT = 1  # a training step's dropout: mix(seed, epoch, step, DROPOUT)
ERASING = 2  # a training step's random erasing: mix(seed, epoch, step, ERASING, rank)
LIMIT = 7  # --limit's choice of training images
VAL_SPLIT = 11  # --val-split's held-out training images
TRIAL_MODEL = 13  # --augment auto: the trial model's initial weights
TRIAL_SPLIT = 17  # --augment auto: the training images held out for the trial (no --val-split)
TRIAL_ORDER = 19  # --augment auto: the trial's shuffle, mixed again with the epoch
TRIAL_SUBSET = 23  # --augment auto: the held-out images it scores on, when there are too many
BALANCED = 29  # --sampler balanced: an epoch's draw, mixed with the epoch

# Each split's salt (None: the seed as given) and the option its fraction comes from.
SPLITS = {"test": (None, "--test-split"), "val": (VAL_SPLIT, "--val-split"),
          "trial": (TRIAL_SPLIT, "--augment auto"), "trial subset": (TRIAL_SUBSET, "--augment auto")}


def mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (stable across runs and processes)."""
    h = 1469598103934665603
    for n in numbers:
        h = ((h ^ (n & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def generator(device, *numbers: int):
    """A torch.Generator on `device` seeded by mix(*numbers): batches held on a GPU are
    augmented there, from the same numbers as on the CPU."""
    import torch  # here: the split below runs without torch

    return torch.Generator(device=device).manual_seed(mix(*numbers))


def stratified_split(samples, fraction: float, seed: int, part: str) -> tuple[list, list]:
    """(kept, held out) of the (item, label) samples for SPLITS[part]: round(n × fraction)
    of each class held out (at least one, never all), chosen by a numpy RNG seeded with
    (the run's seed, salted, and the class), so every path finds the same split. An image
    with several labels (a tuple) counts as its rarest label's, as iterative stratification
    starts from the rarest (Sechidis et al. 2011)."""
    salt, option = SPLITS[part]
    if not 0 < fraction < 1:
        raise MobileNetError(f"{option} must be between 0 and 1, got {fraction}")
    key = seed if salt is None else mix(seed, salt)
    by_class: dict[int, list] = {}
    stratum = _rarest(samples)
    for s in samples:
        by_class.setdefault(stratum(s[1]), []).append(s)
    kept, held = [], []
    for label, items in sorted(by_class.items()):
        items = [items[i] for i in np.random.default_rng([key, label]).permutation(len(items))]
        n_held = min(len(items) - 1, max(1, int(len(items) * fraction + 0.5))) if len(items) > 1 else 0
        held += items[:n_held]
        kept += items[n_held:]
    return kept, held


def _rarest(samples):
    """label -> its stratum: itself, or for a tuple of labels the one fewest images hold
    (images with none are a stratum of their own)."""
    if not any(isinstance(s[1], tuple) for s in samples):
        return lambda label: label
    count: dict[int, int] = {}
    for _, labels in samples:
        for label in labels:
            count[label] = count.get(label, 0) + 1
    none = max(count, default=-1) + 1  # a stratum of its own, after the classes' (an RNG key: not negative)
    return lambda labels: min(labels, key=lambda label: (count[label], label), default=none)
