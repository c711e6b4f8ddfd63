"""torchrun on CPU: two processes over gloo on loopback, against one process."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from mobilenet.data.augment import PRESETS
from mobilenet.report.evaluation import evaluate

from conftest import HANG, cli, wait_for

TINY = ["--width", "0.25", "--resolution", "32", "--augment", "none"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, env, restarts=0):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "--max-restarts", str(restarts), "-m", "mobilenet", *args]
    return cmd, {**os.environ, **env, "OMP_NUM_THREADS": "1"}


def rows(out):
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def data(tmp_path):
    from conftest import make_fashion_like
    return {"MOBILENET_FASHION_MNIST": str(make_fashion_like(tmp_path / "f", n_train=512, n_test=101))}


# `mobilenet` under torchrun, with each process's view kept: when the run ends, every rank
# saves its model's weights and the number of test images it counted into $PROBE/rankN.pt.
PROBE = r"""
import os, sys, torch
import mobilenet.training.scoring as scoring
import mobilenet.training.loop as training
counted = []
real_evaluate = scoring.evaluate_batches
def evaluate_batches(*args, **kw):
    found = real_evaluate(*args, **kw)
    if kw.get("desc") == "test":
        counted.append(found["metrics"][0].images)
    return found
scoring.evaluate_batches = evaluate_batches
real_summary = training._summary
def summary(run):
    torch.save({"model": run.model.state_dict(), "test_images": counted},
               os.path.join(os.environ["PROBE"], "rank" + os.environ["RANK"] + ".pt"))
    return real_summary(run)
training._summary = summary
from mobilenet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_processes_match_one(data, tmp_path, monkeypatch):
    """Two processes of batch 16 against one of batch 32, same global batch, schedule and
    learning rate, over the same 512 images for one epoch.

    They cannot be equal to the last digit, and the test says why: BatchNorm normalises
    each process's 16 images with their own statistics (SyncBatchNorm is CUDA only), where
    the single process uses 32; and DistributedSampler's shuffle is not the single
    process's. What must be exact: the gradients are averaged, so both processes end with
    the same weights, bit for bit (without DistributedDataParallel each would drift on its
    own half); every test image counted once, by one process (101, an odd number, split
    51 + 50); the test accuracy in history.csv is what `evaluate` finds for the saved
    weights in one process; the same number of training images; and one file set written
    by rank 0. The metrics must agree with the single process within the stated tolerance."""
    (tmp_path / "probe.py").write_text(PROBE)
    cmd, env = torchrun("train", *TINY, "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "ddp"), env=data)
    cmd[cmd.index("-m", cmd.index("--max-restarts")):cmd.index("mobilenet") + 1] = [str(tmp_path / "probe.py")]
    ddp = subprocess.run(cmd, env={**env, "PROBE": str(tmp_path)}, capture_output=True, text=True, timeout=HANG)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one = cli("train", *TINY, "--epochs", "1", "--batch-size", "32", "--out", tmp_path / "one", env=data)
    assert one.returncode == 0, one.stderr
    a, b = rows(tmp_path / "ddp")[0], rows(tmp_path / "one")[0]
    assert ddp.stdout.count("epoch 1/1") == 1  # one process reports
    assert "× 2 processes" in ddp.stdout and "lr 0.025" in ddp.stdout and "lr 0.025" in one.stdout
    assert float(a["lr"]) == float(b["lr"])
    for key, tolerance in (("train_loss", 0.25), ("test_loss", 0.5), ("train_acc", 0.15), ("test_acc", 0.15)):
        assert abs(float(a[key]) - float(b[key])) <= tolerance, (key, a[key], b[key])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    saved = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    weights = [k for k in saved["model"] if k.endswith(("weight", "bias"))]  # BN's running statistics are each one's
    assert len(weights) == 83
    for key in weights:  # averaged gradients: one model on both processes
        assert torch.equal(ranks[0]["model"][key], saved["model"][key]), key
        assert torch.equal(ranks[1]["model"][key], saved["model"][key]), key
    # exactly once: the two shares of the test split add up to it, and give what one process finds
    assert [r["test_images"] for r in ranks] == [[51], [50]]
    monkeypatch.setenv("MOBILENET_FASHION_MNIST", data["MOBILENET_FASHION_MNIST"])
    metrics = evaluate(tmp_path / "ddp", out=tmp_path / "metrics")  # the EMA's weights (on by default)
    assert metrics["images"] == 101 and abs(metrics["top1"] - float(a["ema_test_acc"])) < 1e-6  # (6 digits in the csv)
    # to 1e-5 as in one process: before evaluating, the ranks take rank 0's BN statistics (Dist.share_buffers)
    assert abs(metrics["loss"] - float(a["ema_test_loss"])) < 1e-5
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith("."))


@pytest.mark.fault
def test_a_killed_worker_is_restarted_and_the_run_finishes(data, tmp_path):
    """torchrun --max-restarts: a worker killed mid-run brings the group down, torchrun
    starts it again, and the new group resumes from the last checkpoint."""
    out = tmp_path / "run"
    cmd, env = torchrun("train", *TINY, "--epochs", "3", "--batch-size", "8", "--out", str(out), env=data, restarts=2)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "checkpoint.pt").exists(), proc)
        found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)  # torchrun's workers
        workers = [int(p) for p in found.stdout.split()]
        assert workers, "no worker found"
        os.kill(max(workers), signal.SIGKILL)  # one worker dies mid-run
        stdout, stderr = proc.communicate(timeout=HANG)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "resuming" in stdout
    assert [int(r["epoch"]) for r in rows(out)] == [1, 2, 3]


def test_augment_auto_a_label_file_and_balanced_choices_under_two_processes(tmp_path):
    """Rank 0's trial chooses for both; only rank 0 tells the choice (the other has no
    figures to tell). The data is a label file, drawn by the balanced sampler, weighted, and
    the kept epoch chosen by balanced accuracy: the validation score the two processes add
    up is the one a single process finds for the saved weights on all the validation images."""
    from conftest import make_image_folder

    from mobilenet.report.metrics import Metrics
    from mobilenet.run.folder import load_model

    images = make_image_folder(tmp_path / "images", per_class=12, corrupt=False)
    labels = tmp_path / "labels.csv"  # 12 cats, 6 dogs, 6 foxes: the ranks' validation shares hold other classes
    labels.write_text("path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n"
                                                 for p in sorted(images.glob("*/*")) if p.parent.name == "cat"
                                                 or int(p.stem) < 6))
    out = tmp_path / "ddp"
    cmd, env = torchrun("train", "--data", str(labels), "--width", "0.25", "--resolution", "32", "--epochs", "1",
                        "--batch-size", "4", "--workers", "0", "--augment", "auto", "--val-split", "0.25",
                        "--select-by", "balanced-accuracy", "--sampler", "balanced", "--class-weights", "effective",
                        "--out", str(out), env={})
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((out / "config.json").read_text())["augment"]
    assert record["chosen_by"] in ("trial", "fallback") and record["preset"] in PRESETS
    model, info = load_model(out)
    metrics = Metrics(len(info.classes), False)
    with torch.inference_mode():
        for batch in info.open_data(workers=0, val_split=0.25).val_batches(4):
            metrics.add(model(batch.images).numpy(), batch.labels.numpy())
    assert metrics.per_class[1].tolist() == [3, 1, 1]  # images of each class held out for validation
    assert abs(metrics.class_means()["balanced_accuracy"] - float(rows(out)[0]["val_balanced_acc"])) < 1e-6


def test_a_multi_label_run_chooses_its_thresholds_on_every_process_validation_images(tmp_path):
    """Each process scores its share of the validation images; the thresholds and the loss
    come from all of them gathered, so they are what one process finds for the saved weights.
    (Not the mAP: after one epoch the scores are close to ties, whose order a float's last
    bit decides.)"""
    from test_multilabel import TRAIN, painted

    from mobilenet.report.multilabel import bce, choose_thresholds
    from mobilenet.run.folder import load_model

    labels = painted(tmp_path / "data", 40)
    out = tmp_path / "ddp"
    cmd, env = torchrun("train", "--data", str(labels), "--epochs", "1", *TRAIN, "--out", str(out), env={})
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr[-3000:]
    model, info = load_model(out)
    logits, targets = [], []
    with torch.inference_mode():
        for batch in info.open_data(workers=0, val_split=0.25).val_batches(64):
            logits.append(model(batch.images).numpy())
            targets.append(batch.labels.numpy())
    logits, targets = np.concatenate(logits), np.concatenate(targets)
    assert info.thresholds == pytest.approx(choose_thresholds(torch.sigmoid(torch.from_numpy(logits)).numpy(), targets),
                                            abs=1e-6)
    assert float(rows(out)[0]["val_loss"]) == pytest.approx(bce(logits, targets).mean(), abs=1e-5)
