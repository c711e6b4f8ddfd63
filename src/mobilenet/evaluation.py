"""Evaluating a trained model folder on its test split. The loop itself is
metrics.evaluate_batches; the folder is run_folder's; predicting is predictor.Predictor's."""

from __future__ import annotations

import torch

from .config import EVAL_BATCH_SIZE
from .files import atomic_write_json, make_dir
from .metrics import evaluate_batches
from .plots import plot_confusion
from .run_folder import load_model


def torch_logits(model: torch.nn.Module, device: torch.device | str = "cpu", amp: torch.dtype | None = None):
    """A model as evaluate_batches wants it: a batch of images in, numpy logits out
    (under autocast to `amp` when given, as training runs on a GPU)."""
    device = torch.device(device)

    def run(images: torch.Tensor):
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return model(images.to(device, memory_format=torch.channels_last)).float().cpu().numpy()
    return run


def evaluate(model_dir, data: str | None = None, out=None, batch_size: int = EVAL_BATCH_SIZE,
             workers: int | None = None) -> dict:
    """Top-1, top-5 and per-class accuracy on the test split of the model's data set (or
    `data`); writes metrics.json and confusion_matrix.png into `out` (default model_dir)."""
    model, info = load_model(model_dir)
    data = data or info.data_name
    source = info.open_data(data, workers)
    found = evaluate_batches([torch_logits(model)], source.test_batches(batch_size), len(info.classes),
                             total=source.num_test)
    metrics = found["metrics"][0].report(info.classes, str(data), found["bad_files"], getattr(source, "skipped", 0))
    out = make_dir(out or model_dir)
    atomic_write_json(out / "metrics.json", metrics)
    plot_confusion(metrics["confusion_matrix"], info.classes, out / "confusion_matrix.png")
    return metrics
