"""A .tflite that MediaPipe Tasks' ImageClassifier loads as it is (Python, Android, iOS, web).

The task hands the model one RGB image as uint8 pixels, NHWC, batch 1, resized by the task
to the model's input size, and reads the labels and the image's properties from the
standard TFLite Model Metadata. So the file's graph takes [1, S, S, 3] uint8 and does the
rest of `images.prepare` itself: RGB to grey as PIL converts it (for a grey model), /255,
the model's mean and std, and the bilinear resize to ρ where the data's images are smaller
(S is the data's image size then, else ρ); it ends in a softmax, [1, classes] float32.

The metadata is built with the schema MediaPipe ships (metadata_schema_py_generated): its
metadata_writers do not import from the PyPI wheel (a compiled module is missing). The
labels travel as TENSOR_AXIS_LABELS, a zip appended to the flatbuffer, as the metadata
populator writes them. Our own metadata entry stays in the file.
"""

from __future__ import annotations

import copy
import io
import zipfile

import numpy as np

from ..errors import MobileNetError, NotInstalled, first_line, install_hint
from ..run.info import ModelInfo
from .litert import _converter, with_metadata
from .native import quiet_stderr

TASK_METADATA = b"TFLITE_METADATA"  # the standard entry's name
TASK_IDENTIFIER = b"M001"  # its flatbuffer's file identifier
LABELS = "labels.txt"
PARSER_VERSION = "1.0.0"  # every field written here is in the schema's first version
GREY = (19595.0, 38470.0, 7471.0)  # PIL's RGB to L: (R·19595 + G·38470 + B·7471 + 32768) >> 16


def task_size(spec: dict) -> int:
    """The side of the image the task gives the file: the data's image size, or ρ."""
    return spec.get("image_size") or spec["resolution"]


def require_mediapipe():
    try:
        import mediapipe
    except ImportError as e:
        raise NotInstalled(f"MediaPipe is not installed or does not load ({first_line(e)}); "
                           + install_hint("mediapipe", "mediapipe")) from None
    return mediapipe


def check_labels(classes: list[str]) -> None:
    """Labels are one per line of labels.txt: a name with a line break would shift them."""
    bad = next((c for c in classes if "\n" in c or "\r" in c or not c.strip()), None)
    if bad is not None:
        raise MobileNetError(f"class name {bad!r} cannot be a MediaPipe label (one per line, none empty); "
                             "rename that class folder and train again, or export --format litert")


def task_module(model, spec: dict):
    """`model` behind the task's input: uint8 [1, S, S, 3] RGB in, probabilities out."""
    import torch
    import torch.nn.functional as F

    class TaskInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
            self.register_buffer("mean", torch.tensor(spec["mean"], dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(spec["std"], dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("grey", torch.tensor(GREY).view(1, 3, 1, 1))

        def forward(self, x):
            x = x.to(torch.float32).permute(0, 3, 1, 2)
            if spec["channels"] == 1:  # exact in float32: the sum stays under 2^24
                x = torch.floor(((x * self.grey).sum(1, keepdim=True) + 32768.0) / 65536.0)
            x = (x / 255.0 - self.mean) / self.std
            if task_size(spec) != spec["resolution"]:
                x = F.interpolate(x, size=(spec["resolution"],) * 2, mode="bilinear", align_corners=False)
            return torch.softmax(self.net(x), dim=1)
    return TaskInput().eval()


def mediapipe_bytes(model, info: ModelInfo) -> bytes:
    """The float32 file: the converted task module with both metadata entries and the labels."""
    import torch

    check_labels(info.classes)
    litert_torch = _converter()
    size = task_size(info.input)
    with quiet_stderr():
        data = litert_torch.convert(task_module(model, info.input),
                                    (torch.zeros(1, size, size, 3, dtype=torch.uint8),)).model_content()
    return with_task_metadata(data, info)


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
    scores.name, scores.description = "probability", "softmax over the classes"
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


def _metadata_schema():
    require_mediapipe()
    from mediapipe.tasks.metadata import metadata_schema_py_generated

    return metadata_schema_py_generated


def with_task_metadata(data: bytes, info: ModelInfo) -> bytes:
    """`data` with our entry, the standard one, and labels.txt appended as a zip."""
    data = with_metadata(data, {**info.exported(False), "task": "mediapipe"}, {TASK_METADATA: task_metadata(info)})
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(LABELS, "\n".join(info.classes) + "\n")
    return buffer.getvalue()


def classify(data: bytes, images: np.ndarray, classes: int) -> tuple[np.ndarray, list[str]]:
    """MediaPipe's ImageClassifier on `images` (uint8 [n, S, S, 3]): each image's scores by
    class index, [n, classes], and the label names it reported for its top class."""
    mp = require_mediapipe()
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    options = ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=data), max_results=classes)
    scores, names = np.zeros((len(images), classes), np.float32), []
    with quiet_stderr(), ImageClassifier.create_from_options(options) as task:
        for i, image in enumerate(images):
            found = task.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            categories = found.classifications[0].categories
            for c in categories:
                scores[i, c.index] = c.score
            names.append(categories[0].category_name)
    return scores, names
