"""Predictor: every kind of input, failures, top-k, chunking, and the two runtimes agreeing."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mobilenet.data.images import prepare_files
from mobilenet.deploy import predictor
from mobilenet.deploy.predictor import Predictor
from mobilenet.errors import MobileNetError


def bar_image(label: int, seed: int = 0) -> np.ndarray:
    """A 28×28 grey image of class `label`, drawn as make_fashion_like draws them."""
    a = np.random.default_rng(seed).integers(0, 60, size=(28, 28)).astype(np.uint8)
    a[2 + 2 * label: 5 + 2 * label, 4:24] = 255
    return a


def write_images(folder, labels, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, label in enumerate(labels):
        path = folder / f"{i:02d}-class{label}.png"
        Image.fromarray(bar_image(label, seed + i), "L").save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def torch_predictor(small_run):
    return Predictor(small_run[0])


def check_record(record, classes, k):
    probs = [p["probability"] for p in record["predictions"]]
    assert len(probs) == k
    assert probs == sorted(probs, reverse=True) and all(isinstance(p, float) for p in probs)
    assert 0 < sum(probs) <= 1 + 1e-5
    assert all(p["class"] in classes for p in record["predictions"])
    json.dumps(record)  # plain data


def test_paths_are_predicted(torch_predictor, tmp_path):
    labels = [0, 3, 7, 9]
    paths = write_images(tmp_path, labels)
    records, failed = torch_predictor.predict([paths[0], *map(str, paths[1:])], top_k=3)
    assert failed == []
    assert [r["image"] for r in records] == [str(p) for p in paths]
    for r, label in zip(records, labels):
        check_record(r, torch_predictor.classes, 3)
    top1 = [torch_predictor.classes.index(r["predictions"][0]["class"]) for r in records]
    assert sum(t == label for t, label in zip(top1, labels)) >= 3  # a trained model, not noise


def test_folder_expands_recursively_sorted_skipping_hidden(torch_predictor, tmp_path):
    root = tmp_path / "photos"
    b = write_images(root / "b", [1, 2])
    a = write_images(root / "a" / "deep", [3])
    top = write_images(root, [4])
    Image.fromarray(bar_image(5), "L").save(root / ".hidden.png")
    write_images(root / ".cache", [6])
    (root / "notes.txt").write_text("not an image")
    records, failed = torch_predictor.predict([root])
    assert failed == []
    assert [r["image"] for r in records] == sorted(str(p) for p in a + b + top)


def test_pil_and_numpy_items_carry_their_index(torch_predictor, tmp_path):
    (path,) = write_images(tmp_path, [6])
    grey = bar_image(6)
    items = [Image.fromarray(grey, "L"), str(path), grey, grey[:, :, None], np.repeat(grey[:, :, None], 3, 2),
             Image.fromarray(grey, "L").convert("RGBA")]
    records, failed = torch_predictor.predict(items)
    assert failed == []
    assert [r["image"] for r in records] == [0, str(path), 2, 3, 4, 5]
    # the same pixels in memory or in a PNG file: the same answer
    for r in records:
        assert r["predictions"][0]["class"] == records[1]["predictions"][0]["class"]
        assert r["predictions"][0]["probability"] == pytest.approx(records[1]["predictions"][0]["probability"],
                                                                   abs=1e-6)


def test_pil_items_are_converted_as_files_are(torch_predictor, tmp_path):
    """Transparency on white, EXIF rotation, 16-bit grey: as load_image does for a file."""
    grey = bar_image(3)
    rgba = Image.fromarray(np.repeat(grey[:, :, None], 3, 2), "RGB").convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(28) < 14, 0, 255).astype(np.uint8)[None].repeat(28, 0)))
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)
    rotated = Image.fromarray(grey, "L")
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90°
    files = [tmp_path / "alpha.png", tmp_path / "16bit.png", tmp_path / "rotated.jpg"]
    rgba.save(files[0])
    sixteen.save(files[1])
    rotated.save(files[2], exif=exif)
    with Image.open(files[2]) as opened:  # as read, not yet rotated
        assert opened.size == (28, 28) and opened.getexif()[0x0112] == 6
        records, failed = torch_predictor.predict([rgba, sixteen, opened, *files], top_k=10)
    assert failed == [] and len(records) == 6
    for in_memory, from_file in zip(records[:3], records[3:]):
        got = {p["class"]: p["probability"] for p in in_memory["predictions"]}
        want = {p["class"]: p["probability"] for p in from_file["predictions"]}
        assert got == pytest.approx(want, abs=1e-6), from_file["image"]


def test_bad_items_are_refused_before_any_work(torch_predictor):
    for bad in ([np.zeros((28, 28), np.float32)], [np.zeros((2, 28, 28, 3), np.uint8)], [42], "a.png"):
        with pytest.raises(MobileNetError):
            torch_predictor.predict(bad)


def test_one_predictor_called_twice_gives_the_same_result(torch_predictor, tmp_path):
    paths = write_images(tmp_path, [1, 5, 8])
    first = torch_predictor.predict(paths + [bar_image(2)])
    second = torch_predictor.predict(paths + [bar_image(2)])
    assert first == second and len(first[0]) == 4


def test_undecodable_file_fails_alone(torch_predictor, tmp_path):
    paths = write_images(tmp_path, [0, 1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    missing = tmp_path / "missing.png"
    records, failed = torch_predictor.predict([paths[0], broken, missing, paths[1]])
    assert [r["image"] for r in records] == [str(paths[0]), str(paths[1])]
    assert failed == prepare_files([broken, missing], torch_predictor.spec)[2]  # its format and reasons
    assert [f["image"] for f in failed] == [str(broken), str(missing)]
    assert all(f["reason"] for f in failed)


def test_top_k_is_capped_and_checked(torch_predictor, tmp_path):
    paths = write_images(tmp_path, [2])
    records, _ = torch_predictor.predict(paths, top_k=50)
    check_record(records[0], torch_predictor.classes, 10)
    records, _ = torch_predictor.predict(paths, top_k=1)
    check_record(records[0], torch_predictor.classes, 1)
    for bad in (0, -1):
        with pytest.raises(MobileNetError, match="top-k"):
            torch_predictor.predict(paths, top_k=bad)


def test_unknown_runtime_and_missing_model_are_refused(small_run, tmp_path):
    with pytest.raises(MobileNetError, match="runtime"):
        Predictor(small_run[0], runtime="tensorflow")
    with pytest.raises(MobileNetError):
        Predictor(tmp_path / "nothing-here")
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(MobileNetError, match="no such file|not installed"):
            Predictor(tmp_path / "nothing.onnx", runtime=runtime)


def test_work_goes_in_chunks(torch_predictor, tmp_path, monkeypatch):
    monkeypatch.setattr(predictor, "CHUNK_SIZE", 2)
    sizes = []
    hook = torch_predictor.model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    try:
        records, failed = torch_predictor.predict(write_images(tmp_path, [0, 1, 2, 3, 4]))
    finally:
        hook.remove()
    assert len(records) == 5 and failed == []
    assert sizes == [2, 2, 1]


def test_onnxruntime_works_in_chunks_too(onnx_file, tmp_path, monkeypatch):
    monkeypatch.setattr(predictor, "CHUNK_SIZE", 2)
    p = Predictor(onnx_file, runtime="onnxruntime")
    sizes, logits = [], p.model.logits
    monkeypatch.setattr(p.model, "logits", lambda x: sizes.append(len(x)) or logits(x))
    records, _ = p.predict(write_images(tmp_path, [0, 1, 2, 3, 4]))
    assert len(records) == 5 and sizes == [2, 2, 1]


def test_torch_and_onnxruntime_agree(torch_predictor, onnx_file, tmp_path):
    items = [tmp_path, bar_image(4, seed=9), Image.fromarray(bar_image(8, seed=3), "L")]
    write_images(tmp_path, list(range(10)), seed=20)
    ort = Predictor(onnx_file, runtime="onnxruntime")
    assert ort.classes == torch_predictor.classes and ort.spec == torch_predictor.spec
    ours, theirs = torch_predictor.predict(items, top_k=10), ort.predict(items, top_k=10)
    assert ours[1] == theirs[1] == [] and len(ours[0]) == len(theirs[0]) == 12
    for a, b in zip(ours[0], theirs[0]):
        assert a["image"] == b["image"]
        assert a["predictions"][0]["class"] == b["predictions"][0]["class"]
        pa = {p["class"]: p["probability"] for p in a["predictions"]}
        pb = {p["class"]: p["probability"] for p in b["predictions"]}
        assert pa.keys() == pb.keys()
        assert max(abs(pa[c] - pb[c]) for c in pa) <= 1e-4


def test_onnxruntime_predictor_imports_no_torch(onnx_file, tmp_path):
    (path,) = write_images(tmp_path, [3])
    code = ("import sys\n"
            "from mobilenet.deploy.predictor import Predictor\n"
            "records, failed = Predictor(sys.argv[1], runtime='onnxruntime').predict([sys.argv[2], sys.argv[3]])\n"
            "assert len(records) == 2 and not failed, (records, failed)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    done = subprocess.run([sys.executable, "-c", code, str(onnx_file), str(path), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.fault
def test_a_folder_without_images_is_a_failure(torch_predictor, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no pictures here")
    records, failed = torch_predictor.predict([tmp_path / "empty", tmp_path / "notes"])
    assert records == [] and [f["image"] for f in failed] == [str(tmp_path / "empty"), str(tmp_path / "notes")]
    assert all("no image files" in f["reason"] for f in failed)
