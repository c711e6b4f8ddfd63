"""Which files are ours to replace. Every command asks here (refuse_foreign) before it writes,
and replaces a file only if the file is ours by its content; --force overrides. A name
alone never makes a file ours: not an empty .lock beside it, nor random bytes named
checkpoint.pt.

A file is ours when it carries our mark:
- an ONNX file's producer metadata, or a safetensors header's format;
- a .pte whose sidecar is ours and names its SHA-256;
- a JSON object with our producer key (sidecars, metrics.json, exports.json), or one that
  reads as a ModelInfo (config.json);
- a PNG whose Software text is ours, an HTML page whose generator is ours, history.csv's header,
  train.log's first line;
- a checkpoint.pt that loads (weights_only) as one of `mobilenet train`'s;
- a format of its own, through the `marked` test its writer gives (a .tflite's metadata);
or when it lies in a run folder, beside a checkpoint.pt that is ours by that test (the
folders of older versions, whose pictures and pages carry no mark).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import BadArgument, MobileNetError, printable
from ..files import FILE_LIMIT, PRODUCER, load_json_object, read_regular
from .info import SAFETENSORS_FORMAT, ModelInfo
from .names import CHECKPOINT, HISTORY, LOG, LOG_MARK

PAGE_MARK = f'<meta name="generator" content="{PRODUCER}">'  # in the head of every page we write
HEAD = 4096  # bytes of a page or a CSV file its mark must lie in


def refuse_foreign(paths, option: str, force: bool = False, marked=None) -> None:
    """BadArgument (exit 2) naming the first of `paths` that holds a file this toolkit did
    not write, unless `force`. `marked(path)`: the writer's own test for its format."""
    for path in map(Path, paths):
        if not force and not ours(path, marked):
            raise BadArgument(f"{option} {printable(path)}: {printable(path.name)} was not written by mobilenet, and "
                              f"would be replaced; choose another {option}, or add --force to replace it")


def ours(path: Path, marked=None) -> bool:
    """Whether `path` is no file at all or one this toolkit wrote (the module's docstring)."""
    if not os.path.lexists(path):
        return True
    if path.is_symlink() or not path.is_file():
        return False
    return _safely(lambda: bool(marked and marked(path)) or _marked(path)) or _safely(lambda: _in_run_folder(path))


def _safely(test) -> bool:
    """test(), or False for a file whose mark cannot be read (protobuf, safetensors, JSON errors): it has none."""
    try:
        return test()
    except Exception:  # noqa: BLE001
        return False


def _marked(path: Path) -> bool:
    suffix = path.suffix
    if suffix == ".onnx":
        import onnx

        meta = onnx.load_model_from_string(read_regular(path, FILE_LIMIT, "--output")).metadata_props
        return any(p.key == "producer" and p.value == PRODUCER for p in meta)
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return (f.metadata() or {}).get("format") == SAFETENSORS_FORMAT
    if suffix == ".pte":
        meta = load_json_object(Path(f"{path}.json"), "--output", "")
        digest = hashlib.sha256(read_regular(path, FILE_LIMIT, "--output")).hexdigest()
        return meta.get("producer") == PRODUCER and meta.get("sha256") == digest
    if suffix == ".json":
        found = load_json_object(path, "--output", "")
        if found.get("producer") == PRODUCER:  # a sidecar or a record of ours
            return True
        ModelInfo.from_json(found)  # a config.json: ValueError or KeyError if not one of ours
        return True
    if suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == PRODUCER
    if suffix in (".html", ".csv", ".log"):
        with open(path, "rb") as f:
            head = f.read(HEAD).decode("utf-8", "replace")
        if suffix == ".log":
            return path.name == LOG and head.split("\n", 1)[0] == LOG_MARK
        return PAGE_MARK in head if suffix == ".html" else path.name == HISTORY and _history_header(head)
    return path.name == CHECKPOINT and _our_checkpoint(path)


def _history_header(head: str) -> bool:
    from .folder import ESSENTIAL, HISTORY_FIELDS

    found = head.split("\n", 1)[0].split(",")  # an older run's has the first columns only
    return len(found) >= len(ESSENTIAL) and found == HISTORY_FIELDS[:len(found)]


def _our_checkpoint(path: Path) -> bool:
    from .folder import load_checkpoint

    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)  # a run folder's files are judged by one load
    if key not in _CHECKED:
        try:
            load_checkpoint(path)
            _CHECKED[key] = True
        except MobileNetError:
            _CHECKED[key] = False
    return _CHECKED[key]


_CHECKED: dict[tuple, bool] = {}


def _in_run_folder(path: Path) -> bool:
    checkpoint = path.parent / CHECKPOINT
    return path != checkpoint and checkpoint.is_file() and not checkpoint.is_symlink() and _our_checkpoint(checkpoint)
