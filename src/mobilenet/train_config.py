"""TrainConfig: a training run's settings and their checks (validate), apart from the loop
that runs them (training.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .augment import AUGMENTATIONS
from .config import COMPILE_MODES, FASHION_MNIST, check_number
from .errors import BadArgument, MobileNetError

LR = {"sgd": 0.1, "rmsprop": 0.01, "adamw": 2e-3}  # at batch 128; scaled linearly with batch


@dataclass
class TrainConfig:
    data: str = FASHION_MNIST  # 'fashion-mnist' or a folder, one sub-folder per class
    epochs: int = 50  # the seed's budget
    width_mult: float = 1.0  # α
    resolution: int | None = None  # ρ; None: FASHION_RESOLUTION or FOLDER_RESOLUTION
    batch_size: int = 64
    lr: float | None = None  # None: LR[optimizer] × batch_size / 128
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9), rmsprop (the paper's), adamw
    weight_decay: float = 5e-4  # not on depthwise filters, BN or biases (paper §3.2); benchmarks/recipe.py
    init: str | None = None  # start from weights: timm:NAME, a timm checkpoint, or a model.safetensors
    augment: str = "auto"  # a preset of augment.PRESETS (or flip); auto: Fashion-MNIST's recipe, or a folder's trial
    dropout: float = 0.0
    ema: float | None = 0.999  # decay of an EMA of the weights (BN buffers too); None or 0: no EMA
    random_erasing: float | None = None  # chance to erase a rectangle of a training image; None: by data
    label_smoothing: float = 0.0  # of the training loss (the test loss is plain cross-entropy)
    activation: str = "relu"
    seed: int = 0
    out: str | None = None  # None: runs/<dataset>-<timestamp>
    limit: int | None = None  # train on only this many images
    test_split: float = 0.2  # held out of a folder without train/ and val/ (or test/) as its test split
    val_split: float | None = None  # held out of the training images to choose the best epoch on; None: none
    patience: int | None = None  # with val_split: stop after this many epochs without a better val accuracy
    strict: bool = False  # a file that does not decode stops the run
    workers: int | None = None  # DataLoader workers for folders (None: up to 4)
    device: str = "auto"  # auto, cpu, cuda
    compile: str = "off"  # off; on: torch.compile; graphs: torch.compile with CUDA graphs (mode reduce-overhead)

    def validate(self) -> None:
        # None: off, or the default for the data
        optional = ("limit", "lr", "workers", "resolution", "ema", "val_split", "patience", "random_erasing")
        for name in ("epochs", "batch_size", "seed", "weight_decay", "dropout", "test_split", "width", "random_erasing",
                     "label_smoothing", *optional):
            value = getattr(self, "width_mult" if name == "width" else name)
            if not (value is None and name in optional):
                try:
                    check_number(name, value, "--" + name.replace("_", "-"), exact=True)
                except ValueError as e:
                    raise BadArgument(str(e)) from None
        if self.patience and not self.val_split:
            raise BadArgument("--patience needs --val-split: early stopping looks at the validation images only")
        if self.optimizer not in LR:
            raise BadArgument(f"--optimizer must be one of {', '.join(LR)}, got {self.optimizer!r}")
        if self.augment not in AUGMENTATIONS:
            raise BadArgument(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.data == FASHION_MNIST and self.augment.startswith("crop"):
            raise BadArgument(f"--augment {self.augment} is for image folders; Fashion-MNIST takes none, shift, "
                              "flip or flip-shift (auto: its recipe, flip-shift)")
        if self.compile not in COMPILE_MODES:
            raise BadArgument(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BadArgument(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise MobileNetError("--device cuda: no CUDA device is available here; use --device cpu")
        if self.data != FASHION_MNIST and not Path(self.data).is_dir():
            raise BadArgument(f"--data {self.data}: no such folder; give a folder with one sub-folder per class, "
                                 "or 'fashion-mnist'")
