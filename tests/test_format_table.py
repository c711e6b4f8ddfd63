"""The one table of formats and runtimes: the lists the commands offer come from it, and an
exported file opens in the runtime its suffix names."""

import numpy as np
import pytest
from PIL import Image

from mobilenet import cli as cli_module, formats
from mobilenet.errors import BadArgument

from conftest import cli


def _choices(command: str, option: str):
    sub = next(a for a in cli_module.build_parser()._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


def test_the_commands_offer_what_the_table_holds():
    assert formats.EXPORT_FORMATS == tuple(f.name for f in formats.FORMATS if f.exported) == (
        "onnx", "executorch", "litert", "mediapipe")
    assert _choices("export", "--format") == formats.EXPORT_FORMATS
    assert _choices("predict", "--runtime") == _choices("evaluate", "--runtime") == formats.PREDICT_RUNTIMES
    assert formats.RUNTIMES == ("torch", "torch-fast", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8",
                                "executorch", "executorch-int8", "litert", "litert-int8", "timm")
    assert [formats.size_key(r) for r in ("torch-fast", "onnxruntime-int8", "openvino", "executorch-int8", "litert")] \
        == ["safetensors", "onnx-int8", "onnx", "pte-int8", "tflite"]


def test_each_row_names_a_module_and_an_extra_that_exist():
    import tomllib
    from pathlib import Path

    root = Path(formats.__file__).parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for f in formats.FORMATS:
        assert (root / "src" / "mobilenet" / (f.module.replace(".", "/") + ".py")).is_file(), f
        assert f.extra is None or f.extra in extras, f
    packages = {p.split("[")[0].split(">")[0].split("=")[0] for deps in extras.values() for p in deps}
    assert {r.package for r in formats.RUNTIME_TABLE} - {None} <= packages


def test_a_file_opens_in_the_runtime_its_suffix_names(tmp_path):
    assert formats.runtime_for(tmp_path) == "torch"
    assert [formats.runtime_for(tmp_path / f"m{s}") for s in (".onnx", ".pte", ".tflite")] == [
        "onnxruntime", "executorch", "litert"]
    assert formats.runtime_for(tmp_path / "m.int8.onnx", "openvino") == "openvino"
    # a file for MediaPipe is a .tflite with a tag: LiteRT runs it, and the report names it apart
    for name in ("model.mediapipe.tflite", "model.mediapipe.int8.tflite"):
        assert formats.runtime_for(tmp_path / name) == "litert" and formats.title_of(name) == "MediaPipe Tasks"
    assert formats.title_of("model.int8.tflite") == "LiteRT" and formats.title_of("model.mediapipe") is None
    assert formats.runtime_for(tmp_path / "nowhere") == "torch"  # load_model then says what is missing
    with pytest.raises(BadArgument, match="runs with --runtime litert, not onnxruntime"):
        formats.runtime_for(tmp_path / "m.tflite", "onnxruntime")
    with pytest.raises(BadArgument, match="runs with --runtime torch, not litert"):
        formats.runtime_for(tmp_path, "litert")


def test_evaluate_needs_no_runtime_for_an_exported_file_and_a_wrong_one_is_one_line(onnx_file, tmp_path):
    r = cli("evaluate", "--model", str(onnx_file), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "top-1" in r.stdout and (tmp_path / "metrics.json").is_file()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    r = cli("predict", "--model", str(onnx_file), "--runtime", "executorch", str(tmp_path / "a.png"))
    assert r.returncode == 2 and "--runtime onnxruntime or openvino, not executorch" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
