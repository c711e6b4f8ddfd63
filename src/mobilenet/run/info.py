"""What a model says about itself: its class names, how an image is prepared for it, its
network, where its images came from and how they were augmented. One type for a model
folder's config.json, an ONNX file's metadata_props, a .pte's sidecar and a .tflite's
metadata entry, checked in one place (validate) before any image is read. No torch at
import: the deployed path reads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.images import FASHION_MNIST, MAX_RESIZE
from ..data.labels import is_label_file
from ..errors import MobileNetError, has_control, look_alike, printable
from ..files import PRODUCER  # the producer key of an exported file's metadata
from ..limits import MAX_RESOLUTION, MIN_RESOLUTION
from ..net.config import MobileNetConfig

SAFETENSORS_FORMAT = "mobilenet-v1"  # the format key of a model.safetensors header's metadata


@dataclass
class ModelInfo:
    """config.json's content. `input` is the preparation images.prepare follows: channels,
    resolution, mean, std, and image_size (small images) or resize (shorter side, then a
    centre crop). `data` is the provenance: the data set's name and a folder's split."""
    classes: list[str]
    input: dict
    model: MobileNetConfig | None = None  # None: an exported file whose metadata lacks it
    data: dict = field(default_factory=dict)
    augment: dict | None = None  # a run's preset, with the trial's figures under --augment auto
    thresholds: list[float] | None = None  # several labels per image: each class's, chosen on validation

    @property
    def multi_label(self) -> bool:
        """A sigmoid per class, a label given at its threshold; else one class, the softmax's top."""
        return self.thresholds is not None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, resolution, resolution): one prepared image, as the network takes it."""
        return self.input["channels"], self.input["resolution"], self.input["resolution"]

    @property
    def data_name(self) -> str:
        return self.data.get("name") or FASHION_MNIST

    @property
    def seed(self) -> int:
        return self.data.get("seed", 0)

    @property
    def test_split(self) -> float:
        """The test hold-out the data was split with (older folders call it val_split)."""
        return self.data.get("test_split", self.data.get("val_split", 0.2))

    def to_json(self) -> dict:
        """config.json's object, in its order."""
        found = {"model": self.model.to_dict(), "classes": self.classes, "input": self.input, "data": self.data}
        found = found if self.augment is None else {**found, "augment": self.augment}
        return found if self.thresholds is None else {**found, "thresholds": self.thresholds}

    @classmethod
    def from_json(cls, found, fixed: tuple | None = None) -> "ModelInfo":
        """config.json's object, validated (validate). An exported file's (a sidecar's)
        gives `fixed`, and may lack the model. KeyError names a missing entry; ValueError
        or TypeError says what does not fit."""
        if not isinstance(found, dict):
            raise ValueError("not a JSON object")
        model = found["model"] if fixed is None else found.get("model")
        data = found.get("data")
        if data is not None and not (isinstance(data, dict) and isinstance(data.get("name", ""), str)):
            raise ValueError("'data' must be an object naming the data set")
        augment = found.get("augment")
        if augment is not None and not (isinstance(augment, dict) and isinstance(augment.get("preset"), str)):
            raise ValueError("'augment' must be an object naming its preset")
        info = cls(found["classes"], found["input"], None if model is None else MobileNetConfig.from_dict(model),
                   data or {}, found.get("augment"), found.get("thresholds"))
        info.validate(fixed)
        return info

    def onnx_metadata(self) -> dict[str, str]:
        """An ONNX file's metadata_props: one JSON text per key."""
        found = {"classes": self.classes, "input": self.input, "model": self.model.to_dict(), "data": self.data}
        if self.thresholds is not None:
            found["thresholds"] = self.thresholds
        return {**{k: json.dumps(v) for k, v in found.items()}, "producer": PRODUCER}

    @classmethod
    def from_onnx_metadata(cls, meta: dict[str, str], fixed: tuple = (None, None)) -> "ModelInfo":
        """KeyError for a missing classes or input entry; ValueError for a bad one."""
        found = {k: json.loads(meta[k]) for k in ("classes", "input")}
        found.update({k: json.loads(meta[k]) for k in ("model", "data", "thresholds") if k in meta})
        return cls.from_json(found, fixed)

    def exported(self, int8: bool) -> dict:
        """What an exported file carries as one JSON object (a .tflite's metadata entry)."""
        found = {"classes": self.classes, "input": self.input, "model": self.model.to_dict(), "data": self.data,
                 "producer": PRODUCER, "int8": int8}
        return found if self.thresholds is None else {**found, "thresholds": self.thresholds}

    def sidecar(self, int8: bool, sha256: str) -> dict:
        """A .pte's sidecar (pte.sidecar names the file), with the SHA-256 of its program."""
        return {**self.exported(int8), "sha256": sha256}

    def validate(self, fixed: tuple | None = None) -> None:
        """ValueError unless the classes and input fit the network: a folder's model config,
        or for an exported file its graph, whose (channels, resolution) are `fixed` (None
        where the graph leaves one free); the graph's outputs are checked as it runs."""
        if fixed is None:
            m = self.model
            fixed = (m.in_channels, m.resolution)
            _check_classes(self.classes, m.num_classes)
        else:
            _check_classes(self.classes, None)
        _check_input(self.input, *fixed)
        _check_data(self.data)
        _check_thresholds(self.thresholds, len(self.classes))

    def data_to_open(self, data: str | None = None) -> str:
        """`data` (the user's --data) or the provenance's name, checked before any image is
        read: Fashion-MNIST for a grey model, or for a colour one a label file or a folder (not
        the file system's root) whose top-level class folders are the model's classes."""
        name = data or self.data_name
        grey = self.input["channels"] == 1
        if (name == FASHION_MNIST) != grey:
            why = "folders are read in colour, only Fashion-MNIST grey" if grey else "Fashion-MNIST is grey"
            raise MobileNetError(f"{printable(name)}: the model takes {'grey' if grey else 'colour'} images and "
                                 f"{why}; give --data with images like the model's")
        if grey:
            return name
        root = Path(name)
        if is_label_file(root) and root.is_file():
            return name  # its classes are read and compared when it is opened
        if not root.is_dir() or root.resolve() == Path(root.resolve().anchor):
            raise MobileNetError(f"{printable(name)}: not a data folder (no such folder or label file, or the file "
                                 "system's root); give --data, the folder or label file the model was trained on")
        top = root / "train" if (root / "train").is_dir() else root
        missing = sorted(set(self.classes) - {e.name for e in os.scandir(top) if e.is_dir()})
        if missing:  # extra folders (a link that leaves it, lost+found) are for the scan to judge
            raise MobileNetError(f"{printable(top)} has no class folder {printable(missing[:3])[1:-1]} of the "
                                 f"model's {len(self.classes)}; evaluate on the model's data (--data)")
        return name

    def open_data(self, data: str | None = None, workers: int | None = None, limit: int | None = None,
                  val_split: float | None = None):
        """The data set the model was trained on (or `data`), split as it was: its test
        split is the one the model was tested on (and with the run's `limit` and `val_split`,
        its training and validation splits too). Needs torch (data/sources.py)."""
        from ..data.sources import open_source

        name = self.data_to_open(data)
        source = open_source(name, self.input["resolution"], self.seed, limit, test_split=self.test_split,
                             workers=workers, val_split=val_split, multi_label=self.multi_label)
        if source.classes != self.classes:
            raise MobileNetError(f"{name} has classes {source.classes[:5]}..., the model {self.classes[:5]}...; "
                                 "evaluate on data with the same class folders")
        return source


def _whole(v, low, high) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _check_classes(classes, num_classes) -> None:
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ValueError("'classes' must be a list of class names")
    named = next((c for c in classes if has_control(c)), None)
    if named is not None:  # they are printed and drawn: no escape codes, no forged lines
        raise ValueError(f"class name {printable(named)} has control characters")
    pair = look_alike(classes)
    if pair:
        raise ValueError(f"class names {ascii(pair[0])} and {ascii(pair[1])} differ only by Unicode normalisation")
    if num_classes is not None and len(classes) != num_classes:
        raise ValueError(f"'classes' names {len(classes)} classes, the model has {num_classes}")


def _check_thresholds(thresholds, num_classes: int) -> None:
    if thresholds is None:
        return
    if not (isinstance(thresholds, list) and len(thresholds) == num_classes
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds)):
        raise ValueError(f"'thresholds' must be a list of {num_classes} numbers from 0 to 1, one per class")


def _check_data(data) -> None:
    """The provenance's types: where it points is checked when it is opened (data_to_open)."""
    split = data.get("test_split", data.get("val_split", 0.2))
    if not (isinstance(split, (int, float)) and not isinstance(split, bool) and 0 < split < 1):
        raise ValueError(f"data test_split is {split!r}; it is a fraction between 0 and 1")
    if not _whole(data.get("seed", 0), 0, 2**63 - 1):
        raise ValueError(f"data seed is {data.get('seed')!r}; it is a whole number from 0")


def _check_input(spec, channels, resolution) -> None:
    if not isinstance(spec, dict):
        raise ValueError("'input' must be an object")
    missing = [key for key in ("channels", "resolution", "mean", "std") if key not in spec]
    if missing:
        raise ValueError(f"'input' lacks {missing}")
    c, r = spec["channels"], spec["resolution"]
    if c not in (1, 3) or not _whole(c, 1, 3) or (channels is not None and c != channels):
        raise ValueError(f"input channels is {c!r}; the network takes {channels or '1 or 3'}")
    if not _whole(r, MIN_RESOLUTION, MAX_RESOLUTION) or (resolution is not None and r != resolution):
        raise ValueError(f"input resolution is {r!r}; the network takes "
                         f"{resolution or f'{MIN_RESOLUTION} to {MAX_RESOLUTION}'}")
    for key in ("mean", "std"):
        v = spec[key]
        if not (isinstance(v, list) and len(v) == c and all(isinstance(x, (int, float)) and np.isfinite(x) for x in v)):
            raise ValueError(f"input {key} must be a list of {c} numbers, got {v!r}")
    if not all(x > 0 for x in spec["std"]):
        raise ValueError("input std must be positive")
    most = MAX_RESIZE * r  # the image is resized to this before the crop: memory follows it
    if spec.get("image_size") is not None:
        if not _whole(spec["image_size"], 1, most):
            raise ValueError(f"input image_size is {spec['image_size']!r}; use 1 to {most} ({MAX_RESIZE} × resolution)")
    elif not _whole(spec.get("resize"), r, most):
        raise ValueError(f"input needs image_size, or resize from {r} to {most} ({MAX_RESIZE} × resolution) "
                         f"(got {spec.get('resize')!r})")
