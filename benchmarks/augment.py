"""Augmentation presets against `--augment auto` on small real data sets, as a user with a
folder would train them: each preset, then auto, same seed and settings; final test accuracy
(of the kept model) and wall time of each run.

    .venv/bin/python benchmarks/augment.py [--epochs 12] [--only digits]

Data sets, written as train/ and test/ folders of PNG files (nothing is downloaded):
- digits: scikit-learn's 1,797 handwritten digits (8×8, shipped inside the package),
  upsampled to 32×32; 80/20 stratified split. Flips change what a digit means.
- fashion: 4,000 Fashion-MNIST images (the Debian package this project installs; 3,000 to
  train, 1,000 to test) at 28×28. Flips keep a garment what it is.
- letters: scikit-learn has no letters; the third set is `digits` mirrored into a 20-class
  problem (each digit and its mirror image are two classes), where flips swap classes.

Goal (issue 15): auto within 0.5 points of the best preset, at ≤ 15% extra time. Prints
one JSON object; the README's table comes from it.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mobilenet.data.augment import PRESETS
from mobilenet.data.fashion import load_fashion_mnist
from mobilenet.seeds import stratified_split
from mobilenet.training.loop import TrainConfig, train


def _write(root: Path, images, labels, names) -> None:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")


def _split_folders(root: Path, images, labels, names, seed=0) -> Path:
    train, test = stratified_split(list(zip(range(len(labels)), labels.tolist())), 0.2, seed, "test")
    for part, chosen in (("train", train), ("test", test)):
        idx = [i for i, _ in chosen]
        _write(root / part, images[idx], labels[idx], names)
    return root


def digits(root: Path, mirrored: bool = False) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16 * 255).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in images])
    labels, names = d.target, [str(i) for i in range(10)]
    if mirrored:  # each digit and its mirror image: 20 classes
        images = np.concatenate([images, images[:, :, ::-1]])
        labels, names = np.concatenate([labels, labels + 10]), names + [f"{i}-mirrored" for i in range(10)]
    return _split_folders(root, images, labels, names)


def fashion(root: Path) -> Path:
    x, y = load_fashion_mnist("train")
    keep = np.random.default_rng(0).permutation(len(y))[:4000]
    return _split_folders(root, x[keep, 0].numpy(), y[keep].numpy(), [str(i) for i in range(10)])


SETS = {"digits": digits, "fashion": fashion, "letters": lambda root: digits(root, mirrored=True)}


def run(folder: Path, preset: str, epochs: int, out: Path) -> dict:
    start = time.perf_counter()
    summary = train(TrainConfig(data=str(folder), epochs=epochs, width_mult=0.5, resolution=32, augment=preset,
                                out=str(out)), log=lambda _: None)
    row = {"test_acc": summary["final_test_acc"], "seconds": time.perf_counter() - start}
    if preset == "auto":
        record = json.loads((out / "config.json").read_text())["augment"]
        row.update(chosen=record["preset"], chosen_by=record["chosen_by"],
                   trial_seconds=record.get("trial", {}).get("seconds"), kept=record.get("trial", {}).get("kept"))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--only", choices=list(SETS), nargs="+", default=list(SETS))
    args = p.parse_args()
    result = {"cpu": platform.processor() or platform.machine(), "epochs": args.epochs, "width": 0.5,
              "resolution": 32, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            folder = SETS[name](Path(tmp) / name)
            rows = {preset: run(folder, preset, args.epochs, Path(tmp) / f"{name}-{preset}")
                    for preset in (*PRESETS, "auto")}
            best = max(PRESETS, key=lambda p: rows[p]["test_acc"])
            auto = rows["auto"]
            trial = auto["trial_seconds"] or 0.0  # the trial's share of the rest of the run
            auto.update(points_behind_best=100 * (rows[best]["test_acc"] - auto["test_acc"]),
                        extra_time=trial / (auto["seconds"] - trial), best=best)
            result["sets"][name] = rows
            print(json.dumps({name: rows}), flush=True)  # one line per set as it ends
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
