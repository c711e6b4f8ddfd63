import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import mobilenet.deploy.exporter as exporter
from mobilenet.deploy.executorch import sidecar
from mobilenet.deploy.exporter import export, fast_inference, fuse_for_inference
from mobilenet.deploy.predictor import Predictor
from mobilenet.deploy.runtime import OnnxModel, evaluate_file
from mobilenet.errors import MobileNetError
from mobilenet.net.model import MobileNetV1
from mobilenet.run.folder import load_model

from conftest import cli, converted_once


def test_onnx_round_trip_with_metadata(small_run, onnx_export):
    out, _ = small_run
    path, report = onnx_export
    assert report["deprecated"] == []  # torch.export's exporter: no deprecated path, nothing to hide
    assert report["random"]["max_abs_diff"] <= 1e-4 and report["real"]["same_top1"]
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"])[9] == "Ankle boot"
    assert json.loads(meta["input"])["resolution"] == 32
    assert min(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    model, _ = load_model(out)
    onnx_model = OnnxModel(path)
    x = torch.randn(3, 1, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(onnx_model.logits(x.numpy()), model(x).numpy(), atol=1e-4)


def test_executorch_round_trip(small_run, pte_export, tmp_path):
    out, _ = small_run
    program, report = pte_export
    assert report["random"]["max_abs_diff"] <= 1e-4 and report["real"]["same_top1"]
    meta = json.loads(sidecar(program).read_text())  # the sidecar travels with the program
    assert meta["classes"][9] == "Ankle boot" and meta["input"]["resolution"] == 32 and meta["int8"] is False
    model, _ = load_model(out)
    x = torch.randn(70, 1, 32, 32)  # more than one chunk of the program's batch bound
    with torch.inference_mode():
        expected = model(x).numpy()
    np.testing.assert_allclose(Predictor(program, runtime="executorch").model.logits(x.numpy()),
                               expected, atol=1e-4)
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "grey.png")
    r = cli("predict", "--runtime", "executorch", "--model", str(program), "--json", str(tmp_path / "grey.png"))
    assert r.returncode == 0 and r.stderr == "", r.stderr  # and no runtime chatter on the terminal
    assert json.loads(r.stdout)["predictions"][0]["predictions"][0]["class"] in meta["classes"]
    # a truncated program (with its sidecar's SHA-256, and with a sidecar of older exports,
    # which had none), and one without its sidecar: one line each, no traceback
    for name in ("cut", "old"):
        (tmp_path / f"{name}.pte").write_bytes(program.read_bytes()[:5000])
        (tmp_path / f"{name}.pte.json").write_text(json.dumps({**meta, "sha256": None} if name == "old" else meta))
    (tmp_path / "alone.pte").write_bytes(program.read_bytes())
    for name, says in (("cut.pte", "SHA-256 differs"), ("old.pte", "not a loadable ExecuTorch program"),
                       ("alone.pte", "alone.pte.json is missing")):
        with pytest.raises(MobileNetError, match=says):  # the CLI makes it one line (test_cli); no process here
            Predictor(tmp_path / name, runtime="executorch").predict([tmp_path / "grey.png"])


def test_executorch_int8_keeps_accuracy_and_shrinks(pte_int8_export, tmp_path):
    from mobilenet.deploy.exporter import INT8_MIN_SHRINK

    program, q = pte_int8_export
    assert round(q["accuracy_fp32"] - q["accuracy_int8"], 9) <= 0.01 and q["accuracy_fp32"] >= 0.9
    assert q["fp32_bytes"] / q["bytes"] >= INT8_MIN_SHRINK == 3.5
    assert q["bytes"] == program.stat().st_size
    assert json.loads(sidecar(program).read_text())["int8"] is True
    metrics = evaluate_file(program, "executorch", out=tmp_path)
    assert metrics["top1"] == pytest.approx(q["accuracy_int8"], abs=1e-9)


def _int8_weights(path) -> list[np.ndarray]:
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]


def _untrained_copy(small_run_dir, folder, width_mult: float):
    """A model folder like small_run's (classes, input, data) holding an untrained network of
    another width: its file size is what matters, not its accuracy."""
    import dataclasses

    from mobilenet.net.model import MobileNetV1
    from mobilenet.run.folder import read_config, save_model

    info = read_config(small_run_dir)
    info.model = dataclasses.replace(info.model, width_mult=width_mult)
    torch.manual_seed(0)
    folder.mkdir()
    save_model(MobileNetV1.from_config(info.model).eval(), folder, info)
    return folder


def test_int8_keeps_accuracy_and_shrinks(small_run, onnx_int8_export, tmp_path):
    """Accuracy on the trained α = 0.5 model; size on an untrained α = 1.0 one (3.2M
    parameters, 12.9 MB in float32), where the file's fixed part is small enough that the
    INT8_MIN_SHRINK bound holds without excuse."""
    from mobilenet.deploy.exporter import INT8_MIN_SHRINK

    out, _ = small_run
    path, report = onnx_int8_export
    assert report["accuracy_fp32"] >= 0.9  # a model whose 1-point band means something
    assert round(report["accuracy_fp32"] - report["accuracy_int8"], 9) <= 0.01
    assert report["top1_agreement"] >= 0.98  # the same answers as float32, not just as many right ones
    assert len(_int8_weights(path)) >= 27  # every conv and the FC holds int8 weights
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert {"classes", "input"} <= set(meta) and meta["int8"] == "portable"
    big = _untrained_copy(out, tmp_path / "big", 1.0)
    report = export(big, "onnx", int8=True, output=tmp_path / "big.onnx", calibration_images=32, log=lambda _: None)
    assert report["fp32_bytes"] > 12e6 and report["bytes"] == (tmp_path / "big.onnx").stat().st_size
    assert report["shrink"] >= INT8_MIN_SHRINK == 3.5, report["shrink"]


def test_int8_default_is_exact_on_cpus_without_vnni(small_run, onnx_export, onnx_int8_export, tmp_path):
    """x86 CPUs without VNNI sum pairs of uint8 × int8 products in int16 (VPMADDUBSW),
    which saturates above 32,767. The default preset's weights stay within ±64, so a pair
    is at most 2 × 255 × 64 = 32,640 and the int16 sums are exact on every CPU; this holds
    whatever CPU runs the test. The vnni preset uses the full ±127."""
    out, _ = small_run
    path, report = onnx_int8_export  # the default preset, as export gives it
    assert report["int8_preset"] == "portable"
    weights = _int8_weights(path)
    assert len(weights) >= 27  # every conv and the FC
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    assert 2 * 255 * 64 <= 32767
    # the weights alone: the export's accuracy check would refuse a vnni file on a CPU without VNNI
    _, info = load_model(out)
    calibration = exporter._calibration(info, 32)
    (tmp_path / "v.onnx").write_bytes(exporter.quantize_onnx(onnx_export[0].read_bytes(), calibration, preset="vnni"))
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _int8_weights(tmp_path / "v.onnx")) > 64


@pytest.mark.fault
def test_an_int8_onnx_that_loses_more_than_a_point_is_refused(small_run, onnx_export, tmp_path, monkeypatch):
    """As for ExecuTorch and LiteRT: an int8 file that loses more than INT8_MAX_DROP of test
    accuracy (here, quantization that gives an untrained network's file) writes nothing."""
    out, _ = small_run
    model, info = load_model(out)
    torch.manual_seed(1)
    other = exporter.onnx_bytes(MobileNetV1.from_config(model.config).eval(), info)
    monkeypatch.setattr(exporter, "quantize_onnx", lambda *args, **kw: other)
    with converted_once(exporter, "onnx_bytes", small_run, onnx_export[0].read_bytes()):
        with pytest.raises(MobileNetError, match=r"int8 loses .* points, more than 1; nothing was written"):
            export(out, "onnx", int8=True, output=tmp_path / "m.int8.onnx", calibration_images=32, log=lambda _: None)
        monkeypatch.setattr(exporter, "cpu_features", lambda: ["avx2"])  # the vnni preset, checked on AVX2
        with pytest.raises(MobileNetError, match="This CPU has no VNNI.*use the portable preset"):
            export(out, "onnx", int8=True, output=tmp_path / "m.int8.onnx", calibration_images=32,
                   int8_preset="vnni", log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_fast_torch_path_predicts_identically(small_run):
    model, _ = load_model(small_run[0])
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(16, 1, 32, 32)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = fast_inference(model, xc)
        assert isinstance(fast, torch.jit.ScriptModule)  # the optimized path, not the fallback
        plain = model(x)
        for out in (fused(xc), fast(xc), fast(xc[:1])):
            assert torch.equal(plain[:len(out)].argmax(1), out.argmax(1))
            torch.testing.assert_close(out, plain[:len(out)], atol=1e-4, rtol=1e-4)


def test_onnxruntime_path_imports_no_torch(small_run, onnx_file, tmp_path):
    out, _ = small_run
    (tmp_path / "m.onnx").write_bytes(onnx_file.read_bytes())
    from PIL import Image
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    code = (
        "import sys, json\n"
        "from mobilenet.cli import main\n"
        f"rc = main(['predict', '--model', {str(tmp_path / 'm.onnx')!r}, "  # the suffix names the runtime
        f"{str(tmp_path / 'a.png')!r}, '--json'])\n"
        f"rc2 = main(['evaluate', '--runtime', 'onnxruntime', '--model', {str(tmp_path / 'm.onnx')!r}])\n"
        "assert rc == 0 and rc2 == 0, (rc, rc2)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert r.returncode == 0, r.stderr
    assert "top-1" in r.stdout
    # and it agrees with the torch path
    ours = Predictor(tmp_path / "m.onnx", runtime="onnxruntime").predict([tmp_path / "a.png"])[0][0]["predictions"][0]
    from mobilenet.report.evaluation import evaluate
    theirs = Predictor(out).predict([tmp_path / "a.png"])[0][0]["predictions"][0]
    assert ours["class"] == theirs["class"] and abs(ours["probability"] - theirs["probability"]) < 1e-4
    assert evaluate_file(tmp_path / "m.onnx", out=tmp_path)["top1"] == pytest.approx(
        evaluate(out, out=tmp_path)["top1"], abs=0.006)


def test_bench_json_on_a_tiny_model():
    r = cli("bench", "--width", "0.25", "--resolution", "32", "--batch-size", "1,2", "--runtime",
            "torch,torch-fast,onnxruntime", "--seconds", "0.05", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert len(result["rows"]) == 6 and result["roofline_gflops"] > 0
    for row in result["rows"]:
        assert row["median_ms"] > 0 and row["images_per_s"] > 0 and row["mult_adds"] > 0 and row["iterations"] >= 10
    assert result["machine"]["threads"] >= 1 and result["machine"]["versions"]["torch"]


def test_bench_times_each_exported_file_as_it_is(onnx_export, onnx_int8_export, pte_export, pte_int8_export):
    """`bench --model FILE`: the file that ships, timed in each runtime that runs it, with no
    export of its own; a row says int8 when the file is."""
    wanted = [(onnx_export, {"onnxruntime", "openvino"}), (onnx_int8_export, {"onnxruntime-int8", "openvino-int8"}),
              (pte_export, {"executorch"}), (pte_int8_export, {"executorch-int8"})]
    for (path, _), runtimes in wanted:
        r = cli("bench", "--model", path, "--batch-size", "1,3", "--seconds", "0.05", "--json")
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["file"] == str(path) and result["model"]["width_mult"] == 0.5
        assert {(row["runtime"], row["batch_size"]) for row in result["rows"]} == {(n, b) for n in runtimes
                                                                                 for b in (1, 3)}
        assert all(row["images_per_s"] > 0 and row["file_mb"] == path.stat().st_size / 1e6 for row in result["rows"])
    r = cli("bench", "--model", onnx_export[0], "--runtime", "onnxruntime-int8", "--seconds", "0.05", "--json")
    assert r.returncode == 0 and {row["runtime"] for row in json.loads(r.stdout)["rows"]} == {"onnxruntime"}
    r = cli("bench", "--model", pte_export[0], "--runtime", "onnxruntime")
    assert r.returncode == 2 and "runs with --runtime executorch, not onnxruntime" in r.stderr
    assert len(r.stderr.splitlines()) == 1


@pytest.mark.fault
def test_export_error_paths(small_run, onnx_export, tmp_path):
    out, _ = small_run
    r = cli("export", "--model", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "no such folder" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("export", "--model", str(tmp_path / "empty"))
    assert r.returncode == 1 and "config.json" in r.stderr and "Traceback" not in r.stderr
    r = cli("export", "--model", str(out), "--output", "/proc/mobilenet.onnx")
    assert r.returncode == 1 and "/proc/mobilenet.onnx" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "missing").exists()
    r = cli("export", "--model", str(out), "--output", str(tmp_path / "missing" / "m.onnx"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = cli("export", "--model", str(out), "--format", "torchscript")  # dropped: see the README
    assert r.returncode == 2 and "executorch" in r.stderr
    # a truncated .onnx file
    path, data = onnx_export
    (tmp_path / "cut.onnx").write_bytes(path.read_bytes()[:5000])
    r = cli("predict", "--runtime", "onnxruntime", "--model", str(tmp_path / "cut.onnx"), str(path))
    assert r.returncode == 1 and "cut.onnx" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert data["bytes"] == path.stat().st_size


@pytest.mark.fault
def test_an_export_that_disagrees_with_pytorch_writes_nothing(small_run, tmp_path, monkeypatch):
    """The self-check compares the written file with eager PyTorch: a file that computes
    something else (here: the ONNX of another model of the same shape) is refused, and
    nothing is left at --output, not even a temporary file."""
    import mobilenet.deploy.exporter as exporter
    from mobilenet.errors import MobileNetError

    out, _ = small_run
    other = _untrained_copy(out, tmp_path / "other", 0.25)
    model, info = load_model(other)
    wrong = exporter.onnx_bytes(model, info)
    monkeypatch.setattr(exporter, "onnx_bytes", lambda *_: wrong)
    (tmp_path / "dst").mkdir()
    with pytest.raises(MobileNetError, match="disagrees with PyTorch on random inputs.*nothing was written"):
        export(out, "onnx", output=tmp_path / "dst" / "m.onnx", log=lambda _: None)
    assert list((tmp_path / "dst").iterdir()) == []


@pytest.mark.fault
def test_int8_with_nothing_to_calibrate_on(tmp_path):
    import shutil

    from conftest import make_image_folder

    images = make_image_folder(tmp_path / "images", corrupt=False)
    r = cli("train", "--data", str(images), "--epochs", "1", "--resolution", "32", "--width", "0.25",
            "--batch-size", "4", "--workers", "0", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    shutil.rmtree(images)
    r = cli("export", "--model", str(tmp_path / "run"), "--int8")
    assert r.returncode == 1 and "Traceback" not in r.stderr and str(images) in r.stderr
    assert not list((tmp_path / "run").glob("*.onnx")) and not list((tmp_path / "run").glob(".*.tmp"))
    # resuming a run whose data folder is gone: one line, exit 1 (not an argument error)
    r = cli("train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2")
    assert r.returncode == 1 and "is gone" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # a 3-class model evaluated on Fashion-MNIST through ONNX Runtime: one line, no traceback
    assert cli("export", "--model", str(tmp_path / "run"), "--output", str(tmp_path / "m.onnx")).returncode == 0
    r = cli("evaluate", "--runtime", "onnxruntime", "--model", str(tmp_path / "m.onnx"), "--data", "fashion-mnist")
    assert r.returncode == 1 and "Fashion-MNIST is grey" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.fault
def test_a_program_wider_than_its_class_list_is_refused(pte_export):
    from mobilenet.deploy.executorch import PteModel
    from mobilenet.run.info import ModelInfo

    info = ModelInfo([str(i) for i in range(9)],  # the program gives 10 scores
                     {"channels": 1, "resolution": 32, "mean": [0.0], "std": [1.0], "image_size": 32})
    program = PteModel(pte_export[0].read_bytes(), info)
    with pytest.raises(MobileNetError, match=r"gives \(10,\) scores per image for 9 classes"):
        program.logits(np.zeros((2, 1, 32, 32), np.float32))


@pytest.mark.parametrize("resolution", [32, 48, 224])
def test_an_onnx_export_at_any_resolution_passes_the_onnx_check(resolution):
    """Above 32 pixels the last feature map is larger than 1×1; the graph must still hold
    only the ops a stranger's .onnx is allowed (onnx_check), or predict would refuse it."""
    from mobilenet.deploy.benchmark import _bench_info
    from mobilenet.deploy.exporter import onnx_bytes
    from mobilenet.deploy.onnx_check import ALLOWED_OPS, check_onnx
    from mobilenet.net.model import MobileNetConfig, MobileNetV1

    model = MobileNetV1.from_config(MobileNetConfig(num_classes=3, width_mult=0.25, resolution=resolution)).eval()
    model = model.to(memory_format=torch.channels_last)  # as load_model gives it to export
    data = onnx_bytes(model, _bench_info(model, torch.zeros(1, 3, resolution, resolution)))
    assert {n.op_type for n in onnx.load_model_from_string(data).graph.node} <= ALLOWED_OPS
    check_onnx(data, f"m{resolution}.onnx")
