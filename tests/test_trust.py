"""A stranger's files: a FIFO, a device or an oversized file where the toolkit expects one of
its own gets one line and no hang; an .onnx file outside MobileNet V1's ops or sizes is
refused before ONNX Runtime runs it."""

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from mobilenet.errors import MobileNetError

from conftest import HANG, TINY, cli, wait_for

pytestmark = pytest.mark.fault
WAIT = HANG  # a refusal takes seconds, a blocked read forever: the bound only ends a hang


def _one_line(r, words):
    assert r.returncode != 0 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _folder(small_run, tmp_path):
    return shutil.copytree(small_run[0], tmp_path / "run", symlinks=True)


def _image(tmp_path):
    Image.new("L", (28, 28), 128).save(tmp_path / "x.png")
    return str(tmp_path / "x.png")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_fifo_in_a_model_folder_is_one_line(small_run, tmp_path, name):
    folder = _folder(small_run, tmp_path)
    (folder / name).unlink()
    os.mkfifo(folder / name)
    r = cli("predict", "--model", str(folder), _image(tmp_path), timeout=WAIT)
    _one_line(r, f"{name}: not a regular file")


def test_a_config_linked_to_dev_zero_is_not_read(small_run, tmp_path):
    folder = _folder(small_run, tmp_path)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    r = cli("evaluate", "--model", str(folder), timeout=WAIT)
    _one_line(r, "config.json: not a regular file")


def test_a_config_beyond_the_json_limit_is_refused_unread(small_run, tmp_path, monkeypatch):
    from mobilenet import files
    from mobilenet.run.folder import read_config

    folder = _folder(small_run, tmp_path)
    monkeypatch.setattr(files, "open_regular", _counting(files.open_regular, read := []))
    with open(folder / "config.json", "r+b") as f:
        f.truncate(4 * files.JSON_LIMIT)  # sparse: no disk used
    with pytest.raises(MobileNetError, match="larger than the 8,388,608 bytes"):
        read_config(folder)
    assert read == [files.JSON_LIMIT + 1]  # the limit and one byte more, never the whole file


def _counting(open_regular, sizes):
    def opened(path):
        f = open_regular(path)
        read = f.read

        def counted(n=-1):
            data = read(n)
            sizes.append(len(data))
            return data
        f.read = counted
        return f
    return opened


def test_a_fifo_checkpoint_with_resume_is_one_line(small_run, tmp_path, fake_fashion):
    folder = _folder(small_run, tmp_path)
    (folder / "checkpoint.pt").unlink()
    os.mkfifo(folder / "checkpoint.pt")
    r = cli("train", *TINY, "--epochs", "4", "--out", str(folder), "--resume",
            env={"MOBILENET_FASHION_MNIST": str(fake_fashion)}, timeout=WAIT)
    _one_line(r, "checkpoint.pt: not a regular file")


def test_init_names_a_fifo_and_a_fifo_config_beside_the_weights(small_run, tmp_path):
    from mobilenet.training.weights import load_init, read_weight_file

    os.mkfifo(tmp_path / "w.safetensors")
    with pytest.raises(MobileNetError, match="--init .*w.safetensors: not a regular file"):
        read_weight_file(tmp_path / "w.safetensors")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(small_run[0] / "model.safetensors", other)
    os.mkfifo(other / "config.json")
    state, activation = load_init(str(other / "model.safetensors"))  # returns: the FIFO is not read
    assert activation is None and "classifier.weight" in state


def test_a_fifo_sidecar_is_one_line(tmp_path):
    (tmp_path / "m.pte").write_bytes(b"not a program")
    os.mkfifo(tmp_path / "m.pte.json")
    r = cli("predict", "--model", str(tmp_path / "m.pte"), "--runtime", "executorch", _image(tmp_path),
            timeout=WAIT)
    _one_line(r, "m.pte.json: not a regular file")


# --- ONNX files outside the network --------------------------------------------------------

def _appended(onnx_file, path, node, *initializers):
    """onnx_file with `node` fed by its logits (its first input named "logits") and its
    first output made the graph's output, saved at `path`."""
    proto = onnx.load(str(onnx_file))
    graph = proto.graph
    node.input[:] = [graph.output[0].name if i == "logits" else i for i in node.input]
    graph.node.append(node)
    graph.initializer.extend(initializers)
    graph.output[0].name = node.output[0]
    onnx.save(proto, str(path))
    return path


def test_our_own_fp32_file_passes_the_check(onnx_file):
    from mobilenet.deploy.onnx_check import check_onnx

    assert check_onnx(onnx_file.read_bytes(), onnx_file) is False


def test_a_loop_is_refused_before_a_session(onnx_file, tmp_path, monkeypatch):
    from mobilenet.deploy import runtime

    def values(*names):
        return [helper.make_tensor_value_info(n, t, None) for n, t in names]
    body = helper.make_graph([helper.make_node("Identity", ["cond"], ["cond_out"]),
                              helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             values(("i", TensorProto.INT64), ("cond", TensorProto.BOOL), ("c", TensorProto.FLOAT)),
                             values(("cond_out", TensorProto.BOOL), ("c_out", TensorProto.FLOAT)))
    loop = helper.make_node("Loop", ["trip", "", "logits"], ["looped"], body=body)  # 2^62 turns
    trip = helper.make_tensor("trip", TensorProto.INT64, [], [1 << 62])
    path = _appended(onnx_file, tmp_path / "loop.onnx", loop, trip)
    monkeypatch.setattr(runtime, "open_session", _no_session)
    with pytest.raises(MobileNetError, match="uses the op Loop, which MobileNet V1 does not"):
        runtime.OnnxModel(path)


def _no_session(*args, **kw):
    raise AssertionError("a session was made for a file the check should refuse")


def test_constant_of_shape_is_refused_through_the_cli(onnx_file, tmp_path):
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [1 << 30])  # 4 GB of floats at run time
    path = _appended(onnx_file, tmp_path / "big.onnx", helper.make_node("ConstantOfShape", ["shape"], ["big"]), shape)
    r = cli("predict", "--model", str(path), "--runtime", "onnxruntime", _image(tmp_path), timeout=WAIT)
    _one_line(r, "uses the op ConstantOfShape")


def test_huge_pads_are_refused(onnx_file, tmp_path, monkeypatch):
    from mobilenet.deploy import runtime

    proto = onnx.load(str(onnx_file))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    pads = next(a for a in conv.attribute if a.name == "pads")
    pads.ints[:] = [100_000] * 4  # a 10^10-pixel feature map
    onnx.save(proto, str(tmp_path / "pads.onnx"))
    monkeypatch.setattr(runtime, "open_session", _no_session)
    with pytest.raises(MobileNetError, match="pads more than 2"):
        runtime.OnnxModel(tmp_path / "pads.onnx")


def test_external_data_beyond_the_network_is_refused_unread(onnx_file, tmp_path, monkeypatch):
    from mobilenet.deploy import runtime

    proto = onnx.load(str(onnx_file))
    big = TensorProto(name="unused", data_type=TensorProto.FLOAT, dims=[1 << 29])  # 2 GiB declared
    big.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(4 << 29))):
        big.external_data.add(key=key, value=value)
    proto.graph.initializer.append(big)
    onnx.save(proto, str(tmp_path / "ext.onnx"))
    with open(tmp_path / "w.bin", "wb") as f:
        f.truncate(4 << 29)  # sparse
    monkeypatch.setattr(runtime, "open_session", _no_session)
    with pytest.raises(MobileNetError, match="declares 2,1.* bytes of tensors, more than the"):
        runtime.OnnxModel(tmp_path / "ext.onnx")


def test_small_external_data_is_still_accepted(onnx_file, tmp_path):
    from mobilenet.deploy.runtime import OnnxModel

    proto = onnx.load(str(onnx_file))
    onnx.save(proto, str(tmp_path / "split.onnx"), save_as_external_data=True, location="split.bin")
    assert (tmp_path / "split.bin").stat().st_size > 100_000  # the weights left the file
    ours, split = OnnxModel(onnx_file), OnnxModel(tmp_path / "split.onnx")
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(ours.logits(x), split.logits(x))


def test_onnx_runtime_never_falls_back_onto_stdout(onnx_file, monkeypatch, capsys):
    """ONNX Runtime's Python layer prints "EP Error … Falling back" with print() when a session
    or a run fails and fallback is on: it would land in `--json` output."""
    import onnxruntime as ort

    from mobilenet.deploy.runtime import open_session

    session = open_session(onnx_file.read_bytes())
    assert session._enable_fallback is False  # the only switch ONNX Runtime offers for it

    def failing(*args, **kw):
        raise RuntimeError("planted")
    monkeypatch.setattr(ort.InferenceSession, "_create_inference_session", failing)
    with pytest.raises(RuntimeError, match="planted"):
        open_session(onnx_file.read_bytes())
    assert capsys.readouterr().out == ""


# --- ExecuTorch programs and their sidecars ------------------------------------------------

@pytest.fixture
def tiny_pte(pte_export):
    """small_run's float32 program and its sidecar (conftest.pte_export); the same bytes on
    every run with the same torch and executorch (training and lowering are seeded and
    deterministic), so a byte flipped in it does the same thing every time."""
    return pte_export[0]


def _program(tiny_pte, tmp_path, flip=None, sidecar=lambda meta: None, rehash=True):
    """A copy of tiny_pte with the byte at `flip` inverted and its sidecar changed; with
    rehash, the sidecar's SHA-256 follows the new bytes, as a forger's would."""
    import hashlib
    import json

    data = bytearray(tiny_pte.read_bytes())
    if flip is not None:
        data[flip(bytes(data))] ^= 0xFF
    meta = json.loads(tiny_pte.with_suffix(".pte.json").read_text())
    if rehash:
        meta["sha256"] = hashlib.sha256(data).hexdigest()
    sidecar(meta)
    path = tmp_path / "m.pte"
    path.write_bytes(bytes(data))
    path.with_suffix(".pte.json").write_text(json.dumps(meta))
    return path


def _in_xnnpack_graph(data: bytes) -> int:
    # 384 bytes into the XNNPACK blob ("XH00" header), inside its graph: inverted, it makes the
    # runtime abort every time (SIGABRT, "what(): UnicodeDecodeError", executorch 1.5.1)
    return data.find(b"XH00") + 384


def test_a_program_that_crashes_the_runtime_is_one_line(tiny_pte, tmp_path):
    path = _program(tiny_pte, tmp_path, flip=_in_xnnpack_graph)
    r = cli("predict", "--model", str(path), "--runtime", "executorch", _image(tmp_path), timeout=WAIT)
    _one_line(r, "m.pte crashed ExecuTorch's runtime while loading (SIGABRT")


@pytest.mark.parametrize("child, says", [
    ("faulthandler:_sigsegv", "x.tflite crashed LiteRT's interpreter while loading (SIGSEGV"),
    ("builtins:input", "x.tflite is not a loadable LiteRT model (EOFError"),
    ("sys:exit", "x.tflite is not a loadable LiteRT model (its probe gave no answer)"),
])
def test_the_probe_child_failing_or_crashing_is_one_line(child, says):
    """.pte and .tflite files are probed in a child (native.probe); whatever the child dies of
    is one MobileNetError here."""
    from mobilenet.deploy.native import probe

    with pytest.raises(MobileNetError) as e:
        probe(b"", "x.tflite", child, "LiteRT's interpreter", "LiteRT model", "export it again")
    assert str(e.value).startswith(says) and str(e.value).endswith("; export it again")


def test_a_probe_that_runs_on_is_stopped_in_a_time_its_network_bounds(tiny_pte, monkeypatch):
    """A file that loops (here the child's console, fed a sleep) is stopped after the probe's
    time, one line; that time comes from the network's mult-adds, far under the bound for a
    file whose metadata names no network."""
    import mobilenet.deploy.native as native
    from mobilenet.deploy.executorch import PteModel
    from mobilenet.net.cost import cost_report

    with pytest.raises(MobileNetError, match=r"^x: e did not load and run it on one image in 1 s, far more than"):
        native.probe(b"import time\ntime.sleep(3600)\n", "x", "code:interact", "e", "k", "a", seconds=1)
    given = []
    real = native.probe
    monkeypatch.setattr(native, "probe", lambda *args, **kw: given.append(args[-1]) or real(*args, **kw))
    program = PteModel(tiny_pte)
    assert given == [native.LOAD_SECONDS + cost_report(program.info.model)["mult_adds"] / native.SLOWEST_MACS]
    assert given[0] < native.PROBE_SECONDS


def test_a_program_its_sidecar_does_not_describe_is_refused(tiny_pte, tmp_path):
    from mobilenet.deploy.executorch import PteModel

    path = _program(tiny_pte, tmp_path, flip=lambda data: len(data) - 100, rehash=False)
    with pytest.raises(MobileNetError, match="not the program m.pte.json describes"):
        PteModel(path)


@pytest.mark.parametrize("key, value", [("resolution", 64), ("channels", 3)])
def test_the_sidecar_input_is_checked_against_the_program(tiny_pte, tmp_path, key, value):
    from mobilenet.deploy.executorch import PteModel

    def change(meta):
        meta["input"][key] = value
        meta["input"].update(mean=[0.5] * meta["input"]["channels"], std=[0.5] * meta["input"]["channels"],
                             resize=meta["input"]["resolution"] * 8 // 7)
    path = _program(tiny_pte, tmp_path, sidecar=change)
    with pytest.raises(MobileNetError, match=r"prepares images as .*, the ExecuTorch program takes \(1, 32, 32\)"):
        PteModel(path)


def test_our_own_program_loads_after_its_probe(tiny_pte):
    from mobilenet.deploy.executorch import PteModel

    model = PteModel(tiny_pte)
    assert model.logits(np.zeros((2, 1, 32, 32), np.float32)).shape == (2, 10)


# --- the user's files ----------------------------------------------------------------------

def test_cleanup_removes_only_our_own_temporary_files(tmp_path):
    from mobilenet.files import atomic_write_text, remove_unfinished

    theirs = [".config.json.backup.tmp", ".checkpoint.pt.old.tmp", ".mobilenet-config.json.mine.tmp"]
    for name in theirs:
        (tmp_path / name).write_text("the user's")
    (tmp_path / ".mobilenet-checkpoint.pt.k3j_9x2a.tmp").write_text("a killed writer's")
    atomic_write_text(tmp_path / "config.json", "{}")
    assert remove_unfinished(tmp_path, ["config.json", "checkpoint.pt"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs + ["config.json"])


def test_export_refuses_to_replace_files_it_did_not_write(small_run, tmp_path):
    (tmp_path / "theirs.onnx").write_bytes(b"the user's own model")
    (tmp_path / "notes").write_text("the user's notes")
    (tmp_path / "notes.json").write_text('{"todo": "the user\'s"}')
    for extra in (["--output", str(tmp_path / "theirs.onnx")],
                  ["--format", "executorch", "--output", str(tmp_path / "notes")]):
        r = cli("export", "--model", str(small_run[0]), *extra)
        assert r.returncode == 2, r.stderr
        _one_line(r, "was not written by mobilenet, and would be replaced")
    assert (tmp_path / "theirs.onnx").read_bytes() == b"the user's own model"
    assert (tmp_path / "notes").read_text() == "the user's notes" and "todo" in (tmp_path / "notes.json").read_text()
    r = cli("export", "--model", str(small_run[0]), "--output", str(tmp_path / "theirs.onnx"), "--force")
    assert r.returncode == 0, r.stderr
    r = cli("export", "--model", str(small_run[0]), "--output", str(tmp_path / "theirs.onnx"))  # ours now
    assert r.returncode == 0, r.stderr


THEIRS = {"config.json": '{"my": "settings"}', "report.html": "<p>my thesis</p>", "history.csv": "a,b\n1,2\n",
          "total_acc.png": "my picture", "model.onnx": "my model", "metrics.json": '{"top1": 1}'}


@pytest.mark.parametrize("neighbour, data", [(".lock", b""), ("checkpoint.pt", os.urandom(4096))])
def test_a_neighbours_name_never_makes_a_file_ours(small_run, tmp_path, neighbour, data):
    """An empty .lock or random bytes named checkpoint.pt beside the user's files: train,
    export and evaluate refuse to replace them, and write nothing."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / neighbour).write_bytes(data)
    for name, text in THEIRS.items():
        (folder / name).write_text(text)
    for args in (["train", "--out", str(folder), "--epochs", "1"],
                 ["export", "--model", str(small_run[0]), "--output", str(folder / "model.onnx")],
                 ["evaluate", "--model", str(small_run[0]), "--out", str(folder)]):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        _one_line(r, "was not written by mobilenet, and would be replaced")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        neighbour: data, **{name: text.encode() for name, text in THEIRS.items()}}


def test_each_writer_replaces_its_own_files_and_refuses_the_users(small_run, onnx_file, tmp_path):
    """evaluate (of a folder and of a file), report and samples: a second run replaces what
    the first wrote (ours by its mark: no checkpoint lies beside them), the user's files of
    the same names are refused in one line before any work, and --force replaces them."""
    from mobilenet.data.fashion import write_samples
    from mobilenet.deploy.runtime import evaluate_file
    from mobilenet.errors import BadArgument
    from mobilenet.report.evaluation import evaluate
    from mobilenet.report.page import report
    from mobilenet.run.ownership import ours, refuse_foreign

    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    shutil.copy(onnx_file, tmp_path / "m.onnx")
    for _ in range(2):
        evaluate(small_run[0], out=mine)
        evaluate_file(tmp_path / "m.onnx", out=mine)
        written = write_samples(mine, 2, lambda paths: refuse_foreign(paths, "--out"))
    assert all(ours(p) for p in [*mine.iterdir(), *written]) and len(list(mine.iterdir())) == 5
    theirs.mkdir()
    for name in ("metrics.json", "confusion_matrix.png", "report.html", written[0].name):
        (theirs / name).write_text("the user's")
    calls = [lambda force: evaluate(small_run[0], out=theirs, force=force),
             lambda force: evaluate_file(tmp_path / "m.onnx", out=theirs, force=force),
             lambda force: report(small_run[0], out=theirs / "report.html", force=force),
             lambda force: write_samples(theirs, 1, lambda paths: refuse_foreign(paths, "--out", force))]
    for call in calls:
        with pytest.raises(BadArgument, match="was not written by mobilenet"):
            call(False)
    assert all(p.read_text() == "the user's" for p in theirs.iterdir())
    for call in calls:
        call(True)
    assert all(ours(p) for p in theirs.iterdir())


def test_convert_refuses_a_trained_run_and_the_users_files(small_run, tmp_path):
    trained = _folder(small_run, tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"my": "settings"}')
    for folder, says in ((trained, "holds a trained run (checkpoint.pt)"), (theirs, "config.json was not written")):
        r = cli("convert", "--from-timm", str(tmp_path / "w.pth"), "--output", str(folder))
        assert r.returncode == 2, r.stderr
        _one_line(r, says)
    assert (theirs / "config.json").read_text() == '{"my": "settings"}'
    r = cli("convert", "--from-timm", str(tmp_path / "w.pth"), "--output", str(theirs), "--force")
    _one_line(r, "w.pth: no such file")  # --force goes on, to the weights that are not there


# --- the smaller ones ----------------------------------------------------------------------

def test_non_finite_scores_are_one_line(small_run, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _folder(small_run, tmp_path)
    state = load_file(folder / "model.safetensors")
    state["classifier.bias"][0] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "mobilenet-v1"})
    r = cli("predict", "--model", str(folder), "--json", _image(tmp_path), timeout=WAIT)
    _one_line(r, "gives scores that are not finite (NaN or infinity)")
    assert r.stdout == ""  # no NaN in the JSON, which strict parsers refuse
    from mobilenet.report.metrics import check_scores
    with pytest.raises(MobileNetError, match="not finite"):
        check_scores(np.array([[0.0, np.inf]]), 2, "m.onnx")  # the exported files' path


def test_images_pillow_cannot_convert_become_failed_records(small_run):
    from mobilenet.deploy.predictor import Predictor

    lab = Image.new("LAB", (28, 28))
    closed = Image.new("L", (28, 28))
    closed.close()
    records, failed = Predictor(small_run[0]).predict([lab, closed, Image.new("L", (28, 28), 128)])
    assert [r["image"] for r in records] == [2] and [f["image"] for f in failed] == [0, 1], failed
    assert all("not an image this can read" in f["reason"] for f in failed)


def test_a_size_scan_lets_no_pillow_warning_out(tmp_path, monkeypatch):
    import warnings

    from PIL import Image as PIL

    from mobilenet.data.images import short_side

    PIL.new("L", (12, 12)).save(tmp_path / "big.png")
    monkeypatch.setattr(PIL, "MAX_IMAGE_PIXELS", 100)  # 144 pixels: past the warning's line, short of the error's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert short_side(tmp_path / "big.png") == 12
    assert not caught, [str(w.message) for w in caught]


def test_class_names_that_differ_only_by_normalisation_are_refused(tmp_path):
    import unicodedata

    from mobilenet.data.images import crop_input_spec, scan_folder
    from mobilenet.run.info import ModelInfo

    for form in ("NFC", "NFD"):
        (tmp_path / unicodedata.normalize(form, "café")).mkdir()
    with pytest.raises(MobileNetError, match=r"class folders 'cafe\\u0301' and 'caf\\xe9' differ only"):
        scan_folder(tmp_path)
    with pytest.raises(ValueError, match="differ only by Unicode normalisation"):
        ModelInfo.from_json({"classes": sorted(p.name for p in tmp_path.iterdir()),
                             "input": crop_input_spec(3, 32, [0.5] * 3, [0.5] * 3)}, fixed=(None, None))


# --- the data block ------------------------------------------------------------------------

def _with_data(small_run, tmp_path, **data):
    import json

    folder = _folder(small_run, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["data"].update(data)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("key, value", [("test_split", "abc"), ("test_split", 1.5), ("seed", "x"), ("seed", -1)])
def test_the_data_block_is_validated_with_the_metadata(small_run, tmp_path, key, value):
    r = cli("evaluate", "--model", str(_with_data(small_run, tmp_path, **{key: value})), timeout=WAIT)
    _one_line(r, f"data {key} is {value!r}")


def _no_walk(*args, **kw):
    raise AssertionError("the data folder was walked")


@pytest.mark.parametrize("name, says", [("/", "not a data folder"), ("other", "has no class folder 'a', 'b'")])
def test_where_the_data_block_points_is_checked_before_any_walk(tmp_path, monkeypatch, name, says):
    from mobilenet.data import images
    from mobilenet.data.images import crop_input_spec
    from mobilenet.run.info import ModelInfo

    for folder in ("cat", "dog"):
        (tmp_path / "other" / folder).mkdir(parents=True)
    info = ModelInfo(["a", "b"], crop_input_spec(3, 32, [0.5] * 3, [0.5] * 3),
                     data={"name": name if name == "/" else str(tmp_path / name)})
    monkeypatch.setattr(images, "scan_folder", _no_walk)
    with pytest.raises(MobileNetError, match=says):
        info.data_to_open()


def test_a_colour_folder_named_for_a_grey_model_is_one_line(small_run, tmp_path, image_folder):
    folder = _with_data(small_run, tmp_path, name=str(image_folder))
    for command in (["evaluate", "--model", str(folder)], ["export", "--model", str(folder), "--int8"]):
        r = cli(*command, timeout=WAIT)
        _one_line(r, "the model takes grey images and folders are read in colour")


def test_train_refuses_a_folder_of_the_users_files(tmp_path, fake_fashion):
    theirs = tmp_path / "mine"
    theirs.mkdir()
    files = {"config.json": '{"my": "settings"}', "history.csv": "day,km\n1,5\n", "model.safetensors": "weights",
             "total_acc.png": "a picture", ".config.json.backup.tmp": "a backup"}
    for name, text in files.items():
        (theirs / name).write_text(text)
    env = {"MOBILENET_FASHION_MNIST": str(fake_fashion)}
    r = cli("train", *TINY, "--epochs", "1", "--limit", "64", "--out", str(theirs), env=env, timeout=WAIT)
    assert r.returncode == 2, r.stderr
    _one_line(r, "was not written by mobilenet, and would be replaced")
    assert {p.name: p.read_text() for p in theirs.iterdir()} == files  # not even a .lock
    r = cli("train", *TINY, "--epochs", "1", "--limit", "64", "--out", str(theirs), "--force", env=env, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    assert (theirs / ".config.json.backup.tmp").read_text() == "a backup"


def test_train_log_is_ours_by_its_first_line(small_run, tmp_path, fake_fashion):
    """train.log is appended to, never replaced: a user's file of that name in --out is
    refused before any work, as the others are; ours is ours alone, by its first line."""
    from mobilenet.run.ownership import ours

    (tmp_path / "lone").mkdir()
    shutil.copy(small_run[0] / "train.log", tmp_path / "lone" / "train.log")
    assert ours(tmp_path / "lone" / "train.log")  # no checkpoint beside it
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "train.log").write_text("day 1: ran 5 km\n")
    r = cli("train", *TINY, "--epochs", "1", "--limit", "64", "--out", str(theirs),
            env={"MOBILENET_FASHION_MNIST": str(fake_fashion)}, timeout=WAIT)
    _one_line(r, "train.log was not written by mobilenet, and would be replaced")
    assert r.returncode == 2 and [p.name for p in theirs.iterdir()] == ["train.log"]
    assert not ours(theirs / "train.log") and (theirs / "train.log").read_text() == "day 1: ran 5 km\n"


def test_init_is_read_before_the_run_makes_its_folder(tmp_path, fake_fashion):
    os.mkfifo(tmp_path / "w.pth")
    r = cli("train", *TINY, "--epochs", "1", "--init", str(tmp_path / "w.pth"), "--out", str(tmp_path / "run"),
            env={"MOBILENET_FASHION_MNIST": str(fake_fashion)}, timeout=WAIT)
    _one_line(r, "--init " + str(tmp_path / "w.pth") + ": not a regular file")
    assert not (tmp_path / "run").exists()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


ORPHAN = 300  # seconds: a child that starts slowly still sees its parent gone long before this


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux's /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_probe_child_ends_with_its_parent(sig, tmp_path):
    """A probe child that hangs (here Python's own console, fed a sleep on stdin) ends when
    mobilenet is killed, by kill -9 or SIGTERM: it never runs on alone."""
    started = tmp_path / "started"
    hang = f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(600)\n".encode()
    script = f"from mobilenet.deploy.native import probe; probe({hang!r}, 'x', 'code:interact', 'e', 'k', 'a')"
    parent = subprocess.Popen([sys.executable, "-c", script])
    wait_for(started.exists, parent)  # the child has read its input and hangs: only its parent's end can end it
    child = _children(parent.pid)[0]
    parent.send_signal(sig)
    parent.wait()
    wait_for(lambda: not _alive(child), _Ended, timeout=ORPHAN)


class _Ended:
    """wait_for's process to watch, where none is left: the parent has already ended."""

    @staticmethod
    def poll():
        return None
