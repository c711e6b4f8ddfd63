"""--class-weights: the weights as written by hand, the loss they give, auto's threshold and
first line, a resume that keeps them bit for bit, and the class-balanced metrics."""

import json

import numpy as np
import pytest
import torch

from conftest import cli, make_fashion_like

from mobilenet.report.metrics import class_means
from mobilenet.training.balance import EFFECTIVE_BETA, class_weights, settled, settled_sampler


def test_each_scheme_gives_the_weights_written_by_hand():
    counts = [100, 10, 1, 0]
    # inverse: 1/n, scaled so that an image's mean weight is 1: 111 / (100/100 + 10/10 + 1/1) = 37
    assert class_weights("inverse", counts) == pytest.approx([0.37, 3.7, 37.0, 0.0])
    raw = [(1 - EFFECTIVE_BETA) / (1 - EFFECTIVE_BETA ** n) for n in counts[:3]]
    scale = 111 / sum(w * n for w, n in zip(raw, counts))
    assert class_weights("effective", counts) == pytest.approx([w * scale for w in raw] + [0.0])
    assert class_weights("none", counts) is None
    assert settled("auto", [51, 10]) == "effective" and settled("auto", [50, 10]) == "none"  # over 5×, not at it
    assert settled("auto", [50, 0, 10]) == "none"  # a class without images is no ratio
    assert settled("effective", [10, 10]) == "effective"
    assert settled_sampler("auto", [51, 10]) == "balanced" and settled_sampler("auto", [50, 10]) == "shuffle"
    assert settled("auto", [51, 10], "balanced") == "none"  # the batches are balanced already
    assert settled("inverse", [51, 10], "balanced") == "inverse" and settled_sampler("shuffle", [51, 10]) == "shuffle"


def test_the_weighted_loss_is_the_one_computed_by_hand():
    """Cross-entropy with class weights: each image's loss times its class's weight, over the
    batch's summed weights."""
    from mobilenet.training.step import Learner, train_step

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    learner = Learner(net, net, torch.optim.SGD(net.parameters(), lr=0.1), None,
                      torch.amp.GradScaler("cpu", enabled=False),
                      class_weights=torch.tensor(class_weights("inverse", [8, 2, 1])))
    x, y = torch.randn(5, 4), torch.tensor([0, 0, 1, 2, 2])
    with torch.no_grad():
        logits = net(x)
    loss, _ = train_step(learner, x, y)
    w = learner.class_weights[y]
    each = -torch.log_softmax(logits, 1)[torch.arange(5), y]
    assert loss.item() == pytest.approx(((w * each).sum() / w.sum()).item(), rel=1e-6)
    assert loss.item() != pytest.approx(each.mean().item(), rel=1e-3)  # the weights changed it


def _imbalanced(tmp_path):
    return {"MOBILENET_FASHION_MNIST": str(make_fashion_like(tmp_path / "data", n_test=40,
                                                             train_counts=[24] * 5 + [4] * 5))}


def test_auto_weights_an_imbalanced_run_says_so_first_and_a_resume_keeps_it(tmp_path):
    """6× between the largest class and the smallest, with the sampler left to shuffle: auto
    turns effective weighting on, the first line says so, the checkpoint holds the settled
    choice, and a run stopped after one epoch and resumed ends with the weights of one that
    never stopped."""
    import os

    env = {**os.environ, **_imbalanced(tmp_path)}
    common = ["--width", "0.25", "--resolution", "32", "--batch-size", "16", "--augment", "none", "--ema", "0",
              "--sampler", "shuffle"]
    whole = cli("train", "--out", str(tmp_path / "whole"), "--epochs", "2", *common, env=env)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.splitlines()[0].startswith("class weights: effective (auto: the largest training class has "
                                                   "6.0× the images of the smallest")
    first = cli("train", "--out", str(tmp_path / "parts"), "--epochs", "1", *common, env=env)
    again = cli("train", "--out", str(tmp_path / "parts"), "--epochs", "2", "--resume", env=env)
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert "class weights: effective" in again.stdout
    weights = [(tmp_path / run / "model.safetensors").read_bytes() for run in ("whole", "parts")]
    assert weights[0] == weights[1]
    state = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    assert state["train_config"]["class_weights"] == "effective"


def test_a_balanced_run_is_not_weighted_and_none_turns_auto_off(fake_fashion, tmp_path):
    import os

    common = ["--epochs", "1", "--width", "0.25", "--resolution", "32", "--batch-size", "32", "--limit", "64"]
    r = cli("train", "--out", str(tmp_path / "a"), *common)
    assert r.returncode == 0 and "class weights" not in r.stdout and "sampler" not in r.stdout, r.stderr
    args = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["train_config"]
    assert (args["sampler"], args["class_weights"]) == ("shuffle", "none")
    env = {**os.environ, **_imbalanced(tmp_path)}
    r = cli("train", "--out", str(tmp_path / "b"), "--class-weights", "none", "--sampler", "shuffle", *common, env=env)
    assert r.returncode == 0 and "class weights" not in r.stdout, r.stderr
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert state["train_config"]["class_weights"] == "none"
    r = cli("train", "--out", str(tmp_path / "c"), "--class-weights", "square", *common)
    assert r.returncode == 2 and "--class-weights" in r.stderr and "Traceback" not in r.stderr


def test_balanced_accuracy_and_macro_f1_as_scikit_learn_defines_them():
    """A 4-class confusion matrix [true, predicted] by hand: class 3 has no test images but is
    predicted once, so it counts in macro F1 (with F1 0) and not in balanced accuracy."""
    confusion = np.array([[8, 2, 0, 0],
                          [1, 3, 0, 1],
                          [0, 1, 1, 0],
                          [0, 0, 0, 0]])
    recall = [8 / 10, 3 / 5, 1 / 2]  # classes 0-2 have test images
    precision = [8 / 9, 3 / 6, 1 / 1, 0.0]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall + [0.0])]
    found = class_means(confusion)
    assert found["balanced_accuracy"] == pytest.approx(sum(recall) / 3)
    assert found["macro_f1"] == pytest.approx(sum(f1) / 4)


def test_metrics_json_and_evaluate_give_both(small_run, tmp_path):
    r = cli("evaluate", "--model", str(small_run[0]), "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert 0 <= found["balanced_accuracy"] <= 1 and 0 <= found["macro_f1"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text())["macro_f1"] == found["macro_f1"]


def test_per_class_counts_give_the_confusions_means_and_add_up_over_shards():
    """Validation under torchrun sums each process's per-class counts (to_list): the sum of
    two shards' must give what one pass over all the images gives."""
    from mobilenet.report.metrics import Metrics

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(300, 6)), rng.integers(0, 5, 300)  # class 5: predicted, never true
    whole, parts = Metrics(6), [Metrics(6, False), Metrics(6, False)]
    whole.add(logits, labels)
    parts[0].add(logits[:120], labels[:120])
    parts[1].add(logits[120:], labels[120:])
    summed = Metrics(6, False).from_list([a + b for a, b in zip(parts[0].to_list(), parts[1].to_list())])
    assert summed.class_means() == pytest.approx(class_means(whole.confusion))
    assert (summed.images, summed.correct) == (whole.images, whole.correct)


def test_the_kept_epoch_is_the_best_by_the_chosen_score():
    from mobilenet.training.state import RunState

    rows = [{"epoch": e, "test_acc": 0.5, "bad_files": 0, "val_acc": acc, "val_balanced_acc": bal,
             "val_macro_f1": f1} for e, (acc, bal, f1) in enumerate([(0.9, 0.5, 0.4), (0.8, 0.7, 0.3),
                                                                    (0.85, 0.6, 0.6)], 1)]
    for column, kept in (("val_acc", 1), ("val_balanced_acc", 2), ("val_macro_f1", 3)):
        state = RunState()
        for row in rows:
            state.add(dict(row), column)
        assert state.kept_epoch == kept and state.best_val == rows[kept - 1][column]


def test_select_by_keeps_the_best_epoch_by_its_score_and_says_which(fake_fashion, tmp_path):
    import csv

    out = tmp_path / "run"
    r = cli("train", "--out", str(out), "--epochs", "3", "--width", "0.25", "--resolution", "32", "--batch-size", "32",
            "--limit", "160", "--val-split", "0.25", "--select-by", "macro-f1", "--augment", "none", "--ema", "0")
    assert r.returncode == 0, r.stderr
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    scores = [float(row["val_macro_f1"]) for row in rows]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    kept = state["kept_epoch"]
    assert kept == scores.index(max(scores)) + 1 and all(0 <= float(row["val_balanced_acc"]) <= 1 for row in rows)
    assert state["best_val"] == pytest.approx(max(scores), abs=1e-6)  # the score chosen by, not top-1
    assert f"(epoch {kept}, chosen by its validation macro F1)" in r.stdout
    assert "the best validation macro F1" in (out / "report.html").read_text()
    bad = cli("train", "--out", str(tmp_path / "b"), "--select-by", "balanced-accuracy")
    assert bad.returncode == 2 and "--select-by balanced-accuracy needs --val-split" in bad.stderr


def test_a_balanced_epoch_draws_every_class_alike_the_same_on_every_rank():
    from mobilenet.data.batches import balanced_weights, epoch_order

    labels = [0] * 10_000 + [1] * 900 + [2] * 100
    weights = balanced_weights(labels, "balanced")
    order = epoch_order(len(labels), 3, 1, 0, 1, weights)
    drawn = np.bincount(np.asarray(labels)[order.numpy()], minlength=3)
    # 11,000 draws of a fair three-way choice: 3,667 each, give or take 6 standard deviations (49)
    assert drawn.sum() == 11_000 and all(abs(n - 11_000 / 3) < 300 for n in drawn)
    assert torch.equal(order, epoch_order(len(labels), 3, 1, 0, 1, weights))  # seeded: a resume draws it again
    assert not torch.equal(order, epoch_order(len(labels), 3, 2, 0, 1, weights))  # each epoch its own
    shares = [epoch_order(len(labels), 3, 1, rank, 2, weights) for rank in (0, 1)]
    assert torch.equal(torch.stack(shares, 1).flatten(), order)  # the ranks take turns through one draw
    assert balanced_weights(labels, "shuffle") is None


def test_auto_samples_an_imbalanced_run_balanced_says_so_first_and_resumes_exactly(tmp_path):
    """6× between the largest class and the smallest: --sampler auto draws balanced epochs,
    the first line says so, class weights stay off, and a resume draws the same."""
    import os

    env = {**os.environ, **_imbalanced(tmp_path)}
    common = ["--width", "0.25", "--resolution", "32", "--batch-size", "16", "--augment", "none", "--ema", "0"]
    whole = cli("train", "--out", str(tmp_path / "whole"), "--epochs", "2", *common, env=env)
    assert whole.returncode == 0 and "class weights" not in whole.stdout, whole.stderr
    assert whole.stdout.splitlines()[0].startswith("sampler: balanced (auto: the largest training class has 6.0× the "
                                                   "images of the smallest")
    first = cli("train", "--out", str(tmp_path / "parts"), "--epochs", "1", *common, env=env)
    again = cli("train", "--out", str(tmp_path / "parts"), "--epochs", "2", "--resume", env=env)
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    weights = [(tmp_path / run / "model.safetensors").read_bytes() for run in ("whole", "parts")]
    assert weights[0] == weights[1]
    args = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["train_config"]
    assert (args["sampler"], args["class_weights"]) == ("balanced", "none")
    shuffled = cli("train", "--out", str(tmp_path / "shuffled"), "--epochs", "2", *common, "--sampler", "shuffle",
                   "--class-weights", "none", env=env)
    assert shuffled.returncode == 0 and (tmp_path / "shuffled" / "model.safetensors").read_bytes() != weights[0]
