"""MobileNet V1, built from one table that mirrors the paper's Table 1.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", https://arxiv.org/abs/1704.04861
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

__all__ = [
    "TABLE1",
    "MobileNetConfig",
    "MobileNetV1",
    "mobilenet_v1",
    "create_model",
    "list_models",
    "get_config",
    "layer_names",
    "channels",
    "timm_to_mobilenet_state_dict",
    "config_from_timm_state_dict",
]

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
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}

# The paper's Tables 6 and 7: width multipliers α and resolutions ρ.
PAPER_WIDTHS = (1.0, 0.75, 0.5, 0.25)
PAPER_RESOLUTIONS = (224, 192, 160, 128)

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


def _check_number(name: str, value, low: float, high: float, kind=float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        kind is int and not float(value).is_integer()
    ):
        raise ValueError(f"{name} must be a {'whole ' if kind is int else ''}number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


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
        _check_number("num_classes", self.num_classes, 1, 10**6, int)
        _check_number("width_mult", self.width_mult, MIN_WIDTH, MAX_WIDTH)
        _check_number("resolution", self.resolution, MIN_RESOLUTION, MAX_RESOLUTION, int)
        _check_number("in_channels", self.in_channels, 1, 64, int)
        _check_number("dropout", self.dropout, 0.0, 0.999)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
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


class MobileNetV1(nn.Module):
    """MobileNet V1 from `MobileNets: Efficient Convolutional Neural Networks for Mobile
    Vision Applications <https://arxiv.org/abs/1704.04861>`_.

    Args:
        num_classes (int): outputs of the FC layer. Default 1000 (ImageNet).
        width_mult (float): width multiplier α, 1/32 to 4. Default 1.0.
        in_channels (int): input image channels. Default 3.
        dropout (float): dropout before the FC, 0 to 0.999. Default 0.0 (the paper has none).
        activation (str): "relu" (default, as the paper and seed) or "relu6".
        resolution (int): default input size ρ, stored in the config. Default 224.
            The pool is global, so any input of at least 32×32 works.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        in_channels: int = 3,
        dropout: float = 0.0,
        activation: str = "relu",
        resolution: int = 224,
    ):
        super().__init__()
        self.config = MobileNetConfig(num_classes, width_mult, resolution, in_channels, dropout, activation)
        act = ACTIVATIONS[activation]

        layers, c_in = OrderedDict(), in_channels
        for name, (kind, stride, c) in zip(layer_names(), TABLE1):
            c_out = channels(c, width_mult)
            layers[name] = Conv2dNormActivation(
                c_in, c_out, kernel_size=KERNEL[kind], stride=stride,
                groups=c_in if kind == "depthwise" else 1,  # depthwise: one filter per channel
                activation_layer=act,
            )
            c_in = c_out
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c_in
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)
        self._init_weights()

    @classmethod
    def from_config(cls, config: MobileNetConfig) -> "MobileNetV1":
        c = config
        return cls(c.num_classes, c.width_mult, c.in_channels, c.dropout, c.activation, c.resolution)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The body and the global average pool: a (N, num_features) tensor."""
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        features = self.dropout(features)
        return features if pre_logits else self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; apply softmax for the paper's classifier probabilities."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the FC layer with a fresh one of `num_classes` outputs (transfer learning)."""
        self.config = MobileNetConfig(**{**self.config.to_dict(), "num_classes": num_classes})
        self.classifier = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)


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


def create_model(name: str, **overrides) -> MobileNetV1:
    """Build a named variant, e.g. create_model("mobilenet_v1_0.5_160", num_classes=10)."""
    return MobileNetV1.from_config(get_config(name, **overrides))


def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet V1 builder (torchvision style); keyword arguments as `MobileNetV1`."""
    return MobileNetV1(**kwargs)


# --- timm weights -----------------------------------------------------------------
# timm's `mobilenetv1_*` groups the 13 separable pairs into stages, opening a new
# stage at each stride-2 depthwise conv: conv_stem/bn1, blocks.{stage}.{i}.conv_dw/bn1/
# conv_pw/bn2, classifier. The map below is derived from TABLE1, not written out.

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _timm_names() -> dict[str, tuple[str, str]]:
    """Our layer name -> (timm conv prefix, timm BN prefix)."""
    out, stage, index, block = {}, -1, 0, None
    for name, (kind, stride, _) in zip(layer_names(), TABLE1):
        if kind == "conv":
            out[name] = ("conv_stem", "bn1")
        elif kind == "depthwise":
            if stride == 2 or stage < 0:
                stage, index = stage + 1, 0
            else:
                index += 1
            block = f"blocks.{stage}.{index}"
            out[name] = (f"{block}.conv_dw", f"{block}.bn1")
        else:
            out[name] = (f"{block}.conv_pw", f"{block}.bn2")
    return out


def timm_to_mobilenet_state_dict(timm_state: dict) -> dict:
    """Rename a timm `mobilenetv1_*` state dict to this package's names.

    The architectures are the same; use activation="relu6" for equal outputs.
    Raises ValueError if a tensor the map needs is missing.
    """
    ours = {}
    try:
        for name, (conv, bn) in _timm_names().items():
            ours[f"features.{name}.0.weight"] = timm_state[f"{conv}.weight"]
            for key in _BN_KEYS:
                if f"{bn}.{key}" in timm_state:
                    ours[f"features.{name}.1.{key}"] = timm_state[f"{bn}.{key}"]
        ours["classifier.weight"] = timm_state["classifier.weight"]
        ours["classifier.bias"] = timm_state["classifier.bias"]
    except KeyError as e:
        raise ValueError(f"not a timm mobilenetv1 state dict: missing tensor {e.args[0]!r}") from None
    return ours


def config_from_timm_state_dict(timm_state: dict, resolution: int = 224) -> MobileNetConfig:
    """The config whose module has the shapes of a timm `mobilenetv1_*` state dict (ReLU6)."""
    state = timm_to_mobilenet_state_dict(timm_state)
    first = state["features.conv1.0.weight"]
    fc = state["classifier.weight"]
    return MobileNetConfig(
        num_classes=fc.shape[0],
        width_mult=fc.shape[1] / TABLE1[-1][2],
        resolution=resolution,
        in_channels=first.shape[1],
        activation="relu6",
    )
