"""Export a trained model folder to one deployable file that checks itself.

ONNX (opset 18 through torch.export, dynamic batch, class names and input preparation in
metadata_props), optionally int8 by ONNX Runtime's static post-training quantization
(QDQ); an ExecuTorch program lowered to XNNPACK, optionally int8 by PT2E (executorch.py); a
LiteRT .tflite through litert-torch, optionally int8 by PT2E (litert.py); or a .tflite
for MediaPipe Tasks' ImageClassifier (mediapipe.py).
Every export runs the written file in its own runtime on random and real inputs and
compares it with eager PyTorch before it is put in place.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MobileNetError
from ..files import atomic_write_bytes, atomic_write_json
from ..formats import EXPORT_FORMATS, get_format
from ..limits import EVAL_BATCH_SIZE
from ..machine import cpu_features
from ..progress import bar
from ..report.metrics import evaluate_batches
from ..run.folder import load_model, record_export
from ..run.info import ModelInfo
from ..run.ownership import refuse_foreign
from .executorch import sidecar
from .runtime import open_session

OPSET = 18  # the oldest opset torch.export's ONNX exporter writes
FP32_TOLERANCE = 1e-4
INT8_MAX_DROP = 0.01  # at most 1 point of test accuracy
VNNI_ADVICE = ("This CPU has no VNNI, so the vnni preset's int16 sums saturate here: use the portable preset "
               "(the default), or export and check it on a CPU with VNNI")
INT8_MIN_SHRINK = 3.5  # what int8 files must save, at least (tests)
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


def set_metadata(proto, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_bytes(model: nn.Module, info: ModelInfo) -> bytes:
    """The model as an ONNX file (opset 18, dynamic batch) with metadata_props, through
    torch.export (the TorchScript-based exporter is deprecated from torch 2.14)."""
    import onnx

    dummy = torch.zeros(2, *info.input_shape)  # 1 would be specialised
    # contiguous weights: a channels_last model (as load_model gives it) above 32 pixels exports
    # Shape/Gather/Range arithmetic that the ONNX check (rightly) refuses to run
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    program = torch.onnx.export(model.eval(), (dummy,), input_names=["images"], output_names=["logits"],
                                opset_version=OPSET, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                dynamo=True, verbose=False)
    program.optimize()  # constant folding: BatchNorm goes into the convs
    proto = program.model_proto
    set_metadata(proto, info.onnx_metadata())
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _real_inputs(info: ModelInfo, count: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    source = info.open_data(workers=0)
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


def _test_accuracy(runs: list, info: ModelInfo, batches=None) -> tuple[list[float], int, float]:
    """Top-1 of each model (a function: float32 batch -> logits, numpy) on the whole test
    split (or `batches` of it, prepared for them), and the share of images on which the last
    model gives the first one's top-1; for a multi-label model, mAP, and the share of
    images given the same labels."""
    total = None
    if batches is None:
        source = info.open_data(workers=0)
        batches = ((x.numpy(), y, bad) for x, y, bad in source.test_batches(EVAL_BATCH_SIZE))
        total = source.num_test
    found = evaluate_batches(runs, batches, len(info.classes), total=total, desc=f"int8: test {_score(info)}",
                             confusion=False, thresholds=info.thresholds)
    seen = found["metrics"][0].images
    if not seen:
        raise MobileNetError("no readable test images to measure the int8 accuracy on")
    return [m.map if info.multi_label else m.top1 for m in found["metrics"]], seen, found["agreement"]


def _score(info: ModelInfo) -> str:
    """What the int8 check compares: test accuracy, or a multi-label model's mAP."""
    return "mAP" if info.multi_label else "accuracy"


def _onnx_runner(data: bytes):
    session = open_session(data)
    n = EVAL_BATCH_SIZE
    return lambda x: np.concatenate([session.run(None, {"images": x[i:i + n]})[0] for i in range(0, len(x), n)])


def _check(name: str, run, checks: dict, tolerance: float = FP32_TOLERANCE) -> dict:
    """The written file's outputs against eager PyTorch's on random and real inputs: a
    MobileNetError (and nothing written) past `tolerance` or with another top-1."""
    report = {"real": {"max_abs_diff": None, "same_top1": None}}
    for kind, (x, eager) in checks.items():
        ours = run(x)
        diff = float(np.abs(ours - eager).max())
        same_top1 = bool((ours.argmax(1) == eager.argmax(1)).all()) if kind == "real" else None
        if diff > tolerance or same_top1 is False:
            raise MobileNetError(f"the exported {name} disagrees with PyTorch on {kind} inputs (largest difference "
                                 f"{diff:.2e}, top-1 identical: {same_top1}); nothing was written")
        report[kind] = {"max_abs_diff": diff, "same_top1": same_top1}
    return report


def _checks(model: nn.Module, info: ModelInfo, count: int, int8: bool, log) -> dict:
    """{"random": (x, eager logits), "real": (x, eager logits)} as numpy; no "real" when the
    model's data set is not here (e.g. a model converted from timm), unless int8 needs it."""
    inputs = {"random": torch.randn(4, *info.input_shape)}
    try:
        inputs["real"] = _real_inputs(info, count)[0]
    except MobileNetError as e:
        if int8:  # calibration needs real images
            raise
        log(f"note: {e}; checking on random inputs only")
    with torch.inference_mode():
        return {kind: (x.numpy(), model(x).numpy()) for kind, x in inputs.items()}


def export_path(model_dir, fmt: str, int8: bool) -> Path:
    """Where export writes when no --output is given."""
    found = get_format(fmt)
    return Path(model_dir) / f"model{found.tag}{'.int8' if int8 else ''}{found.suffix}"


def _output(model_dir, output, fmt: str, int8: bool) -> Path:
    output = Path(output) if output else export_path(model_dir, fmt, int8)
    if not output.parent.is_dir():
        raise MobileNetError(f"--output {output}: folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK):
        raise MobileNetError(f"--output {output}: folder {output.parent} is not writable")
    return output


def export(model_dir, fmt: str = "onnx", int8: bool = False, output=None, calibration_images: int = 300,
           check_images: int = 512, log=print, int8_preset: str = "portable", force: bool = False) -> dict:
    """Export `model_dir` to `output` (default export_path's: model[.int8].onnx, .pte or .tflite,
    model.mediapipe[.int8].tflite), verify it in its own runtime, and return a report. Raises
    MobileNetError when the check fails; nothing is written then. A file there that this
    toolkit did not write is replaced only with `force`. `int8_preset` (ONNX only) is a key of
    INT8_PRESETS. An ExecuTorch program's metadata goes to executorch.sidecar(output)."""
    if fmt not in EXPORT_FORMATS:
        raise MobileNetError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if int8_preset not in INT8_PRESETS:
        raise MobileNetError(f"--int8-preset must be one of {', '.join(INT8_PRESETS)}, got {int8_preset!r}")
    if fmt == "executorch":
        from .executorch import require_executorch

        require_executorch()
    marked = None
    if fmt in ("litert", "mediapipe"):
        from .litert import is_ours as marked, require_runtime

        require_runtime()  # the self-check runs the file in LiteRT's interpreter
    model, info = load_model(model_dir)
    output = _output(model_dir, output, fmt, int8)
    refuse_foreign([output, *([sidecar(output)] if fmt == "executorch" else [])], "--output", force, marked)
    if fmt == "mediapipe":  # checked on the task's pixels, not on the network's input
        data, report = _mediapipe(model, info, check_images, int8, calibration_images, log)
    else:
        checks = _checks(model, info, check_images, int8, log)
        if fmt == "onnx":
            data, report = _onnx(model, info, checks, int8, calibration_images, log, int8_preset)
        else:
            convert = _executorch if fmt == "executorch" else _litert
            data, report = convert(model, info, checks, int8, calibration_images, log)
    atomic_write_bytes(output, data)
    digest = hashlib.sha256(data).hexdigest()
    if fmt == "executorch":  # after its program: a sidecar never describes a program that was not kept
        atomic_write_json(sidecar(output), info.sidecar(int8, digest))
    found = {"format": fmt, "int8": int8, "output": str(output), **report, "bytes": len(data)}
    if output.parent.resolve() == Path(model_dir).resolve():  # beside the model: its report shows the check
        record_export(model_dir, output.name, {**found, "sha256": digest})
    return found


def _onnx(model, info, checks, int8, calibration_images, log, preset) -> tuple[bytes, dict]:
    fp32 = onnx_bytes(model, info)
    fp32_run = _onnx_runner(fp32)
    report = _check("ONNX", fp32_run, checks)
    if not int8:
        return fp32, report
    calibration = _calibration(info, calibration_images)
    data = quantize_onnx(fp32, calibration, info.onnx_metadata(), preset)
    int8_run = _onnx_runner(data)
    saturates = preset == "vnni" and not {"avx512_vnni", "avx_vnni"} & set(cpu_features())
    advice = VNNI_ADVICE if saturates else None
    report.update(_compare_int8(fp32_run, int8_run, len(fp32), len(data), info, log, advice))
    report.update(int8_preset=preset, calibration_images=len(calibration), fp32_bytes=len(fp32))
    report["random"]["int8_max_abs_diff"] = float(np.abs(int8_run(checks["random"][0]) - checks["random"][1]).max())
    return data, report


def _executorch(model, info, checks, int8, calibration_images, log) -> tuple[bytes, dict]:
    """A .pte lowered to XNNPACK, checked in ExecuTorch's runtime; int8 by PT2E."""
    from .executorch import PteModel, pte_bytes, pte_int8_bytes

    example = torch.zeros(2, *info.input_shape)

    def convert(calibration):
        return pte_bytes(model, example) if calibration is None else pte_int8_bytes(
            model, example, torch.from_numpy(calibration))
    return _pt2e("ExecuTorch program", convert, lambda data: PteModel(data, info).logits, checks, int8, info,
                 calibration_images, log)


def _litert(model, info, checks, int8, calibration_images, log) -> tuple[bytes, dict]:
    """A .tflite by litert-torch, checked in LiteRT's interpreter; int8 by PT2E."""
    from .litert import LiteRtModel, litert_bytes

    return _pt2e("LiteRT model", lambda calibration: litert_bytes(model, info, calibration),
                 lambda data: LiteRtModel(data, info).logits, checks, int8, info, calibration_images, log)


def _mediapipe(model, info, check_images, int8, calibration_images, log) -> tuple[bytes, dict]:
    """A .tflite for MediaPipe Tasks, checked in the task itself (mediapipe.check_file); int8
    by PT2E on the network, refused when it loses more than INT8_MAX_DROP of test accuracy
    in the task."""
    from .mediapipe import check_file, mediapipe_bytes, pixel_images, task_client, test_batches

    fp32 = mediapipe_bytes(model, info)
    report = check_file(fp32, model, info, check_images, log)
    if not int8:
        return fp32, report
    if calibration_images < 1:
        raise MobileNetError("--int8 needs calibration images; --calibration must be at least 1")
    calibration = pixel_images(info, calibration_images, split="train")[0]
    data = mediapipe_bytes(model, info, calibration)
    silent = lambda _: None  # noqa: E731 - check_file said already where the file is checked
    batches, fp32_run = test_batches(info, task_client(fp32, info, silent)[0])
    int8_run = test_batches(info, task_client(data, info, silent)[0])[1]
    report.update(_compare_int8(fp32_run, int8_run, len(fp32), len(data), info, log, batches=batches))
    report.update(calibration_images=len(calibration), fp32_bytes=len(fp32))
    return data, report


def _pt2e(name, convert, runner, checks, int8, info, calibration_images, log) -> tuple[bytes, dict]:
    """The bytes `convert(None)` makes, checked in their runtime (`runner(bytes)` gives a
    logits function); with int8, `convert(calibration images)`'s, refused when they lose more
    than INT8_MAX_DROP of test accuracy (nothing is written then)."""
    fp32 = convert(None)
    fp32_run = runner(fp32)
    report = _check(name, fp32_run, checks)
    if not int8:
        return fp32, report
    calibration = _calibration(info, calibration_images)
    data = convert(calibration)
    report.update(_compare_int8(fp32_run, runner(data), len(fp32), len(data), info, log))
    report.update(calibration_images=len(calibration), fp32_bytes=len(fp32))
    return data, report


def _calibration(info: ModelInfo, count: int) -> np.ndarray:
    if count < 1:
        raise MobileNetError("--int8 needs calibration images; --calibration must be at least 1")
    return _real_inputs(info, count, split="train")[0].numpy()


def _compare_int8(fp32_run, int8_run, fp32_bytes: int, int8_bytes: int, info: ModelInfo, log,
                  advice: str | None = None, batches=None) -> dict:
    """Test accuracy of float32 and int8 side by side, logged and returned. Losing more than
    INT8_MAX_DROP is a MobileNetError (nothing is written), with `advice` or the usual one."""
    (before, after), images, agreement = _test_accuracy([fp32_run, int8_run], info, batches)
    shrink = fp32_bytes / int8_bytes
    log(f"int8: test {_score(info)} {100 * before:.2f}% -> {100 * after:.2f}% ({100 * (after - before):+.2f} points) "
        f"on {images} images; {fp32_bytes / 1e6:.2f} MB -> {int8_bytes / 1e6:.2f} MB ({shrink:.1f}x smaller); "
        f"same {'labels' if info.multi_label else 'top-1'} as float32 on {100 * agreement:.2f}%")
    if round(before - after, 9) > INT8_MAX_DROP:
        lost = f"int8 loses {100 * (before - after):.2f} points, more than {100 * INT8_MAX_DROP:.0f}"
        advice = advice or "Calibrate on more images (--calibration), or ship the float32 file for this model"
        raise MobileNetError(f"{lost}; nothing was written. {advice}")
    return {"accuracy_fp32": before, "accuracy_int8": after, "top1_agreement": agreement, "shrink": shrink,
            "test_images": images, "score": _score(info)}


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
