"""Which files are ours to replace: `train --out`, `convert --output` and `export --output`
write only over files this toolkit wrote, unless the user says --force.

A file is ours when it sits in a run folder (our checkpoint.pt or .lock beside it) or
carries our mark: the producer key of an ONNX file's metadata or a sidecar, the format of
our safetensors header, a config.json that reads as a ModelInfo, a .pte whose sidecar is
ours and names its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import BadArgument, printable
from ..files import FILE_LIMIT, load_json_object, read_regular
from .info import PRODUCER, SAFETENSORS_FORMAT, ModelInfo
from .names import CHECKPOINT


def refuse_foreign(paths, option: str, force: bool = False) -> None:
    """BadArgument (exit 2) naming the first of `paths` that holds a file this toolkit did
    not write, unless `force`."""
    for path in map(Path, paths):
        if not force and not ours(path):
            raise BadArgument(f"{option} {printable(path)}: {printable(path.name)} was not written by mobilenet, and "
                              f"would be replaced; choose another {option}, or add --force to replace it")


def ours(path: Path) -> bool:
    """Whether `path` is no file at all or one this toolkit wrote (the module's docstring)."""
    if not os.path.lexists(path):
        return True
    if path.is_symlink() or not path.is_file():
        return False
    if any((path.parent / name).is_file() for name in (CHECKPOINT, ".lock")):
        return True
    try:
        return _marked(path)
    except Exception:  # noqa: BLE001 - a file whose mark cannot be read (protobuf, safetensors, JSON) has none
        return False


def _marked(path: Path) -> bool:
    if path.suffix == ".onnx":
        import onnx

        meta = onnx.load_model_from_string(read_regular(path, FILE_LIMIT, "--output")).metadata_props
        return any(p.key == "producer" and p.value == PRODUCER for p in meta)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return (f.metadata() or {}).get("format") == SAFETENSORS_FORMAT
    if path.suffix == ".pte":
        meta = _json(Path(f"{path}.json"))
        digest = hashlib.sha256(read_regular(path, FILE_LIMIT, "--output")).hexdigest()
        return meta.get("producer") == PRODUCER and meta.get("sha256") == digest
    if path.suffix == ".json":
        found = _json(path)
        if found.get("producer") == PRODUCER:  # a sidecar
            return True
        ModelInfo.from_json(found)  # a config.json: ValueError or KeyError if not one of ours
        return True
    return False


def _json(path: Path) -> dict:
    return load_json_object(path, "--output", "")
