"""A log never looks hung: in a pipe or a log, a long epoch prints a note about once a
minute; on a terminal the bar alone speaks."""

import pytest

from mobilenet import progress
from mobilenet.training import loop as training
from mobilenet.training.loop import TrainConfig, train

STEP_SECONDS = 20  # what each slowed step takes on the run's clock


@pytest.fixture
def slowed(monkeypatch):
    """Each training step takes STEP_SECONDS on the heartbeat's clock: a slow CPU, without the wait."""
    now = [0.0]
    real_step = training._step

    def slow_step(*args, **kw):
        done = real_step(*args, **kw)
        now[0] += STEP_SECONDS
        return done

    monkeypatch.setattr(progress, "clock", lambda: now[0])
    monkeypatch.setattr(training, "_step", slow_step)


def _notes(lines):
    return [line for line in lines if line.startswith("epoch 1/1: step")]


def test_a_long_epoch_in_a_log_prints_a_note_about_once_a_minute(fake_fashion, slowed, tmp_path):
    lines = []
    # 400 images at batch 16: 25 steps of 20 s, so a note at steps 3, 6, ..., 24
    train(TrainConfig(epochs=1, width_mult=0.25, resolution=32, batch_size=16, augment="none", out=str(tmp_path / "r")),
          log=lines.append)
    notes = _notes(lines)
    assert [int(n.split("step ")[1].split("/")[0]) for n in notes] == list(range(3, 25, 3))
    # step 3: 48 images in 60 s, and 22 steps of 20 s left
    assert notes[0] == "epoch 1/1: step 3/25, 1 img/s, 7 min 20 s left in the epoch"
    assert notes[-1].endswith("step 24/25, 1 img/s, 20 s left in the epoch")
    assert lines.index(notes[-1]) < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/1  train loss"))


def test_on_a_terminal_the_bar_speaks_alone(fake_fashion, slowed, tmp_path):
    lines = []
    train(TrainConfig(epochs=1, width_mult=0.25, resolution=32, batch_size=16, augment="none", out=str(tmp_path / "r")),
          log=lines.append, progress=True)
    assert not _notes(lines) and any(line.startswith("epoch 1/1  train loss") for line in lines)
