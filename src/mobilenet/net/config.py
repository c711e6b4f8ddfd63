"""The paper's Table 1 as data, and the one model configuration. No torch here: the cost
report and the deployed (torch-free) path use it too.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", https://arxiv.org/abs/1704.04861
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from ..limits import check_number

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
