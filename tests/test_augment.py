"""Augmentation presets and `--augment auto` (issue 15), on folders built to tell the cases
apart: arrows, whose direction a flip reverses, and coloured shapes, which flips and crops
leave alone."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mobilenet.data import augment
from mobilenet.data.folder import FolderSource
from mobilenet.net.model import MobileNetConfig
from mobilenet.training import trial
from mobilenet.training.loop import TrainConfig, train

TRIAL = dict(lr=0.05, batch_size=16, run_steps=1000, device=torch.device("cpu"))  # 120 trial steps


def _arrows(root, per_class=100, size=32, seed=0):
    """Left and right arrows: the class is the side the head is on, so a flip swaps them."""
    rng = np.random.default_rng(seed)
    for name in ("left", "right"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = Image.fromarray(rng.integers(0, 50, (size, size), dtype=np.uint8))
            draw = ImageDraw.Draw(im)
            y, x0 = int(rng.integers(10, size - 10)), int(rng.integers(3, 8))
            x1 = size - int(rng.integers(3, 8))
            draw.line([(x0, y), (x1, y)], fill=255, width=2)
            tip, back = (x0, x0 + 8) if name == "left" else (x1, x1 - 8)
            draw.polygon([(tip, y), (back, y - 6), (back, y + 6)], fill=255)
            im.convert("RGB").save(root / name / f"{i}.png")
    return root


def _colours(root, per_class=40, size=32, seed=0):
    """Squares whose colour is the class, anywhere: flips, shifts and crops keep it."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            side = int(rng.integers(size // 3, size * 2 // 3))
            y, x = (int(v) for v in rng.integers(0, size - side, 2))
            pixels[y:y + side, x:x + side, c] = 255
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _trial(root):
    source = FolderSource(root, 32, seed=0, workers=0)
    config = MobileNetConfig(num_classes=len(source.classes), width_mult=0.25, resolution=32)
    return trial.run_trial(source, 0, config, **TRIAL)  # the source's seed


def test_auto_never_flips_arrows(tmp_path):
    record = _trial(_arrows(tmp_path / "arrows"))
    assert record["chosen_by"] == "trial", record
    assert not augment.preset_named(record["preset"]).flip, record
    kept = record["trial"]["kept"]
    assert kept["flip-shift"] < 0.5 and kept["crop-flip"] < 0.5 and kept["shift"] >= augment.KEEP, kept


def test_auto_flips_what_flips_do_not_change(tmp_path):
    record = _trial(_colours(tmp_path / "colours"))
    assert record["chosen_by"] == "trial" and record["preset"] == "flip-shift", record


def test_photos_take_the_crop_family(tmp_path):
    """The same shapes at 160 pixels: photo-sized, so crops (which keep the object) are the candidates."""
    record = _trial(_colours(tmp_path / "colours", size=160))
    assert record["trial"]["candidates"] == ["none", "crop", "crop-flip"] and record["preset"] == "crop-flip", record


def test_too_few_images_fall_back_to_the_mildest_preset_and_say_so(tmp_path):
    root = _colours(tmp_path / "colours", per_class=5)
    record = _trial(root)
    assert record == {"preset": "shift", "chosen_by": "fallback", "reason": record["reason"]}  # small images
    assert "too few" in record["reason"]


def test_the_choice_is_logged_recorded_and_kept_on_resume(tmp_path, monkeypatch):
    root, out, lines = _colours(tmp_path / "colours"), tmp_path / "run", []
    monkeypatch.setattr(augment, "TRIAL_SHARE", 20.0)  # a trial that learns (120 steps), in a one-epoch run
    train(TrainConfig(data=str(root), epochs=1, width_mult=0.25, resolution=32, batch_size=16, workers=0,
                      out=str(out)), log=lines.append)
    config = json.loads((out / "config.json").read_text())["augment"]
    assert config["chosen_by"] == "trial" and set(config["trial"]["kept"]) == set(augment.PRESETS[1:])
    line = next(line for line in lines if line.startswith("--augment auto: "))
    assert line.startswith(f"--augment auto: {config['preset']}, by a trial of")
    assert line in (out / "train.log").read_text().splitlines()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["train_config"]["augment"] == config["preset"]
    monkeypatch.setattr(trial, "run_trial", lambda *a, **k: pytest.fail("a resumed run has its preset"))
    train(TrainConfig(epochs=2, workers=0, out=str(out)), resume=True, log=lambda _: None)
    assert json.loads((out / "config.json").read_text())["augment"] == config  # the figures too


@pytest.mark.parametrize("side, smallest", [(28, 0.9), (112, 0.625), (224, 0.25), (1000, 0.25)])
def test_crops_and_shifts_scale_with_the_image(side, smallest):
    assert augment.crop_scale(side) == pytest.approx(smallest, abs=0.01)
    assert augment.shift_pixels(28) == 2 and augment.shift_pixels(224) == 16


def test_a_warning_when_augmented_batches_score_far_below_validation(capsys):
    """The digits run's symptom: 67% on its augmented training batches, 93% on held-out images."""
    from mobilenet.training.log import RunLog
    from mobilenet.training.loop import _warn_if_augmentation_hurts

    log = RunLog(print)
    _warn_if_augmentation_hurts(log, "crop-flip", {"train_acc": 0.67, "val_acc": 0.93, "test_acc": 0.5})
    err = capsys.readouterr().err
    assert "warning: halfway" in err and "67.0% against 93.0% on validation" in err, err
    assert "try a milder one (crop, flip-shift, shift, none)" in err, err
    _warn_if_augmentation_hurts(log, "crop-flip", {"train_acc": 0.67, "val_acc": None, "test_acc": 0.93})  # no val split
    assert "93.0% on test images" in capsys.readouterr().err
    _warn_if_augmentation_hurts(log, "crop-flip", {"train_acc": 0.80, "val_acc": 0.93, "test_acc": 0.5})  # 13 points: fine
    assert capsys.readouterr().err == ""


def test_the_warning_is_looked_for_halfway_once(fake_fashion, tmp_path, monkeypatch):
    from mobilenet.training import loop as training

    seen = []
    monkeypatch.setattr(training, "_warn_if_augmentation_hurts", lambda log, preset, row: seen.append(row["epoch"]))
    train(TrainConfig(epochs=3, limit=64, width_mult=0.25, resolution=32, batch_size=32, out=str(tmp_path / "run")),
          log=lambda _: None)
    assert seen == [2]


def test_the_trial_is_bounded_on_big_folders():
    """12% of a run's steps up to 500; at most 2,000 held-out images, every class kept."""
    assert augment.trial_steps(1000) == 120 and augment.trial_steps(10**6) == augment.MAX_TRIAL_STEPS == 500
    samples = [(f"{i}.jpg", i % 4) for i in range(40_000)]
    train_part, val = trial._trial_split(samples, None, seed=0)
    assert len(val) == trial.MAX_VAL and {label for _, label in val} == {0, 1, 2, 3}
    assert not set(train_part) & set(val)
