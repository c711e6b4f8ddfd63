"""Prediction: one `Predictor`, loaded once, called as often as needed.

    p = Predictor("runs/fashion-mnist-…")                       # a run folder, torch
    p = Predictor("model.onnx", runtime="onnxruntime")           # an exported file, no torch
    p = Predictor("model.onnx", runtime="openvino")              # the same file in OpenVINO, no torch
    p = Predictor("model.pte", runtime="executorch")             # ExecuTorch's runtime
    p = Predictor("model.tflite", runtime="litert")              # LiteRT's interpreter, no torch
    records, failed = p.predict(["a.jpg", "photos/", pil_image, array], top_k=3)

Images go through in chunks of CHUNK_SIZE (decode, prepare, run, record, drop), so ten
thousand files never become one tensor and memory stays flat as their number grows.
Nothing torch is imported at module level: the onnxruntime, openvino and litert
flavours never load torch.
"""

from __future__ import annotations

import numbers
import os
from itertools import islice

import numpy as np

from ..data.images import IMAGE_EXTENSIONS, MAX_ASPECT, convert_image, prepare, prepare_files, regular_inside
from ..errors import MobileNetError, first_line, printable
from ..formats import PREDICT_RUNTIMES, runtime_for
from ..report.metrics import check_finite
from ..report.multilabel import sigmoid

CHUNK_SIZE = 64  # images decoded, prepared and run at a time


class Predictor:
    """A model loaded once: `.predict(images, top_k)` -> (records, failed).

    `model` is a run folder (config.json + model.safetensors) for runtime "torch", or a file
    made by `mobilenet export`: .onnx for "onnxruntime" or "openvino", .pte for "executorch", .tflite
    for "litert" (CPU only). runtime None: the one formats.runtime_for gives, by the suffix.
    `.classes` are the class names, `.spec` the input preparation (config.json's "input")."""

    def __init__(self, model, runtime: str | None = None, device: str = "cpu"):
        runtime = runtime_for(model, runtime)
        if runtime not in PREDICT_RUNTIMES:
            raise MobileNetError(f"--runtime must be one of {', '.join(PREDICT_RUNTIMES)}, got {runtime!r}")
        self.runtime, self.name = runtime, str(model)
        if runtime == "torch":
            self._load_torch(model, device)
        else:
            self._load_file(model, device)

    def _load_torch(self, model_dir, device) -> None:
        import torch

        from ..run.folder import load_model

        try:
            self.device = torch.device(device)
        except (RuntimeError, ValueError, TypeError):
            raise MobileNetError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
        net, info = load_model(model_dir)
        try:
            self.model = net.to(self.device)
        except (RuntimeError, AssertionError) as e:  # no such GPU, or torch built without it
            detail = first_line(e)
            raise MobileNetError(f"--device {device}: not usable here ({detail}); use --device cpu") from None
        self.classes, self.spec, self.info = info.classes, info.input, info

    def _load_file(self, path, device) -> None:
        from .runtime import open_file

        if str(device) != "cpu":
            raise MobileNetError(f"--runtime {self.runtime} runs on the CPU only, got --device {device}")
        self.device = "cpu"
        self.model = open_file(path, self.runtime)
        self.classes, self.spec, self.info = self.model.classes, self.model.spec, self.model.info

    def predict(self, images, top_k: int = 5) -> tuple[list[dict], list[dict]]:
        """Top-k classes of each image, and the files that did not decode.

        `images` is a list of image file paths, folders (their image files, recursively,
        sorted; hidden ones skipped), PIL images and numpy arrays (HxW or HxWxC uint8).
        Returns (records, failed): records are {"image": path, or the item's index in
        `images` for PIL and numpy items, "predictions": [{"class", "probability"}, …]}
        with probabilities descending; failed are {"image", "reason"}, as prepare_files.
        A multi-label model's probabilities are each class's sigmoid, and its records also
        hold "labels": every class at or above its threshold, most probable first."""
        if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1:
            raise MobileNetError(f"--top-k must be at least 1, got {top_k!r}")
        k = min(int(top_k), len(self.classes))
        records, failed = [], []
        for chunk in _chunks(_sources(_checked(images)), CHUNK_SIZE):
            batch, keys, errors = _prepare_chunk(chunk, self.spec)
            failed += errors
            if batch is not None:
                records += self._records(keys, self._probabilities(batch), k)
        return records, failed

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, R, R) float32 -> (N, classes) probabilities, numpy: softmax, or for a
        multi-label model each class's sigmoid."""
        if self.runtime != "torch":
            logits = self.model.logits(batch)
        else:
            import torch

            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self.device, memory_format=torch.channels_last)
                logits = self.model(x).float().cpu().numpy()
            check_finite(logits, self.name)
        return sigmoid(logits) if self.info.multi_label else _softmax(logits)

    def _records(self, keys: list, probs: np.ndarray, k: int) -> list[dict]:
        ranked = np.argsort(-probs, axis=1, kind="stable")
        records = [{"image": key, "predictions": [
            {"class": self.classes[i], "probability": float(row[i])} for i in order[:k]]}
            for key, row, order in zip(keys, probs, ranked)]
        if self.info.multi_label:
            given = probs >= np.asarray(self.info.thresholds)
            for record, order, row in zip(records, ranked, given):
                record["labels"] = [self.classes[i] for i in order if row[i]]
        return records


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _checked(images) -> list:
    """The items, checked before any work: a wrong kind of item fails at once, not after
    an hour of images."""
    from PIL import Image

    if isinstance(images, (str, bytes, os.PathLike, np.ndarray, Image.Image)) or not hasattr(images, "__iter__"):
        raise MobileNetError(f"images must be a list of paths, folders, PIL images or arrays, "
                             f"got {type(images).__name__}; wrap a single image in a list")
    items = list(images)
    for index, item in enumerate(items):
        if isinstance(item, np.ndarray):
            _check_array(index, item)
        elif not isinstance(item, (str, os.PathLike, Image.Image)):
            raise MobileNetError(f"images[{index}] is a {type(item).__name__}; give a path, "
                                 "a folder, a PIL image or a numpy array")
    return items


def _check_array(index: int, a: np.ndarray) -> None:
    grey, colour = a.ndim == 2, a.ndim == 3 and a.shape[2] in (1, 3, 4)
    if a.dtype != np.uint8 or not (grey or colour) or a.size == 0:
        raise MobileNetError(f"images[{index}] is a {a.dtype} array of shape {a.shape}; "
                             "give HxW (grey) or HxWxC (C = 1, 3 or 4) uint8 pixels")


def _sources(items: list):
    """(key, source) for each image, lazily: a file path is its own key and source; a PIL
    image or array is keyed by its index; a folder yields its image files, or a
    MobileNetError as its source when it has none."""
    from PIL import Image

    for index, item in enumerate(items):
        if isinstance(item, (np.ndarray, Image.Image)):
            yield index, item
        elif os.path.isdir(item):
            found = _folder_images(os.fspath(item))
            if not found:  # said, not silently skipped
                yield os.fspath(item), MobileNetError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            yield from found
        else:
            path = os.fspath(item)
            yield path, path


def _folder_images(folder: str) -> list[tuple[str, str | MobileNetError]]:
    """A folder's image files (by IMAGE_EXTENSIONS), recursively, sorted, each as (path,
    path); hidden files and folders skipped. Links to folders are not followed, so a link
    loop cannot trap us; a file link that leaves the folder, or a name that is no regular
    file (a FIFO would block forever), comes with a MobileNetError saying so."""
    inside, found = os.path.realpath(folder), []
    for parent, subfolders, files in os.walk(folder):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found += [os.path.join(parent, f) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return [(path, path if regular_inside(path, inside) else
             MobileNetError("skipped: a link that leaves the folder, or no regular file")) for path in sorted(found)]


def _chunks(iterable, size: int):
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _prepare_chunk(chunk: list, spec: dict) -> tuple[np.ndarray | None, list, list[dict]]:
    """One chunk of (key, source), decoded and prepared: (batch or None, the keys in it,
    {"image", "reason"} for each that did not decode), in the order given."""
    arrays, keys, failed = [], [], []
    for key, source in chunk:
        if isinstance(source, MobileNetError):
            failed.append({"image": key, "reason": str(source)})
            continue
        if isinstance(source, str):
            batch, _, errors = prepare_files([source], spec)  # its decoding and its error records
            failed += errors
            if batch is None:
                continue
            arrays.append(batch[0])
        else:
            try:
                arrays.append(prepare(_to_model_mode(source, spec["channels"]), spec))
            except MobileNetError as e:
                failed.append({"image": key, "reason": str(e)})
                continue
            except (OSError, ValueError, TypeError) as e:  # a mode Pillow cannot convert (LAB), a closed image
                failed.append({"image": key, "reason": f"not an image this can read ({printable(first_line(e))})"})
                continue
        keys.append(key)
    return (np.stack(arrays) if arrays else None), keys, failed


def _to_model_mode(image, channels: int):
    """A PIL image or uint8 array -> 8-bit RGB (3 channels) or L (1), as images.load_image
    converts a decoded file: EXIF rotation, 16-bit scaled down, transparency on white."""
    from PIL import Image, ImageOps

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    w, h = image.size
    if min(w, h) < 1 or max(w, h) > MAX_ASPECT * min(w, h):
        raise MobileNetError(f"{w}×{h} pixels: empty, or an aspect ratio beyond {MAX_ASPECT}:1; "
                             "crop it to the object first")
    return convert_image(ImageOps.exif_transpose(image), channels)
