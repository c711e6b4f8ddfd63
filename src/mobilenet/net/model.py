"""MobileNet V1, built from one table that mirrors the paper's Table 1.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", https://arxiv.org/abs/1704.04861
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .config import KERNEL, TABLE1, MobileNetConfig, channels, get_config, layer_names, list_models  # noqa: F401 - re-exported: model.TABLE1 etc.
from .depthwise import DepthwiseConv2d

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

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int, groups: int, act) -> nn.Sequential:
    """One layer of Table 1: conv (no bias: BN follows), BatchNorm, activation; the same
    modules and names as torchvision's Conv2dNormActivation. Written here because importing
    torchvision.ops pulls in torch._dynamo: 1.3 s of every command's start."""
    depthwise = groups == c_in == c_out > 1
    return nn.Sequential(
        DepthwiseConv2d(c_in, kernel, stride) if depthwise else
        nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        act(inplace=True),
    )


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
        self.config = MobileNetConfig(num_classes=num_classes, width_mult=width_mult, resolution=resolution,
                                      in_channels=in_channels, dropout=dropout, activation=activation)
        act = ACTIVATIONS[activation]

        layers, c_in = OrderedDict(), in_channels
        for name, (kind, stride, c) in zip(layer_names(), TABLE1):
            c_out = channels(c, width_mult)
            layers[name] = conv_bn_act(c_in, c_out, KERNEL[kind], stride,
                                       groups=c_in if kind == "depthwise" else 1,  # depthwise: one filter per channel
                                       act=act)
            c_in = c_out
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c_in
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)
        self._init_weights()

    @classmethod
    def from_config(cls, config: MobileNetConfig) -> "MobileNetV1":
        return cls(**config.to_dict())  # the config's fields are the constructor's keywords

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
        # reshape, not flatten: LiteRT's converter keeps the batch dynamic only so
        return self.pool(self.features(x)).reshape(-1, self.num_features)

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
