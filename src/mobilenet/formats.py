"""The one table of formats and runtimes. The CLI's choices, the runtime a file opens in
(by its suffix), bench's rows, the report's list of exported files and the sweep's size
columns all read it; adding a format is a row here and its module in deploy/. No torch:
the CLI and the deployed path read it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BadArgument


@dataclass(frozen=True)
class Format:
    name: str  # `export --format`, and the key of the sweep's size columns (with "-int8")
    suffix: str  # the file's suffix
    title: str  # as the report names it
    extra: str | None  # the pip extra `export` needs (None: the base install)
    exported: bool  # `mobilenet export` writes it (safetensors is a run folder's own)
    module: str  # the module under mobilenet/ that writes or reads it
    tag: str = ""  # what the name holds before the suffix (".mediapipe": model.mediapipe.int8.tflite)
    runs_as: str | None = None  # the format whose runtimes run it (None: its own)


@dataclass(frozen=True)
class Runtime:
    name: str  # --runtime
    format: str  # the Format it runs
    package: str | None  # what bench needs installed to time it (None: always there)
    int8: bool  # bench and the sweep also time "<name>-int8", the int8 file
    predicts: bool  # predict and evaluate run files with it


FORMATS = (
    Format("safetensors", ".safetensors", "PyTorch", None, False, "run.folder"),
    Format("onnx", ".onnx", "ONNX", None, True, "deploy.exporter"),
    Format("executorch", ".pte", "ExecuTorch", "executorch", True, "deploy.executorch"),
    Format("litert", ".tflite", "LiteRT", "litert-export", True, "deploy.litert"),
    # a .tflite for MediaPipe Tasks' ImageClassifier: uint8 RGB in, labels in the standard metadata
    Format("mediapipe", ".tflite", "MediaPipe Tasks", "mediapipe", True, "deploy.mediapipe", ".mediapipe", "litert"),
)
# In order of preference: the first runtime that predicts with a format is its file's default.
RUNTIME_TABLE = (
    Runtime("torch", "safetensors", None, False, True),
    Runtime("torch-fast", "safetensors", None, False, False),  # bench only: exporter.fast_inference
    Runtime("onnxruntime", "onnx", None, True, True),
    Runtime("openvino", "onnx", "openvino", True, True),
    Runtime("executorch", "executorch", "executorch", True, True),
    Runtime("litert", "litert", "litert-torch", True, True),  # bench converts, so it needs the converter
    Runtime("timm", "safetensors", "timm", False, False),  # bench's reference, not a deployment
)

EXPORT_FORMATS = tuple(f.name for f in FORMATS if f.exported)
# Ways to run a model for inference (`mobilenet bench`): each runtime, then its int8 file.
RUNTIMES = tuple(n for r in RUNTIME_TABLE for n in ((r.name, f"{r.name}-int8") if r.int8 else (r.name,)))
PREDICT_RUNTIMES = tuple(r.name for r in RUNTIME_TABLE if r.predicts)


def get_format(name: str) -> Format:
    return next(f for f in FORMATS if f.name == name)


def runtime_row(name: str) -> Runtime:
    """The table's row of a runtime, or of its int8 variant ("onnxruntime-int8")."""
    return next(r for r in RUNTIME_TABLE if r.name == name.removesuffix("-int8"))


def size_key(runtime: str) -> str:
    """The sweep's size column of the file a runtime loads: "onnx", "onnx-int8", "pte", ..."""
    key = get_format(runtime_row(runtime).format).suffix.lstrip(".")
    return f"{key}-int8" if runtime.endswith("-int8") else key


def format_of(path) -> Format | None:
    """The exported format a file's name names, by its suffix and tag (a tagged one first:
    x.mediapipe.tflite is MediaPipe's, x.tflite LiteRT's), or None."""
    name = Path(path)
    fits = [f for f in FORMATS if f.exported and name.suffix == f.suffix and (not f.tag or f.tag in name.suffixes)]
    return max(fits, key=lambda f: len(f.tag), default=None)


def title_of(path) -> str | None:
    """The format an exported file's name names ("ONNX"), or None."""
    found = format_of(path)
    return found and found.title


def file_runtimes(path) -> list[str]:
    """The runtimes that run the exported file `path`, by its name, in order of preference;
    none for a folder or another suffix."""
    found = None if os.path.isdir(path) else format_of(path)
    runs = found and (found.runs_as or found.name)
    return [r.name for r in RUNTIME_TABLE if r.predicts and r.format == runs]


def runtime_for(model, runtime: str | None = None) -> str:
    """The runtime that opens `model`: `runtime` when given and it runs that kind of model;
    else a file's is the first runtime that predicts with its suffix, and a folder's torch."""
    runs = file_runtimes(model)
    fits = runs or ["torch"]
    if runtime is None:
        return fits[0]
    if runtime not in fits and (runs or os.path.isdir(model)):
        raise BadArgument(f"--model {model} runs with --runtime {' or '.join(fits)}, not {runtime}")
    return runtime
