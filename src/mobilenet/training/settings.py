"""A run's settings, settled once. `run_settings` takes the user's TrainConfig for a new run,
or on --resume the checkpoint's with what may change, and validates it once; `settle` makes
the frozen config the run trains with, its checkpoint stores and a resume reads, every
default filled. A default is taken from the first of these that gives it:

1. the user's options: anything given is kept;
2. --init's weights: the activation they were trained with;
3. --augment auto's trial: a folder's preset;
4. the data's facts: Fashion-MNIST's preset and random erasing (a folder's: none), the
   input size ρ, a folder's absolute path, so that a resume finds it from anywhere,
   --class-weights auto's choice by the training split's class counts, and --task auto's
   and --select-by auto's by whether the label file gives an image several labels.

--lr and --device stay rules (by optimizer and global batch; a GPU when there is one):
a resume may run on another machine or with another number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..data.augment import FASHION_PRESET
from ..data.images import FASHION_MNIST
from ..errors import BadArgument, MobileNetError
from ..run.folder import load_checkpoint
from ..run.names import CHECKPOINT, MULTI_LABEL_ONLY, SELECT_BY, SINGLE_LABEL_ONLY
from .balance import settled, settled_sampler
from .config import TrainConfig

# Defaults chosen by measurement; docs/training.md's "How the defaults were chosen" has the numbers.
FASHION_ERASING = 0.5  # --random-erasing's default on Fashion-MNIST; folders: 0 (benchmarks/recipe.py)
FASHION_RESOLUTION = 64  # 28×28 upsampled to 64×64: the best of 32, 48, 64 measured (docs/results.md)
FOLDER_RESOLUTION = 224  # the paper's input size


def run_settings(cfg: TrainConfig, out: Path, resume: bool, dist) -> tuple[TrainConfig, dict | None]:
    """The run's options, and its checkpoint on resume: `cfg` (validated by train()) for a new
    run; on resume the checkpoint's, with what may change taken from `cfg`, validated here."""
    if not resume:
        if dist.from_main(float((out / CHECKPOINT).exists()))[0]:  # every rank refuses together
            raise MobileNetError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
        return replace(cfg, out=str(out)), None
    checkpoint = load_checkpoint(out / CHECKPOINT)
    # runs from before --class-weights, --sampler and --task had none
    args = {"class_weights": "none", "sampler": "shuffle", "task": "single-label", **checkpoint["train_config"]}
    saved = TrainConfig(**{k: v for k, v in args.items() if k in {f.name for f in fields(TrainConfig)}})
    if saved.data != FASHION_MNIST and not os.path.isabs(saved.data):  # ours are absolute (settle)
        raise MobileNetError(f"--resume: the checkpoint's data {saved.data!r} is not an absolute path, "
                             "so this run was not written by `mobilenet train`; start a new run in another --out")
    if saved.data != FASHION_MNIST and not Path(saved.data).exists():
        raise MobileNetError(f"--resume: the run's data {saved.data} is gone; put it back to continue")
    saved = replace(saved, epochs=cfg.epochs or saved.epochs,  # a resumed run may be extended
                    lr=cfg.lr or saved.lr, out=str(out), device=cfg.device, workers=cfg.workers, compile=cfg.compile)
    saved.validate()
    return saved, checkpoint


@dataclass(frozen=True)
class Facts:
    """What a run learns before its first step that may fill an option left open."""
    activation: str | None = None  # --init's weights'
    preset: str | None = None  # --augment auto's trial's, on a folder
    class_counts: tuple[int, ...] = ()  # the training split's images per class
    multi_label: bool = False  # the source's labels: several per image


def settle(cfg: TrainConfig, facts: Facts = Facts()) -> TrainConfig:
    """`cfg` with every default filled, in the module docstring's order."""
    fashion = cfg.data == FASHION_MNIST
    augment = cfg.augment if cfg.augment != "auto" else facts.preset or data_preset(cfg)
    multi = facts.multi_label
    # without --val-split nothing is chosen, and a resume's checks must not ask for one
    select_by = cfg.select_by if cfg.select_by != "auto" else "map" if multi and cfg.val_split else "top1"
    other = SINGLE_LABEL_ONLY if multi else MULTI_LABEL_ONLY  # choices the other task alone can score
    if select_by in other:
        raise BadArgument(f"--select-by {select_by} cannot score a {'multi' if multi else 'single'}-label run; use "
                          f"{', '.join(c for c in SELECT_BY if c not in other)}")
    # a balanced draw is by an image's one class
    sampler = "shuffle" if multi and cfg.sampler == "auto" else settled_sampler(cfg.sampler, list(facts.class_counts))
    return replace(cfg, activation=facts.activation or cfg.activation, augment=augment, select_by=select_by,
                   task="multi-label" if multi else "single-label",
                   data=cfg.data if fashion else str(Path(cfg.data).resolve()), resolution=data_resolution(cfg),
                   random_erasing=(FASHION_ERASING if fashion else 0.0) if cfg.random_erasing is None
                   else cfg.random_erasing, ema=cfg.ema or None,
                   sampler=sampler, class_weights=settled(cfg.class_weights, list(facts.class_counts), sampler))


def data_resolution(cfg: TrainConfig) -> int:
    """ρ: the user's, or the data's default."""
    return cfg.resolution or (FASHION_RESOLUTION if cfg.data == FASHION_MNIST else FOLDER_RESOLUTION)


def data_preset(cfg: TrainConfig) -> str:
    """The preset a source opens with: the user's, or Fashion-MNIST's with auto; a folder's
    auto stays auto (no augmentation) until its trial has chosen."""
    return FASHION_PRESET if cfg.augment == "auto" and cfg.data == FASHION_MNIST else cfg.augment
