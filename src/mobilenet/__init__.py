"""MobileNet V1: build it as the paper does, see what it costs, train, predict, ship.

Names load on first use, so `mobilenet predict --runtime onnxruntime` never imports torch.
"""

import importlib
import os

# Nothing phones home. ONNX Runtime's Linux wheels send usage events and keep a device id
# under ~/.cache/Microsoft unless this is set before onnxruntime is first imported (it is
# read once, then latched); child processes inherit it. docs/guarantees.md, "No telemetry".
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

_EXPORTS = {
    "TABLE1": "net.config", "MobileNetConfig": "net.config", "get_config": "net.config",
    "list_models": "net.config", "MobileNetV1": "net.model", "create_model": "net.model",
    "mobilenet_v1": "net.model", "cost_report": "net.cost", "layer_costs": "net.cost",
    "cam": "net.activation_maps", "TrainConfig": "training.config", "train": "training.loop",
    "load_model": "run.folder", "ModelInfo": "run.info", "evaluate": "report.evaluation",
    "Predictor": "deploy.predictor", "export": "deploy.exporter",
}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mobilenet' has no attribute {name!r}")
