"""Several labels per image: average precision and thresholds by hand, the loss with
pos_weight by hand, and one multi-label run from a label file trained, resumed, evaluated,
reported, exported in each format and predicted in each runtime."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import built_once, cli, optional
from PIL import Image

from mobilenet.data.labels import read_label_file
from mobilenet.data.splits import data_splits
from mobilenet.report.multilabel import average_precision, choose_thresholds, mean_ap, scores_at
from mobilenet.training.balance import pos_weights
from mobilenet.training.step import loss_of

# a sigmoid's scores for 5 images × 2 classes, and their labels
SCORES = np.array([[.9, .2], [.4, .8], [.35, .8], [.5, .1], [.8, .3]])
TARGETS = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]])
REGIONS = {"blue": ((16, 32, 0, 32), (20, 20, 230)), "green": ((0, 16, 16, 32), (20, 210, 20)),
           "red": ((0, 16, 0, 16), (230, 20, 20))}  # where each class paints, and in what colour


def test_average_precision_by_hand():
    # class 0, highest first: .9 ✓ .8 ✓ .5 ✗ .4 ✗ .35 ✓ -> precision 1, 1, 3/5 where recall steps by 1/3
    ap = average_precision(SCORES, TARGETS)
    assert ap[0] == pytest.approx((1 + 1 + 3 / 5) / 3) and ap[1] == pytest.approx(1.0)
    # tied scores are one threshold: .5 {✓, ✗} then .2 ✓ -> P 1/2 at R 1/2, P 2/3 at R 1
    tied = average_precision(np.array([[.5], [.5], [.2]]), np.array([[1], [0], [1]]))
    assert tied[0] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # a class no image holds has no AP, and mAP leaves it out
    none = average_precision(np.array([[.5, .1], [.2, .3]]), np.array([[1, 0], [0, 0]]))
    assert none[0] == 1.0 and math.isnan(none[1]) and mean_ap(none) == 1.0


def test_thresholds_give_the_best_f1_on_the_images_they_are_chosen_on():
    # class 0: F1 at .8 is 2·2 / (2·2 + 0 + 1) = 0.8, the best; halfway to the next score, .5
    thresholds = choose_thresholds(SCORES, TARGETS)
    assert thresholds == pytest.approx([0.65, 0.55])
    at = scores_at(SCORES, TARGETS, thresholds)
    assert [c["f1"] for c in at["per_class"]] == pytest.approx([0.8, 1.0])
    assert choose_thresholds(np.array([[.7], [.2]]), np.array([[0], [0]])) == [0.5]  # no positives: the default


def test_positive_weights_and_the_loss_by_hand():
    # 4 images: class 0 held by 1 (3 negatives), class 1 by 3 (1 negative)
    assert pos_weights("inverse", [1, 3], 4) == pytest.approx([3.0, 1 / 3])
    beta = 0.999
    assert pos_weights("effective", [1, 3], 4) == pytest.approx([(1 - beta ** 3) / (1 - beta), (1 - beta) / (1 - beta ** 3)])
    assert pos_weights("none", [1, 3], 4) is None
    z, y, w = torch.tensor([[2.0, -1.0], [0.5, 0.3]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([3.0, 0.5])
    p = torch.sigmoid(z)
    by_hand = -(w * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert loss_of(z, y, w, 0.0).item() == pytest.approx(by_hand.item(), rel=1e-6)
    smoothed = y * 0.9 + 0.05  # label smoothing 0.1 moves the targets towards ½
    assert loss_of(z, y, None, 0.1).item() == pytest.approx(
        -(smoothed * torch.log(p) + (1 - smoothed) * torch.log(1 - p)).mean().item(), rel=1e-6)


def painted(root, n=100, seed=0):
    """n images of 32×32 grey noise, each painted with a random set of REGIONS (every tenth
    with none), and their labels.csv (path,labels with ';')."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["path,labels"]
    for i in range(n):
        pixels = rng.integers(100, 156, (32, 32, 3)).astype(np.uint8)
        drawn = [c for c in REGIONS if rng.random() < 0.5] or [list(REGIONS)[i % 3]]
        names = [] if i % 10 == 9 else drawn  # every tenth image holds none of the classes
        for c in names:
            (y0, y1, x0, x1), colour = REGIONS[c]
            pixels[y0:y1, x0:x1] = colour
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{';'.join(names)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_rows_with_several_labels_read_as_tuples_and_split_by_their_rarest(tmp_path):
    labels = painted(tmp_path, 40)
    classes, samples = read_label_file(labels)
    assert classes == ["blue", "green", "red"]
    assert all(isinstance(label, tuple) and label == tuple(sorted(set(label))) for _, label in samples)
    found = data_splits(labels, 0.25, 0)
    assert len(found["train"]) + len(found["test"]) == 40
    assert {c for _, label in found["test"] for c in label} == {0, 1, 2}  # every label tested


def test_a_multi_label_file_takes_images_with_no_label_and_a_repeated_label_once(tmp_path):
    labels = painted(tmp_path, 40)
    lines = labels.read_text().splitlines()
    lines[1:4] = "img/0.png,", "img/1.png,red;red", "img/2.png,"
    labels.write_text("\n".join(lines) + "\n")
    classes, samples = read_label_file(labels)
    assert samples[0][1] == () and samples[1][1] == (classes.index("red"),)
    found = data_splits(labels, 0.25, 0)
    assert sum(1 for _, label in found["test"] if not label) >= 1  # the images with none are a stratum of their own


TRAIN = ("--width", "0.25", "--resolution", "32", "--batch-size", "8", "--val-split", "0.25", "--workers", "0",
         "--augment", "none", "--ema", "0", "--lr", "0.05")


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    """A multi-label run on `painted` images: 5 epochs, then resumed to 6."""
    def build(folder):
        labels = painted(folder / "data")
        out = folder / "run"
        for epochs, more in (("5", ()), ("6", ("--resume",))):
            r = cli("train", "--data", str(labels), "--out", str(out), "--epochs", epochs, *TRAIN, *more)
            assert r.returncode == 0, r.stderr
        (folder / "train.txt").write_text(r.stdout)
    folder = built_once(tmp_path_factory, "multilabel-run", build)
    return folder / "run", folder / "data" / "labels.csv"


def _scores(run, split: str):
    """The saved model's sigmoid scores and labels on one of its splits, computed here in
    batches as evaluate's: AP ranks the scores, and near ties follow a float's last bits."""
    from mobilenet.limits import EVAL_BATCH_SIZE
    from mobilenet.net.cost import eval_batch_size
    from mobilenet.run.folder import load_model

    model, info = load_model(run)
    source = info.open_data(workers=0, val_split=0.25)
    scores, targets = [], []
    with torch.inference_mode():
        for batch in getattr(source, f"{split}_batches")(eval_batch_size(info.model, EVAL_BATCH_SIZE)):
            scores.append(torch.sigmoid(model(batch.images.contiguous(memory_format=torch.channels_last))).numpy())
            targets.append(batch.labels.numpy())
    return np.concatenate(scores), np.concatenate(targets), info


def test_a_multi_label_run_keeps_thresholds_chosen_on_validation_only(multilabel_run):
    run, _ = multilabel_run
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["blue", "green", "red"]
    val_scores, val_targets, info = _scores(run, "val")
    assert info.multi_label and config["thresholds"] == pytest.approx(choose_thresholds(val_scores, val_targets))
    test_scores, test_targets, _ = _scores(run, "test")
    assert config["thresholds"] != pytest.approx(choose_thresholds(test_scores, test_targets))
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["train_config"]["task"] == "multi-label" and checkpoint["train_config"]["select_by"] == "map"
    assert "mAP" in (run.parent / "train.txt").read_text()


def test_evaluate_and_the_report_give_map_and_the_mistakes(multilabel_run):
    run, _ = multilabel_run
    ev = cli("evaluate", "--model", str(run), "--json")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    scores, targets, info = _scores(run, "test")
    assert metrics["task"] == "multi-label" and metrics["mAP"] == pytest.approx(mean_ap(average_precision(scores, targets)))
    assert metrics["mAP"] > 0.7  # the painted regions are easy; a model that learned nothing scores about 0.45
    at = scores_at(scores, targets, info.thresholds)
    assert metrics["macro_f1"] == pytest.approx(at["macro_f1"])
    assert [metrics["per_class_scores"][c]["threshold"] for c in info.classes] == pytest.approx(info.thresholds)
    page = (run / "report.html").read_text()
    assert "Most confident false positives" in page and "Most confident false negatives" in page and "mAP" in page
    assert f"test {metrics['images']} images in 3 classes" in page  # images, not their labels
    shown = cli("evaluate", "--model", str(run))
    assert "mAP" in shown.stdout and "threshold" in shown.stdout and "confusion" not in shown.stdout


def _labels_by_hand(records, classes, thresholds):
    return [[c for c, p in sorted(((c, next(q["probability"] for q in r["predictions"] if q["class"] == c))
                                   for c in classes), key=lambda cp: -cp[1])
             if p >= thresholds[classes.index(c)]] for r in records]


def test_every_format_carries_the_thresholds_and_every_runtime_predicts_the_labels(multilabel_run, tmp_path):
    optional("executorch", "no executorch: make install installs the test extra")
    optional("ai_edge_litert", "no ai-edge-litert: make install installs the test extra")
    optional("mediapipe", "MediaPipe is in the test extra: .venv/bin/pip install -e '.[test]'")
    from mobilenet.deploy.predictor import Predictor

    run, labels = multilabel_run
    images = [str(labels.parent / "img" / f"{i}.png") for i in range(6)]
    config = json.loads((run / "config.json").read_text())
    files = {}
    for fmt, name in (("onnx", "m.onnx"), ("executorch", "m.pte"), ("litert", "m.tflite"), ("mediapipe", "m.task.tflite")):
        r = cli("export", "--model", str(run), "--format", fmt, "--output", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        files[fmt] = tmp_path / name
    ours = cli("predict", "--model", str(run), "--json", *images)
    assert ours.returncode == 0, ours.stderr
    expected = json.loads(ours.stdout)["predictions"]
    assert [r["labels"] for r in expected] == _labels_by_hand(expected, config["classes"], config["thresholds"])
    for path, runtime in ((files["onnx"], "onnxruntime"), (files["onnx"], "openvino"), (files["executorch"], "executorch"),
                          (files["litert"], "litert"), (files["mediapipe"], "litert")):
        assert Predictor(path, runtime=runtime).info.thresholds == pytest.approx(config["thresholds"]), path
        found = cli("predict", "--model", str(path), "--runtime", runtime, "--json", *images)
        assert found.returncode == 0, found.stderr
        records = json.loads(found.stdout)["predictions"]
        for want, got in zip(expected, records):
            assert [p["probability"] for p in got["predictions"]] == pytest.approx(
                [p["probability"] for p in want["predictions"]], abs=1e-3), (path, runtime)
        assert [r["labels"] for r in records] == _labels_by_hand(records, config["classes"], config["thresholds"])
    onnx = cli("evaluate", "--model", str(files["onnx"]), "--json", "--out", str(tmp_path))
    assert onnx.returncode == 0 and json.loads(onnx.stdout)["mAP"] == pytest.approx(
        json.loads(cli("evaluate", "--model", str(run), "--json").stdout)["mAP"], abs=0.01)


def test_the_int8_check_compares_map(multilabel_run):
    from mobilenet.deploy.exporter import _compare_int8
    from mobilenet.report.evaluation import torch_logits
    from mobilenet.run.folder import load_model

    run, _ = multilabel_run
    model, info = load_model(run)
    said = []
    run_model = torch_logits(model)

    def logits(x):  # the check hands each model numpy batches, as the runtimes take them
        return run_model(torch.from_numpy(x))
    found = _compare_int8(logits, logits, 4, 1, info, said.append)
    scores, targets, _ = _scores(run, "test")
    assert found["score"] == "mAP" and found["accuracy_int8"] == pytest.approx(mean_ap(average_precision(scores, targets)))
    assert "test mAP" in said[0] and "same labels" in said[0]


@pytest.mark.fault
def test_a_multi_label_run_killed_in_its_steps_resumes_exactly(tmp_path):
    """kill -9 in a step of epoch 1 and of epoch 2, resumed: the history, the weights and the
    thresholds are the uninterrupted run's."""
    import forked
    from test_interrupts import FAULT, assert_same_run

    labels = painted(tmp_path / "data", 60)  # 34 training images: 5 steps of 8 an epoch

    def command(out):
        again = ("--resume",) if (out / "checkpoint.pt").exists() else ()
        return ["train", "--data", str(labels), "--out", str(out), "--epochs", "3", "--label-smoothing", "0.1",
                "--class-weights", "inverse", *TRAIN[:-6], "--ema", "0.9", *again]

    reference = tmp_path / "reference"
    r = forked.run(command(reference))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "killed"
    for k in (3, 8):  # step 3 of epoch 1 (nothing saved: the next run starts anew); then step 3 of epoch 2
        r = forked.run(["step", "-", str(k), *command(out)], code=FAULT)
        assert r.returncode == -9, r.stderr
    r = forked.run(command(out))
    assert r.returncode == 0 and "resuming" in r.stdout, r.stderr
    assert_same_run(out, reference)
    thresholds = [json.loads((p / "config.json").read_text())["thresholds"] for p in (out, reference)]
    assert thresholds[0] == thresholds[1] and thresholds[0] != [0.5] * 3


def test_a_multi_label_run_without_a_validation_split_resumes_with_thresholds_of_one_half(tmp_path):
    labels = painted(tmp_path / "data", 12)
    args = ("train", "--data", str(labels), "--out", str(tmp_path / "run"), *TRAIN[:6], *TRAIN[8:])
    for epochs, more in (("1", ()), ("2", ("--resume",))):
        r = cli(*args, "--epochs", epochs, *more)
        assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["thresholds"] == [0.5] * 3


@pytest.mark.fault
@pytest.mark.parametrize("args, said", [
    (("--task", "multi-label"), "--task multi-label needs a label file"),
    (("--select-by", "balanced-accuracy", "--val-split", "0.25"), "--select-by balanced-accuracy cannot score a "
                                                                  "multi-label run"),
    (("--sampler", "balanced"), "--sampler balanced draws by an image's one class"),
    (("--task", "single-label"), "gives some images several labels; train them with --task multi-label"),
])
def test_what_a_multi_label_run_cannot_take_is_one_line(tmp_path, args, said):
    labels = painted(tmp_path / "data", 12)
    data = () if args[:2] == ("--task", "multi-label") else ("--data", str(labels))
    r = cli("train", *data, "--out", str(tmp_path / "run"), "--epochs", "1", "--resolution", "32", "--width", "0.25",
            "--batch-size", "4", "--workers", "0", *args)
    assert r.returncode != 0 and said in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_multi_label_sweep_picks_on_validation_map(tmp_path):
    labels = painted(tmp_path / "data", 48)
    out = tmp_path / "sweep"
    r = cli("sweep", "--data", str(labels), "--out", str(out), "--widths", "0.25,0.125", "--resolutions", "32",
            "--epochs", "2", "--seconds", "0.02", *TRAIN[4:])  # the run's options but α and ρ
    assert r.returncode == 0, r.stderr
    points = {p: json.loads((out / p / "sweep_point.json").read_text()) for p in ("a0.25-r32", "a0.125-r32")}
    for name, point in points.items():
        kept = next(row for row in csv.DictReader(open(out / name / "history.csv"))
                    if int(row["epoch"]) == point["kept_epoch"])
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert point["score"] == "mAP" and point["val_acc"] == pytest.approx(float(kept["val_map"]))
        assert point["test_acc"] == pytest.approx(metrics["mAP"])
    best = max(points.values(), key=lambda p: (p["val_acc"], -p["mult_adds"]))
    assert f"picked {best['run']} (validation mAP" in r.stdout and "the best validation mAP" in r.stdout
