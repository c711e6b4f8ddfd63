"""The run's optimizer, with the paper's rule for weight decay (§3.2), and its per-step
schedule: a linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

import torch

WARMUP_EPOCHS = 1


def make_optimizer(model: torch.nn.Module, kind: str, weight_decay: float, lr: float) -> torch.optim.Optimizer:
    # Very little or no weight decay on the depthwise filters (paper §3.2), none on BN or biases.
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            depthwise = isinstance(module, torch.nn.Conv2d) and module.groups > 1
            (no_decay if p.ndim <= 1 or depthwise else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if kind == "rmsprop":  # TF's RMSprop settings, as the paper trained
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1.0, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def make_schedule(optimizer, steps_per_epoch: int, epochs: int):
    """Linear warm-up over the first epoch, then cosine decay to zero, per step."""
    warmup, total = WARMUP_EPOCHS * steps_per_epoch, epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_peak(scheduler, optimizer, lr: float) -> None:
    """A new --lr on resume: the same schedule, with a new peak."""
    if scheduler.base_lrs[0] != lr:
        scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        for group in optimizer.param_groups:
            group["lr"] = lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
