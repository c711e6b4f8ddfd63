"""A stranger's .onnx file checked before ONNX Runtime sees it: only the ops of MobileNet V1,
and no more tensor bytes than the network its metadata names. No torch: the deployed path
uses it.

The graph is parsed from bytes already read to a bound (files.read_regular), so no external
data is loaded while checking; a file that keeps tensors outside is accepted only when their
declared sizes fit the same bound.
"""

from __future__ import annotations

import json
import math

from ..errors import MobileNetError, printable
from ..net.config import MobileNetConfig
from ..net.cost import state_bytes

NO_CONFIG_LIMIT = 1 << 30  # tensor bytes of a file whose metadata does not name its network
# Our exporter writes Conv, Relu or Clip (ReLU6), ReduceMean, Reshape and Gemm; int8 adds
# QuantizeLinear and DequantizeLinear. Other exporters of the same network may also write BN
# unfused, Flatten and GlobalAveragePool. None of these makes a tensor larger than its inputs
# and attributes say, and none loops: no Loop, If or Scan (a hang), no ConstantOfShape, Expand,
# Tile or broadcasting Add and MatMul (a small file asking for gigabytes).
ALLOWED_OPS = frozenset({"Conv", "Relu", "Clip", "ReduceMean", "Reshape", "Gemm", "QuantizeLinear", "DequantizeLinear",
                         "BatchNormalization", "Flatten", "GlobalAveragePool"})
MAX_PAD = 2  # a 3×3 conv needs at most 1 (2 on one side for TF's "SAME"); huge pads grow the output


def check_onnx(data: bytes, name) -> bool:
    """MobileNetError unless `data` (the bytes of the file `name`) is a graph of ALLOWED_OPS
    whose tensors fit the network of its metadata; True if it keeps tensors outside the file."""
    import onnx

    try:
        proto = onnx.load_model_from_string(data)  # external data stays where it is
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and onnx's own
        raise MobileNetError(f"{printable(name)} is not an ONNX file ({type(e).__name__}); "
                             "give an .onnx file made by `mobilenet export`") from None
    graph = proto.graph
    if proto.functions or graph.sparse_initializer:
        raise MobileNetError(f"{printable(name)} holds local functions or sparse tensors, which MobileNet V1 "
                             "never needs; export it with `mobilenet export`")
    _check_ops(graph, name)
    tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
    limit = _tensor_limit(proto)
    total = sum(_tensor_bytes(t) for t in tensors)
    if total > limit:
        raise MobileNetError(f"{printable(name)} declares {total:,} bytes of tensors, more than the {limit:,} "
                             "its network can hold; give the file `mobilenet export` wrote")
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors)


def _check_ops(graph, name) -> None:
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ALLOWED_OPS:
            op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
            raise MobileNetError(f"{printable(name)} uses the op {printable(op)[:60]}, which MobileNet V1 does not: "
                                 f"this runtime takes {', '.join(sorted(ALLOWED_OPS))}")
        ints = {a.name: list(a.ints) for a in node.attribute}
        if max(ints.get("pads") or [0]) > MAX_PAD or any(d != 1 for d in ints.get("dilations", [])):
            raise MobileNetError(f"{printable(name)}: a {node.op_type} pads more than {MAX_PAD} or is dilated, "
                                 "which MobileNet V1 never is; give the file `mobilenet export` wrote")


def _tensor_limit(proto) -> int:
    """Twice the float32 state of the network named in the metadata (an unfused file keeps
    BN's statistics), and a margin; a fixed bound when the metadata names none."""
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        config = MobileNetConfig.from_dict(json.loads(meta["model"]))
    except (KeyError, ValueError, TypeError, RecursionError):
        return NO_CONFIG_LIMIT  # the metadata is checked, with one line, once the session exists
    return 2 * state_bytes(config) + (16 << 20)


def _tensor_bytes(tensor) -> int:
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        size = tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):  # strings, or a type onnx does not know
        size = 8
    return size * math.prod(abs(d) for d in tensor.dims)
