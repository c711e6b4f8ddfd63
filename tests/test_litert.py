"""export --format litert and --runtime litert: the .tflite checks itself against PyTorch,
int8 by PT2E keeps accuracy and shrinks, the runner quantizes and dequantizes and feeds
batches in chunks, no torch is imported to run it, and a stranger's .tflite is one line."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mobilenet.deploy.exporter import _real_inputs, export
from mobilenet.deploy.predictor import Predictor
from mobilenet.deploy.runtime import evaluate_file
from mobilenet.errors import MobileNetError
from mobilenet.run.folder import load_model

from conftest import _exported, cli, optional

optional("ai_edge_litert", "no ai-edge-litert: make install installs the test extra")
optional("litert_torch", "no litert-torch: make install installs the test extra")
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

# int8's own error in the logits, in steps of the output's scale: each of the 27 layers and
# the FC rounds to a step of its own, and a few steps each bound what that adds up to,
# whichever CPU's kernels sum the products (an AVX2-only EPYC's came to 58 steps).
INT8_STEPS = 4 * 28


@pytest.fixture(scope="module")
def tflite(small_run, tmp_path_factory):
    """small_run's model as float32 and int8 .tflite files, and the export reports: exported
    once a run (conftest._exported), the int8 export reusing the float32 conversion just made
    (the same bytes each time) for its check."""
    import mobilenet.deploy.litert as litert

    fp32_path, fp32 = _exported(small_run, tmp_path_factory, "m.tflite", "litert")
    real, data = litert.litert_bytes, fp32_path.read_bytes()
    with pytest.MonkeyPatch.context() as patch:  # only the float32 call: the int8 one converts
        patch.setattr(litert, "litert_bytes", lambda model, info, calibration=None: (
            data if calibration is None else real(model, info, calibration)))
        int8_path, int8 = _exported(small_run, tmp_path_factory, "m.int8.tflite", "litert", calibration_images=64,
                                    int8=True)
    folder = tmp_path_factory.mktemp("litert")
    for path in (fp32_path, int8_path):
        shutil.copyfile(path, folder / path.name)
    return folder, fp32, int8


def _grey(tmp_path, count=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L").save(tmp_path / f"{i}.png")
    return [str(tmp_path / f"{i}.png") for i in range(count)]


def test_float32_file_matches_pytorch_in_chunks_and_carries_its_metadata(small_run, tflite):
    from mobilenet.deploy.litert import CHUNK, read_metadata

    folder, report, _ = tflite
    assert report["real"]["same_top1"] and report["real"]["max_abs_diff"] <= 1e-4
    model, info = load_model(small_run[0])
    data = (folder / "m.tflite").read_bytes()
    assert report["bytes"] == len(data) and read_metadata(data, "m") == info.exported(False)
    x = torch.randn(CHUNK + 44, 1, 32, 32)  # more than one chunk, the last one shorter
    with torch.inference_mode():
        eager = model(x).numpy()
    ours = Predictor(folder / "m.tflite", runtime="litert").model
    np.testing.assert_allclose(ours.logits(x.numpy()), eager, atol=1e-4)
    np.testing.assert_allclose(ours.logits(x[:1].numpy()), eager[:1], atol=1e-4)  # and back to one image


def test_cli_predicts_and_evaluates_as_torch_does(small_run, tflite, tmp_path):
    folder, report, _ = tflite
    images = _grey(tmp_path)
    found = {}
    for runtime, model in (("torch", small_run[0]), ("litert", folder / "m.tflite")):
        r = cli("predict", "--runtime", runtime, "--model", str(model), "--top-k", "1", "--json", *images)
        assert r.returncode == 0 and r.stderr == "", r.stderr  # no LiteRT log lines on the user's terminal
        found[runtime] = [p["predictions"][0]["class"] for p in json.loads(r.stdout)["predictions"]]
    assert found["litert"] == found["torch"] and len(found["torch"]) == 3
    metrics = evaluate_file(folder / "m.tflite", "litert", out=tmp_path)
    assert metrics["images"] == 200 and metrics["top1"] >= 0.9


def test_int8_is_quantized_keeps_accuracy_and_is_dequantized(small_run, tflite, tmp_path):
    from mobilenet.deploy.litert import read_metadata

    folder, fp32, q = tflite
    assert round(q["accuracy_fp32"] - q["accuracy_int8"], 9) <= 0.01 and q["accuracy_fp32"] >= 0.9
    assert q["fp32_bytes"] == fp32["bytes"] and q["fp32_bytes"] / q["bytes"] >= 2.5  # α = 0.5: see bench for α = 1
    data = (folder / "m.int8.tflite").read_bytes()
    assert read_metadata(data, "m")["int8"] is True
    interpreter = Interpreter(model_content=data)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # int8 in and out: the runner converts
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    x = _real_inputs(load_model(small_run[0])[1], 64)[0].numpy()  # in the calibration's range, unlike noise
    z = Predictor(folder / "m.tflite", runtime="litert").model.logits(x)
    zq = Predictor(folder / "m.int8.tflite", runtime="litert").model.logits(x)
    codes = np.concatenate([_run(data, x[i:i + 1], OpResolverType.AUTO, raw=True) for i in range(8)])
    scale, zero = interpreter.get_output_details()[0]["quantization"]  # the runner dequantizes exactly
    assert zq.dtype == np.float32 and np.array_equal(zq[:8], (codes.astype(np.float32) - zero) * np.float32(scale))
    assert np.abs(zq - z).max() <= INT8_STEPS * scale, np.abs(zq - z).max() / scale
    metrics = evaluate_file(folder / "m.int8.tflite", "litert", out=tmp_path)
    assert metrics["top1"] == pytest.approx(q["accuracy_int8"], abs=1e-9)


def _run(data: bytes, x: np.ndarray, resolver, raw: bool = False) -> np.ndarray:
    """`data` run by LiteRT's interpreter itself on `x`, resized to its batch: with its
    reference kernels (BUILTIN_REF) or with the XNNPACK delegate (AUTO). Float logits, or the
    int8 file's own codes with `raw`."""
    from mobilenet.deploy.litert import dequantize, quantize

    interpreter = Interpreter(model_content=data, experimental_op_resolver_type=resolver)
    into, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(into["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(into["index"], quantize(x, into))
    interpreter.invoke()
    codes = interpreter.get_tensor(out["index"])
    return codes if raw else dequantize(codes, out)


@pytest.mark.parametrize("resolution", [32, 64, 224])
def test_trained_files_run_at_batch_1_and_3_with_and_without_xnnpack(small_run, tflite, tmp_path, resolution):
    """small_run's trained weights at 32, 64 (Fashion-MNIST's default) and 224 (a folder's)
    pixels, run by LiteRT's reference kernels and by XNNPACK. Above 32 the last feature map
    is over 1×1, where a dynamic int8 file once held the example's batch in its RESHAPEs and
    refused batch 1. Float32 takes any batch; int8 is written for one image, and the runner
    feeds it one at a time."""
    import dataclasses

    from mobilenet.deploy.litert import LiteRtModel, litert_bytes, with_metadata

    model, info = load_model(small_run[0])
    if resolution == 32:
        files = [(tflite[0] / name).read_bytes() for name in ("m.tflite", "m.int8.tflite")]
    else:  # the same weights: the pool is global, so any size runs them
        info.model = dataclasses.replace(info.model, resolution=resolution)
        info.input = {**info.input, "resolution": resolution}
        calibration = _real_inputs(info, 32, split="train")[0].numpy()
        files = [litert_bytes(model, info), litert_bytes(model, info, calibration)]
    x = _real_inputs(info, 3)[0]
    with torch.inference_mode():
        eager = model(x).numpy()
    for data in files:
        details = Interpreter(model_content=data).get_output_details()[0]
        int8 = details["dtype"] == np.int8
        bound = INT8_STEPS * details["quantization"][0] if int8 else 1e-4
        for resolver in (OpResolverType.BUILTIN_REF, OpResolverType.AUTO):
            for batch in (1,) if int8 else (1, 3):
                z = _run(data, x[:batch].numpy(), resolver)
                assert np.abs(z - eager[:batch]).max() <= bound, (int8, resolver, batch)
        (tmp_path / "m.tflite").write_bytes(with_metadata(data, info.exported(int8)))
        runner = LiteRtModel(tmp_path / "m.tflite")  # probed in a child, then fed in chunks
        assert runner.batch == (1 if int8 else None)
        assert np.abs(runner.logits(x.numpy()) - eager).max() <= bound


@pytest.mark.fault
def test_a_file_for_more_than_one_image_at_a_time_is_refused(small_run, tmp_path):
    """A declared batch is work per call (one of 100,000 once took 4 GB to predict one
    image): a file takes one image or any number, as export writes them."""
    import litert_torch

    from mobilenet.deploy.litert import LiteRtModel, with_metadata

    model, info = load_model(small_run[0])
    fixed = litert_torch.convert(model.eval(), (torch.zeros(4, 1, 32, 32),)).model_content()
    (tmp_path / "four.tflite").write_bytes(with_metadata(fixed, info.exported(False)))
    with pytest.raises(MobileNetError, match="four.tflite takes 4 images at a time, where this toolkit's files take "
                                             "one or any number"):
        LiteRtModel(tmp_path / "four.tflite")


class _OnlyOnZeros(torch.nn.Module):
    """The network's scores on an all-zero image, and infinite ones on any other."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) / (x.abs().amax(dim=(1, 2, 3)) == 0).float()[:, None]


@pytest.mark.fault
def test_the_probe_runs_a_file_on_an_image_that_is_not_zeros(small_run, tmp_path):
    import litert_torch

    from mobilenet.deploy.litert import LiteRtModel, with_metadata

    model, info = load_model(small_run[0])
    data = litert_torch.convert(_OnlyOnZeros(model.eval()).eval(), (torch.zeros(1, 1, 32, 32),)).model_content()
    (tmp_path / "zeros.tflite").write_bytes(with_metadata(data, info.exported(False)))
    with pytest.raises(MobileNetError, match=r"zeros.tflite gives non-finite scores of shape \[1, 10\] for one image"):
        LiteRtModel(tmp_path / "zeros.tflite")


def test_running_a_tflite_imports_no_torch(tflite, tmp_path):
    image = _grey(tmp_path, 1)[0]
    code = (
        "import sys\n"
        "from mobilenet.cli import main\n"
        f"rc = main(['predict', '--runtime', 'litert', '--model', {str(tflite[0] / 'm.int8.tflite')!r}, {image!r}])\n"
        f"rc2 = main(['evaluate', '--runtime', 'litert', '--model', {str(tflite[0] / 'm.tflite')!r}, '--out', "
        f"{str(tmp_path / 'out')!r}])\n"
        "assert rc == 0 and rc2 == 0, (rc, rc2)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm', 'litert_torch', "
        "'jax'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.fault
def test_an_export_that_disagrees_with_pytorch_writes_nothing(small_run, tmp_path, monkeypatch):
    import mobilenet.deploy.litert as litert

    real = litert.litert_bytes

    def another_model(model, info, calibration=None):
        other = load_model(small_run[0])[0]
        torch.nn.init.normal_(other.classifier.weight)
        return real(other, info, calibration)

    monkeypatch.setattr(litert, "litert_bytes", another_model)
    (tmp_path / "dst").mkdir()
    with pytest.raises(MobileNetError, match="LiteRT model disagrees with PyTorch on random inputs.*nothing was"):
        export(small_run[0], "litert", output=tmp_path / "dst" / "m.tflite", log=lambda _: None)
    assert list((tmp_path / "dst").iterdir()) == []


def _one_line(r, says):
    assert r.returncode == 1 and says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.fault
def test_a_truncated_or_unlabelled_tflite_is_one_line(small_run, tflite, tmp_path, onnx_file):
    import litert_torch

    data = (tflite[0] / "m.tflite").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[:5000])
    model, _ = load_model(small_run[0])
    (tmp_path / "bare.tflite").write_bytes(litert_torch.convert(model.eval(), (torch.zeros(1, 1, 32, 32),))
                                           .model_content())
    (tmp_path / "onnx.tflite").write_bytes(onnx_file.read_bytes())
    image = _grey(tmp_path, 1)[0]
    for name, says in (("cut", "cut.tflite: its flatbuffer or metadata is damaged"),
                       ("bare", "bare.tflite has no 'mobilenet' metadata"),
                       ("onnx", "onnx.tflite is not a LiteRT model"), ("none", "none.tflite: no such file")):
        _one_line(cli("predict", "--runtime", "litert", "--model", str(tmp_path / f"{name}.tflite"), image), says)


@pytest.mark.fault
def test_metadata_that_does_not_fit_the_model_is_refused(small_run, tflite, tmp_path):
    from mobilenet.deploy.litert import LiteRtModel, with_metadata

    _, info = load_model(small_run[0])
    entry = info.exported(False)
    entry["input"] = {**entry["input"], "resolution": 64, "image_size": 64}
    (tmp_path / "m.tflite").write_bytes(with_metadata((tflite[0] / "m.tflite").read_bytes(), entry))
    with pytest.raises(MobileNetError, match=r"prepares images as \(1, 64, 64\), the LiteRT model takes \(1, 32, 32\)"):
        LiteRtModel(tmp_path / "m.tflite")


@pytest.mark.fault
def test_export_without_the_converter_is_one_line(small_run, tmp_path):
    code = ("import sys; sys.modules['litert_torch'] = None\n"
            "from mobilenet.cli import main\n"
            f"sys.exit(main(['export', '--model', {str(small_run[0])!r}, '--format', 'litert', "
            f"'--output', {str(tmp_path / 'm.tflite')!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    _one_line(r, "pip install -e '.[litert-export]'")
    assert list(tmp_path.iterdir()) == []


def test_bench_has_litert_rows_and_int8_is_3_5_times_smaller_at_width_1():
    r = cli("bench", "--width", "1", "--resolution", "32", "--batch-size", "1,3", "--runtime", "litert,litert-int8",
            "--seconds", "0.05", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    rows = {(row["runtime"], row["batch_size"]): row for row in result["rows"]}
    assert set(rows) == {(n, b) for n in ("litert", "litert-int8") for b in (1, 3)}
    assert all(row["images_per_s"] > 0 for row in rows.values())
    assert rows["litert", 1]["file_mb"] / rows["litert-int8", 1]["file_mb"] >= 3.5  # INT8_MIN_SHRINK
    assert result["machine"]["versions"]["ai-edge-litert"]
