"""Label files (--data labels.csv / labels.jsonl): read as a spreadsheet writes them, kept
inside their folder, and trained, evaluated and exported like a folder."""

import json
import os
import re

import pytest
from conftest import cli, history, make_image_folder

from mobilenet.data.labels import read_label_file
from mobilenet.data.splits import data_splits
from mobilenet.errors import MobileNetError


@pytest.fixture
def labelled(tmp_path):
    """The image folder's files, named by a CSV one folder up from the images."""
    folder = make_image_folder(tmp_path / "images")
    rows = [(os.path.relpath(p, tmp_path), p.parent.name) for p in sorted(folder.glob("*/*"))]
    return tmp_path, rows


def write_csv(path, lines, bom=True):
    path.write_bytes(("\ufeff" if bom else "").encode() + "\r\n".join(lines).encode() + b"\r\n")
    return path


def test_a_spreadsheets_csv_reads_with_its_bom_quoting_and_columns(labelled):
    root, rows = labelled
    # as a spreadsheet saves it: a BOM (on the first column's name), CRLF, columns in its own
    # order, quoted commas and quotes, a blank row
    lines = ["Path,notes,Label,id"] + [f'{path},"a note, with ""quotes""","{label}, big",{i}'
                                       for i, (path, label) in enumerate(rows)]
    lines.insert(3, ",,,")
    classes, samples = read_label_file(write_csv(root / "labels.csv", lines))
    assert classes == ["cat, big", "dog, big", "fox, big"]
    assert samples == [(str(root / path), classes.index(f"{label}, big")) for path, label in rows]


def test_json_lines_take_label_or_a_one_item_labels_list(labelled):
    root, rows = labelled
    lines = [json.dumps({"path": p, "label": c} if i % 2 else {"path": p, "labels": [c]}) for i, (p, c) in enumerate(rows)]
    (root / "labels.jsonl").write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n")
    classes, samples = read_label_file(root / "labels.jsonl")
    assert classes == ["cat", "dog", "fox"]
    assert samples == [(str(root / p), classes.index(c)) for p, c in rows]


@pytest.mark.fault
@pytest.mark.parametrize("lines, said", [
    (["file,label", "a.png,cat"], "line 1: the header must name the columns path and label"),
    (["path,label", "images/cat/0.png,cat", "images/cat/1.png,cat,extra"], "line 3: 3 columns where the header has 2"),
    (["path,label", "images/cat/0.png,cat", 'images/cat/1.png,"cat'], "line 3: not readable as CSV"),
    (["path,label", "images/cat/0.png,"], "line 2: no label for images/cat/0.png"),
    (["path,label", "images/cat/0.png,cat", "images/cat/nope.png,cat"], "line 3: images/cat/nope.png is not a file"),
    (["path,label", "images/cat/0.png,cat", "images/cat,cat"], "line 3: images/cat is not a file"),
    (["path,label", "images/cat/0.png,cat", "images/./cat/0.png,dog"], "line 3: images/./cat/0.png is listed again "
                                                                       "(first at line 2)"),
    (["path,label"], ": no rows"),
])
def test_a_csv_row_that_cannot_be_read_names_its_line(labelled, lines, said):
    root, _ = labelled
    with pytest.raises(MobileNetError, match="labels.csv" + re.escape(said if said[0] == ":" else " " + said)):
        read_label_file(write_csv(root / "labels.csv", lines, bom=False))


@pytest.mark.fault
@pytest.mark.parametrize("line, said", [
    ("{not json", "line 2: not JSON"),
    ('["images/cat/0.png", "cat"]', 'line 2: give an object with "path"'),
    ('{"path": "images/cat/0.png", "labels": "cat"}', 'line 2: "labels" must be a list of strings'),
])
def test_a_json_line_that_cannot_be_read_names_its_line(labelled, line, said):
    root, _ = labelled
    (root / "labels.jsonl").write_text('{"path": "images/cat/0.png", "label": "cat"}\n' + line + "\n")
    with pytest.raises(MobileNetError, match="labels.jsonl " + re.escape(said)):
        read_label_file(root / "labels.jsonl")


@pytest.mark.fault
def test_paths_and_links_that_leave_the_files_folder_are_refused(labelled, tmp_path):
    root, _ = labelled
    inner = root / "inner"
    inner.mkdir()
    outside = root / "images" / "cat" / "0.png"  # a real image, one folder above the label file
    (inner / "in.png").write_bytes(outside.read_bytes())
    os.symlink(outside, inner / "link.png")
    for name in ("../images/cat/0.png", str(outside), "link.png"):
        write_csv(inner / "labels.csv", ["path,label", "in.png,cat", f"{name},dog"])
        with pytest.raises(MobileNetError, match=f"line 3: {re.escape(name)} leaves the folder"):
            read_label_file(inner / "labels.csv")
    (inner / "labels.csv").write_bytes(b"path,label\nin.png,cat\nlink.png,caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(MobileNetError, match="line 3: not UTF-8"):
        read_label_file(inner / "labels.csv")


def test_a_label_files_split_is_seeded_stratified_and_the_folders_own(labelled):
    root, rows = labelled
    write_csv(root / "labels.csv", ["path,label"] + [f"{p},{c}" for p, c in rows])
    by_file, by_folder = data_splits(root / "labels.csv", 0.34, 5), data_splits(root / "images", 0.34, 5)
    assert by_file["classes"] == by_folder["classes"]
    # the same images in the same class order: the same seeded, stratified hold-out as the folder's
    assert by_file["test"] == by_folder["test"] and by_file["train"] == by_folder["train"]
    assert data_splits(root / "labels.csv", 0.34, 6)["test"] != by_file["test"]


@pytest.mark.fault
def test_a_label_file_trains_evaluates_exports_and_resumes_from_the_cli(labelled, tmp_path):
    root, rows = labelled
    labels = write_csv(root / "labels.csv", ["path,label"] + [f"{p},{c}" for p, c in rows])
    out = tmp_path / "run"
    args = ("train", "--data", str(labels), "--resolution", "32", "--width", "0.25", "--batch-size", "4",
            "--workers", "0", "--out", str(out))
    r = cli(*args, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "broken.jpg" in r.stderr and history(out)[0]["bad_files"] == "1"  # an image that does not decode is named
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == ["cat", "dog", "fox"] and config["data"]["name"] == str(labels)
    resumed = cli(*args, "--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert len(history(out)) == 2
    ev = cli("evaluate", "--model", str(out), "--json")
    assert ev.returncode == 0, ev.stderr
    test = data_splits(labels, 0.2, 0)["test"]  # the run's defaults: the same hold-out as it tested on
    assert json.loads(ev.stdout)["images"] + len(json.loads(ev.stdout)["bad_files"]) == len(test)
    assert cli("export", "--model", str(out), "--format", "onnx").returncode == 0
    onnx = cli("evaluate", "--model", str(out / "model.onnx"), "--json")
    assert onnx.returncode == 0 and json.loads(onnx.stdout)["top1"] == json.loads(ev.stdout)["top1"]
    moved = root / "elsewhere.csv"
    bad = cli("train", "--data", str(moved), "--out", str(tmp_path / "r2"))
    assert bad.returncode == 2 and "no such folder or label file" in bad.stderr and "Traceback" not in bad.stderr
