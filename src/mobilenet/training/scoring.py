"""An epoch's scores: the model's and the EMA's on the test images, and the kept model's on
the validation images, through metrics.evaluate_batches and all-reduced under torchrun."""

from __future__ import annotations

import numpy as np

from ..errors import MobileNetError
from ..report.evaluation import torch_logits
from ..report.metrics import Metrics, evaluate_batches
from ..report.multilabel import DEFAULT_THRESHOLD, LabelScores, choose_thresholds, scores_at


def score_epoch(learner, eval_models: list, source, batch_size: int, dist, device, stop) -> dict:
    """Test loss and accuracy of the model (and the EMA), and validation's (_validate). Under
    torchrun each process takes a disjoint share and the sums are all-reduced, so every test
    image counts once. `stop()` true ends the test pass between two batches (EvaluationStopped).
    eval_models: what runs the model, then the EMA (compiled with --compile)."""
    modules = [learner.model] + ([learner.ema.module] if learner.ema is not None else [])
    dist.share_buffers(*modules)  # _validate, after this, scores the same weights
    for model in modules:
        model.eval()
    batches = source.test_batches(batch_size, dist.rank, dist.world)
    logits = [torch_logits(m, device, learner.amp) for m in eval_models]
    several = source.multi_label
    found = evaluate_batches(logits, batches, len(source.classes), stop=stop, desc="test", confusion=False,
                             thresholds=default_thresholds(source))
    metrics = [_all(m, dist) for m in found["metrics"]]
    if not metrics[0].images:
        raise MobileNetError(f"the test split of {source.name} has no readable images")
    ema = metrics[1] if len(metrics) > 1 else None
    return {"test_loss": metrics[0].loss, "test_acc": metrics[0].top1, "bad": found["bad_files"],
            "ema_test_loss": ema.loss if ema else None, "ema_test_acc": ema.top1 if ema else None,
            "test_map": metrics[0].map if several else None, "ema_test_map": ema.map if ema and several else None,
            "bad_count": int(dist.sum(len(found["bad_files"]))[0]), **_validate(source, logits[-1], batch_size, dist)}


def default_thresholds(source) -> list[float] | None:
    """A multi-label source's thresholds before validation has chosen any; None for one class per image."""
    return [DEFAULT_THRESHOLD] * len(source.classes) if source.multi_label else None


def _all(metrics, dist):
    """One process's Metrics (or LabelScores), made every process's."""
    if isinstance(metrics, Metrics):
        return Metrics(metrics.num_classes, False).from_list(dist.sum(*metrics.to_list()))
    rows = dist.gather(np.concatenate([metrics.scores, metrics.targets], 1))
    return LabelScores(metrics.num_classes).merge(rows[:, :metrics.num_classes], rows[:, metrics.num_classes:],
                                                  dist.sum(metrics.loss_sum)[0])


def _validate(source, logits, batch_size: int, dist) -> dict:
    """The kept model's (the EMA's with --ema) loss, accuracy, balanced accuracy and macro F1
    on the validation images, which alone choose the epoch to keep; None without --val-split.
    With several labels per image: mAP, and the thresholds chosen on them (multilabel.py),
    at which the accuracy and macro F1 are taken; the default ones without --val-split."""
    if not source.num_val:
        return {"val_loss": None, "val_acc": None, "val_balanced_acc": None, "val_macro_f1": None, "val_map": None,
                "thresholds": default_thresholds(source)}
    batches = source.val_batches(batch_size, dist.rank, dist.world)
    found = evaluate_batches([logits], batches, len(source.classes), desc="val", confusion=False,
                             thresholds=default_thresholds(source))
    metrics = _all(found["metrics"][0], dist)
    if source.multi_label:
        metrics.thresholds = choose_thresholds(metrics.scores, metrics.targets)
        at = scores_at(metrics.scores, metrics.targets, metrics.thresholds)
        return {"val_loss": metrics.loss, "val_acc": at["label_accuracy"], "val_balanced_acc": None,
                "val_macro_f1": at["macro_f1"], "val_map": metrics.map, "thresholds": metrics.thresholds}
    means = metrics.class_means()
    return {"val_loss": metrics.loss, "val_acc": metrics.top1, "val_balanced_acc": means["balanced_accuracy"],
            "val_macro_f1": means["macro_f1"], "val_map": None, "thresholds": None}
