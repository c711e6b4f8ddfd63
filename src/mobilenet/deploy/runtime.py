"""Running an exported .onnx model with ONNX Runtime or OpenVINO, numpy and Pillow only: no
torch. Evaluation of an exported file (.onnx here, .pte through executorch.py, .tflite through
litert.py) is here too; prediction, on any runtime, is predictor.Predictor's.

The file carries what it needs in its metadata (class names, input preparation), so a
deployed model is one file. Nothing here may import torch: a test checks sys.modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..data.images import (
    FASHION_CLASSES, FASHION_MNIST, fashion_files, fashion_mnist_dir, from_pixels, load_image, prepare, read_idx,
)
from ..data.labels import one_hot
from ..data.splits import data_splits
from ..errors import MobileNetError, NotInstalled, first_line
from ..files import FILE_LIMIT, read_regular
from ..limits import EVAL_BATCH_SIZE
from ..net.cost import eval_batch_size
from ..report.metrics import check_scores, evaluate_batches
from ..run.info import ModelInfo
from ..run.names import CONFUSION, METRICS
from .onnx_check import check_onnx

ORT_FATAL = 4  # ONNX Runtime's log quotes a file's node and tensor names raw; only fatal lines pass
OVC = "openvino.tools.ovc"  # OpenVINO's conversion API, which `import openvino` pulls in


def open_session(model, threads: int | None = None):
    """An ONNX Runtime session on the CPU for a file path or the bytes of a model: the one
    place a session is made."""
    import onnxruntime as ort

    ort.disable_telemetry_events()  # what is left to do where onnxruntime was imported before mobilenet
    ort.set_default_logger_severity(ORT_FATAL)  # the log made while the file loads
    options = ort.SessionOptions()
    options.log_severity_level = ORT_FATAL  # the session's own, while it runs
    if threads:
        options.intra_op_num_threads = threads
    # enable_fallback=0: a failed session is one line of ours, not a retry announced on stdout
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"], enable_fallback=0)


def import_openvino():
    """openvino without its conversion API: importing that (openvino 2026.4) sends a usage
    event to Google Analytics unless ~/intel/openvino_telemetry opts out, and this runtime
    only reads files. openvino's __init__ skips convert_model on ImportError. An openvino
    imported before is left as it is."""
    if "openvino" not in sys.modules:
        sys.modules[OVC] = None  # its import raises ImportError
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            raise NotInstalled.of("OpenVINO", e, "openvino", "openvino") from None
        finally:
            del sys.modules[OVC]  # the caller's own `import openvino.tools.ovc` still works
    return sys.modules["openvino"]


def open_openvino(model, threads: int | None = None):
    """(the model as read, compiled for the CPU) from a file path or the bytes of an ONNX
    model: the one place OpenVINO compiles one."""
    ov = import_openvino()
    # float32 as the file says: on CPUs with bf16 (AMX, AVX512_BF16) OpenVINO would otherwise
    # run it in bf16, 3e-4 off ONNX Runtime on small Fashion-MNIST models; int8 layers stay int8
    config = {"INFERENCE_PRECISION_HINT": ov.Type.f32}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    read = core.read_model(model if isinstance(model, bytes) else str(model))
    return read, core.compile_model(read, "CPU", config)


class OnnxModel:
    """An exported MobileNet: `.info` (its ModelInfo), `.classes`, `.spec` (input preparation),
    `.int8` (an int8 file), `.logits(batch)`.
    Run by ONNX Runtime; OpenVinoModel runs the same file, checked the same way."""

    engine = "ONNX Runtime"  # who ran it, in a failure's line

    def __init__(self, path, threads: int | None = None):
        path = Path(path)
        try:
            data = read_regular(path, FILE_LIMIT, "--model")
        except FileNotFoundError:
            raise MobileNetError(f"--model {path}: no such file; give an .onnx file made by `mobilenet export`") \
                from None
        external = check_onnx(data, path)
        try:  # from the bytes checked, unless tensors live beside the file (the runtime finds those)
            meta, shape = self._open(path if external else data, threads)
            self.info = ModelInfo.from_onnx_metadata(meta, tuple(d if isinstance(d, int) else None for d in shape[1:3]))
            self.int8 = "int8" in meta  # quantize_onnx names its preset there
        except KeyError as e:
            raise MobileNetError(f"{path} has no {e} metadata; export it with `mobilenet export`") from None
        except (ValueError, TypeError) as e:  # also JSONDecodeError
            raise MobileNetError(f"{path}: its metadata does not fit the network ({e}); re-export it") from None
        except Exception as e:  # the runtimes raise their own exception types for a bad file
            raise MobileNetError(f"{path} is not a loadable ONNX model ({first_line(e)}); re-export it") from None
        self.classes, self.spec, self.path = self.info.classes, self.info.input, path

    def _open(self, model, threads) -> tuple[dict, list]:
        """A session on `model` (a path or bytes): (its metadata, its input's shape, ints where fixed)."""
        self.session = open_session(model, threads)
        self.input_name = self.session.get_inputs()[0].name
        return self.session.get_modelmeta().custom_metadata_map, self.session.get_inputs()[0].shape

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        try:
            z = self._run(np.ascontiguousarray(batch, dtype=np.float32))
        except Exception as e:  # noqa: BLE001 - the runtime's own types: a failed allocation, a bad graph
            raise MobileNetError(f"{self.path}: {self.engine} failed on {len(batch)} images ({first_line(e)})") from None
        check_scores(z, len(self.classes), self.path)
        return z


class OpenVinoModel(OnnxModel):
    """OnnxModel's file, its checks and metadata, run by OpenVINO on the CPU."""

    engine = "OpenVINO"

    def __init__(self, path, threads: int | None = None):
        import_openvino()  # its absence is said as such, not as a file that does not load
        super().__init__(path, threads)

    def _open(self, model, threads) -> tuple[dict, list]:
        read, self.compiled = open_openvino(model, threads)
        found = read.get_rt_info()  # an ONNX file's metadata_props are its "framework" entry
        meta = found["framework"] if "framework" in found.keys() else {}
        shape = read.input(0).get_partial_shape()
        return {k: meta[k].astype(str) for k in meta.keys()}, [d.get_length() if d.is_static else None for d in shape]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.compiled(batch)[0]


def split_batches(model: OnnxModel, data: str | None, seen: dict, batch_size: int = EVAL_BATCH_SIZE,
                  split: str = "test"):
    """(images float32, labels, bad files) of the test (or train) split, prepared as
    `model.spec` says without torch; a folder's count of skipped entries goes into seen["skipped"]."""
    spec = model.spec
    data = model.info.data_to_open(data)
    if data == FASHION_MNIST:
        if model.classes != FASHION_CLASSES:
            raise MobileNetError("the model's classes are not Fashion-MNIST's; evaluate it on its own data (--data)")
        folder = fashion_mnist_dir()
        images, labels = (read_idx(p) for p in fashion_files(folder, split))
        for i in range(0, len(labels), batch_size):
            yield from_pixels(images[i:i + batch_size, None].astype(np.float32), spec), \
                labels[i:i + batch_size].astype(np.int64), []
        return
    found = data_splits(data, model.info.test_split, model.info.seed)
    if found["classes"] != model.classes:
        raise MobileNetError(f"{data} has other classes than the model; evaluate on the model's data")
    seen["skipped"], samples = found["skipped"], found[split]
    several = model.info.multi_label
    for i in range(0, len(samples), batch_size):
        arrays, labels, bad = [], [], []
        for path, label in samples[i:i + batch_size]:
            try:
                arrays.append(prepare(load_image(path, spec["channels"]), spec))
                labels.append(one_hot(label, len(model.classes)) if several else label)
            except MobileNetError as e:
                bad.append(str(e))
        yield (np.stack(arrays) if arrays else None), np.asarray(labels, np.float32 if several else np.int64), bad


def read_onnx(path: Path) -> tuple[bytes, ModelInfo, bool]:
    """An .onnx file's bytes, metadata and int8 flag, checked as OnnxModel checks it."""
    model = OnnxModel(path, 1)
    return read_regular(path, FILE_LIMIT, "--model"), model.info, model.int8


def open_file(path, runtime: str, threads: int | None = None):
    """An exported file in its runtime: OnnxModel (onnxruntime), OpenVinoModel (openvino),
    pte.PteModel (executorch) or litert.LiteRtModel (litert), each with .info, .classes, .spec,
    .int8 and .logits(batch). `threads`: the runtime's own default where None (ExecuTorch's always)."""
    if runtime == "executorch":
        from .executorch import PteModel  # torch comes with it: ExecuTorch's runtime takes torch tensors

        return PteModel(path)
    if runtime == "litert":
        from .litert import LiteRtModel

        return LiteRtModel(path, threads=threads)
    return OpenVinoModel(path, threads) if runtime == "openvino" else OnnxModel(path, threads)


def evaluate_file(model_path, runtime: str = "onnxruntime", data: str | None = None, out=None,
                  force: bool = False) -> dict:
    """As evaluation.evaluate, for an exported file in its runtime (open_file):
    metrics.json and confusion_matrix.png go into `out` (default: the file's folder)."""
    from ..files import PRODUCER, atomic_write_json, make_dir
    from ..report.plots import plot_confusion
    from ..run.ownership import refuse_foreign

    out = Path(out or Path(model_path).parent)
    refuse_foreign([out / METRICS, out / CONFUSION], "--out", force)
    model = open_file(model_path, runtime)
    data = data or model.info.data_name
    seen = {}
    size = eval_batch_size(model.info.model, EVAL_BATCH_SIZE) if model.info.model else EVAL_BATCH_SIZE
    found = evaluate_batches([model.logits], split_batches(model, data, seen, size), len(model.classes),
                             thresholds=model.info.thresholds)
    metrics = found["metrics"][0].report(model.classes, str(data), found["bad_files"], seen.get("skipped", 0))
    out = make_dir(out)
    atomic_write_json(out / METRICS, {**metrics, "producer": PRODUCER})
    if "confusion_matrix" in metrics:  # one class per image
        plot_confusion(metrics["confusion_matrix"], model.classes, out / CONFUSION)
    return metrics
