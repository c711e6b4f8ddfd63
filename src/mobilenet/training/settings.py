"""A run's settings: a new run's TrainConfig, or on --resume the checkpoint's (with what may
change), with the defaults that depend on the data resolved, so the checkpoint says what ran."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from ..data.augment import FASHION_PRESET
from ..data.images import FASHION_MNIST
from ..errors import MobileNetError
from ..run.folder import load_checkpoint, upgrade_checkpoint
from ..run.names import CHECKPOINT
from .config import TrainConfig

FASHION_ERASING = 0.5  # --random-erasing's default on Fashion-MNIST; folders: 0 (benchmarks/recipe.py)


def run_settings(cfg: TrainConfig, out: Path, resume: bool, dist) -> tuple[TrainConfig, dict | None]:
    """The run's settings: `cfg` for a new run; the checkpoint's, with what may change, on resume."""
    checkpoint = None
    if resume:
        checkpoint = upgrade_checkpoint(load_checkpoint(out / CHECKPOINT))
        args = checkpoint["train_config"]
        saved = TrainConfig(**{k: v for k, v in args.items() if k in {f.name for f in fields(TrainConfig)}})
        if saved.data != FASHION_MNIST and not os.path.isabs(saved.data):  # ours are absolute (build.build_run)
            raise MobileNetError(f"--resume: the checkpoint's data folder {saved.data!r} is not an absolute path, "
                                 "so this run was not written by `mobilenet train`; start a new run in another --out")
        if saved.data != FASHION_MNIST and not Path(saved.data).is_dir():
            raise MobileNetError(f"--resume: the run's data folder {saved.data} is gone; put it back to continue")
        saved.epochs = cfg.epochs or saved.epochs  # a resumed run may be extended
        saved.lr = cfg.lr or saved.lr
        saved.out, saved.device, saved.workers, saved.compile = str(out), cfg.device, cfg.workers, cfg.compile
        cfg = saved
    elif dist.from_main(float((out / CHECKPOINT).exists()))[0]:  # every rank refuses together
        raise MobileNetError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
    if cfg.augment == "auto" and cfg.data == FASHION_MNIST:  # a folder's is its trial's (build.build_run)
        cfg.augment = FASHION_PRESET
    if cfg.random_erasing is None:  # stored resolved, so a resume or a re-read config says what ran
        cfg.random_erasing = FASHION_ERASING if cfg.data == FASHION_MNIST else 0.0
    cfg.ema = cfg.ema or None
    cfg.validate()
    return cfg, checkpoint
