"""The formats a model is exported to and the runtimes that run it. No torch: the CLI,
the report and the deployed path read it."""

# Ways to run a model for inference (`mobilenet bench`).
RUNTIMES = ("torch", "torch-fast", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8", "executorch",
            "executorch-int8", "litert", "litert-int8", "timm")
# what predict and evaluate run a model with
PREDICT_RUNTIMES = ("torch", "onnxruntime", "openvino", "executorch", "litert")
EXPORT_FORMATS = ("onnx", "executorch", "litert")
