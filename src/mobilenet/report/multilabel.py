"""Several labels per image: each class's score is a sigmoid, a label is given when its
score reaches the class's threshold. Average precision (as scikit-learn's
average_precision_score computes it), the thresholds chosen on the validation split,
and the figures at them. numpy only, no torch: evaluate, export's int8 check and the
deployed path use them too."""

from __future__ import annotations

import numpy as np

from ..errors import MobileNetError

DEFAULT_THRESHOLD = 0.5  # a class without validation positives, or a run without --val-split


def sigmoid(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    return np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + e^-z) without overflow


def bce(logits, targets) -> np.ndarray:
    """Each image's binary cross-entropy, averaged over the classes (the training loss, unweighted)."""
    z, y = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
    return (np.logaddexp(0.0, z) - y * z).mean(1)


def _ranked(scores, positives):
    """Per distinct score, highest first: (that score, true positives, false positives) of
    calling every image scored at least that much positive."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positives[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last image of each run of equal scores
    tp = np.cumsum(y)[last]
    return s[last], tp, last + 1 - tp


def average_precision(scores, targets) -> np.ndarray:
    """Each class's AP: Σ (Rₙ − Rₙ₋₁) Pₙ over the distinct scores, highest first, as
    scikit-learn's average_precision_score; NaN for a class without positives."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0.5
    ap = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        positives = targets[:, c].sum()
        if positives:
            _, tp, fp = _ranked(scores[:, c], targets[:, c])
            ap[c] = float(np.sum(np.diff(np.r_[0, tp / positives]) * tp / (tp + fp)))
    return ap


def choose_thresholds(scores, targets) -> list[float]:
    """One threshold per class, the score that gives the best F1 on these images (the
    validation split's), halfway to the next lower score so that a little less still counts;
    DEFAULT_THRESHOLD for a class without positives among them."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0.5
    chosen = []
    for c in range(scores.shape[1]):
        positives = targets[:, c].sum()
        if not positives:
            chosen.append(DEFAULT_THRESHOLD)
            continue
        s, tp, fp = _ranked(scores[:, c], targets[:, c])
        best = int(np.argmax(2 * tp / (tp + fp + positives)))  # F1 = 2TP / (2TP + FP + FN); the first, highest, max
        chosen.append(float((s[best] + s[best + 1]) / 2 if best + 1 < len(s) else s[best]))
    return chosen


def scores_at(scores, targets, thresholds) -> dict:
    """Precision, recall and F1 of each class, micro and macro F1, and label accuracy (the
    share of image × class decisions that are right) at the thresholds; a count of 0 gives 0."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0.5
    given = scores >= np.asarray(thresholds, np.float64)
    tp, fp, fn = ((given & targets).sum(0), (given & ~targets).sum(0), (~given & targets).sum(0))
    precision, recall = tp / np.maximum(tp + fp, 1), tp / np.maximum(tp + fn, 1)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    per_class = [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                 for p, r, f, n in zip(precision, recall, f1, tp + fn)]
    return {"label_accuracy": float((given == targets).mean()) if given.size else 0.0, "micro_f1": float(micro),
            "macro_f1": float(f1.mean()) if len(f1) else 0.0, "per_class": per_class}


def mean_ap(ap) -> float:
    """mAP: the mean AP over the classes with positives (0 when none has)."""
    ap = np.asarray(ap, np.float64)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0


def _joined(parts: list, dtype, num_classes: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, num_classes), dtype)


class LabelScores:
    """Every image's class scores and true labels, kept (average precision ranks them all):
    what a multi-label pass gives evaluate, training's epochs and the export checks. With
    `thresholds` (the model's), the figures at them; otherwise DEFAULT_THRESHOLD."""

    def __init__(self, num_classes: int, thresholds=None):
        self.num_classes = num_classes
        self.thresholds = list(thresholds) if thresholds is not None else [DEFAULT_THRESHOLD] * num_classes
        self._scores, self._targets, self.loss_sum = [], [], 0.0

    def add(self, logits, targets) -> np.ndarray:
        """Count one batch (logits and 0/1 targets, images × classes); returns its labels given (bool)."""
        z, y = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
        if y.ndim != 2 or y.shape[1] != z.shape[1]:
            raise MobileNetError(f"labels for {y.shape[1:]} classes, the model gives {z.shape[1]} scores; "
                                 "evaluate on the data the model was trained on")
        self.loss_sum += float(bce(z, y).sum())
        p = sigmoid(z)
        self._scores.append(p)
        self._targets.append(y > 0.5)
        return p >= np.asarray(self.thresholds)

    @property
    def scores(self) -> np.ndarray:
        self._scores = [_joined(self._scores, np.float64, self.num_classes)]  # joined once, however often read
        return self._scores[0]

    @property
    def targets(self) -> np.ndarray:
        self._targets = [_joined(self._targets, bool, self.num_classes)]
        return self._targets[0]

    @property
    def images(self) -> int:
        return sum(len(s) for s in self._scores)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    @property
    def top1(self) -> float:
        """Label accuracy at the thresholds: the history's accuracy column for a multi-label run."""
        return scores_at(self.scores, self.targets, self.thresholds)["label_accuracy"]

    @property
    def map(self) -> float:
        return mean_ap(average_precision(self.scores, self.targets))

    def merge(self, scores, targets, loss_sum: float) -> "LabelScores":
        """The pass of every process (all gathered): its scores, targets and summed loss."""
        self._scores, self._targets, self.loss_sum = [np.asarray(scores)], [np.asarray(targets) > 0.5], loss_sum
        return self

    def report(self, classes: list[str], data: str, bad_files=(), skipped: int = 0) -> dict:
        """metrics.json's content for a multi-label model."""
        if not self.images:
            raise MobileNetError(f"the test split of {data} has no readable images")
        ap = average_precision(self.scores, self.targets)
        at = scores_at(self.scores, self.targets, self.thresholds)
        return {"data": data, "task": "multi-label", "images": self.images, "mAP": mean_ap(ap), "loss": self.loss,
                "label_accuracy": at["label_accuracy"], "micro_f1": at["micro_f1"], "macro_f1": at["macro_f1"],
                "per_class_ap": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, ap)},
                "per_class_scores": {c: {**s, "threshold": t} for c, s, t in zip(classes, at["per_class"],
                                                                                  self.thresholds)},
                "bad_files": list(bad_files), "skipped": skipped}
