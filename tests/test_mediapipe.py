"""A .tflite for MediaPipe Tasks' ImageClassifier (deploy/mediapipe.py), run by the task itself."""

import numpy as np
import pytest
import torch

from conftest import optional

optional("mediapipe", "MediaPipe is in the test extra: .venv/bin/pip install -e '.[test]'")


@pytest.fixture(scope="module")
def task_file(small_run):
    from mobilenet.deploy.mediapipe import mediapipe_bytes
    from mobilenet.run.folder import load_model

    model, info = load_model(small_run[0])
    return mediapipe_bytes(model, info), model, info


def test_the_task_loads_the_file_and_answers_as_pytorch_does(task_file):
    """The task's own resize is left out (the images are the data's size, the file's input);
    the rest of `prepare` is in the graph, so the task's scores are PyTorch's: on the test
    images, and on colour images that the graph turns grey as load_image (PIL) does."""
    from PIL import Image

    from mobilenet.data.fashion import load_fashion_mnist
    from mobilenet.data.images import prepare
    from mobilenet.deploy.mediapipe import classify

    data, model, info = task_file
    grey = load_fashion_mnist("test")[0][:48].numpy().astype(np.uint8).reshape(-1, 28, 28)
    colour = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 3), dtype=np.uint8)
    images = np.concatenate([np.repeat(grey[..., None], 3, axis=-1), colour])
    scores, names = classify(data, images, len(info.classes))
    with torch.inference_mode():
        prepared = [prepare(Image.fromarray(image, "RGB").convert("L"), info.input) for image in images]
        expected = torch.softmax(model(torch.from_numpy(np.stack(prepared))), dim=1).numpy()
    assert (scores.argmax(1) == expected.argmax(1)).all()
    assert np.abs(scores - expected).max() <= 1e-3
    assert names == [info.classes[i] for i in expected.argmax(1)]


def test_the_file_keeps_our_metadata_and_takes_the_tasks_input(task_file):
    from ai_edge_litert.interpreter import Interpreter

    from mobilenet.deploy.litert import read_metadata

    data, _, info = task_file
    assert read_metadata(data, "m.mediapipe.tflite")["classes"] == info.classes
    interpreter = Interpreter(model_content=data)
    into, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(into["shape"]) == [1, 28, 28, 3] and into["dtype"] == np.uint8
    assert list(out["shape"]) == [1, len(info.classes)] and out["dtype"] == np.float32


@pytest.mark.fault
@pytest.mark.parametrize("name", ["two\nlines", "cr\r", " "])
def test_a_class_name_that_is_no_label_line_is_refused(name):
    from mobilenet.deploy.mediapipe import check_labels
    from mobilenet.errors import MobileNetError

    with pytest.raises(MobileNetError, match="cannot be a MediaPipe label"):
        check_labels(["ok", name])
