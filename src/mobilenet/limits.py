"""The limits on every number a user gives, in one table: the CLI's argument types,
TrainConfig.validate and MobileNetConfig all check against it. No torch."""

from __future__ import annotations

import math
import os

MIN_WIDTH, MAX_WIDTH = 1 / 32, 4.0  # α below 1/32 leaves the first layer with no channel
MIN_RESOLUTION, MAX_RESOLUTION = 32, 4096  # 32 = the body's total stride
EVAL_BATCH_SIZE = 256  # images per batch wherever a model is evaluated or checked
IMBALANCE = 5.0  # the largest training class over the smallest: the report warns, --class-weights auto weights

# name: (low, high, kind)
LIMITS = {
    "num_classes": (1, 10**6, int), "width": (MIN_WIDTH, MAX_WIDTH, float),
    "resolution": (MIN_RESOLUTION, MAX_RESOLUTION, int), "in_channels": (1, 64, int),
    "dropout": (0.0, 0.999, float), "epochs": (1, 100_000, int), "batch_size": (2, 65_536, int),
    "lr": (1e-8, 100.0, float), "weight_decay": (0.0, 1.0, float), "seed": (0, 2**63 - 1, int),
    "limit": (2, 10**9, int), "val_split": (0.01, 0.99, float), "test_split": (0.01, 0.99, float),
    "patience": (1, 100_000, int), "workers": (0, 64, int),
    "top_k": (1, 10**6, int), "calibration": (1, 100_000, int), "count": (1, 10_000, int),
    "seconds": (0.01, 3600.0, float), "ema": (0.0, 0.99999, float), "random_erasing": (0.0, 1.0, float),
    "label_smoothing": (0.0, 0.5, float), "jobs": (1, 64, int), "budget_ms": (1e-3, 1e6, float),
    "budget_mb": (1e-3, 1e6, float),
}


def check_number(name: str, value, label: str | None = None, exact: bool = False) -> None:
    """ValueError unless `value` is a number within LIMITS[name] (named `label` in the
    message). exact: a whole number must be an int, not 3.0 (which JSON may give)."""
    low, high, kind = LIMITS[name]
    if exact and kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{label or name} must be a whole number, got {value!r}")
    _check_number(label or name, value, low, high, kind)


def finite_number(value, whole: bool = False) -> bool:
    """Whether `value`, as JSON or a checkpoint gives it, is a finite number (an int when
    `whole`): what a record's figure must be. A bool is no number."""
    return isinstance(value, int if whole else (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(name: str, value, low: float, high: float, kind=float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        kind is int and not float(value).is_integer()
    ):
        raise ValueError(f"{name} must be a {'whole ' if kind is int else ''}number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


LABEL_FILES = (".csv", ".jsonl")  # what --data takes besides a folder: a label file (data/labels.py)


def check_data(path, error: type[Exception]):
    """`path` when it is a folder or a label file; else `error` (the parser, the training
    options and the data reader each raise their own kind) saying what --data takes."""
    if os.path.isdir(path) or (str(path).lower().endswith(LABEL_FILES) and os.path.isfile(path)):
        return path
    raise error(f"{str(path)!r}: no such folder or label file; give 'fashion-mnist', a folder with one sub-folder "
                "per class, or a label file (.csv or .jsonl)")
