"""MobileNet V1: build it as the paper does, see what it costs, train, predict, ship."""

from .cost import cost_report, layer_costs
from .model import (
    TABLE1,
    MobileNetConfig,
    MobileNetV1,
    create_model,
    get_config,
    list_models,
    mobilenet_v1,
)

__all__ = [
    "TABLE1", "MobileNetConfig", "MobileNetV1", "create_model", "get_config", "list_models",
    "mobilenet_v1", "cost_report", "layer_costs",
]
__version__ = "0.1.0"
