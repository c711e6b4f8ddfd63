"""MobileNet V1: build it as the paper does, see what it costs, train, predict, ship.

Names load on first use, so `mobilenet predict --runtime onnxruntime` never imports torch.
"""

import importlib

_EXPORTS = {
    "TABLE1": "config", "MobileNetConfig": "config", "get_config": "config", "list_models": "config",
    "MobileNetV1": "model", "create_model": "model", "mobilenet_v1": "model",
    "cost_report": "cost", "layer_costs": "cost",
    "TrainConfig": "train_config", "train": "training",
    "load_model": "run_folder", "evaluate": "evaluation", "Predictor": "predictor",
    "export": "exporter", "ModelInfo": "model_info", "cam": "activation_maps",
}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mobilenet' has no attribute {name!r}")
