"""--runtime openvino: the .onnx files `export` writes, float32 and int8, run by OpenVINO,
agree with ONNX Runtime; they are checked as ONNX Runtime's are, and neither torch nor
OpenVINO's telemetry is imported; bench has its rows."""

import importlib.util
import json
import os
import subprocess
import sys

import matplotlib
import numpy as np
import onnx
import pytest
from PIL import Image

from mobilenet.deploy import runtime
from mobilenet.deploy.runtime import OpenVinoModel
from mobilenet.errors import MobileNetError

import forked
from conftest import cli

# find_spec, not importorskip: a plain `import openvino` would send OpenVINO's usage event
pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino extra")


@pytest.fixture(scope="module")
def int8_file(onnx_int8_export):
    return onnx_int8_export[0]


def _bars(folder, count=10):
    """Test-like images, one per class: the bright bar of make_fashion_like."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for label in range(count):
        a = rng.integers(0, 60, size=(28, 28)).astype(np.uint8)
        a[2 + 2 * label: 5 + 2 * label, 4:24] = 255
        Image.fromarray(a, "L").save(folder / f"{label}.png")
    return folder


def _top1(runtime_name, model, folder):
    r = cli("predict", "--runtime", runtime_name, "--model", str(model), "--top-k", "1", "--json", str(folder))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return [(p["image"], p["predictions"][0]["class"]) for p in json.loads(r.stdout)["predictions"]]


def _evaluate(runtime_name, model, out):
    r = cli("evaluate", "--runtime", runtime_name, "--model", str(model), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("name", ["onnx_file", "int8_file"])
def test_openvino_predicts_and_evaluates_as_onnx_runtime_does(name, request, tmp_path):
    model = request.getfixturevalue(name)
    folder = _bars(tmp_path / "images")
    ours = _top1("openvino", model, folder)
    assert len(ours) == 10 and ours == _top1("onnxruntime", model, folder)
    mine, theirs = _evaluate("openvino", model, tmp_path / "ov"), _evaluate("onnxruntime", model, tmp_path / "ort")
    assert mine["images"] == theirs["images"] == 200 and mine["top1"] >= 0.9
    if name == "onnx_file":
        assert mine["confusion_matrix"] == theirs["confusion_matrix"]
    else:  # int8 kernels round differently: one image of 200 may go the other way
        assert abs(mine["top1"] - theirs["top1"]) <= 1 / 200 + 1e-9


# Run in a child: OpenVINO's thread pools never start in the pytest worker, which, after
# compiling models in-process beside torch's, ExecuTorch's and ONNX Runtime's pools, died
# during its next test in two full-suite runs of two (not seen alone).
LOGITS = r"""
import sys
import numpy as np
from mobilenet.deploy.runtime import OnnxModel, OpenVinoModel
fp32, int8 = sys.argv[1:3]
x = np.random.default_rng(0).standard_normal((70, 1, 32, 32), dtype=np.float32)  # any batch: it is dynamic
ov, ort = OpenVinoModel(fp32, threads=1), OnnxModel(fp32)
assert ov.info == ort.info and ov.engine == "OpenVINO"
np.testing.assert_allclose(ov.logits(x), ort.logits(x), atol=1e-4)  # float32 kept, not bf16
np.testing.assert_allclose(ov.logits(x[:1]), ort.logits(x[:1]), atol=1e-4)
q, q_ort = OpenVinoModel(int8), OnnxModel(int8)
assert (q.logits(x).argmax(1) == q_ort.logits(x).argmax(1)).mean() >= 0.95
"""


def test_openvino_logits_match_onnx_runtime(onnx_file, int8_file):
    r = forked.run([str(onnx_file), str(int8_file)], code=LOGITS)
    assert r.returncode == 0, r.stderr


def test_openvino_path_imports_neither_torch_nor_telemetry(onnx_file, tmp_path):
    """OpenVINO's package imports its conversion API, which sends a usage event and writes
    ~/intel unless the user opted out; the runtime path must do neither, nor load torch."""
    (tmp_path / "home").mkdir()
    image = _bars(tmp_path / "images", 1) / "0.png"
    code = (
        "import sys\n"
        "from mobilenet.cli import main\n"
        f"rc = main(['predict', '--runtime', 'openvino', '--model', {str(onnx_file)!r}, {str(image)!r}, '--json'])\n"
        f"rc2 = main(['evaluate', '--runtime', 'openvino', '--model', {str(onnx_file)!r}, '--out', "
        f"{str(tmp_path / 'out')!r}])\n"
        "assert rc == 0 and rc2 == 0, (rc, rc2)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm', "
        "'openvino_telemetry') or m.startswith('openvino.tools'))\n"
        "assert not bad, bad\n"
        "assert 'openvino' in sys.modules\n"
    )
    quiet = ("CI", "TF_BUILD", "JENKINS_URL")  # OpenVINO keeps quiet in CI: the test must not depend on it
    env = {**{k: v for k, v in os.environ.items() if k not in quiet}, "HOME": str(tmp_path / "home"),
           "MPLCONFIGDIR": matplotlib.get_cachedir()}  # matplotlib's font cache, not a new one in HOME
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "top-1" in r.stdout
    assert not (tmp_path / "home" / "intel").exists()


@pytest.mark.fault
def test_openvino_sees_only_files_the_onnx_check_passed(onnx_file, tmp_path, monkeypatch):
    proto = onnx.load(str(onnx_file))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    next(a for a in conv.attribute if a.name == "pads").ints[:] = [100_000] * 4  # a 10^10-pixel feature map
    onnx.save(proto, str(tmp_path / "pads.onnx"))

    def never(*args, **kw):
        raise AssertionError("OpenVINO was given a file the check should refuse")

    monkeypatch.setattr(runtime, "open_openvino", never)
    with pytest.raises(MobileNetError, match="pads more than 2"):
        OpenVinoModel(tmp_path / "pads.onnx")
    (tmp_path / "cut.onnx").write_bytes(onnx_file.read_bytes()[:5000])
    r = cli("predict", "--runtime", "openvino", "--model", str(tmp_path / "cut.onnx"), str(tmp_path / "x.png"))
    assert r.returncode == 1 and "cut.onnx is not an ONNX file" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_bench_has_openvino_rows():
    r = cli("bench", "--width", "0.5", "--resolution", "32", "--batch-size", "1", "--runtime",
            "onnxruntime-int8,openvino,openvino-int8", "--seconds", "0.05", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    rows = {row["runtime"]: row for row in result["rows"]}
    assert set(rows) == {"onnxruntime-int8", "openvino", "openvino-int8"}
    assert all(row["images_per_s"] > 0 and row["iterations"] >= 10 for row in rows.values())
    assert rows["openvino-int8"]["file_mb"] == rows["onnxruntime-int8"]["file_mb"]  # the same file
    assert rows["openvino"]["file_mb"] / rows["openvino-int8"]["file_mb"] >= 3
    assert result["machine"]["versions"]["openvino"]


def test_bench_leaves_openvino_out_when_it_is_not_installed(monkeypatch):
    from mobilenet.deploy import benchmark
    from mobilenet.net.config import MobileNetConfig

    real = benchmark._version
    monkeypatch.setattr(benchmark, "_version", lambda package: None if package == "openvino" else real(package))
    result = benchmark.bench(MobileNetConfig(num_classes=10, width_mult=0.25, resolution=32), batch_sizes=[1],
                             runtimes=["torch", "openvino", "openvino-int8"], min_seconds=0.01, min_iters=1)
    assert [row["runtime"] for row in result["rows"]] == ["torch"]
