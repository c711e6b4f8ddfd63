"""--ema: the exponential moving average of the model's weights, swa_utils' AveragedModel with
TF's warm-up, its count of updates kept on the host so that a step never waits for the device."""

from __future__ import annotations

import numpy as np
import torch


def ema_with_warmup(decay: float):
    """swa_utils' EMA update, with decay min(decay, (1 + n) / (10 + n)) after n updates (as TF's
    ExponentialMovingAverage with num_updates): a short run's EMA is not stuck near the initial weights."""
    @torch.no_grad()
    def update(ema_params, params, n):
        if torch.is_floating_point(ema_params[0]):
            f = np.float32  # float32 arithmetic, as the averaging has always used: an older run resumes as it began
            torch._foreach_lerp_(ema_params, params, float(f(1) - min(f(1 + int(n)) / f(10 + int(n)), f(decay))))
        else:  # BN's num_batches_tracked: a count, not averaged
            torch._foreach_copy_(ema_params, params)
    return update


class EMA:
    """The averaged weights of `model`. BN's running statistics are averaged too (use_buffers),
    so the EMA evaluates as it is; `module` is the averaged model."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = model
        self.averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)
        self.updates = 0  # on the host; averaged.n_averaged is the checkpoint's copy

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    @torch.no_grad()
    def update(self) -> None:
        """AveragedModel.update_parameters, less its host sync: on a GPU it copies its count
        n_averaged (a CPU tensor) to the device with a blocking copy every step. Here the count
        is self.updates on the host, and only the averaging runs on the device."""
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*self.model.parameters(), *self.model.buffers()]
        if self.updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            for floating in (True, False):
                pairs = [(a, c) for a, c in zip(averaged, current, strict=True) if torch.is_floating_point(a) == floating]
                if pairs:
                    self.averaged.multi_avg_fn(*map(list, zip(*pairs)), self.updates)
        self.updates += 1
        self.averaged.n_averaged.fill_(self.updates)

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
        self.updates = int(self.averaged.n_averaged)
