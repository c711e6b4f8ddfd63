"""export --format mediapipe: a .tflite that MediaPipe Tasks' ImageClassifier loads as it is,
run by the task itself against PyTorch, for a grey Fashion-MNIST model and a colour folder
model, float32 and int8; the same file in our own --runtime litert; labels read back as
the classes were named; and the export's check refuses a file that the task reads wrong."""

import contextlib
import json

import numpy as np
import pytest
import torch

from conftest import _exported, built_once, cli, optional

optional("mediapipe", "MediaPipe is in the test extra: .venv/bin/pip install -e '.[test]'")
optional("litert_torch", "no litert-torch: make install installs the test extra")

# A folder model's classes, named as a user might: commas, quotes, letters beyond ASCII.
COLOUR_CLASSES = ['a, "b"', "café 猫", "it's red"]


@contextlib.contextmanager
def float32_once(data: bytes):
    """mediapipe_bytes giving `data`, the float32 file just converted, where an int8 export
    converts the same model to float32 again to compare with (the same bytes each time)."""
    import mobilenet.deploy.mediapipe as mediapipe

    real = mediapipe.mediapipe_bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mediapipe, "mediapipe_bytes", lambda model, info, calibration=None: (
            data if calibration is None else real(model, info, calibration)))
        yield


@pytest.fixture(scope="module")
def grey(small_run, tmp_path_factory):
    """small_run's model (Fashion-MNIST-like, 28-pixel images, ρ 32) as float32 and int8 files."""
    fp32_path, fp32 = _exported(small_run, tmp_path_factory, "m.mediapipe.tflite", "mediapipe")
    with float32_once(fp32_path.read_bytes()):
        int8_path, int8 = _exported(small_run, tmp_path_factory, "m.mediapipe.int8.tflite", "mediapipe", int8=True,
                                    calibration_images=64)
    return small_run[0], fp32_path, fp32, int8_path, int8


def _colour_folder(root):
    """Three classes by their dominant colour, images of several sizes and shapes (the
    preparation resizes the shorter side and crops the centre)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for c, name in enumerate(COLOUR_CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(16):
            pixels = rng.integers(0, 160, (36 + 3 * i, 60 - 2 * i, 3), dtype=np.uint8)
            pixels[:, :, c] = rng.integers(200, 256, pixels.shape[:2])
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    """A colour folder model trained here, exported float32 and int8 once a test run."""
    from mobilenet.deploy.exporter import export
    from mobilenet.training.loop import TrainConfig, train

    def build(folder):
        images = _colour_folder(folder / "images")
        # 20 epochs without EMA (about 80 steps): every test image right by a wide margin, so
        # neither float32 sums nor int8 steps on any CPU can turn a top-1 over
        train(TrainConfig(data=str(images), epochs=20, width_mult=0.25, resolution=32, batch_size=8, augment="none",
                          ema=0, workers=0, out=str(folder / "run")), log=lambda _: None)
        reports = {"fp32": export(folder / "run", "mediapipe", log=lambda _: None)}
        with float32_once((folder / "run" / "model.mediapipe.tflite").read_bytes()):
            reports["int8"] = export(folder / "run", "mediapipe", int8=True, calibration_images=24, log=lambda _: None)
        (folder / "reports.json").write_text(json.dumps(reports))
    folder = built_once(tmp_path_factory, "mediapipe-colour", build)
    reports = json.loads((folder / "reports.json").read_text())
    run = folder / "run"
    return run, run / "model.mediapipe.tflite", reports["fp32"], run / "model.mediapipe.int8.tflite", reports["int8"]


def _eager(run, images):
    """PyTorch's probabilities for decoded images, prepared by images.prepare."""
    from mobilenet.data.images import prepare
    from mobilenet.run.folder import load_model

    model, info = load_model(run)
    mode = "L" if info.input["channels"] == 1 else "RGB"
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([prepare(im.convert(mode), info.input) for im in images]))
        return torch.softmax(model(x), dim=1).numpy(), info


def _test_images(run):
    """The model's test images as decoded files (PIL), and the same as the task's pixels."""
    from PIL import Image

    from mobilenet.deploy.mediapipe import pixel_images
    from mobilenet.run.folder import load_model

    info = load_model(run)[1]
    rgb, labels = pixel_images(info, 0)
    if info.input["channels"] == 1:  # Fashion-MNIST's test images are the pixels themselves
        return [Image.fromarray(p[:, :, 0], "L") for p in rgb], rgb, labels
    from mobilenet.data.images import load_image
    from mobilenet.data.splits import data_splits

    paths = [p for p, _ in data_splits(info.data_name, info.test_split, info.seed)["test"]]
    return [load_image(p) for p in paths], rgb, labels


@pytest.mark.parametrize("which", ["grey", "colour"])
def test_the_task_answers_as_pytorch_does_with_the_models_labels(which, request):
    """Float32 through MediaPipe's ImageClassifier: the same top-1 as PyTorch on every test
    image, probabilities within 1e-3, each class under its own name; for the grey model also
    on random colour images, which its graph turns grey as PIL does (their probabilities
    only: a random image's top two may tie closer than float32 sums agree)."""
    from PIL import Image

    from mobilenet.deploy.mediapipe import classify

    run, path, report, _, _ = request.getfixturevalue(which)
    images, rgb, _ = _test_images(run)
    real = len(rgb)
    if which == "grey":
        colour = np.random.default_rng(0).integers(0, 256, (16, *rgb.shape[1:]), dtype=np.uint8)
        images += [Image.fromarray(im, "RGB") for im in colour]
        rgb = np.concatenate([rgb, colour])
    expected, info = _eager(run, images)
    scores, names = classify(path.read_bytes(), rgb, len(info.classes))
    assert (scores[:real].argmax(1) == expected[:real].argmax(1)).all()
    assert np.abs(scores - expected).max() <= 1e-3
    assert names == info.classes
    assert report["checked_in"] == "MediaPipe's ImageClassifier" and report["real"]["same_top1"]


@pytest.mark.parametrize("which", ["grey", "colour"])
def test_the_int8_file_loses_at_most_a_point_in_the_task(which, request):
    from mobilenet.deploy.mediapipe import classify
    from mobilenet.run.folder import load_model

    run, fp32_path, _, int8_path, report = request.getfixturevalue(which)
    _, rgb, labels = _test_images(run)
    classes = load_model(run)[1].classes
    accuracy = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        scores, names = classify(path.read_bytes(), rgb, len(classes))
        assert names == classes
        accuracy[name] = (scores.argmax(1) == labels).mean()
    assert accuracy["int8"] >= accuracy["fp32"] - 0.01
    assert report["accuracy_int8"] == pytest.approx(accuracy["int8"]) and report["shrink"] > 2
    assert int8_path.stat().st_size < fp32_path.stat().st_size / 2


@pytest.mark.parametrize("which", ["grey", "colour"])
def test_the_file_predicts_and_evaluates_in_our_litert_runtime(which, request, tmp_path):
    """Its own metadata entry stays: `predict` and `evaluate --runtime litert` read the file
    as the task would be fed, and answer as the run folder does."""
    run, path, _, _, _ = request.getfixturevalue(which)
    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, image in enumerate(_test_images(run)[0][:3]):
        image.save(images[i])
    found = {}
    for model in (run, path):
        r = cli("predict", "--model", str(model), "--json", "--top-k", "10", *map(str, images))
        assert r.returncode == 0, r.stderr
        found[model] = json.loads(r.stdout)["predictions"]
    for ours, theirs in zip(*found.values()):  # the top class, and every class's probability
        assert ours["predictions"][0]["class"] == theirs["predictions"][0]["class"]
        mine = {p["class"]: p["probability"] for p in ours["predictions"]}
        assert mine == pytest.approx({p["class"]: p["probability"] for p in theirs["predictions"]}, abs=1e-3)
    top1 = []
    for model, out in ((run, tmp_path / "torch"), (path, tmp_path / "litert")):
        out.mkdir()
        r = cli("evaluate", "--model", str(model), "--out", str(out), "--json")
        assert r.returncode == 0, r.stderr
        top1.append(json.loads(r.stdout)["top1"])
    assert top1[0] == top1[1]


def test_the_file_keeps_our_metadata_and_takes_the_tasks_input(grey):
    from ai_edge_litert.interpreter import Interpreter

    from mobilenet.deploy.litert import read_metadata
    from mobilenet.run.folder import load_model

    run, path, _, _, _ = grey
    data, info = path.read_bytes(), load_model(run)[1]
    assert read_metadata(data, path)["classes"] == info.classes and read_metadata(data, path)["task"] == "mediapipe"
    interpreter = Interpreter(model_content=data)
    into, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(into["shape"]) == [1, 28, 28, 3] and into["dtype"] == np.uint8
    assert list(out["shape"]) == [1, len(info.classes)] and out["dtype"] == np.float32


@pytest.mark.fault
def test_the_exports_check_refuses_what_the_task_reads_otherwise(grey, monkeypatch):
    """The check holds the task's answers against PyTorch's: labels in another order, or a
    preparation other than the file's, is one line and nothing written; where MediaPipe's
    task does not load, the metadata is still written, and the check says so and runs the
    file in LiteRT's interpreter."""
    import dataclasses
    import io
    import zipfile

    import mobilenet.deploy.mediapipe as mediapipe
    from mobilenet.errors import MobileNetError, NotInstalled
    from mobilenet.run.folder import load_model

    run, path, _, _, _ = grey
    data, (model, info) = path.read_bytes(), load_model(run)
    assert mediapipe.check_file(data, model, info, 64, print)["real"]["same_top1"]
    buffer = io.BytesIO(data[:data.rfind(b"PK\x03\x04")])  # the flatbuffer, without its labels' zip
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(mediapipe.LABELS, "\n".join(info.classes[1:] + info.classes[:1]) + "\n")
    with pytest.raises(MobileNetError, match="reads the labels otherwise"):
        mediapipe.check_file(buffer.getvalue(), model, info, 64, print)
    plain = dataclasses.replace(info, input={**info.input, "mean": [0.0], "std": [1.0]})
    with pytest.raises(MobileNetError, match="disagrees with PyTorch in MediaPipe's ImageClassifier"):
        mediapipe.check_file(data, model, plain, 64, print)

    def missing():
        raise NotInstalled("MediaPipe is not installed")
    monkeypatch.setattr(mediapipe, "require_mediapipe", missing)
    assert mediapipe.task_metadata(info)[4:8] == mediapipe.TASK_IDENTIFIER  # the schema is read from its file
    said = []
    assert mediapipe.check_file(data, model, info, 64, said.append)["checked_in"] == "LiteRT's interpreter"
    assert len(said) == 1 and said[0].startswith("note: MediaPipe is not installed")


@pytest.mark.fault
@pytest.mark.parametrize("name", ["two\nlines", "cr\r", " ", ""])
def test_a_class_name_that_is_no_label_line_is_refused(name):
    from mobilenet.deploy.mediapipe import check_labels
    from mobilenet.errors import MobileNetError

    with pytest.raises(MobileNetError, match="cannot be a MediaPipe label"):
        check_labels(["ok", name])


def test_the_docs_python_lines_classify_with_the_models_labels(grey, tmp_path, capsys):
    """docs/deploy.md's "In an app" block, run as it is written, on this run's file and image."""
    import re
    from pathlib import Path

    run, path, _, _, _ = grey
    image = tmp_path / "shoe.png"
    _test_images(run)[0][0].save(image)  # a grey PNG, as the demo's samples are
    docs = (Path(__file__).parents[1] / "docs" / "deploy.md").read_text()
    block = re.search(r"## In an app\n.*?```python\n(.*?)```", docs, re.S).group(1)
    assert "runs/demo/model.mediapipe.tflite" in block and "runs/demo/samples/00000_Ankle-boot.png" in block
    block = block.replace("runs/demo/model.mediapipe.tflite", str(path))
    exec(block.replace("runs/demo/samples/00000_Ankle-boot.png", str(image)), {})
    lines = capsys.readouterr().out.splitlines()
    expected, info = _eager(run, [_test_images(run)[0][0]])
    assert len(lines) == 3 and lines[0].split(" ", 1)[1] == info.classes[expected[0].argmax()]
    assert float(lines[0].split()[0]) == pytest.approx(expected[0].max(), abs=1e-3)
