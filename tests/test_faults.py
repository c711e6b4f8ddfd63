"""Faults and hostile input: each gets one clear line, nothing is lost, nothing runs."""

import errno
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet.data.images import load_image
from mobilenet.errors import MobileNetError
from mobilenet.training.loop import TrainConfig, train

from conftest import HANG, TINY, cli, wait_for

pytestmark = pytest.mark.fault  # counted in the README's fault-case total


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG header that declares a huge image: a decompression bomb, in 50 bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, data", [
    ("empty.jpg", b""),
    ("text.jpg", b"just some text, not a JPEG\n"),
    ("bomb.png", _png_declaring(60000, 60000)),
], ids=["empty", "text", "bomb"])
def test_broken_and_hostile_images_are_one_clear_error(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(MobileNetError, match=name):
        load_image(tmp_path / name)


def test_truncated_jpeg(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:300])
    with pytest.raises(MobileNetError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("L", (8, 8), v) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(tmp_path / "anim.gif", 1)).max() < 50


def test_a_second_trainer_on_the_same_folder_is_refused_and_a_killed_one_does_not_block(tmp_path):
    from conftest import make_fashion_like

    env = {"MOBILENET_FASHION_MNIST": str(make_fashion_like(tmp_path / "f", n_train=320, n_test=100))}
    out = tmp_path / "run"
    # far more epochs than it will live: it holds the folder until it is killed, on any machine
    first = subprocess.Popen([sys.executable, "-m", "mobilenet", "train", *TINY, "--epochs", "100000", "--out", str(out)],
                             env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (out / "checkpoint.pt").exists(), first)
        # --epochs 1: refused by the lock, it never trains; without one it would end at once, not run on
        second = cli("train", *TINY, "--out", str(out), "--resume", "--epochs", "1", env=env)
        assert second.returncode == 1 and "in use" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
    third = cli("train", "--out", str(out), "--resume", "--epochs", str(_epochs_done(out) + 1), env=env)
    assert third.returncode == 0, third.stderr


def test_a_forked_worker_does_not_keep_a_killed_runs_lock(tmp_path):
    """DataLoader workers are forked from the trainer and may outlive a kill -9 by seconds;
    the folder must be free as soon as the trainer is gone."""
    from mobilenet.run.folder import lock

    code = (f"import os, signal, time, pathlib\nfrom mobilenet.run.folder import lock\n"
            f"held = lock(pathlib.Path({str(tmp_path)!r}))\n"
            "if os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\n"  # the worker lives on
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert proc.wait(timeout=HANG) == -9 and (tmp_path / ".lock").exists()
        lock(tmp_path).close()  # free, though the forked child still runs
    finally:
        os.killpg(proc.pid, 9)


def _epochs_done(out) -> int:
    return torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]


@pytest.mark.parametrize("data", ["fashion-mnist", "folder"])
def test_same_seed_same_run_other_seed_other_run(data, few_fashion, image_folder, tmp_path):
    """README, Determinism: on Fashion-MNIST in memory, and on an image folder decoded and
    augmented (flips, crops) by 2 DataLoader workers, two runs with one seed give the same
    history.csv, model.safetensors and final checkpoint (weights, EMA, optimizer); another
    seed changes them."""
    options = {"fashion-mnist": {"batch_size": 32},  # 4 steps an epoch
               "folder": {"data": str(image_folder), "workers": 2, "batch_size": 4}}[data]

    def run(name, seed):
        out = tmp_path / name
        train(TrainConfig(epochs=2, width_mult=0.25, resolution=32, seed=seed, out=str(out), **options),
              log=lambda _: None)
        rows = [r.split(",")[:6] for r in (out / "history.csv").read_text().splitlines()]  # no timing columns
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        return rows, (out / "model.safetensors").read_bytes(), state

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as a user's 2-core run: the threads must not change the result
    try:
        a, b, c = run("a", 0), run("b", 0), run("c", 1)
    finally:
        torch.set_num_threads(threads)
    assert a[:2] == b[:2]
    for part in ("model", "ema"):
        assert all(torch.equal(a[2][part][k], b[2][part][k]) for k in a[2][part]), part
    assert all(torch.equal(x, y) for x, y in zip(_tensors(a[2]["optimizer"]), _tensors(b[2]["optimizer"])))
    assert a[0] != c[0] and a[1] != c[1]
    assert not torch.equal(a[2]["model"]["classifier.weight"], c[2]["model"]["classifier.weight"])


def _tensors(tree) -> list[torch.Tensor]:
    """Every tensor in a nest of dicts and lists, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]


def test_a_full_disk_keeps_the_previous_checkpoint(fake_fashion, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, width_mult=0.25, resolution=32, batch_size=32, out=str(out)), log=lambda _: None)
    before = (out / "checkpoint.pt").read_bytes()
    import mobilenet.files as files

    real_fsync = files.os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and "checkpoint" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(MobileNetError, match="No space left on device"):
        train(TrainConfig(epochs=2, out=str(out)), resume=True, log=lambda _: None)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_hostile_model_folders(small_run, tmp_path):
    import shutil

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cases = {}
    for name in ("negative", "tampered", "pickle", "evil_resume"):
        shutil.copytree(small_run[0], tmp_path / name)
        cases[name] = tmp_path / name
    config = (cases["negative"] / "config.json").read_text().replace('"num_classes": 10', '"num_classes": -3')
    (cases["negative"] / "config.json").write_text(config)
    data = bytearray((cases["tampered"] / "model.safetensors").read_bytes())
    data[8:20] = b"{garbage!!!!"
    (cases["tampered"] / "model.safetensors").write_bytes(bytes(data))
    torch.save(Evil(), cases["pickle"] / "model.safetensors")
    torch.save({"model": Evil()}, cases["evil_resume"] / "checkpoint.pt")
    for name, args, words in (
        ("negative", ["evaluate", "--model"], "num_classes"),
        ("tampered", ["predict", "--model"], "model.safetensors"),
        ("pickle", ["predict", "--model"], "model.safetensors"),
        ("evil_resume", ["train", "--resume", "--out"], "checkpoint.pt"),
    ):
        extra = [str(small_run[0] / "total_acc.png")] if args[0] == "predict" else []
        r = cli(*args, str(cases[name]), *extra)
        assert r.returncode == 1, (name, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not marker.exists()  # no code from any of those files ran


@pytest.mark.parametrize("name, data", [
    ("empty.onnx", b""),
    ("text.onnx", b"this is not an ONNX model\n"),
    ("random.onnx", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
    ("image.onnx", None),  # a PNG under an .onnx name
])
def test_files_that_are_not_onnx_at_all(small_run, tmp_path, name, data):
    model = tmp_path / name
    if data is None:
        Image.new("RGB", (8, 8)).save(model, format="PNG")
    else:
        model.write_bytes(data)
    image = str(small_run[0] / "total_acc.png")
    for args in (["predict", "--runtime", "onnxruntime", "--model", str(model), image],
                 ["evaluate", "--runtime", "onnxruntime", "--model", str(model)]):
        r = cli(*args)
        assert r.returncode == 1 and name in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("change, words", [
    ({"variant": "mobilenet_v1_9.0_999"}, ["variant", "unknown"]),   # a variant we do not have
    ({"activation": "swish"}, ["activation"]),
    ({"width_mult": "wide"}, ["width_mult"]),
    ({"resolution": 31}, ["resolution"]),
    ({"in_channels": 0}, ["in_channels"]),
])
def test_configs_naming_what_does_not_exist(small_run, tmp_path, change, words):
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(small_run[0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"].update(change)
    (folder / "config.json").write_text(json.dumps(config))
    r = cli("predict", "--model", str(folder), str(folder / "total_acc.png"))
    assert r.returncode == 1 and "config.json" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize("change, words", [
    (lambda s: {"foo": 1}, "train_config"),
    (lambda s: [1, 2], "not a checkpoint"),
    (lambda s: {**s, "epoch": "3"}, "epoch"),
    (lambda s: {**s, "model": {}}, "does not fit"),
    (lambda s: {**s, "optimizer": {"state": {}, "param_groups": []}}, "does not fit"),
], ids=["foreign", "list", "epoch-text", "no-weights", "other-optimizer"])
def test_checkpoints_of_the_wrong_shape(small_run, tmp_path, change, words):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(small_run[0], out)
    torch.save(change(torch.load(out / "checkpoint.pt", weights_only=True)), out / "checkpoint.pt")
    with pytest.raises(MobileNetError, match=words) as e:
        train(TrainConfig(epochs=4, out=str(out)), resume=True, log=lambda _: None)
    assert "checkpoint.pt" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("key, value, words", [
    ("image_size", None, "resize"),                 # neither image_size nor resize
    ("channels", 3, "channels"),                    # a 1-channel network
    ("resolution", "32", "resolution"),
    ("resolution", 64, "resolution"),               # not the network's
    ("mean", [0.5, 0.5, 0.5], "mean"),
    ("std", [0], "std"),
    ("resize", 9, "resize"),
])
def test_input_blocks_that_do_not_fit_the_network(small_run, onnx_file, tmp_path, key, value, words):
    import json
    import shutil

    from mobilenet.deploy.exporter import set_metadata
    from mobilenet.deploy.runtime import OnnxModel
    from mobilenet.run.folder import read_config

    folder = tmp_path / "model"
    shutil.copytree(small_run[0], folder)
    config = json.loads((folder / "config.json").read_text())
    if key == "resize":
        config["input"]["image_size"] = None
    config["input"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MobileNetError, match=words):
        read_config(folder)
    # the same block in an exported model's metadata
    import onnx
    proto = onnx.load(str(onnx_file))
    meta = {p.key: p.value for p in proto.metadata_props}
    set_metadata(proto, {**meta, "input": json.dumps(config["input"])})
    onnx.save(proto, str(tmp_path / "m.onnx"))
    with pytest.raises(MobileNetError, match=words):
        OnnxModel(tmp_path / "m.onnx")


def test_a_config_without_data_provenance_still_evaluates(small_run, tmp_path):
    import json
    import shutil

    from mobilenet.report.evaluation import evaluate

    folder = tmp_path / "model"
    shutil.copytree(small_run[0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["data"] = None
    (folder / "config.json").write_text(json.dumps(config))
    assert evaluate(folder)["images"] == 200  # the default data set (here the fake Fashion-MNIST)


def test_an_extreme_aspect_ratio_is_refused_before_it_is_resized(tmp_path):
    Image.new("L", (50000, 1)).save(tmp_path / "strip.png")  # 256 px high would make it 12.8 M px wide
    with pytest.raises(MobileNetError, match="strip.png.*aspect ratio"):
        load_image(tmp_path / "strip.png")


def test_a_link_loop_in_an_image_folder_is_walked_once(tmp_path):
    from mobilenet.data.images import scan_folder

    from conftest import make_image_folder

    root = make_image_folder(tmp_path / "images", per_class=3, corrupt=False)
    before = scan_folder(root)
    (root / "cat" / "loop").symlink_to(root / "cat")     # cat/loop/loop/... forever
    (root / "cat" / "again").symlink_to(root / "cat")
    (root / "dog" / "sub").mkdir()
    (root / "dog" / "sub" / "up").symlink_to(root / "dog")
    assert scan_folder(root) == before  # no image twice, so none in both train and test


def test_a_file_where_the_tensorboard_folder_goes(fake_fashion, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("in the way")
    with pytest.raises(MobileNetError, match="tensorboard"):
        train(TrainConfig(epochs=1, width_mult=0.25, resolution=32, out=str(out)), log=lambda _: None)
