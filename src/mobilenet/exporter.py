"""Export a trained model folder to one deployable file that checks itself.

ONNX (opset 17, dynamic batch, class names and input preparation in metadata_props),
optionally int8 by ONNX Runtime's static post-training quantization (QDQ), or
TorchScript (the same metadata as an extra file). Every export runs the written file on
random and real inputs and compares it with eager PyTorch before it is put in place.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import EVAL_BATCH_SIZE
from .data import open_source
from .errors import MobileNetError
from .files import atomic_write_bytes
from .images import test_split_of
from .metrics import evaluate_batches
from .progress import bar
from .run_folder import load_model
from .runtime import open_session

OPSET = 17
FP32_TOLERANCE = 1e-4
INT8_MAX_DROP = 0.01  # at most 1 point of test accuracy
INT8_MIN_SHRINK = 3.5
# int8 weight range, by the CPUs the file must run on (name -> ONNX Runtime's reduce_range).
# x86 CPUs without VNNI (AVX2, and AVX-512 without VNNI) multiply uint8 activations by int8
# weights with VPMADDUBSW, which adds each pair of products into int16 and saturates. 7-bit
# weights (|w| <= 64) keep every pair within 2 × 255 × 64 = 32,640 < 32,767, so the result is
# exact on every CPU; ONNX Runtime's quantization guide names reduce_range as the remedy.
# Full 8-bit weights are exact only where int8 dot products do not saturate (VNNI, ARM).
INT8_PRESETS = {"portable": True, "vnni": False}


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """BatchNorm folded into each conv, channels_last, eval mode: an eager module."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fast = copy.deepcopy(model).eval()
    for block in fast.features:
        block[0] = fuse_conv_bn_eval(block[0], block[1])
        block[1] = nn.Identity()
    return fast.to(memory_format=torch.channels_last)


def fast_inference(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The fast PyTorch path: fuse_for_inference, then traced and frozen with
    torch.jit.optimize_for_inference (oneDNN kernels, no Python per layer: about 2× at
    batch 1 on CPU, measured by `mobilenet bench`). Call it under torch.inference_mode()
    with inputs like `example` in channels_last. Falls back to the fused eager module
    where TorchScript is unavailable (it is deprecated from torch 2.14)."""
    fused = fuse_for_inference(model)
    example = example.contiguous(memory_format=torch.channels_last)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.optimize_for_inference(torch.jit.trace(fused, example))
    except Exception:  # noqa: BLE001 - any TorchScript failure leaves the eager path, which is correct
        return fused


def _metadata(info: dict) -> dict[str, str]:
    return {"classes": json.dumps(info["classes"]), "input": json.dumps(info["input"]),
            "model": json.dumps(info["model"].to_dict()), "data": json.dumps(info.get("data") or {}),
            "producer": "mobilenet"}


def set_metadata(proto, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_bytes(model: nn.Module, info: dict) -> bytes:
    """The model as an ONNX file (opset 17, dynamic batch) with metadata_props."""
    import onnx

    spec = info["input"]
    dummy = torch.zeros(1, spec["channels"], spec["resolution"], spec["resolution"])
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter warns that it is the old one
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), buf, opset_version=OPSET, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    set_metadata(proto, _metadata(info))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _source(info: dict):
    """The data set the model was trained on, as its config.json names it."""
    data = info.get("data") or {}
    return open_source(data.get("name", "fashion-mnist"), info["input"]["resolution"], data.get("seed", 0),
                       test_split=test_split_of(data), workers=0)


def _real_inputs(info: dict, count: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    source = _source(info)
    xs, ys, seen = [], [], 0
    n = EVAL_BATCH_SIZE
    batches = source.test_batches(n) if split == "test" else source.train_batches(0, n)
    for batch in batches:
        if len(batch.labels):
            xs.append(batch.images)
            ys.append(batch.labels)
            seen += len(batch.labels)
        if count and seen >= count:
            break
    if not xs:
        raise MobileNetError(f"no readable {split} images in {source.name} to check or calibrate the export with")
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:count], y[:count]) if count else (x, y)


def _test_accuracy(models: list[bytes], info: dict) -> tuple[list[float], int, float]:
    """Top-1 of each ONNX model on the whole test split, and the share of images on which
    the last model gives the first one's top-1."""
    sessions = [open_session(m) for m in models]
    source = _source(info)
    batches = ((x.numpy(), y, bad) for x, y, bad in source.test_batches(EVAL_BATCH_SIZE))
    found = evaluate_batches([lambda x, s=s: s.run(None, {"images": x})[0] for s in sessions], batches,
                             len(info["classes"]), total=source.num_test, desc="int8: test accuracy",
                             confusion=False)
    seen = found["metrics"][0].images
    if not seen:
        raise MobileNetError("no readable test images to measure the int8 accuracy on")
    return [m.top1 for m in found["metrics"]], seen, found["agreement"]


def _run_onnx(data: bytes, x: np.ndarray) -> np.ndarray:
    session = open_session(data)
    n = EVAL_BATCH_SIZE
    return np.concatenate([session.run(None, {"images": x[i:i + n]})[0] for i in range(0, len(x), n)])


def _check(name: str, ours, eager, real: bool, tolerance: float | None) -> dict:
    diff = float(np.abs(ours - eager).max())
    same_top1 = bool((ours.argmax(1) == eager.argmax(1)).all()) if real else None
    if tolerance is not None and (diff > tolerance or same_top1 is False):
        raise MobileNetError(f"the exported {name} disagrees with PyTorch on {'real' if real else 'random'} inputs "
                             f"(largest difference {diff:.2e}, top-1 identical: {same_top1}); nothing was written")
    return {"max_abs_diff": diff, "same_top1": same_top1}


def export(model_dir, fmt: str = "onnx", int8: bool = False, output=None, calibration_images: int = 300,
           check_images: int = 512, log=print, int8_preset: str = "portable") -> dict:
    """Export `model_dir` to `output` (default model_dir/model[.int8].onnx or model.pt),
    verify it, and return a report. Raises MobileNetError when the check fails; nothing is
    written then. `int8_preset` is a key of INT8_PRESETS."""
    if fmt not in ("onnx", "torchscript"):
        raise MobileNetError(f"--format must be onnx or torchscript, got {fmt!r}")
    if int8 and fmt != "onnx":
        raise MobileNetError("--int8 needs --format onnx (ONNX Runtime quantizes it)")
    if int8_preset not in INT8_PRESETS:
        raise MobileNetError(f"--int8-preset must be one of {', '.join(INT8_PRESETS)}, got {int8_preset!r}")
    model, info = load_model(model_dir)
    default = {"onnx": "model.int8.onnx" if int8 else "model.onnx", "torchscript": "model.pt"}[fmt]
    output = Path(output) if output else Path(model_dir) / default
    if not output.parent.is_dir():
        raise MobileNetError(f"--output {output}: folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK):
        raise MobileNetError(f"--output {output}: folder {output.parent} is not writable")
    spec = info["input"]
    random_x = torch.randn(4, spec["channels"], spec["resolution"], spec["resolution"])
    try:
        real_x, _ = _real_inputs(info, check_images)
    except MobileNetError as e:
        if int8:  # calibration needs real images
            raise
        real_x = None  # e.g. a model converted from timm: its data set is not here
        log(f"note: {e}; checking on random inputs only")
    with torch.inference_mode():
        eager_random = model(random_x).numpy()
        eager_real = model(real_x).numpy() if real_x is not None else None
    report = {"format": fmt, "int8": int8, "output": str(output), "real": {"max_abs_diff": None, "same_top1": None}}

    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; it still works
            traced = torch.jit.trace(model, random_x[:1])
            buf = io.BytesIO()
            torch.jit.save(traced, buf, _extra_files={"config.json": json.dumps(_metadata(info))})
            data = buf.getvalue()
            loaded = torch.jit.load(io.BytesIO(data))
            report["random"] = _check(fmt, loaded(random_x).numpy(), eager_random, False, FP32_TOLERANCE)
            if real_x is not None:
                report["real"] = _check(fmt, loaded(real_x).numpy(), eager_real, True, FP32_TOLERANCE)
    else:
        fp32 = onnx_bytes(model, info)
        report["random"] = _check("ONNX", _run_onnx(fp32, random_x.numpy()), eager_random, False, FP32_TOLERANCE)
        if real_x is not None:
            report["real"] = _check("ONNX", _run_onnx(fp32, real_x.numpy()), eager_real, True, FP32_TOLERANCE)
        data = fp32
        if int8:
            data, quant = _quantize(fp32, info, calibration_images, log, int8_preset)
            report.update(quant)
            report["fp32_bytes"], report["random"]["int8_max_abs_diff"] = len(fp32), float(
                np.abs(_run_onnx(data, random_x.numpy()) - eager_random).max())
    atomic_write_bytes(output, data)
    report["bytes"] = len(data)
    return report


def quantize_onnx(fp32: bytes, calibration: np.ndarray, metadata: dict[str, str] | None = None,
                  preset: str = "portable") -> bytes:
    """Static int8 post-training quantization with ONNX Runtime: QDQ format, per-channel
    int8 weights (7-bit under the default "portable" preset: see INT8_PRESETS), uint8
    activations whose ranges come from the calibration images."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            batches = [{"images": calibration[i:i + 32]} for i in range(0, len(calibration), 32)]
            self.batches = iter(bar(batches, desc="int8: calibration"))

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=INT8_PRESETS[preset], activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        proto = onnx.load(str(dst))
    set_metadata(proto, {**(metadata or {}), "int8": preset})
    return proto.SerializeToString()


def _quantize(fp32: bytes, info: dict, count: int, log, preset: str) -> tuple[bytes, dict]:
    """quantize_onnx calibrated on `count` training images, with test accuracy before and after."""
    if count < 1:
        raise MobileNetError("--int8 needs calibration images; --calibration must be at least 1")
    calib_x, _ = _real_inputs(info, count, split="train")
    int8 = quantize_onnx(fp32, calib_x.numpy(), _metadata(info), preset)
    (before, after), images, agreement = _test_accuracy([fp32, int8], info)
    shrink = len(fp32) / len(int8)
    log(f"int8: test accuracy {100 * before:.2f}% -> {100 * after:.2f}% ({100 * (after - before):+.2f} points) "
        f"on {images} images; {len(fp32) / 1e6:.2f} MB -> {len(int8) / 1e6:.2f} MB ({shrink:.1f}x smaller); "
        f"calibrated on {len(calib_x)} training images; same top-1 as float32 on {100 * agreement:.2f}%")
    if round(before - after, 9) > INT8_MAX_DROP:
        log(f"warning: int8 loses {100 * (before - after):.2f} points, more than {100 * INT8_MAX_DROP:.0f}; "
            "calibrate on more images (--calibration), or ship the fp32 file for this model")
    return int8, {"accuracy_fp32": before, "accuracy_int8": after, "top1_agreement": agreement, "shrink": shrink,
                  "int8_preset": preset,
                  "calibration_images": len(calib_x), "test_images": images}
