"""A stranger's exported file: what its runtime says reaches the terminal escaped, and never
stdout."""

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from conftest import cli

pytestmark = pytest.mark.fault

HOSTILE_NAME = "\x1b]0;owned\x07\x1b[2J\n"  # sets the window title, clears the screen, adds a line


def test_onnx_runtimes_own_log_never_reaches_the_terminal_raw(onnx_file, tmp_path):
    model = onnx.load(onnx_file)
    # an unused initializer: ONNX Runtime warns about it by name while it loads the file
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(1, np.float32), HOSTILE_NAME))
    hostile = tmp_path / "hostile.onnx"
    onnx.save(model, hostile)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    r = cli("predict", "--runtime", "onnxruntime", "--model", str(hostile), "--json", str(image))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stderr + r.stdout and "\x07" not in r.stderr + r.stdout
    assert len(json.loads(r.stdout)["predictions"]) == 1  # stdout holds the JSON alone
