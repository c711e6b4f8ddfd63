"""Each format's export and runtime side by side: ONNX (exporter, onnx_check), ExecuTorch,
LiteRT, the native-crash probe they share, the runtimes that open a file (runtime), the
Predictor, and bench."""
