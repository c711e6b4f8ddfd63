"""LiteRT (.tflite, formerly TensorFlow Lite): convert a model with litert-torch, float32 or
int8 by PT2E, and run .tflite files in LiteRT's interpreter with numpy only.

The class names and input preparation travel inside the file, as one entry named
"mobilenet" in the flatbuffer's Model.metadata table (name -> buffer), holding
ModelInfo.exported's JSON: one file to ship, as with .onnx, and interpreters skip entries
they do not know. (The Support Library's TFLITE_METADATA schema would need the tflite-support
package to write; its labels are a zip inside the file.)

Running needs the `litert` extra (ai-edge-litert, no torch: a test checks sys.modules);
converting needs `litert-export` (litert-torch). Nothing heavy is imported at module level.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

from ..errors import MobileNetError, NotInstalled
from ..files import FILE_LIMIT, PRODUCER, read_regular
from ..net.cost import state_bytes
from ..report.metrics import check_scores
from ..run.info import ModelInfo
from .native import child_fails, detail, probe_file, probe_image, quiet_stderr

METADATA = b"mobilenet"  # the name of our Model.metadata entry
IDENTIFIER = b"TFL3"  # a LiteRT flatbuffer's file identifier, bytes 4-8
CHUNK = 256  # images per invoke of a file with a dynamic batch
MAX_ENTRIES = 64  # metadata entries looked at; a converter writes three
AGAIN = "export it again with `mobilenet export --format litert`"
TASK = "mediapipe"  # the "task" of our entry in a file for MediaPipe Tasks (deploy/mediapipe.py)


def task_spec(spec: dict) -> dict:
    """A MediaPipe file's input, in images.prepare's terms: the model's preparation up to the
    pixels (0 to 255, at the data's image size, or cropped to ρ), since the graph does the rest."""
    c, size = spec["channels"], spec.get("image_size") or spec["resolution"]
    found = {**spec, "resolution": size, "mean": [0.0] * c, "std": [1 / 255] * c}
    return found if spec.get("image_size") else {**found, "image_size": None}


def task_pixels(x: np.ndarray) -> np.ndarray:
    """Pixels as task_spec prepares them, (n, C, S, S) float, -> what a MediaPipe file takes:
    (n, S, S, 3) uint8 RGB (a grey image's one channel three times: the graph's grey of it is itself)."""
    q = np.clip(np.round(x), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(np.repeat(q, 3, axis=3) if q.shape[3] == 1 else q)


def require_runtime():
    """ai_edge_litert.interpreter, or one line saying how to install it."""
    try:
        from ai_edge_litert import interpreter
    except ImportError as e:
        raise NotInstalled.of("LiteRT", e, "litert", "ai-edge-litert") from None
    return interpreter


def _converter():
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # no progress lines of its own
    try:
        with quiet_stderr():  # JAX, absl and torch log lines as it is imported (6 to 16 s)
            import litert_torch
    except ImportError as e:
        raise NotInstalled.of("LiteRT's converter", e, "litert-export", "litert-torch") from None
    return litert_torch


def litert_bytes(model, info: ModelInfo, calibration: np.ndarray | None = None) -> bytes:
    """The model as a .tflite with our metadata entry: float32 with a dynamic batch, or with
    `calibration` images int8 by PT2E (symmetric, per-channel weights, activation ranges
    observed on them), int8 in and out, for one image at a time (LiteRtModel feeds it so).

    Why int8 has batch 1: the converter's graph has static shapes inside, the example's,
    and the RESHAPEs it writes hold them as constants. Float32's pool-then-flatten pair of
    RESHAPEs folds away, but int8 requantizes between them, so a dynamic int8 file refused
    every batch but the example's once the last feature map was over 1×1 (a global mean
    instead of the pool gave a RESHAPE of its own at 1×1). Batch 1 is how an app calls it."""
    import torch

    litert_torch = _converter()
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    shape = info.input_shape
    example = (torch.zeros(2, *shape),)  # 1 would be specialised
    options = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)}
    if calibration is not None:  # calibrated with any batch, converted for one image
        model, quant_config = _quantize(model, example, options["dynamic_shapes"], calibration)
        example, options = (torch.zeros(1, *shape),), {"quant_config": quant_config}
    with quiet_stderr():
        data = litert_torch.convert(model, example, **options).model_content()
    return with_metadata(data, info.exported(calibration is not None))


def _quantize(model, example, dynamic, calibration: np.ndarray, leave_float: tuple = ()):
    """PT2E: the observed, calibrated and converted module, and the QuantConfig that tells
    litert-torch to lower its quantize/dequantize pairs to int8 ops. Submodules of the types
    in `leave_float` stay float."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from .pt2e import calibrated

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    for kind in leave_float:
        quantizer.set_module_type(kind, None)
    observed = calibrated(torch.export.export(model, example, dynamic_shapes=dynamic).module(), quantizer,
                          torch.from_numpy(calibration))
    return convert_pt2e(observed, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def with_metadata(data: bytes, entry: dict, others: dict[bytes, bytes] | None = None) -> bytes:
    """`data` with our metadata entry holding `entry` as JSON (one before it replaced), and
    `others`' entries (name: bytes), each replacing one of its name."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    if any(b.offset for b in model.buffers or []):  # over 2 GB: tensors after the flatbuffer
        raise MobileNetError("the converter wrote tensors outside the flatbuffer; this model is too large for it")
    entries = {METADATA: json.dumps(entry).encode(), **(others or {})}
    model.metadata = [m for m in model.metadata or [] if m.name not in entries]
    for name, content in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(content, np.uint8)
        model.buffers.append(buffer)
        named = schema.MetadataT()
        named.name, named.buffer = name, len(model.buffers) - 1
        model.metadata.append(named)
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


def read_metadata(data: bytes, name) -> dict:
    """The JSON object of the file's "mobilenet" entry, read without the interpreter; one line
    for a file that is not a LiteRT flatbuffer, is damaged, or has no such entry."""
    if data[4:8] != IDENTIFIER:
        raise MobileNetError(f"{name} is not a LiteRT model (no {IDENTIFIER.decode()} identifier); give a .tflite "
                             "made by `mobilenet export --format litert`")
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(min(model.MetadataLength(), MAX_ENTRIES)):
            entry = model.Metadata(i)
            if entry.Name() == METADATA and 0 <= entry.Buffer() < model.BuffersLength():
                found = json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
                if not isinstance(found, dict):
                    raise ValueError("not a JSON object")
                return found
    except (struct.error, IndexError, AttributeError, ValueError, TypeError, RecursionError) as e:
        raise MobileNetError(f"{name}: its flatbuffer or metadata is damaged ({detail(e)}); {AGAIN}") from None
    raise MobileNetError(f"{name} has no {METADATA.decode()!r} metadata (class names, input preparation): not a "
                         f"file this toolkit wrote; {AGAIN}")


def is_ours(path: Path) -> bool:
    """Whether the .tflite at `path` carries our metadata entry (run/ownership.py's test for it)."""
    return read_metadata(read_regular(path, FILE_LIMIT, "--output"), path).get("producer") == PRODUCER


def _open_file(path: Path) -> tuple[bytes, ModelInfo]:
    """A .tflite's bytes and metadata, checked: read_file's checks, and the interpreter,
    probed in a child, takes the input the metadata prepares (a MediaPipe file: its pixels, RGB)."""
    data, info, _ = read_file(path)
    task = read_metadata(data, path).get("task") == TASK
    size = task_spec(info.input)["resolution"]
    probe_file(data, path, "mobilenet.deploy.litert:_probe_child", "LiteRT's interpreter", "LiteRT model", AGAIN,
               info, 1, (size, size, 3) if task else None)
    return data, info


def read_file(path: Path) -> tuple[bytes, ModelInfo, bool]:
    """A .tflite's bytes, metadata and int8 flag, without running it: the file is no larger
    than its network needs."""
    try:
        data = read_regular(path, FILE_LIMIT, "--model")
    except FileNotFoundError:
        raise MobileNetError(f"--model {path}: no such file; give a .tflite file made by "
                             "`mobilenet export --format litert`") from None
    try:
        info = ModelInfo.from_json(read_metadata(data, path), fixed=(None, None))
    except KeyError as e:
        raise MobileNetError(f"{path}: its metadata has no {e}; {AGAIN}") from None
    except (ValueError, TypeError) as e:
        raise MobileNetError(f"{path}: its metadata does not describe the network ({e}); {AGAIN}") from None
    if info.model and len(data) > 2 * state_bytes(info.model) + (16 << 20):
        raise MobileNetError(f"{path} is {len(data):,} bytes, more than the network its metadata names needs; {AGAIN}")
    return data, info, read_metadata(data, path).get("int8") is True


def _probe_child() -> None:
    """probe's child: the model from stdin, loaded and run on one non-zero image; on stdout
    its input's sizes and batch (None: any), the scores' shape and whether they are finite,
    or one line on stderr."""
    data = sys.stdin.buffer.read()
    try:
        interpreter = require_runtime().Interpreter(model_content=data, num_threads=1)
        found, out = _io(interpreter)
        sizes = [int(v) for v in found["shape"]]
        batch = None if found["shape_signature"][0] == -1 else sizes[0]
        if batch not in (None, 1):  # the parent refuses it: nothing allocated for its batch
            print(json.dumps({"input": sizes, "batch": batch, "output": None, "finite": False}))
            return
        interpreter.resize_tensor_input(found["index"], [1, *sizes[1:]])
        interpreter.allocate_tensors()
        image = probe_image(sizes[1:])
        interpreter.set_tensor(found["index"], quantize(image * 64 + 128 if _raw(found) else image, found))
        interpreter.invoke()
        z = dequantize(interpreter.get_tensor(out["index"]), out)
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        child_fails(e)
    print(json.dumps({"input": sizes, "batch": batch, "output": list(z.shape), "finite": bool(np.isfinite(z).all())}))


def _io(interpreter) -> tuple[dict, dict]:
    """The one input's and one output's details: float32, or int8/uint8 with a scale."""
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{len(inputs)} inputs and {len(outputs)} outputs; a classifier has one of each")
    for d in (inputs[0], outputs[0]):
        if d["dtype"] not in (np.float32, np.int8, np.uint8) or len(d["shape"]) != (4 if d is inputs[0] else 2):
            raise ValueError(f"tensor {d['name']!r} is {d['dtype'].__name__} of shape {list(d['shape'])}")
        if d["dtype"] != np.float32 and not d["quantization"][0] > 0 and not (d is inputs[0] and _raw(d)):
            raise ValueError(f"tensor {d['name']!r} is {d['dtype'].__name__} without a scale")
    return inputs[0], outputs[0]


def _raw(details: dict) -> bool:
    """Whether an input takes pixels as they are: uint8 RGB, NHWC, without a scale (MediaPipe's)."""
    return details["dtype"] == np.uint8 and not details["quantization"][0] > 0 and details["shape"][-1] == 3


def _cores() -> int:
    """The cores this process may run on (all of them where the OS does not say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def quantize(x: np.ndarray, details: dict) -> np.ndarray:
    """Float images as the file's input type: int8 files take q = round(x / scale) + zero point,
    a MediaPipe file pixels as they are."""
    if details["dtype"] == np.float32:
        return x
    scale, zero = details["quantization"] if not _raw(details) else (1.0, 0)
    bounds = np.iinfo(details["dtype"])
    return np.clip(np.round(x / scale) + zero, bounds.min, bounds.max).astype(details["dtype"])


def dequantize(q: np.ndarray, details: dict) -> np.ndarray:
    if details["dtype"] == np.float32:
        return q
    scale, zero = details["quantization"]
    return (q.astype(np.float32) - zero) * np.float32(scale)


def probability_logits(p: np.ndarray, multi_label: bool) -> np.ndarray:
    """Logits whose softmax (or a multi-label model's sigmoid) gives the probabilities `p`
    back: log p, or log p − log(1 − p); clipped, so that 0 and 1 stay finite."""
    tiny = np.finfo(np.float32).tiny
    p = np.asarray(p, np.float64)
    if not multi_label:
        return np.log(np.maximum(p, tiny))
    return np.log(np.maximum(p, tiny)) - np.log(np.maximum(1 - p, tiny))


class LiteRtModel:
    """An exported .tflite: `.info` (its ModelInfo), `.classes`, `.spec` (input preparation),
    `.int8` (its weights), `.logits(batch)` in float32 whatever the file's input and output types.
    A MediaPipe file (`.task`) takes pixels (its `.spec` is task_spec's) and gives probabilities,
    turned back into logits (probability_logits).

    `source` is a .tflite path (its metadata checked, the file probed in a child process
    first) or the bytes of a model this process has just converted, with `info` given."""

    def __init__(self, source, info: ModelInfo | None = None, threads: int | None = None):
        interpreter = require_runtime()
        self.name = "the converted model" if isinstance(source, bytes) else str(source)
        self._data, self.info = (source, info) if isinstance(source, bytes) else _open_file(Path(source))
        self.classes, self.spec = self.info.classes, self.info.input
        entry = read_metadata(self._data, self.name)
        try:
            with quiet_stderr():
                self.interpreter = interpreter.Interpreter(model_content=self._data, num_threads=threads or _cores())
            self._in, self._out = _io(self.interpreter)
        except Exception as e:  # noqa: BLE001 - the interpreter raises its own types for a bad file
            raise MobileNetError(f"{self.name} is not a loadable LiteRT model ({detail(e)}); {AGAIN}") from None
        self.int8 = entry.get("int8") is True
        self.task = entry.get("task") == TASK and _raw(self._in)
        if self.task:
            self.spec = task_spec(self.spec)
        fixed = self._in["shape_signature"][0] != -1
        self.batch = int(self._in["shape"][0]) if fixed else None  # 1 (a file's is probed), or None: CHUNK at a time
        self._size = None  # the batch the interpreter's tensors are allocated for

    def logits(self, batch: np.ndarray) -> np.ndarray:
        if self.task:
            return probability_logits(self.probabilities(task_pixels(batch)), self.info.multi_label)
        return self._run(np.ascontiguousarray(batch, dtype=np.float32))

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """A MediaPipe file's output for RGB pixels as the task gives them, (n, S, S, 3) uint8."""
        return self._run(rgb)

    def _run(self, x: np.ndarray) -> np.ndarray:
        step = self.batch or CHUNK
        try:
            z = np.concatenate([self._invoke(x[i:i + step]) for i in range(0, len(x), step)])
        except Exception as e:  # noqa: BLE001 - the interpreter's own types
            raise MobileNetError(f"{self.name}: LiteRT failed on {len(x)} images ({detail(e)})") from None
        check_scores(z, len(self.classes), self.name)
        return z

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._size:
            with quiet_stderr():  # the first allocation logs "Created TensorFlow Lite XNNPACK delegate"
                self.interpreter.resize_tensor_input(self._in["index"], [len(x), *x.shape[1:]])
                self.interpreter.allocate_tensors()
            self._size = len(x)
        self.interpreter.set_tensor(self._in["index"], quantize(x, self._in))
        with quiet_stderr():  # and XNNPACK's "Created TensorFlow Lite XNNPACK delegate" where it comes late
            self.interpreter.invoke()
        return dequantize(self.interpreter.get_tensor(self._out["index"]), self._out)
