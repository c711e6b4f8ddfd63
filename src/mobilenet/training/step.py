"""One training step, for the run (loop.py) and for --augment auto's trial (trial.py):
forward under autocast, the loss (loss_of), backward through the GradScaler, the optimizer, the EMA."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import MobileNetError
from .ema import EMA

ACTIVATION_BYTES = 8  # per element of every layer's output: autograd keeps the conv's and the (in-place) ReLU's


@dataclass
class Learner:
    """What a step moves: the module we save, what runs it (the module, or its DDP or compiled
    wrapper), the optimizer and its schedule, the GradScaler, the EMA and the autocast dtype."""
    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    ema: EMA | None = None
    amp: torch.dtype | None = None  # None: float32
    class_weights: torch.Tensor | None = None  # --class-weights, on the device; None: every image counts alike

    def state_dict(self) -> dict:
        """The checkpoint's part that resumes the step exactly."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def train_step(learner: Learner, x: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0):
    """One optimizer step on images x (on the device) and labels y; the loss and the logits,
    left on the device. The schedule is stepped by the caller."""
    with torch.autocast(x.device.type, dtype=learner.amp, enabled=learner.amp is not None):
        logits = learner.net(x)
    loss = loss_of(logits.float(), y, learner.class_weights, label_smoothing)
    learner.optimizer.zero_grad(set_to_none=True)
    learner.scaler.scale(loss).backward()
    learner.scaler.step(learner.optimizer)
    learner.scaler.update()
    if learner.ema is not None:
        learner.ema.update()
    return loss, logits


def loss_of(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, smoothing: float) -> torch.Tensor:
    """Cross-entropy over one class per image (y: class indices; weights per class), or with
    several labels per image (y: 0/1 per class) binary cross-entropy per class, averaged
    (weights: each class's pos_weight; smoothing moves the targets towards ½)."""
    if y.dim() == 1:
        return F.cross_entropy(logits, y, weight=weights, label_smoothing=smoothing)
    return F.binary_cross_entropy_with_logits(logits, y * (1 - smoothing) + smoothing / 2, pos_weight=weights)


def hits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A batch's right answers, on its device: images whose top class is theirs, or with
    several labels per image, each image's share of classes decided right at ½."""
    if y.dim() == 1:
        return (logits.argmax(1) == y).sum()
    return ((logits > 0) == (y > 0.5)).float().mean(1).sum()


@contextmanager
def out_of_memory(batch_size: int, device: torch.device):
    """A failed allocation in a step is one line naming --batch-size (torch.OutOfMemoryError
    on a GPU; on the CPU a RuntimeError from the allocator)."""
    try:
        yield
    except RuntimeError as e:
        if not isinstance(e, torch.OutOfMemoryError) and "allocate" not in str(e):
            raise
        raise MobileNetError(f"out of memory in a step of --batch-size {batch_size} on {device.type}; "
                             "use a smaller --batch-size") from None


def check_batch_memory(batch_size: int, model_config, images: int, device: torch.device) -> None:
    """One clear line for a batch whose activations (Table 1's shapes, the least a step
    keeps for its backward pass) exceed the machine's memory, before anything is allocated."""
    if device.type != "cpu" or not hasattr(os, "sysconf"):
        return  # a GPU's limit is met in the step (out_of_memory)
    from ..net.cost import layer_costs

    per_image = ACTIVATION_BYTES * sum(math.prod(layer.output_shape) for layer in layer_costs(model_config))
    need, have = per_image * min(batch_size, images), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise MobileNetError(f"--batch-size {batch_size}: one step needs at least {need / 1e9:,.0f} GB here, the machine "
                             f"has {have / 1e9:,.0f} GB; use --batch-size {max(2, int(have / 2 / per_image))} or less")
