"""deploy/device_runner.py, the file copied alone to a device: it runs with nothing of this
package (and, but for ExecuTorch, no torch) importable, and reports each runtime's timings
in one JSON object."""

import json
import shutil
import subprocess
import sys

from pathlib import Path

import pytest

from conftest import _exported

RUNNER = Path(__file__).parents[1] / "src/mobilenet/deploy/device_runner.py"


def _run(tmp_path, *argv, blocked=("mobilenet",)):
    """The runner copied alone to tmp_path and run there, with `blocked` modules unimportable."""
    copy = tmp_path / "device_runner.py"
    shutil.copy(RUNNER, copy)
    code = (f"import sys\nfor name in {list(blocked)!r}:\n    sys.modules[name] = None\n"
            f"sys.argv = [{str(copy)!r}, *{[str(a) for a in argv]!r}]\n"
            f"exec(compile(open({str(copy)!r}).read(), 'device_runner.py', 'exec'), {{'__name__': '__main__'}})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    return r.returncode, json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else r.stderr


@pytest.mark.parametrize("runtime, fmt", [("onnxruntime", "onnx"), ("openvino", "onnx"), ("litert", "litert"),
                                          ("litert", "mediapipe"), ("executorch", "executorch")])
def test_the_runner_times_each_runtimes_file_with_nothing_of_the_package(small_run, onnx_file, tmp_path_factory,
                                                                         tmp_path, runtime, fmt):
    path = onnx_file if fmt == "onnx" else _exported(small_run, tmp_path_factory, {
        "litert": "m.int8.tflite", "mediapipe": "m.mediapipe.tflite", "executorch": "m.pte"}[fmt], fmt, **({"int8": True} if fmt == "litert" else {}))[0]
    blocked = ("mobilenet",) if runtime == "executorch" else ("mobilenet", "torch")
    code, found = _run(tmp_path, path, runtime, "--batch-size", "1,3", "--threads", "1", "--runs", "5", "--warmup", "1",
                       blocked=blocked)
    assert code == 0, found
    assert [(r["batch_size"], r["threads"]) for r in found["rows"]] == [(1, 1), (3, 1)]
    assert all(0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["runs"] == 5 for r in found["rows"])
    assert found["load_seconds"] > 0 and found["first_run_ms"] > 0 and found["peak_memory_mb"] > 0
    assert found["device"]["runtime"] == runtime and found["device"]["runtime_version"]
    assert found["device"]["cores"] >= 1 and found["device"]["arch"]


def test_a_missing_runtime_names_its_package(onnx_file, tmp_path):
    code, found = _run(tmp_path, onnx_file, "onnxruntime", blocked=("mobilenet", "onnxruntime"))
    assert code == 1 and found["error"] == "missing" and found["package"] == "onnxruntime"


def test_the_runner_ends_when_its_session_does(onnx_file, tmp_path):
    """--watch-stdin: stdin closes when the SSH session that started it dies, and the runner
    ends then, in the middle of runs that would otherwise go on for hours."""
    from conftest import HANG

    proc = subprocess.Popen([sys.executable, str(RUNNER), str(onnx_file), "onnxruntime", "--runs", "100000000",
                             "--watch-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path.parent)
    proc.stdin.close()
    assert proc.wait(timeout=HANG) == 3 and proc.stdout.read() == b""
