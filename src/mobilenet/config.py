"""The paper's Table 1 as data, and the one model configuration. No torch here: the cost
report and the deployed (torch-free) path use it too.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", https://arxiv.org/abs/1704.04861
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields

# Table 1 of the paper, one row per layer of the body (input 224×224×3).
# kind, stride, out_channels (at width multiplier α = 1)
TABLE1: tuple[tuple[str, int, int], ...] = (
    ("conv", 2, 32),
    ("depthwise", 1, 32), ("pointwise", 1, 64),
    ("depthwise", 2, 64), ("pointwise", 1, 128),
    ("depthwise", 1, 128), ("pointwise", 1, 128),
    ("depthwise", 2, 128), ("pointwise", 1, 256),
    ("depthwise", 1, 256), ("pointwise", 1, 256),
    ("depthwise", 2, 256), ("pointwise", 1, 512),
    *(("depthwise", 1, 512), ("pointwise", 1, 512)) * 5,
    ("depthwise", 2, 512), ("pointwise", 1, 1024),
    # The paper prints s2 here, but row 27's input is still 7×7: a misprint.
    # TF-slim, Keras and timm all use stride 1.
    ("depthwise", 1, 1024), ("pointwise", 1, 1024),
)
# Then: global average pool (7×7 at 224), FC, softmax.

KERNEL = {"conv": 3, "depthwise": 3, "pointwise": 1}
ACTIVATIONS = ("relu", "relu6")

# The paper's Tables 6 and 7: width multipliers α and resolutions ρ.
PAPER_WIDTHS = (1.0, 0.75, 0.5, 0.25)
PAPER_RESOLUTIONS = (224, 192, 160, 128)

FASHION_MNIST = "fashion-mnist"  # the --data name of the built-in data set
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
EVAL_BATCH_SIZE = 256  # images per batch wherever a model is evaluated or checked

# Ways to run a model for inference (`mobilenet bench`).
RUNTIMES = ("torch", "torch-fast", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8", "executorch",
            "executorch-int8", "litert", "litert-int8", "timm")
# what predict and evaluate run a model with
PREDICT_RUNTIMES = ("torch", "onnxruntime", "openvino", "executorch", "litert")
EXPORT_FORMATS = ("onnx", "executorch", "litert")
COMPILE_MODES = {"off": None, "on": "default", "graphs": "reduce-overhead"}  # train --compile: torch.compile's mode

MIN_WIDTH, MAX_WIDTH = 1 / 32, 4.0  # α below 1/32 leaves the first layer with no channel
MIN_RESOLUTION, MAX_RESOLUTION = 32, 4096  # 32 = the body's total stride


def channels(c: int, width_mult: float) -> int:
    """Channels of a layer at width multiplier α: int(c × α), as TF-slim and Keras do."""
    return int(c * width_mult)


def layer_names() -> list[str]:
    """Stable Keras-style names of the body's layers: conv1, conv_dw_1, conv_pw_1, ..."""
    names, block = [], 0
    for kind, _, _ in TABLE1:
        if kind == "conv":
            names.append("conv1")
        elif kind == "depthwise":
            block += 1
            names.append(f"conv_dw_{block}")
        else:
            names.append(f"conv_pw_{block}")
    return names


# The one table of limits on the numbers a user gives: the CLI's argument types,
# TrainConfig.validate and MobileNetConfig all check against it. name: (low, high, kind)
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


def _check_number(name: str, value, low: float, high: float, kind=float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        kind is int and not float(value).is_integer()
    ):
        raise ValueError(f"{name} must be a {'whole ' if kind is int else ''}number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def check_folder(path, error: type[Exception]):
    """`path` when it is a folder; else `error` (the parser, the training options and the
    folder reader each raise their own kind) saying what --data takes."""
    if not os.path.isdir(path):
        raise error(f"{str(path)!r}: no such folder; give 'fashion-mnist' or a folder with one sub-folder per class")
    return path


@dataclass(frozen=True)
class MobileNetConfig:
    """Everything that builds a MobileNet V1; saved as JSON beside every trained model."""

    num_classes: int = 1000  # size of the FC layer's output
    width_mult: float = 1.0  # α: thins every layer to int(c × α) channels
    resolution: int = 224  # ρ: default input size (the network takes any size >= 32)
    in_channels: int = 3  # 3 for RGB, 1 for grey images
    dropout: float = 0.0  # before the FC; the paper uses none
    activation: str = "relu"  # "relu" (paper, seed) or "relu6" (TF, Keras, timm weights)

    def __post_init__(self):
        for name, limit in (("num_classes", "num_classes"), ("width_mult", "width"), ("resolution", "resolution"),
                            ("in_channels", "in_channels"), ("dropout", "dropout")):
            check_number(limit, getattr(self, name), name)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        # Normalise whole numbers given as floats (e.g. from JSON) so round trips are exact.
        for name in ("num_classes", "resolution", "in_channels"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "width_mult", float(self.width_mult))
        object.__setattr__(self, "dropout", float(self.dropout))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MobileNetConfig":
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model config has unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MobileNetConfig":
        return cls.from_dict(json.loads(text))


def _variant_name(width_mult: float, resolution: int) -> str:
    return f"mobilenet_v1_{float(width_mult)!r}_{resolution}"  # 1.0, 0.75, 0.5, 0.25


# The paper's 16 variants (Tables 6 and 7), by name, e.g. "mobilenet_v1_0.75_192".
_REGISTRY: dict[str, MobileNetConfig] = {
    _variant_name(a, r): MobileNetConfig(width_mult=a, resolution=r)
    for a in PAPER_WIDTHS
    for r in PAPER_RESOLUTIONS
}


def list_models() -> list[str]:
    """Names of the paper's 16 variants, `mobilenet_v1_{α}_{resolution}`."""
    return list(_REGISTRY)


def get_config(name: str, **overrides) -> MobileNetConfig:
    """The config of a named variant, with any field overridden (e.g. num_classes=10)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}")
    return MobileNetConfig(**{**_REGISTRY[name].to_dict(), **overrides})
