"""Nothing phones home. An export and a prediction with every installed runtime, in a process
with a HOME of its own and without the CI variables under which ONNX Runtime keeps quiet by
itself, write nothing under HOME and open no network socket (seen with strace, where it is
installed; the probe children of ExecuTorch and LiteRT are followed too)."""

import importlib.util
import os
import shutil
import subprocess
import sys


from conftest import _exported

# ONNX Runtime stays quiet when one of these is set; the user's machine has none of them.
QUIETING = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TF_BUILD", "ORT_DISABLE_TELEMETRY")

SCRIPT = """
import sys
import numpy as np
from mobilenet import Predictor, export

model_dir, onnx, *files = sys.argv[1:]
export(model_dir, "onnx", output=onnx, log=lambda _: None)
for spec in [onnx + ":onnxruntime", *files]:
    path, runtime = spec.rsplit(":", 1)
    records, failed = Predictor(path, runtime).predict([np.zeros((28, 28), np.uint8)])
    assert len(records) == 1 and not failed, (spec, failed)
    print("predicted with", runtime)
"""


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_no_runtime_writes_under_home_or_opens_a_network_socket(small_run, onnx_file, tmp_path, tmp_path_factory):
    files = [f"{onnx_file}:openvino"] if _installed("openvino") else []
    if _installed("executorch"):
        files.append(f"{_exported(small_run, tmp_path_factory, 'm.pte', 'executorch')[0]}:executorch")
    if _installed("ai_edge_litert"):
        files.append(f"{_exported(small_run, tmp_path_factory, 'm.tflite', 'litert')[0]}:litert")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in QUIETING and not k.startswith("XDG_")}
    command = [sys.executable, "-c", SCRIPT, str(small_run[0]), str(tmp_path / "m.onnx"), *files]
    trace = tmp_path / "strace.log"
    if shutil.which("strace"):
        # --seccomp-bpf: only these calls stop the process, so tracing costs little
        command = ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=socket,connect", "-o", str(trace), *command]
    done = subprocess.run(command, env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("predicted with") == 1 + len(files)
    assert [str(p.relative_to(home)) for p in home.rglob("*")] == []
    if trace.exists():
        opened = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
        assert opened == [], opened[:5]
