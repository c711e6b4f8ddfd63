"""One pass over a model folder's test split: metrics.json's figures and the most confident
mistakes. The page and evaluate share it, so both report the same numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MobileNetError
from ..limits import EVAL_BATCH_SIZE
from ..net.cost import eval_batch_size
from ..progress import bar
from ..run.folder import load_checkpoint
from ..run.info import ModelInfo
from ..run.names import CHECKPOINT
from .metrics import Metrics
from .multilabel import LabelScores

WRONG, RIGHT = 16, 4  # confidently wrong test images shown, and confidently right ones for contrast


def checkpoint_state(model_dir: Path) -> dict:
    """The run's checkpoint (recipe, history, kept epoch, machine), or {} for a folder without one."""
    path = model_dir / CHECKPOINT
    try:
        return load_checkpoint(path) if path.is_file() else {}
    except MobileNetError:  # not ours, or damaged: the card says what it cannot know
        return {}


def open_data(info: ModelInfo, state: dict, data: str | None, workers: int | None = None):
    """The data set split as it was trained: the same seed, test split, limit and validation split."""
    cfg = state.get("train_config", {})
    return info.open_data(data, workers, cfg.get("limit"), cfg.get("val_split"))


def scan(model, source, info: ModelInfo, name: str) -> tuple[dict, dict]:
    """One pass over the test split: metrics.json's figures, and the most confidently wrong
    and right images (prepared tensors) with their labels, predictions and probabilities;
    for a multi-label model, the most confident false positives and false negatives."""
    if info.multi_label:
        found, kept = LabelScores(len(info.classes), info.thresholds), {"false positives": [], "false negatives": []}
    else:
        found, kept = Metrics(len(info.classes)), {"wrong": [], "right": []}
    bad = []
    with torch.inference_mode(), bar(total=source.num_test, desc="evaluate", unit="img") as shown:
        for batch in source.test_batches(eval_batch_size(info.model, EVAL_BATCH_SIZE)):
            images, labels, bad_files = batch
            bad += bad_files
            shown.update(len(labels) + len(bad_files))
            if not len(labels):
                continue
            model = model.to(images.device)
            z = model(images.contiguous(memory_format=torch.channels_last)).float()
            y = torch.as_tensor(labels, device=z.device)
            found.add(z.cpu().numpy(), y.cpu().numpy())
            if info.multi_label:
                _keep_labels(kept, images, y > 0.5, torch.sigmoid(z), info.thresholds)
            else:
                _keep(kept, images, y, torch.softmax(z, 1))
    metrics = found.report(info.classes, str(name), bad, getattr(source, "skipped", 0))
    return metrics, kept


def _keep(kept: dict, images, labels, probs) -> None:
    """Merge this batch's most confident wrong and right answers into `kept`."""
    confidence, predicted = probs.max(1)
    for name, mask, count in (("wrong", predicted != labels, WRONG), ("right", predicted == labels, RIGHT)):
        index = mask.nonzero()[:, 0]
        index = index[confidence[index].argsort(descending=True)[:count]]
        kept[name] += [{"image": images[i].cpu(), "label": int(labels[i]), "predicted": int(predicted[i]),
                        "p": float(confidence[i]), "p_true": float(probs[i, labels[i]])} for i in index]
        kept[name] = sorted(kept[name], key=lambda e: -e["p"])[:count]


def _keep_labels(kept: dict, images, targets, probs, thresholds) -> None:
    """Merge this batch's most confident mistakes of a multi-label model into `kept`: labels
    given that the image does not hold (ranked by their score) and labels it holds that were
    not given (ranked by 1 − their score)."""
    given = probs >= torch.as_tensor(thresholds, dtype=probs.dtype, device=probs.device)
    for name, mask, confidence in (("false positives", given & ~targets, probs),
                                   ("false negatives", ~given & targets, 1 - probs)):
        where = mask.nonzero()
        where = where[confidence[where[:, 0], where[:, 1]].argsort(descending=True)[:WRONG]]
        kept[name] += [{"image": images[i].cpu(), "label": int(c), "predicted": int(c), "p": float(probs[i, c]),
                        "confidence": float(confidence[i, c]), "threshold": float(thresholds[c]),
                        "labels": targets[i].nonzero()[:, 0].tolist()} for i, c in where.tolist()]
        kept[name] = sorted(kept[name], key=lambda e: -e["confidence"])[:WRONG]
