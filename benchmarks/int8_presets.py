"""Which int8 weight range should `mobilenet export --int8` use by default?

    .venv/bin/python benchmarks/int8_presets.py --model runs/demo [--images 512]

Exports the model with each preset (INT8_PRESETS: "portable" = 7-bit weights, ONNX
Runtime's reduce_range; "vnni" = 8-bit) and prints, for each, the test accuracy before and
after, the top-1 agreement with float32 and the file sizes, as measured on this CPU.

It then measures what the file would meet on an x86 CPU without VNNI. There ONNX Runtime's
uint8 × int8 matrix kernels (AVX2, and AVX-512 without VNNI) multiply with VPMADDUBSW,
which adds each pair of neighbouring products along the reduction into int16 and saturates
at ±32,767; VNNI (and ARM) sum in int32 and never saturate. The script reads the uint8
activations that reach each convolution and the FC layer on real test images, pairs
them with the layer's int8 weights as that instruction does, and counts the pair sums
beyond int16. Where the count is zero, an AVX2-only CPU computes the same integers as
this one, so the accuracy printed above holds there too. Depthwise convolutions are left
out: ONNX Runtime computes them in a separate kernel with 32-bit sums.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from mobilenet.deploy.exporter import INT8_PRESETS, _real_inputs, export
from mobilenet.run.folder import read_config

INT16_MAX = 32767


def _quantized_inputs(model: onnx.ModelProto) -> list[tuple[str, np.ndarray, int, int]]:
    """(uint8 activation tensor name, int8 weight, group, activation zero point) for each
    Conv and Gemm/MatMul whose input and weight are quantized."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        x_dq, w_dq = (producer.get(i) for i in node.input[:2])
        if not (x_dq and w_dq and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = numpy_helper.to_array(inits[w_dq.input[0]]).astype(np.int32)
        zero = int(numpy_helper.to_array(inits[x_dq.input[2]])) if len(x_dq.input) > 2 else 0
        found.append((x_dq.input[0], weight, group, zero))
    return found


def _saturated_pairs(a: np.ndarray, w: np.ndarray) -> tuple[int, int]:
    """Pairs (k, k+1) along the reduction of a uint8 (rows, K) by int8 (K, N) product whose
    sum a[k]w[k] + a[k+1]w[k+1] leaves int16; and the number of pairs."""
    if a.shape[1] % 2:
        a, w = np.pad(a, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
    bad = 0
    for i in range(0, len(a), 16):  # 16 rows at a time: the (rows, K/2, N) sums stay small
        even, odd = a[i:i + 16, 0::2].astype(np.int32), a[i:i + 16, 1::2].astype(np.int32)
        sums = even[:, :, None] * w[0::2][None] + odd[:, :, None] * w[1::2][None]
        bad += int((np.abs(sums) > INT16_MAX).sum())
    return bad, len(a) * (a.shape[1] // 2) * w.shape[1]


def _rows_and_weights(x: np.ndarray, weight: np.ndarray, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, K) uint8 operand and (K, N) weight of a conv as im2col + GEMM sees them."""
    if weight.ndim == 2:  # Gemm (N, K) with transB, or MatMul (K, N)
        return x.reshape(len(x), -1), (weight.T if weight.shape[1] == x.reshape(len(x), -1).shape[1] else weight)
    out_c, in_c, kh, kw = weight.shape
    if kh == kw == 1:
        return x.transpose(0, 2, 3, 1).reshape(-1, in_c), weight.reshape(out_c, in_c).T
    pad = kh // 2  # the one full 3×3 conv (stride 2, padding 1), padded with the zero point
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=zero)
    patches = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::2, ::2]
    rows = patches.transpose(0, 2, 3, 1, 4, 5).reshape(-1, in_c * kh * kw)
    return rows, weight.reshape(out_c, -1).T


def saturation(path: Path, images: np.ndarray) -> dict:
    model = onnx.load(str(path))
    layers = _quantized_inputs(model)
    names = [t for t, _, _, _ in layers]
    for t in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.UINT8, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(names, {"images": images})))
    total = saturated = 0
    worst = 0
    for tensor, weight, group, zero in layers:
        if group > 1:
            continue  # depthwise: 32-bit sums in ONNX Runtime's depthwise kernel
        rows, w = _rows_and_weights(values[tensor], weight, zero)
        rows = rows[np.random.default_rng(0).permutation(len(rows))[:4096]]  # a sample keeps memory small
        bad, pairs = _saturated_pairs(rows, w)
        saturated, total = saturated + bad, total + pairs
        worst = max(worst, int(np.abs(weight).max()) * 255 * 2)
    return {"pairs": total, "saturated": saturated, "largest_possible_pair": worst}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a run folder")
    p.add_argument("--images", type=int, default=256, help="test images for the saturation count")
    args = p.parse_args()
    info = read_config(args.model)
    x, _ = _real_inputs(info, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in INT8_PRESETS:
            path = Path(tmp) / f"{preset}.onnx"
            r = export(args.model, "onnx", int8=True, output=path, int8_preset=preset, log=lambda _: None)
            s = saturation(path, x.numpy())
            print(f"{preset:<9} top-1 {100 * r['accuracy_fp32']:.2f}% -> {100 * r['accuracy_int8']:.2f}% "
                  f"(agreement {100 * r['top1_agreement']:.2f}%), {r['fp32_bytes'] / 1e6:.2f} MB -> "
                  f"{r['bytes'] / 1e6:.2f} MB; AVX2 pair sums beyond int16: {s['saturated']:,} of {s['pairs']:,} "
                  f"(largest possible {s['largest_possible_pair']:,})", flush=True)


if __name__ == "__main__":
    main()
