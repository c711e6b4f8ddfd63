"""An epoch's scores: the model's and the EMA's on the test images, and the kept model's on
the validation images, through metrics.evaluate_batches and all-reduced under torchrun."""

from __future__ import annotations

from ..errors import MobileNetError
from ..report.evaluation import torch_logits
from ..report.metrics import Metrics, evaluate_batches


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
    found = evaluate_batches(logits, batches, len(source.classes), stop=stop, desc="test", confusion=False)
    metrics = [Metrics(len(source.classes), False).from_list(dist.sum(*m.to_list())) for m in found["metrics"]]
    if not metrics[0].images:
        raise MobileNetError(f"the test split of {source.name} has no readable images")
    ema = metrics[1] if len(metrics) > 1 else None
    return {"test_loss": metrics[0].loss, "test_acc": metrics[0].top1, "bad": found["bad_files"],
            "ema_test_loss": ema.loss if ema else None, "ema_test_acc": ema.top1 if ema else None,
            "bad_count": int(dist.sum(len(found["bad_files"]))[0]), **_validate(source, logits[-1], batch_size, dist)}


def _validate(source, logits, batch_size: int, dist) -> dict:
    """The kept model's (the EMA's with --ema) loss, accuracy, balanced accuracy and macro F1
    on the validation images, which alone choose the epoch to keep; None without --val-split."""
    if not source.num_val:
        return {"val_loss": None, "val_acc": None, "val_balanced_acc": None, "val_macro_f1": None}
    batches = source.val_batches(batch_size, dist.rank, dist.world)
    found = evaluate_batches([logits], batches, len(source.classes), desc="val", confusion=False)
    metrics = Metrics(len(source.classes), False).from_list(dist.sum(*found["metrics"][0].to_list()))
    means = metrics.class_means()
    return {"val_loss": metrics.loss, "val_acc": metrics.top1, "val_balanced_acc": means["balanced_accuracy"],
            "val_macro_f1": means["macro_f1"]}
