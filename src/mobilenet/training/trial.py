"""`--augment auto` for a folder: the trial that picks its augmentation preset (augment.py
says how the choice is made). Nothing here sees the test split."""

from __future__ import annotations

import time
from itertools import islice

import torch

from ..data.augment import PHOTO_SIDE, PRESETS, choose, family, kept_share, mild, trial_steps
from ..data.images import short_side
from ..net.model import MobileNetV1
from ..report.evaluation import torch_logits
from ..report.metrics import evaluate_batches
from ..seeds import TRIAL_MODEL, mix, stratified_split
from .step import Learner, train_step

VAL_SHARE = 0.15  # of the training images held out for the trial when there is no --val-split
MAX_VAL = 2000  # held-out images the trial scores each preset on, at most
MIN_VAL_PER_CLASS = 3
BN_BATCHES = 8  # batches of training images that recount BatchNorm's statistics after the trial
PASSES = 1  # augmented passes over the validation images per preset
LR_FACTOR = 2  # the trial's peak learning rate, of the run's: one short cycle learns more with it
SIZE_SAMPLE = 32  # training images whose headers give the folder's median short side


def run_trial(source, seed: int, model_config, lr: float, batch_size: int, run_steps: int, device, amp=None) -> dict:
    """config.json's "augment" record for a folder trained with --augment auto (a FolderSource
    of --seed `seed`): {"preset", "chosen_by": "trial" or "fallback", "reason" or "trial": its figures}."""
    began = time.perf_counter()
    train, val = source.samples
    side = _median_short_side(train)
    if source.multi_label:
        return _fallback(side, "no trial, which scores one class per image, for images with several labels")
    train, val = _trial_split(train, val, seed)
    per_class = min((sum(1 for _, label in val if label == c) for c in range(len(source.classes))), default=0)
    if per_class < MIN_VAL_PER_CLASS:
        return _fallback(side, f"too few training images for a validation split ({MIN_VAL_PER_CLASS} of each class)")
    steps = trial_steps(run_steps)
    workers = None if side >= PHOTO_SIDE else 0  # the source's own; small images decode faster than workers start
    model = _train_trial_model(source, train, mix(seed, TRIAL_MODEL), model_config, LR_FACTOR * lr, batch_size, steps,
                               mild(side), workers, device, amp)
    accuracy = {p: _accuracy(source, model, val, p, batch_size, workers, device, amp) for p in PRESETS}
    clean, chance = accuracy["none"], 1 / len(source.classes)
    figures = {"short_side": side, "candidates": list(family(side)), "steps": steps, "train_images": len(train),
               "val_images": len(val), "val_accuracy": accuracy,
               "kept": {p: kept_share(clean, accuracy[p], len(source.classes)) for p in PRESETS[1:]},
               "seconds": time.perf_counter() - began}
    if clean < chance + 0.3 * (1 - chance):
        record = _fallback(side, f"the trial model learned too little to judge ({100 * clean:.1f}% on held-out images)")
        return {**record, "trial": figures}
    return {"preset": choose(accuracy, clean, len(source.classes), family(side)), "chosen_by": "trial",
            "trial": figures}


def _fallback(side: float, reason: str) -> dict:
    return {"preset": mild(side), "chosen_by": "fallback", "reason": reason}


def _median_short_side(samples) -> float:
    """The median short side of up to SIZE_SAMPLE evenly spread training images (headers only)."""
    step = max(1, len(samples) // SIZE_SAMPLE)
    sides = sorted(s for s in (short_side(path) for path, _ in samples[::step][:SIZE_SAMPLE]) if s)
    return float(sides[len(sides) // 2]) if sides else 0.0


def _trial_split(train: list, val: list | None, seed: int) -> tuple[list, list]:
    """The user's validation split (`val`) when there is one; else VAL_SHARE of the training images."""
    if val is None and len(train) < 2:
        return train, []
    if val is None:
        train, val = stratified_split(train, VAL_SHARE, seed, "trial")
    if len(val) > MAX_VAL:  # a big folder's trial is scored on a stratified subset
        val = stratified_split(val, MAX_VAL / len(val), seed, "trial subset")[1]
    return train, val


def _train_trial_model(source, samples, seed: int, model_config, lr, batch_size, steps, preset, workers, device,
                       amp) -> MobileNetV1:
    """A fresh model, initialised from `seed`, trained `steps` steps with `preset` (one-cycle
    learning rate)."""
    torch.manual_seed(seed)
    model = MobileNetV1.from_config(model_config).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    # The GradScaler off: the trial has always stepped without loss scaling, fp16 included.
    learner = Learner(model, model, optimizer, schedule, torch.amp.GradScaler("cuda", enabled=False), amp=amp)
    done, epoch = 0, 0
    while done < steps:
        for batch in source.sample_batches(samples, preset, batch_size, epoch, shuffle=True, workers=workers):
            if done == steps:
                break
            if len(batch.labels) < 2:  # BatchNorm needs two
                continue
            train_step(learner, batch.images.to(device, memory_format=torch.channels_last), batch.labels.to(device))
            schedule.step()
            done += 1
        epoch += 1
    # A few dozen steps move the weights faster than BatchNorm's running statistics follow
    # (34 steps on digits: 46% in training mode, 10% in eval mode); recount them.
    recount = islice(source.sample_batches(samples, "none", batch_size, shuffle=True, workers=workers), BN_BATCHES)
    images = (b.images.to(device, memory_format=torch.channels_last) for b in recount if len(b.labels) >= 2)
    torch.optim.swa_utils.update_bn(images, model)
    return model.eval()


def _accuracy(source, model, samples, preset, batch_size, workers, device, amp) -> float:
    """The model's top-1 on the samples with `preset`'s augmentation (PASSES seeded passes)."""
    passes = 1 if preset == "none" else PASSES
    batches = (b for epoch in range(passes)
               for b in source.sample_batches(samples, preset, batch_size, epoch, workers=workers))
    found = evaluate_batches([torch_logits(model, device, amp)], batches, len(source.classes), desc="trial",
                             confusion=False)
    return found["metrics"][0].top1
