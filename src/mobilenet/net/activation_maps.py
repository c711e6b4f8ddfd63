"""Class activation maps (Zhou et al., CVPR 2016). MobileNet V1 ends in a global average pool
and one FC layer, so a class's score is the mean over positions of the last feature map
weighted by that class's FC row: the map before the mean shows where the network looked,
exactly, with no gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import MobileNetError
from .model import MobileNetV1


def cam(model: MobileNetV1, images: torch.Tensor, class_index=None) -> torch.Tensor:
    """(N, H, W) maps for `images` (N, C, H, W, prepared as the model's input), resized
    bilinearly to the input. `class_index` is one class for all, one per image, or None: each
    image's predicted class. Before the resize, a map's mean plus the class's FC bias is the
    class's logit. The model must be in eval mode, as load_model gives it."""
    if model.training:
        raise MobileNetError("cam: the model is in training mode (BN would use the batch's statistics); "
                             "call model.eval() first")
    if not (isinstance(images, torch.Tensor) and images.ndim == 4):
        raise MobileNetError("cam: images must be one (N, C, H, W) tensor, prepared as the model's input")
    with torch.inference_mode():
        features = model.features(images)  # (N, K, h, w), before the pool
        index = _classes(model, features, class_index)
        maps = torch.einsum("nkhw,nk->nhw", features, model.classifier.weight[index])
        return F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def _classes(model: MobileNetV1, features: torch.Tensor, class_index) -> torch.Tensor:
    n, classes = len(features), model.classifier.out_features
    if class_index is None:
        return model.classifier(features.mean((2, 3))).argmax(1)
    try:
        index = torch.as_tensor(class_index).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        index = None
    if index is not None and index.numel() == 1:
        index = index.expand(n)
    if (index is None or index.is_floating_point() or index.dtype == torch.bool or index.shape != (n,)
            or index.min() < 0 or index.max() >= classes):
        raise MobileNetError(f"cam: class_index must be one class or one per image, each 0 to {classes - 1}; "
                             f"got {class_index!r}")
    return index.to(features.device)
