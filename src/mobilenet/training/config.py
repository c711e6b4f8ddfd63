"""TrainConfig: the one place a training run's options are written. Each field holds its
default and, in its metadata, its `mobilenet train` flag, help text, limit (a limits.LIMITS
entry) and choices: the CLI builds the subcommand from them, and validate() checks the same.
No torch at import: the CLI reads this module to build its parser."""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from pathlib import Path

from ..data.augment import AUGMENTATIONS, check_fashion_preset
from ..data.images import FASHION_MNIST
from ..errors import BadArgument, MobileNetError
from ..limits import check_data, check_number
from ..run.names import SELECT_BY
from .balance import CLASS_WEIGHTS, SAMPLERS

LR = {"sgd": 0.1, "rmsprop": 0.01, "adamw": 2e-3}  # at batch 128; scaled linearly with batch
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = {"off": None, "on": "default", "graphs": "reduce-overhead"}  # --compile: torch.compile's mode
# --task: one class per image (softmax), or several (a sigmoid per class); auto: as the label file says
TASKS = {"auto": None, "single-label": False, "multi-label": True}


def option(default, flag: str, help: str, *, number: bool = False, choices=None, metavar: str | None = None,
           folder: bool = False):
    """A field that is a `mobilenet train` option. number: limited by LIMITS[the flag's name];
    folder: 'fashion-mnist' or a folder (the CLI checks it exists). help is argparse's: % as %%."""
    return field(default=default, metadata={
        "flag": flag, "help": help, "limit": flag[2:].replace("-", "_") if number else None,
        "choices": tuple(choices) if choices else None, "metavar": metavar, "folder": folder})


@dataclass(frozen=True)
class TrainConfig:
    """A training run's settings; `train(cfg)` checks them (validate) before it makes a folder.
    Frozen: settings.settle makes the run's own, defaults filled, with dataclasses.replace."""

    data: str = option(FASHION_MNIST, "--data", "'fashion-mnist' (default), a folder with one sub-folder per "
                       "class, or a label file (.csv with path,label, or .jsonl)", folder=True)
    epochs: int = option(50, "--epochs", "default 50, the full run's budget (docs/training.md)", number=True)
    width_mult: float = option(1.0, "--width", "width multiplier α (default 1.0)", number=True)
    resolution: int | None = option(  # None: FASHION_RESOLUTION or FOLDER_RESOLUTION
        None, "--resolution", "input size ρ (default 64 for Fashion-MNIST, 224 for folders)", number=True)
    batch_size: int = option(64, "--batch-size", "images per step, per process (default 64)", number=True)
    lr: float | None = option(  # None: LR[optimizer] × batch_size / 128
        None, "--lr", "peak learning rate (default: by optimizer, scaled with the batch size)", number=True)
    optimizer: str = option("sgd", "--optimizer", "sgd (default; Nesterov momentum 0.9), rmsprop as the paper, "
                            "or adamw", choices=LR)
    weight_decay: float = option(  # paper §3.2; benchmarks/recipe.py
        5e-4, "--weight-decay", "L2 on conv and FC weights, not on depthwise filters or BN (default 5e-4)",
        number=True)
    init: str | None = option(None, "--init", "start from weights: timm:mobilenetv1_100.ra4_e3600_r224_in1k "
                              "(internet), a timm checkpoint file, or a model.safetensors of ours (default none: "
                              "from scratch)")
    augment: str = option(
        "auto", "--augment", "training augmentation: none, shift, flip-shift, crop, crop-flip (docs/training.md "
        "has which for what), or auto (default): Fashion-MNIST's recipe (flip-shift), or for a folder a short "
        "trial on held-out training images; random erasing is --random-erasing", choices=AUGMENTATIONS)
    dropout: float = option(0.0, "--dropout", "dropout before the FC layer (default 0, as the paper)", number=True)
    ema: float | None = option(  # None or 0: no EMA
        0.999, "--ema", "decay of an exponential moving average of the weights (BN statistics too); it is "
        "evaluated beside the weights and saved (default 0.999; 0 turns it off)", number=True, metavar="DECAY")
    random_erasing: float | None = option(  # None: by data
        None, "--random-erasing", "erase a random rectangle (2-33%% of the image) with noise, with probability P "
        "(default 0.5 on Fashion-MNIST, 0 on folders)", number=True, metavar="P")
    label_smoothing: float = option(  # the test loss stays plain cross-entropy
        0.0, "--label-smoothing", "label smoothing of the training loss (default 0)", number=True)
    class_weights: str = option(  # settled: auto becomes what it chose, so a resume keeps it
        "auto", "--class-weights", "weight the training loss by class: inverse (N / classes / n), effective "
        "(Cui et al.'s (1-β)/(1-β^n)), none, or auto (default): effective when the largest training class has over "
        "5× the images of the smallest and the sampler shuffles", choices=CLASS_WEIGHTS)
    sampler: str = option(  # settled: auto becomes what it chose, so a resume keeps it
        "auto", "--sampler", "shuffle: every training image once an epoch; balanced: as many images drawn, with "
        "replacement, every class equally often (then --class-weights auto weights nothing); or auto (default): "
        "balanced when the largest training class has over 5× the images of the smallest", choices=SAMPLERS)
    activation: str = field(default="relu", metadata={"flag": None})  # no flag: --init's weights may set it
    seed: int = option(0, "--seed", "seeds the weights, the shuffle and the augmentation (default 0)", number=True)
    out: str | None = option(None, "--out", "run folder (default runs/<dataset>-<timestamp>)")
    force: bool = option(False, "--force", "replace files in --out that mobilenet did not write (default off: "
                         "refuse, exit 2)")
    limit: int | None = option(None, "--limit", "train on only N images (default: all)", number=True)
    test_split: float = option(0.2, "--test-split", "fraction held out as the test split of a folder without "
                               "train/ and val/ (default 0.2)", number=True)
    val_split: float | None = option(
        None, "--val-split", "hold out F of the training images (seeded, stratified) and keep the epoch that does "
        "best on them (default off: keep the last epoch; the test split never chooses)", number=True, metavar="F")
    patience: int | None = option(None, "--patience", "with --val-split: stop after N epochs without a better "
                                  "validation score (default off)", number=True, metavar="N")
    task: str = option(  # settled: auto becomes what the data gave
        "auto", "--task", "single-label: one class per image (softmax); multi-label: any number per image (a "
        "sigmoid per class and a threshold per class chosen on --val-split); auto (default): multi-label when the "
        "label file gives an image several labels", choices=TASKS)
    select_by: str = option(  # settled: auto becomes top1 or map
        "auto", "--select-by", "with --val-split: the validation score that chooses the kept epoch: top1, or "
        "balanced-accuracy or macro-f1, which weigh every class alike, or map (multi-label); auto (default): top1, "
        "or map for a multi-label run", choices=("auto", *SELECT_BY))
    strict: bool = option(False, "--strict", "stop at a file that does not decode (default off: skip it and "
                          "count it)")
    workers: int | None = option(None, "--workers", "DataLoader workers for image folders (default: up to 4, one "
                                 "per core)", number=True)
    device: str = option("auto", "--device", "auto (default) takes a GPU when there is one", choices=DEVICES)
    compile: str = option("off", "--compile", "torch.compile the training and evaluation steps: on, or graphs "
                          "(with CUDA graphs, mode reduce-overhead); the first epoch waits for the compiler "
                          "(default off)", choices=COMPILE_MODES)

    def validate(self) -> None:
        for f in fields(self):
            value, m = getattr(self, f.name), f.metadata
            if m.get("limit") and not (value is None and "None" in str(f.type)):  # `X | None`: off, or by data
                try:
                    check_number(m["limit"], value, m["flag"], exact=True)
                except ValueError as e:
                    raise BadArgument(str(e)) from None
            if m.get("choices") and value not in m["choices"]:
                raise BadArgument(f"{m['flag']} must be one of {', '.join(m['choices'])}, got {value!r}")
        if self.patience and not self.val_split:
            raise BadArgument("--patience needs --val-split: early stopping looks at the validation images only")
        if self.select_by not in ("auto", "top1") and not self.val_split:
            raise BadArgument(f"--select-by {self.select_by} needs --val-split: the kept epoch is chosen on the "
                              "validation images only")
        if self.data == FASHION_MNIST:
            check_fashion_preset(self.augment)
            if self.task == "multi-label":
                raise BadArgument("--task multi-label needs a label file (--data labels.csv): Fashion-MNIST gives "
                                  "each image one class")
        if self.device == "cuda":
            import torch  # not at the top: the CLI's parser reads this module, and some commands run without torch

            if not torch.cuda.is_available():
                raise MobileNetError("--device cuda: no CUDA device is available here; use --device cpu")
        if self.data != FASHION_MNIST:
            check_data(Path(self.data), BadArgument)


def cli_fields() -> list[Field]:
    """The fields that are `mobilenet train` options, in --help's order."""
    return [f for f in fields(TrainConfig) if f.metadata.get("flag")]
