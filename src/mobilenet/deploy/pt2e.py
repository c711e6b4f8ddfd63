"""PT2E's first half, shared by ExecuTorch's int8 and LiteRT's: a torch.export module
prepared for a quantizer and calibrated. Each format brings its own quantizer."""

from __future__ import annotations

import torch
from torch import nn

from ..progress import bar
from .native import quiet_stderr

CALIBRATION_BATCH = 32


def calibrated(module: nn.Module, quantizer, calibration: torch.Tensor) -> nn.Module:
    """`module` (torch.export's) prepared for `quantizer`, its observers run on `calibration`
    CALIBRATION_BATCH images at a time."""
    with quiet_stderr():  # torchao logs a torch deprecation line as it is imported
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    observed = prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for chunk in bar(calibration.split(CALIBRATION_BATCH), desc="int8: calibration"):
            observed(chunk)
    return observed
