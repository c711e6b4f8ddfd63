import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mobilenet.data.sources import open_source
from mobilenet.deploy.predictor import Predictor
from mobilenet.errors import MobileNetError
from mobilenet.report.evaluation import evaluate
from mobilenet.run.folder import FORMAT_VERSION, HISTORY_FIELDS, load_model
from mobilenet.training.loop import TrainConfig, train
from mobilenet.training.settings import Facts, settle

from conftest import cli, history


def test_a_run_leaves_its_files_and_the_model_predicts(small_run):
    out, summary = small_run
    for name in ("history.csv", "total_acc.png", "total_test_loss.png", "model.safetensors", "config.json",
                 "checkpoint.pt", "train.log"):
        assert (out / name).stat().st_size > 0, name
    rows = history(out, timing=True)
    assert list(rows[0]) == HISTORY_FIELDS and [r["epoch"] for r in rows] == ["1", "2", "3"]
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["num_classes"] == 10 and config["model"]["in_channels"] == 1
    assert config["classes"][9] == "Ankle boot" and config["input"]["resolution"] == 32
    assert "lr" not in json.dumps(config)  # no training arguments in the model's config
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]) == 3
    recipe = {k: state["train_config"][k] for k in ("ema", "random_erasing", "weight_decay")}
    assert recipe == {"ema": 0.999, "random_erasing": 0.5, "weight_decay": 5e-4}  # Fashion-MNIST's defaults
    assert all(r["ema_test_acc"] for r in rows)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*tmp"))
    model, info = load_model(out)
    assert set(load_file(out / "model.safetensors")) == set(model.state_dict())
    try:
        import tensorboard  # noqa: F401 - the optional extra
        assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    except ImportError:
        assert not (out / "tensorboard").exists()
    # the bars are learnable: the tiny model beats chance (10%) clearly
    assert summary["best_test_acc"] > 0.3, summary


def test_evaluate_and_predict(small_run, tmp_path):
    out, _ = small_run
    fake_fashion = os.environ["MOBILENET_FASHION_MNIST"]
    metrics = evaluate(out)
    assert metrics["images"] == 200 and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert (out / "metrics.json").exists() and (out / "confusion_matrix.png").exists()
    # the same weights give the training run's own figure for its last epoch (the EMA's: on by default)
    assert abs(metrics["top1"] - float(history(out)[-1]["ema_test_acc"])) < 1e-6
    # and every figure is what torch computes from the model's logits on its own
    model, _ = load_model(out)
    x, y = zip(*[(images, labels) for images, labels, _ in open_source("fashion-mnist", 32, 0).test_batches(64)])
    with torch.inference_mode():
        logits, y = model.eval()(torch.cat(x)), torch.cat(y)
    confusion = torch.zeros(10, 10, dtype=torch.int64)
    for true, predicted in zip(y.tolist(), logits.argmax(1).tolist()):
        confusion[true, predicted] += 1  # a row per true class, a column per prediction
    assert metrics["confusion_matrix"] == confusion.tolist()
    assert metrics["top1"] == (logits.argmax(1) == y).double().mean().item()
    assert metrics["top5"] == (logits.topk(5).indices == y[:, None]).any(1).double().mean().item()
    assert list(metrics["per_class"].values()) == (confusion.diagonal() / confusion.sum(1)).tolist()
    assert metrics["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), abs=1e-5)
    samples = cli("samples", "--out", str(tmp_path / "s"), "--count", "3", env={"MOBILENET_FASHION_MNIST": fake_fashion})
    assert samples.returncode == 0, samples.stderr
    images = sorted((tmp_path / "s").glob("*.png"))
    (tmp_path / "notes.png").write_text("not an image")
    results, errors = Predictor(out).predict([*images, tmp_path / "notes.png"], top_k=3)
    assert [r["image"] for r in results] == [str(p) for p in images]
    assert len(errors) == 1 and errors[0]["image"] == str(tmp_path / "notes.png") and "not a readable image" in errors[0]["reason"]
    probs = [p["probability"] for p in results[0]["predictions"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # the CLI: the other files are still predicted, and the exit status is non-zero
    r = cli("predict", "--model", str(out), "--json", *map(str, images), str(tmp_path / "notes.png"),
            env={"MOBILENET_FASHION_MNIST": fake_fashion})
    answer = json.loads(r.stdout)
    assert r.returncode == 1 and len(answer["predictions"]) == 3 and answer["failed"] == errors
    assert all(a["predictions"][0]["class"] == b["predictions"][0]["class"] for a, b in zip(answer["predictions"], results))
    assert r.stderr.count("\n") == 1 and "notes.png" in r.stderr and "Traceback" not in r.stderr


def test_metrics_against_figures_worked_by_hand():
    """Three images of 7 classes. Image 1: label 0, ranked last (top-1 says 1, top-5 misses).
    Image 2: label 1, ranked first. Image 3: label 4, ranked fifth (top-1 says 0, top-5 hits)."""
    from mobilenet.report.metrics import Metrics

    scores = np.array([[0, 6, 5, 4, 3, 2, 1], [0, 6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1]], np.float64)
    metrics = Metrics(7)
    metrics.add(scores, np.array([0, 1, 4]))
    report = metrics.report([str(c) for c in range(7)], "by hand")
    confusion = np.zeros((7, 7), int)
    confusion[0, 1] = confusion[1, 1] = confusion[4, 0] = 1  # [true, predicted]
    assert report["confusion_matrix"] == confusion.tolist()
    assert (report["images"], report["top1"], report["top5"]) == (3, 1 / 3, 2 / 3)
    assert report["per_class"] == {"0": 0.0, "1": 1.0, "2": 0.0, "3": 0.0, "4": 0.0, "5": 0.0, "6": 0.0}
    # class 1: its one image found (recall 1) among the two predicted 1 (precision 1/2), F1 = 2/3;
    # class 0 predicted once, wrongly; class 4 never predicted; the rest have no images
    by_class = report["per_class_scores"]
    assert by_class["1"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert by_class["0"] == by_class["4"] == {**zero, "support": 1} and by_class["2"] == {**zero, "support": 0}
    log_softmax = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    assert report["loss"] == pytest.approx(-(log_softmax[0, 0] + log_softmax[1, 1] + log_softmax[2, 4]) / 3)


@pytest.mark.fault
def test_image_folder_trains_one_epoch_and_skips_the_corrupt_file(image_folder, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--data", str(image_folder), "--epochs", "1", "--resolution", "32", "--width", "0.25",
            "--batch-size", "4", "--workers", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "broken.jpg" in r.stderr and "broken.jpg" in (out / "train.log").read_text()
    row = history(out)[0]
    assert row["bad_files"] == "1"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["train_config"]["random_erasing"] == 0.0  # folders
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == ["cat", "dog", "fox"] and config["model"]["in_channels"] == 3
    strict = cli("train", "--data", str(image_folder), "--epochs", "1", "--resolution", "32", "--width", "0.25",
                 "--batch-size", "4", "--workers", "0", "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 1 and "broken.jpg" in strict.stderr and "Traceback" not in strict.stderr
    ev = cli("evaluate", "--model", str(out))
    assert ev.returncode == 0 and "top-1" in ev.stdout


@pytest.mark.fault
@pytest.mark.fault
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(fake_fashion, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, width_mult=0.25, resolution=32, batch_size=64, out=str(out)), log=lambda _: None)
    before = (out / "checkpoint.pt").read_bytes()
    import mobilenet.training.step

    real = mobilenet.training.step.F.cross_entropy
    monkeypatch.setattr(mobilenet.training.step.F, "cross_entropy", lambda *a, **kw: real(*a, **kw) * float("nan"))
    with pytest.raises(MobileNetError, match="diverged"):
        train(TrainConfig(epochs=3, out=str(out), width_mult=0.25), resume=True, log=lambda _: None)
    monkeypatch.undo()
    assert (out / "checkpoint.pt").read_bytes() == before
    results, errors = Predictor(out).predict([out / "total_acc.png"], top_k=1)  # the last good model still predicts
    assert not errors and 0 < results[0]["predictions"][0]["probability"] <= 1


@pytest.mark.fault
@pytest.mark.parametrize("args, words, status", [  # README: 2 for a bad argument (--data included), 1 otherwise
    (["train", "--data", "/nonexistent/folder"], ["/nonexistent/folder", "no such folder"], 2),
    (["train", "--out", "{tmp}/nothing", "--resume"], ["checkpoint.pt", "not found"], 1),
    (["train", "--resume"], ["--resume", "--out"], 2),
    (["train", "--epochs", "0"], ["--epochs"], 2),
    (["train", "--optimizer", "adam9"], ["--optimizer"], 2),
    (["evaluate", "--model", "{tmp}"], ["config.json", "not found"], 1),
    (["evaluate", "--model", "{tmp}/nope"], ["no such folder"], 1),
    (["predict", "--model", "{tmp}", "x.png"], ["config.json"], 1),
])
def test_cli_errors_are_one_line(args, words, status, tmp_path):
    r = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == status and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr


@pytest.mark.fault
def test_broken_model_folders(fake_fashion, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, width_mult=0.25, resolution=32, batch_size=64, out=str(out)), log=lambda _: None)
    (out / "config.json").write_text("{not json")
    r = cli("evaluate", "--model", str(out))
    assert r.returncode == 1 and "config.json" in r.stderr and "Traceback" not in r.stderr
    config = {"model": {"num_classes": 10, "width_mult": 0.5, "in_channels": 1, "resolution": 32},
              "classes": [str(i) for i in range(10)], "input": {"channels": 1, "resolution": 32, "image_size": 28,
                                                                "mean": [0.5], "std": [0.5]}}
    (out / "config.json").write_text(json.dumps(config))  # α = 0.5, weights of α = 0.25
    r = cli("predict", "--model", str(out), str(out / "total_acc.png"))
    assert r.returncode == 1 and "model.safetensors" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", "--out", str(out), env={"MOBILENET_FASHION_MNIST": str(fake_fashion)})
    assert r.returncode == 1 and "--resume" in r.stderr


def test_regularizers_change_training_and_the_ema_is_what_is_saved(fake_fashion, tmp_path):
    def run(name, **options):
        out = tmp_path / name
        train(TrainConfig(epochs=2, width_mult=0.25, resolution=32, batch_size=16, augment="none", out=str(out),
                          **options), log=lambda _: None)
        return out, history(out)

    _, plain = run("plain", ema=0, random_erasing=0)
    for option in ({"random_erasing": 0.5}, {"label_smoothing": 0.1}):
        _, rows = run(next(iter(option)), **{"ema": 0, "random_erasing": 0, **option})
        assert rows[0]["train_loss"] != plain[0]["train_loss"], option
    out, rows = run("ema", ema=0.9, random_erasing=0)
    assert [r["test_acc"] for r in rows] == [r["test_acc"] for r in plain]  # the average only watches
    assert all(r["ema_test_acc"] for r in rows) and not any(r["ema_test_acc"] for r in plain)
    ema = torch.load(out / "checkpoint.pt", weights_only=True)["ema"]
    saved = load_file(out / "model.safetensors")
    assert all(torch.equal(saved[k], ema["module." + k]) for k in saved)  # the EMA's weights are the model
    metrics = evaluate(out, out=tmp_path / "metrics")  # and evaluating it gives what history.csv says
    assert abs(metrics["top1"] - float(rows[-1]["ema_test_acc"])) < 1e-6
    assert abs(metrics["loss"] - float(rows[-1]["ema_test_loss"])) < 1e-5


def test_the_ema_warms_up_so_a_short_run_is_not_stuck_near_its_start():
    from mobilenet.training.ema import ema_with_warmup

    ema = torch.optim.swa_utils.AveragedModel(torch.nn.Linear(1, 1, bias=False), multi_avg_fn=ema_with_warmup(0.999))
    model = torch.nn.Linear(1, 1, bias=False)
    decays = []
    for step in range(1, 12001):
        before = ema.module.weight.item()
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.update_parameters(model)
        if step > 1:  # the first update copies
            decays.append((step - ema.module.weight.item()) / (step - before))
    assert decays[0] == pytest.approx(2 / 11) and decays[98] == pytest.approx(100 / 109)  # (1 + n) / (10 + n)
    assert decays[-1] == pytest.approx(0.999)  # then the decay asked for


@pytest.mark.fault
@pytest.mark.parametrize("bad", [{"epochs": 1.0}, {"batch_size": True}, {"lr": 1000.0}, {"label_smoothing": 0.9},
                                 {"ema": 1.0}, {"random_erasing": -0.1}, {"seed": -1}])
def test_library_arguments_are_checked_before_any_folder_is_made(bad, tmp_path):
    from mobilenet.errors import BadArgument

    with pytest.raises(BadArgument):
        train(TrainConfig(out=str(tmp_path / "run"), **bad), log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_a_runs_config_is_settled_once_in_its_order_of_precedence(image_folder):
    """settings.settle: the user's options, then --init's activation, then the trial's preset,
    then the data's defaults; the result is frozen and settling it again changes nothing."""
    given = settle(TrainConfig(augment="shift", random_erasing=0.1, resolution=48, ema=0.9),
                   Facts(activation="relu6", preset="crop"))
    assert (given.augment, given.random_erasing, given.resolution, given.ema, given.activation) == (
        "shift", 0.1, 48, 0.9, "relu6")
    fashion = settle(TrainConfig(ema=0))
    assert (fashion.augment, fashion.random_erasing, fashion.resolution, fashion.ema) == ("flip-shift", 0.5, 64, None)
    folder = settle(TrainConfig(data=os.path.relpath(image_folder)), Facts(preset="crop-flip"))
    assert (folder.augment, folder.random_erasing, folder.resolution) == ("crop-flip", 0.0, 224)
    assert folder.data == str(image_folder.resolve())  # absolute: a resume finds it from anywhere
    assert all(settle(c) == c for c in (given, fashion, folder))
    with pytest.raises(dataclasses.FrozenInstanceError):
        folder.augment = "none"


def test_validation_chooses_the_kept_epoch_and_patience_stops(fake_fashion, tmp_path):
    out = tmp_path / "run"
    summary = train(TrainConfig(epochs=12, width_mult=0.25, resolution=32, batch_size=16, augment="none",
                                val_split=0.2, patience=2, out=str(out)), log=lambda _: None)
    rows = history(out)
    accs = [float(r["val_acc"]) for r in rows]
    kept = accs.index(max(accs)) + 1  # the first epoch with the best validation accuracy
    assert summary["kept_epoch"] == kept and len(rows) == min(12, kept + 2) < 12  # stopped two epochs later
    metrics = evaluate(out, out=tmp_path / "metrics")  # the saved model is the kept epoch's EMA (on by default)
    assert abs(metrics["top1"] - float(rows[kept - 1]["ema_test_acc"])) < 1e-6
    assert abs(metrics["loss"] - float(rows[kept - 1]["ema_test_loss"])) < 1e-5


def test_a_checkpoint_from_before_the_validation_split_resumes_as_it_was(fake_fashion, tmp_path):
    """Checkpoints of format 0 (unnumbered) came in shapes that stored the test hold-out as
    val_split, had no EMA or erasing options, and wrote "" for a figure they did not measure."""
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, width_mult=0.25, resolution=32, batch_size=16, out=str(out), ema=0, random_erasing=0),
          log=lambda _: None)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state.pop("format_version") == FORMAT_VERSION
    for key in ("test_split", "val_split", "patience", "ema", "random_erasing", "label_smoothing"):
        del state["train_config"][key]
    state["train_config"]["val_split"] = 0.3
    state["history"] = [{k: "" if v is None else v for k, v in row.items()} for row in state["history"]]  # then: ""
    torch.save(state, out / "checkpoint.pt")
    train(TrainConfig(epochs=2, out=str(out)), resume=True, log=lambda _: None)
    assert [r["val_acc"] for r in history(out)] == ["", ""]  # no validation split appeared
    assert [r["ema_test_acc"] for r in history(out)] == ["", ""]  # nor an EMA
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert [(r["val_acc"], r["ema_test_acc"]) for r in saved["history"]] == [(None, None)] * 2  # today's "absent"
    assert saved["format_version"] == FORMAT_VERSION
    saved = saved["train_config"]
    assert saved["test_split"] == 0.3 and saved["random_erasing"] == 0.0
    assert (saved["augment"], saved["resolution"], saved["out"]) == ("flip-shift", 32, str(out))  # settled, once
