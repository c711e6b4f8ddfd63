"""A .tflite that MediaPipe Tasks' ImageClassifier loads as it is (Python, Android, iOS, web).

The task hands the model one RGB image as uint8 pixels, NHWC, batch 1, resized by the task
to the model's input size, and reads the labels and the image's properties from the
standard TFLite Model Metadata. So the file's graph takes [1, S, S, 3] uint8 and does the
rest of `images.prepare` itself: RGB to grey as PIL converts it (for a grey model), /255,
the model's mean and std, and the bilinear resize to ρ where the data's images are smaller
(S is the data's image size then, else ρ); it ends in a softmax, [1, classes] float32 (a
multi-label model's in a sigmoid per class: MediaPipe gives every class's score, and the
thresholds travel in our metadata entry). Its int8 file quantizes the network only: the
preparation and the last function stay float.

The metadata is built with the schema MediaPipe ships (metadata_schema_py_generated): its
metadata_writers do not import from the PyPI wheel (a compiled module is missing), and
tflite-support pins protobuf < 4. The labels travel as TENSOR_AXIS_LABELS, a zip appended
to the flatbuffer, as the metadata populator writes them. Our own metadata entry stays in
the file, so LiteRT's interpreter (litert.LiteRtModel) runs it too.

The export's check is the task itself: the file through MediaPipe's ImageClassifier
against eager PyTorch on the same pixels, or through LiteRT's interpreter where the task
does not load.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import io
import zipfile
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import from_pixels
from ..errors import MobileNetError, NotInstalled
from ..limits import EVAL_BATCH_SIZE
from ..run.info import ModelInfo
from .litert import (
    TASK, LiteRtModel, _converter, _quantize, probability_logits, task_pixels, task_spec, with_metadata,
)
from .native import quiet_stderr
from .runtime import split_batches

TASK_METADATA = b"TFLITE_METADATA"  # the standard entry's name
TASK_IDENTIFIER = b"M001"  # its flatbuffer's file identifier
LABELS = "labels.txt"
PARSER_VERSION = "1.0.0"  # every field written here is in the schema's first version
GREY = (19595.0, 38470.0, 7471.0)  # PIL's RGB to L: (R·19595 + G·38470 + B·7471 + 32768) >> 16
TOLERANCE = 1e-3  # on probabilities: the task's against eager PyTorch's
RANDOM_IMAGES = 16  # random RGB images in the check, besides the real ones


def task_size(spec: dict) -> int:
    """The side of the image the task gives the file: the data's image size, or ρ."""
    return task_spec(spec)["resolution"]


def require_mediapipe():
    try:
        import mediapipe
    except ImportError as e:
        raise NotInstalled.of("MediaPipe", e, "mediapipe", "mediapipe") from None
    return mediapipe


def check_labels(classes: list[str]) -> None:
    """Labels are one per line of labels.txt: a name with a line break would shift them."""
    bad = next((c for c in classes if "\n" in c or "\r" in c or not c.strip()), None)
    if bad is not None:
        raise MobileNetError(f"class name {bad!r} cannot be a MediaPipe label (one per line, none empty); "
                             "rename that class folder and train again, or export --format litert")


class Prepare(nn.Module):
    """What images.prepare does after the pixels: grey as PIL makes it, /255, mean and std,
    and the bilinear resize from the data's image size to ρ."""

    def __init__(self, spec: dict):
        super().__init__()
        self.channels, self.size, self.resolution = spec["channels"], task_size(spec), spec["resolution"]
        self.register_buffer("mean", torch.tensor(spec["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("grey", torch.tensor(GREY).view(1, 3, 1, 1))

    def forward(self, x):
        x = x.to(torch.float32).permute(0, 3, 1, 2)
        if self.channels == 1:  # exact in float32: the sum stays under 2^24
            x = torch.floor(((x * self.grey).sum(1, keepdim=True) + 32768.0) / 65536.0)
        x = (x / 255.0 - self.mean) / self.std
        if self.size != self.resolution:
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
        return x


def task_module(model, spec: dict, multi_label: bool = False) -> nn.Module:
    """`model` behind the task's input: uint8 [n, S, S, 3] RGB in, probabilities out (a
    softmax, or a multi-label model's sigmoid per class). The preparation and the last
    function are modules of their own, so int8 leaves them float."""
    net = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    return nn.Sequential(Prepare(spec), net, nn.Sigmoid() if multi_label else nn.Softmax(dim=1)).eval()


def mediapipe_bytes(model, info: ModelInfo, calibration: np.ndarray | None = None) -> bytes:
    """The file: the converted task module with both metadata entries and the labels; with
    `calibration` (RGB pixels, (n, S, S, 3) uint8) its network int8 by PT2E."""
    check_labels(info.classes)
    litert_torch = _converter()
    module, size, options = task_module(model, info.input, info.multi_label), task_size(info.input), {}
    if calibration is not None:
        example = (torch.zeros(2, size, size, 3, dtype=torch.uint8),)
        module, config = _quantize(module, example, ({0: torch.export.Dim("batch", min=1)},), calibration,
                                   leave_float=(Prepare, nn.Softmax, nn.Sigmoid))
        options = {"quant_config": config}
    with quiet_stderr():
        data = litert_torch.convert(module, (torch.zeros(1, size, size, 3, dtype=torch.uint8),),
                                    **options).model_content()
    return with_task_metadata(data, info, calibration is not None)


def task_metadata(info: ModelInfo) -> bytes:
    """The standard ModelMetadata: name, description, the input's image properties, and the
    output's labels file."""
    import flatbuffers

    schema = _metadata_schema()
    image = schema.TensorMetadataT()
    image.name, image.description = "image", "RGB pixels, resized by the task"
    image.content = schema.ContentT()
    image.content.contentPropertiesType = schema.ContentProperties.ImageProperties
    image.content.contentProperties = schema.ImagePropertiesT()
    image.content.contentProperties.colorSpace = schema.ColorSpaceType.RGB
    image.stats = schema.StatsT()
    image.stats.min, image.stats.max = [0.0], [255.0]
    scores = schema.TensorMetadataT()
    scores.name, scores.description = "probability", ("each class's sigmoid; a label is given at its threshold "
                                                      "(our metadata entry's thresholds)" if info.multi_label
                                                      else "softmax over the classes")
    scores.content = schema.ContentT()
    scores.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    scores.content.contentProperties = schema.FeaturePropertiesT()
    scores.stats = schema.StatsT()
    scores.stats.min, scores.stats.max = [0.0], [1.0]
    labels = schema.AssociatedFileT()
    labels.name, labels.description = LABELS, "class names, one per line, in class order"
    labels.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [labels]
    graph = schema.SubGraphMetadataT()
    graph.inputTensorMetadata, graph.outputTensorMetadata = [image], [scores]
    meta = schema.ModelMetadataT()
    meta.name = "MobileNet V1"
    cfg = info.model
    meta.description = (f"MobileNet V1 α={cfg.width_mult:g}, ρ={cfg.resolution}, {len(info.classes)} classes, "
                        "trained with mobilenet")
    meta.subgraphMetadata, meta.minParserVersion = [graph], PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(meta.Pack(builder), TASK_IDENTIFIER)
    return bytes(builder.Output())


SCHEMA = "mediapipe/tasks/metadata/metadata_schema_py_generated.py"  # pure Python, flatbuffers only


def _metadata_schema():
    """The metadata schema's generated module from the installed mediapipe wheel, read from
    its file: `import mediapipe` loads the native task library too, which a machine may lack
    while the schema, plain Python, serves."""
    try:
        path = importlib.metadata.distribution("mediapipe").locate_file(SCHEMA)
        spec = importlib.util.spec_from_file_location("metadata_schema_py_generated", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (importlib.metadata.PackageNotFoundError, OSError, ImportError) as e:
        raise NotInstalled.of("MediaPipe (its metadata schema)", ImportError(str(e)), "mediapipe",
                              "mediapipe") from None
    return module


def with_task_metadata(data: bytes, info: ModelInfo, int8: bool) -> bytes:
    """`data` with our entry, the standard one, and labels.txt appended as a zip."""
    data = with_metadata(data, {**info.exported(int8), "task": TASK}, {TASK_METADATA: task_metadata(info)})
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(LABELS, "\n".join(info.classes) + "\n")
    return buffer.getvalue()


def classify(data: bytes, images: np.ndarray, classes: int) -> tuple[np.ndarray, list[str]]:
    """MediaPipe's ImageClassifier on `images` (RGB pixels, (n, S, S, 3) uint8): each image's
    probabilities by class index, (n, classes), and the label it reports for each class."""
    mp = require_mediapipe()
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    options = ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=data), max_results=classes)
    scores, names = np.zeros((len(images), classes), np.float32), [None] * classes
    with quiet_stderr(), ImageClassifier.create_from_options(options) as task:
        for i, image in enumerate(images):
            found = task.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            for c in found.classifications[0].categories:
                scores[i, c.index] = c.score
                names[c.index] = c.category_name
    return scores, names


def task_client(data: bytes, info: ModelInfo, log) -> tuple:
    """(run, its name): run(RGB pixels) -> (probabilities, the labels as read, or None)
    through MediaPipe's ImageClassifier, or LiteRT's interpreter where it does not load
    (said in one line)."""
    try:
        require_mediapipe()
    except NotInstalled as e:
        log(f"note: {e}; the file is checked in LiteRT's interpreter instead")
        model = LiteRtModel(data, info)
        return (lambda rgb: (model.probabilities(rgb), None)), "LiteRT's interpreter"
    return (lambda rgb: classify(data, rgb, len(info.classes))), "MediaPipe's ImageClassifier"


def _pixel_batches(info: ModelInfo, split: str = "test"):
    """runtime.split_batches of the model's data, prepared as task_spec says: pixels."""
    holder = SimpleNamespace(spec=task_spec(info.input), info=info, classes=info.classes)
    return split_batches(holder, None, {}, EVAL_BATCH_SIZE, split)


def pixel_images(info: ModelInfo, count: int, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The first `count` images of the model's data's `split` (0: all) as the task gets
    them, RGB pixels (n, S, S, 3) uint8, and their labels: test images for Fashion-MNIST,
    held-out ones for a folder."""
    xs, ys, seen = [], [], 0
    for x, y, _ in _pixel_batches(info, split):
        if x is not None:
            xs.append(task_pixels(x))
            ys.append(y)
            seen += len(y)
        if count and seen >= count:
            break
    if not xs:
        raise MobileNetError(f"no readable {split} images in {info.data_name} to check or calibrate the export with")
    return np.concatenate(xs)[:count or None], np.concatenate(ys)[:count or None]


def eager_probabilities(model, rgb: np.ndarray, spec: dict, multi_label: bool = False) -> np.ndarray:
    """PyTorch's probabilities (softmax, or sigmoid for a multi-label model) for RGB pixels,
    prepared as images.prepare prepares a decoded image of that size: PIL's grey for a grey
    model, then from_pixels."""
    from PIL import Image

    if spec["channels"] == 1:
        pixels = np.stack([np.asarray(Image.fromarray(im, "RGB").convert("L"), np.float32)[None] for im in rgb])
    else:
        pixels = rgb.astype(np.float32).transpose(0, 3, 1, 2)
    with torch.inference_mode():
        logits = model(torch.from_numpy(from_pixels(pixels, spec)))
        return (torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)).numpy()


def check_file(data: bytes, model, info: ModelInfo, count: int, log) -> dict:
    """The file in the task (task_client) against eager PyTorch on the first `count` test
    images and RANDOM_IMAGES random RGB ones (a grey model's graph turns them grey): the same
    top-1 on the real ones, probabilities within TOLERANCE, and each label as the model's
    class. A MobileNetError otherwise (and nothing is written)."""
    run, client = task_client(data, info, log)
    size = task_size(info.input)
    inputs = {"random": np.random.default_rng(0).integers(0, 256, (RANDOM_IMAGES, size, size, 3), np.uint8),
              "real": pixel_images(info, count)[0]}
    report = {"checked_in": client}
    for kind, rgb in inputs.items():
        found, labels = run(rgb)
        eager = eager_probabilities(model, rgb, info.input, info.multi_label)
        diff = float(np.abs(found - eager).max())
        same_top1 = bool((found.argmax(1) == eager.argmax(1)).all()) if kind == "real" else None
        if diff > TOLERANCE or same_top1 is False:
            raise MobileNetError(f"the MediaPipe file disagrees with PyTorch in {client} on {kind} images (largest "
                                 f"difference {diff:.2e}, top-1 identical: {same_top1}); nothing was written")
        if labels is not None and labels != info.classes:
            shown = next(f"{a!r} for {b!r}" for a, b in zip(labels, info.classes) if a != b)
            raise MobileNetError(f"{client} reads the labels otherwise than the model's classes ({shown}); "
                                 "nothing was written")
        report[kind] = {"max_abs_diff": diff, "same_top1": same_top1}
    return report


def test_batches(info: ModelInfo, client):
    """The test split as exporter._compare_int8 takes it, and `client`'s run as a logits
    function over its batches: pixels in, logits out (probability_logits)."""
    return _pixel_batches(info), lambda x: probability_logits(client(task_pixels(x))[0], info.multi_label)
