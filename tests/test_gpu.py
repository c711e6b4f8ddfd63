"""GPU checks: they run where CUDA is available and skip cleanly elsewhere."""

import json

import pytest
import torch

from mobilenet.training.loop import TrainConfig, train

from conftest import history

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def test_cuda_training_with_mixed_precision(fake_fashion, tmp_path):
    """Every conv runs under autocast (bfloat16 where the GPU has it, else float16), in the
    steps and in evaluation; the run resumes on the same device and finishes."""
    out = tmp_path / "run"
    dtypes = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: dtypes.add(output.dtype) if isinstance(module, torch.nn.Conv2d) else None)
    try:
        summary = train(TrainConfig(epochs=2, width_mult=0.25, resolution=32, batch_size=32, device="cuda",
                                    out=str(out)), log=lambda _: None)
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16}
    assert summary["epochs"] == 2 and summary["final_test_loss"] == summary["final_test_loss"]  # not NaN
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2
    assert json.loads((out / "config.json").read_text())["model"]["num_classes"] == 10
    # resumable on the same device: one more epoch, the two before kept
    first = history(out)
    resumed = train(TrainConfig(epochs=3, out=str(out), device="cuda"), resume=True, log=lambda _: None)
    assert resumed["epochs"] == 3 and resumed["final_test_loss"] == resumed["final_test_loss"]
    assert history(out)[:2] == first and [r["epoch"] for r in history(out)] == ["1", "2", "3"]
    assert torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"] == 3
