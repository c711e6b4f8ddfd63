"""Evaluating a trained model folder on its test split: the pass is scan.py's, which the
page shares; torch_logits serves the training loop's own evaluation."""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import PRODUCER, atomic_write_json
from ..run.names import CONFUSION, METRICS, REPORT
from ..run.ownership import refuse_foreign
from .page import report
from .plots import plot_confusion


def torch_logits(model: torch.nn.Module, device: torch.device | str = "cpu", amp: torch.dtype | None = None):
    """A model as evaluate_batches wants it: a batch of images in, numpy logits out
    (under autocast to `amp` when given, as training runs on a GPU)."""
    device = torch.device(device)

    def run(images: torch.Tensor):
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return model(images.to(device, memory_format=torch.channels_last)).float().cpu().numpy()
    return run


def evaluate(model_dir, data: str | None = None, out=None, workers: int | None = None, force: bool = False) -> dict:
    """Top-1, top-5, per-class accuracy, precision, recall and F1 on the test split of the
    model's data set (or `data`): metrics.json, confusion_matrix.png and report.html, from
    one pass (report.report), go into `out` (default model_dir). Files there that mobilenet
    did not write are replaced only with `force`."""
    out = Path(out or model_dir)  # made by report, once the model has loaded
    refuse_foreign([out / METRICS, out / CONFUSION, out / REPORT], "--out", force)
    metrics = report(model_dir, out / REPORT, data=data, workers=workers, log=lambda _: None, force=True)["metrics"]
    atomic_write_json(out / METRICS, {**metrics, "producer": PRODUCER})
    if "confusion_matrix" in metrics:  # one class per image
        plot_confusion(metrics["confusion_matrix"], list(metrics["per_class"]), out / CONFUSION)
    return metrics
