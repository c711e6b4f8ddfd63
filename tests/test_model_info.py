"""ModelInfo: one type for config.json, an ONNX file's metadata and a .pte's sidecar. Model
folders written before it still read, and are written back as they were, with their format's
number; a folder of a newer format is refused."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from mobilenet.errors import MobileNetError
from mobilenet.run.folder import FORMAT_VERSION, load_checkpoint, read_config, write_config
from mobilenet.run.info import ModelInfo

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["fashion_config.json", "folder_config.json", "old_folder_config.json"])
def test_an_older_model_folder_reads_and_is_written_back_unchanged(tmp_path, name):
    """config.json as `mobilenet train` wrote it before ModelInfo (old_folder_config.json:
    a run from before the test hold-out was called test_split, and without an augment record)."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(FIXTURES / name, folder / "config.json")
    info = read_config(folder)
    assert info.classes == json.loads((FIXTURES / name).read_text())["classes"]
    again = tmp_path / "again"
    again.mkdir()
    write_config(again, info)
    written = (again / "config.json").read_text()
    assert written.startswith('{\n  "format_version": %d,' % FORMAT_VERSION)  # the folder's format, then as it was
    assert json.loads(written) == {"format_version": FORMAT_VERSION, **json.loads((FIXTURES / name).read_text())}


def test_a_folder_of_a_newer_format_is_refused_in_one_line(tmp_path):
    newer = FORMAT_VERSION + 1
    found = json.loads((FIXTURES / "fashion_config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"format_version": newer, **found}))
    refusal = f"format {newer}, and this mobilenet reads up to {FORMAT_VERSION}"
    with pytest.raises(MobileNetError, match=refusal):
        read_config(tmp_path)
    state = {"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 1, "step": 0, "history": [], "best_acc": 0.0,
             "rng": torch.get_rng_state(), "train_config": {"data": "fashion-mnist", "optimizer": "sgd", "augment": "none"},
             "best_val": -1.0, "since_best": 0, "kept_epoch": 0, "partial": None, "format_version": newer}
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(MobileNetError, match=refusal):
        load_checkpoint(tmp_path / "checkpoint.pt")
    torch.save({**state, "format_version": FORMAT_VERSION}, tmp_path / "checkpoint.pt")
    assert load_checkpoint(tmp_path / "checkpoint.pt")["format_version"] == FORMAT_VERSION


def test_provenance_defaults_are_those_of_the_runs_that_wrote_them(tmp_path):
    old = ModelInfo.from_json(json.loads((FIXTURES / "old_folder_config.json").read_text()))
    assert (old.data_name, old.test_split, old.seed, old.augment) == ("/data/photos", 0.25, 5, None)
    fashion = ModelInfo.from_json(json.loads((FIXTURES / "fashion_config.json").read_text()))
    assert (fashion.data_name, fashion.test_split, fashion.seed) == ("fashion-mnist", 0.2, 0)
    bare = ModelInfo.from_json({**fashion.to_json(), "data": None})
    assert bare.data_name == "fashion-mnist" and bare.data == {}


def test_the_three_formats_say_the_same(small_run, onnx_file):
    from mobilenet.deploy.runtime import OnnxModel

    info = read_config(small_run[0])
    from_onnx = OnnxModel(onnx_file).info
    from_sidecar = ModelInfo.from_json(json.loads(json.dumps(info.sidecar(int8=False, sha256="0" * 64))), fixed=(None, None))
    for other in (from_onnx, from_sidecar):
        assert (other.classes, other.input, other.model, other.data) == (info.classes, info.input, info.model,
                                                                          info.data)


def test_a_folder_whose_classes_do_not_match_its_model_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    config = json.loads((FIXTURES / "fashion_config.json").read_text())
    config["classes"] = config["classes"][:3]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MobileNetError, match="names 3 classes, the model has 10"):
        read_config(folder)
