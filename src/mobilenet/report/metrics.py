"""The one evaluation loop and its metrics: top-1, top-5, loss, per-class accuracy and the
confusion matrix, streamed batch by batch. numpy only, no torch: training, `evaluate`
(torch or ONNX Runtime), export's int8 check and the deployed path all use it."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ..errors import MobileNetError
from ..progress import bar
from .multilabel import LabelScores

MAX_CONFUSION_CLASSES = 10_000  # an int64 classes × classes matrix: 800 MB


def check_scores(scores, num_classes: int, name) -> None:
    """An exported file's output must be one score per class per image: a file whose output
    is wider than its class list is someone else's, and its scores would name no class."""
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise MobileNetError(f"{name} gives {tuple(scores.shape[1:])} scores per image for {num_classes} classes; "
                             "re-export it")
    check_finite(scores, name)


def check_finite(scores, name) -> None:
    """NaN or infinite scores are damaged weights: no class to name, and not JSON."""
    if not np.isfinite(scores).all():
        raise MobileNetError(f"{name} gives scores that are not finite (NaN or infinity): its weights are damaged; "
                             "retrain or re-export it")


class EvaluationStopped(Exception):
    """`stop()` asked the loop to end before the next batch (a signal during training)."""


class Metrics:
    """Sums over the batches seen: images, correct, top-5 hits, the summed loss, each class's
    hits, images and predictions, and (when asked: it grows with classes²) the confusion matrix."""

    def __init__(self, num_classes: int, confusion: bool = True):
        if confusion and num_classes > MAX_CONFUSION_CLASSES:
            raise MobileNetError(f"a confusion matrix of {num_classes:,} classes would take "
                                 f"{8 * num_classes ** 2 / 1e9:,.1f} GB; evaluation takes at most "
                                 f"{MAX_CONFUSION_CLASSES:,} classes")
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.int64) if confusion else None
        self.images = self.correct = self.top5_hits = 0
        self.loss_sum = 0.0
        self.per_class = np.zeros((3, num_classes), np.int64)  # hits, support (true labels), predicted

    def add(self, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Count one batch; returns its top-1 predictions."""
        z, n = np.asarray(logits, np.float64), self.num_classes
        if labels.min() < 0 or labels.max() >= z.shape[1]:
            raise MobileNetError(f"labels run to {labels.max()}, beyond the model's {z.shape[1]} classes; "
                                 "evaluate on the data the model was trained on")
        top1 = z.argmax(1)
        if self.confusion is not None:
            np.add.at(self.confusion, (labels, top1), 1)
        self.images, self.correct = self.images + len(labels), self.correct + int((top1 == labels).sum())
        for row, found in enumerate((labels[top1 == labels], labels, top1)):
            self.per_class[row] += np.bincount(found, minlength=n)
        self.top5_hits += int((np.argsort(-z, axis=1, kind="stable")[:, :min(5, n)] == labels[:, None]).any(1).sum())
        log_probs = z - z.max(1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
        self.loss_sum -= float(log_probs[np.arange(len(labels)), labels].sum())
        return top1

    @property
    def top1(self) -> float:
        return self.correct / max(self.images, 1)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    def class_means(self) -> dict:
        """Balanced accuracy and macro F1 (class_means), from the per-class counts."""
        return _means(*self.per_class)

    def to_list(self) -> list[float]:
        """The sums but the confusion matrix, as one list (to add up over processes), and
        back with from_list."""
        return [self.images, self.correct, self.top5_hits, self.loss_sum, *self.per_class.ravel().tolist()]

    def from_list(self, values: list[float]) -> "Metrics":
        self.images, self.correct, self.top5_hits = (int(round(v)) for v in values[:3])
        self.loss_sum = float(values[3])
        self.per_class = np.rint(np.asarray(values[4:], np.float64)).astype(np.int64).reshape(3, self.num_classes)
        return self

    def report(self, classes: list[str], data: str, bad_files=(), skipped: int = 0) -> dict:
        """metrics.json's content (needs the confusion matrix); `skipped` counts the folder's
        entries left out unread (links that leave it, names that are no regular file)."""
        if not self.images:
            raise MobileNetError(f"the test split of {data} has no readable images")
        scores = class_scores(self.confusion)
        return {"data": data, "images": self.images, "top1": self.top1, "top5": self.top5_hits / self.images,
                "loss": self.loss, **class_means(self.confusion),
                "per_class": {c: s["recall"] for c, s in zip(classes, scores)},
                "per_class_scores": dict(zip(classes, scores)),
                "confusion_matrix": self.confusion.tolist(), "bad_files": list(bad_files), "skipped": skipped}


def class_means(confusion: np.ndarray) -> dict:
    """Accuracy that every class weighs alike, as scikit-learn computes it: balanced accuracy,
    the mean recall over the classes with test images; macro F1, the mean F1 over the classes
    that have test images or were predicted."""
    return _means(confusion.diagonal(), confusion.sum(1), confusion.sum(0))


def _means(hits, support, predicted) -> dict:
    scores = _scores(hits, support, predicted)
    seen = [s for s, n in zip(scores, support) if n]
    named = [s for s, n, p in zip(scores, support, predicted) if n or p]
    return {"balanced_accuracy": float(np.mean([s["recall"] for s in seen])) if seen else 0.0,
            "macro_f1": float(np.mean([s["f1"] for s in named])) if named else 0.0}


def class_scores(confusion: np.ndarray) -> list[dict]:
    """Each class's precision, recall, F1 and support from a [true, predicted] confusion
    matrix; a score whose count is 0 is 0, as scikit-learn's zero_division=0 gives it."""
    return _scores(confusion.diagonal(), confusion.sum(1), confusion.sum(0))


def _scores(hits, support, predicted) -> list[dict]:
    hits = np.asarray(hits, np.float64)
    precision, recall = hits / np.maximum(predicted, 1), hits / np.maximum(support, 1)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for p, r, f, s in zip(precision, recall, f1, support)]


def evaluate_batches(models: list[Callable], batches: Iterable, num_classes: int, total: int | None = None,
                     stop: Callable[[], bool] | None = None, desc: str = "evaluate", confusion: bool = True,
                     thresholds: list[float] | None = None) -> dict:
    """Run each batch (images, labels, bad files) through each model (a function from a
    batch of images to numpy logits). Returns {"metrics": one Metrics per model (with
    `thresholds`, a multi-label model's: one multilabel.LabelScores), "bad_files",
    "agreement": the share of images where the last model's answer (top-1, or labels given)
    equals the first's}. `stop()` is asked before each batch; when it says so,
    EvaluationStopped is raised."""
    metrics = [Metrics(num_classes, confusion) if thresholds is None else LabelScores(num_classes, thresholds)
               for _ in models]
    bad, agree = [], 0
    with bar(total=total, desc=desc, unit="img") as shown:
        for images, labels, bad_files in batches:
            if stop and stop():
                raise EvaluationStopped
            bad += bad_files
            labels = np.asarray(labels, np.int64 if thresholds is None else np.float64)
            shown.update(len(labels) + len(bad_files))
            if not len(labels):
                continue
            top1 = [m.add(model(images), labels) for m, model in zip(metrics, models)]
            agree += int((top1[0] == top1[-1]).reshape(len(labels), -1).all(1).sum())
    return {"metrics": metrics, "bad_files": bad, "agreement": agree / max(metrics[0].images, 1)}
