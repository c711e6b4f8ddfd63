"""GPU checks: they run where CUDA is available and skip cleanly elsewhere."""

import json

import pytest
import torch

from mobilenet.training import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def test_cuda_training_with_mixed_precision(fake_fashion, tmp_path):
    out = tmp_path / "run"
    summary = train(TrainConfig(epochs=2, width_mult=0.25, resolution=32, batch_size=32, device="cuda",
                                out=str(out)), log=lambda _: None)
    assert summary["epochs"] == 2 and summary["final_test_loss"] == summary["final_test_loss"]  # not NaN
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2
    assert json.loads((out / "config.json").read_text())["model"]["num_classes"] == 10
    # resumable on the same device
    train(TrainConfig(epochs=3, out=str(out), device="cuda"), resume=True, log=lambda _: None)
