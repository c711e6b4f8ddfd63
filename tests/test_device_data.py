"""GPU-speed training (issue 13), on the CPU: the same code path as `--device cuda`, where
in-memory data live on the device, a step never waits for the host, folders keep their
workers, and `--compile` wraps the steps. The GPU's own figures are benchmarks/."""

import functools
import sys

import pytest
import torch
from safetensors.torch import load_file

from mobilenet.training import loop as training
from mobilenet.training.loop import TrainConfig, train

from conftest import history, make_image_folder

TINY = dict(width_mult=0.25, resolution=32, batch_size=8, augment="flip-shift", random_erasing=0.5, ema=0.9)
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


def _count_reads(monkeypatch) -> list[str]:
    """Patches every way of reading a tensor's value on the host; returns the list that
    collects the name of each one our own code (src/mobilenet) makes, with its caller."""
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kw):
            caller = sys._getframe(1).f_code
            if "/mobilenet/" in caller.co_filename.replace("\\", "/"):
                reads.append(f"{_name} in {caller.co_name}")
            return _original(self, *args, **kw)
        monkeypatch.setattr(torch.Tensor, name, spy)
    return reads


def test_a_training_step_never_reads_a_tensor_on_the_host(fake_fashion, tmp_path, monkeypatch):
    """No .item(), .cpu(), bool() or the like within a step: on a GPU each would wait for
    the device. The sums are read every SYNC_EVERY steps and at the epoch's end only."""
    monkeypatch.setattr(training, "SYNC_EVERY", 4)
    reads, in_step = _count_reads(monkeypatch), []
    real_step = training._step

    def step(*args):
        before = len(reads)
        done = real_step(*args)
        in_step.extend(reads[before:])
        return done
    monkeypatch.setattr(training, "_step", step)
    real_epoch, per_epoch = training._train_one_epoch, []

    def epoch(*args):
        before = len(reads)
        done = real_epoch(*args)
        per_epoch.append(len(reads) - before)
        return done
    monkeypatch.setattr(training, "_train_one_epoch", epoch)
    train(TrainConfig(epochs=1, limit=96, out=str(tmp_path / "run"), **TINY), log=lambda _: None)  # 12 steps
    assert in_step == []
    # every 4th step reads the non-finite flag and the sums, and the epoch's end reads them once more
    assert per_epoch == [2 * (12 // 4) + 2], reads


def test_a_nonfinite_loss_is_found_at_the_next_read_and_nothing_is_saved(fake_fashion, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "SYNC_EVERY", 4)
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, limit=96, out=str(out), **TINY), log=lambda _: None)
    saved = (out / "checkpoint.pt").read_bytes()
    real_step = training._step

    def poisoned(run, epoch, step, batch, sums):
        if step == 5:  # between two reads
            batch.images[:] = float("nan")
        return real_step(run, epoch, step, batch, sums)
    monkeypatch.setattr(training, "_step", poisoned)
    with pytest.raises(training.TrainingStopped, match="epoch 2, step 6: training diverged"):
        train(TrainConfig(epochs=2, out=str(out)), resume=True, log=lambda _: None)
    assert (out / "checkpoint.pt").read_bytes() == saved


def _compile_on_cpu(monkeypatch, calls=None):
    """torch.compile with AOTAutograd's eager backend: the wrapping, the saving and the
    resuming of a compiled run, without minutes of C++ compilation in the suite. Each call
    of a compiled module appends its mode (training or not) to `calls`."""
    real = torch.compile

    def compile_(model, mode=None, **kw):
        compiled = real(model, backend="aot_eager")
        if calls is not None:
            compiled.register_forward_pre_hook(lambda module, _: calls.append(module.training))
        return compiled
    monkeypatch.setattr(torch, "compile", compile_)


def test_a_compiled_run_saves_plain_weights_and_resumes_exactly(fake_fashion, tmp_path, monkeypatch):
    _compile_on_cpu(monkeypatch)
    cfg = functools.partial(TrainConfig, limit=96, compile="on", **TINY)
    whole = train(cfg(epochs=2, out=str(tmp_path / "whole")), log=lambda _: None)
    train(cfg(epochs=1, out=str(tmp_path / "cut")), log=lambda _: None)
    resumed = train(TrainConfig(epochs=2, compile="on", out=str(tmp_path / "cut")), resume=True, log=lambda _: None)
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "cut"))
    assert not any("_orig_mod" in k for k in a)  # the module's own names, as an eager run's
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_compiled_step_is_what_trains(fake_fashion, tmp_path, monkeypatch):
    """--compile runs the steps through torch.compile's module, for training and evaluation."""
    calls = []
    _compile_on_cpu(monkeypatch, calls)
    train(TrainConfig(epochs=1, limit=32, compile="on", out=str(tmp_path / "run"), **TINY), log=lambda _: None)
    assert calls.count(True) == 4 and False in calls  # 4 training steps, then the test images


def _batches(source, epoch):
    return [(b.images, b.labels) for b in source.train_batches(epoch, 4)]


def test_folder_workers_persist_and_still_augment_each_epoch_anew(tmp_path, monkeypatch):
    """Persistent DataLoader workers keep their own copy of the data set, so the epoch
    reaches them with each index: with 2 workers each epoch's batches equal those made
    without workers, and the two epochs differ (in the same order, by augmentation alone)."""
    from mobilenet.data import folder
    from mobilenet.data.folder import FolderSource

    monkeypatch.setattr(folder, "epoch_order", lambda n, *_: torch.arange(n))
    root = make_image_folder(tmp_path / "images", per_class=4, corrupt=False)
    plain, workers = (FolderSource(root, 32, seed=0, workers=n) for n in (0, 2))
    first = _batches(workers, 0)
    pids = {w.pid for w in workers._loaders["train", 4]._iterator._workers}
    second = _batches(workers, 1)
    assert {w.pid for w in workers._loaders["train", 4]._iterator._workers} == pids  # the same processes
    for ours, theirs in ((first, _batches(plain, 0)), (second, _batches(plain, 1))):
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ours, theirs, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second))


# --- on a GPU (skipped without one) ---------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
@pytest.mark.parametrize("compile_mode", ["off", "graphs"])
def test_on_cuda_steps_never_sync_and_the_loss_falls(fake_fashion, tmp_path, monkeypatch, compile_mode):
    """CUDA's own sync detector is set to fail within every step (data on the device,
    augmentation, bf16 forward and backward, optimizer, EMA) after the first epoch, which
    compiles and records the graphs; the run's training loss falls from its first epoch to
    its last; the data set sits on the GPU."""
    real_step, devices = training._step, set()

    def step(run, epoch, *args):
        devices.add(run.source.device.type)
        if epoch == 0:
            return real_step(run, epoch, *args)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real_step(run, epoch, *args)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    monkeypatch.setattr(training, "_step", step)
    cfg = dict(TINY, batch_size=32)
    train(TrainConfig(epochs=3, device="cuda", compile=compile_mode, out=str(tmp_path / "run"), **cfg),
          log=lambda _: None)
    rows = history(tmp_path / "run")
    assert devices == {"cuda"}
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
