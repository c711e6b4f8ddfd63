"""Multi-label training on Fashion-MNIST mosaics: each image is a 2×2 tile of four distinct
Fashion-MNIST training images (56×56 grayscale), labelled with the classes it holds. The
label file's rows with several labels make the run a multi-label one (`--task auto`). The
table gives the test split's mAP, label accuracy, micro and macro F1 and each class's AP,
against a baseline that scores every image with each class's frequency among the training
images (its AP per class is then that class's share of the test images).

    .venv/bin/python benchmarks/mosaic.py --out runs/mosaic [--count 15000] [--epochs 5] [--seed 0]

The run is the demo's recipe (α 0.5, batch 256, 5 epochs) at ρ 64, the mosaic's size
rounded up. Data in OUT/data, the run in OUT/run.

Resumable: a built set (its labels.csv) is not built again, a finished run (its
metrics.json) is not trained again, and an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from mobilenet.data.images import DEBIAN_DIR, FASHION_CLASSES, fashion_files, read_idx
from mobilenet.report.multilabel import average_precision, mean_ap

TILES = 2  # a mosaic is TILES × TILES images, each from a different training image
TEST_SPLIT = 0.2  # the trainer's default --test-split, so the baseline scores the same test images


def mosaics(folder: Path, count: int, seed: int) -> Path:
    """`count` mosaics of Fashion-MNIST training images under folder/images and their label
    file, folder/labels.csv (path, the distinct classes sorted and joined by ';')."""
    labels_csv = folder / "labels.csv"
    if labels_csv.exists():
        return labels_csv
    from PIL import Image

    images, labels = (read_idx(p) for p in fashion_files(DEBIAN_DIR, "train"))
    per = TILES * TILES
    if count * per > len(images):
        raise SystemExit(f"--count {count}: at most {len(images) // per} mosaics of distinct images")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(images))[:count * per].reshape(count, TILES, TILES)
    rows = []
    for n, picks in enumerate(order):
        tiled = np.block([[images[i] for i in row] for row in picks])  # (56, 56) uint8: Pillow reads it as mode L
        name = f"images/{n:05d}.png"
        Image.fromarray(tiled).save(folder / name)
        rows.append((name, ";".join(sorted({FASHION_CLASSES[labels[i]] for i in picks.flat}))))
    # Written last, whole: a build cut short has no labels.csv, so it starts over
    part = labels_csv.with_suffix(".csv.part")
    with open(part, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "labels"))
        writer.writerows(rows)
    os.replace(part, labels_csv)
    return labels_csv


def frequency_baseline(found: dict) -> dict:
    """Per-class AP on the test split of a model that scores every image with each class's
    frequency among the training images: one constant score per class."""
    classes = found["classes"]

    def targets(samples) -> np.ndarray:
        hot = np.zeros((len(samples), len(classes)))
        for row, (_, labels) in enumerate(samples):
            hot[row, list(labels if isinstance(labels, tuple) else (labels,))] = 1
        return hot

    frequency = targets(found["train"]).mean(axis=0)
    test = targets(found["test"])
    ap = average_precision(np.broadcast_to(frequency, test.shape), test)
    return {"mAP": mean_ap(ap),
            "per_class_ap": {c: None if np.isnan(a) else float(a) for c, a in zip(classes, ap)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=15000, help="mosaics to build (at most 15,000)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    labels_csv = mosaics(out / "data", args.count, args.seed)
    run = out / "run"
    command = [sys.executable, "-m", "mobilenet", "train", "--data", str(labels_csv), "--out", str(run),
               "--epochs", str(args.epochs), "--width", "0.5", "--resolution", "64", "--batch-size", "256",
               "--val-split", "0.1", "--seed", str(args.seed)]
    if not (run / "metrics.json").exists():
        resume = ["--resume"] if (run / "checkpoint.pt").exists() else []
        subprocess.run([*command, *resume], env=os.environ, check=True)
        subprocess.run([sys.executable, "-m", "mobilenet", "evaluate", "--model", str(run)], env=os.environ,
                       check=True, stdout=subprocess.DEVNULL)
    test = json.loads((run / "metrics.json").read_text())
    from mobilenet.data.splits import data_splits

    found = data_splits(labels_csv, test_split=TEST_SPLIT, seed=args.seed)
    figures = {"model": {k: test[k] for k in ("mAP", "label_accuracy", "micro_f1", "macro_f1", "per_class_ap")},
               "baseline_frequency": frequency_baseline(found),
               "images": {"train": len(found["train"]), "test": len(found["test"])},
               "command": " ".join(command), "epochs": args.epochs, "seed": args.seed}
    print(json.dumps(figures, indent=2))
    (out / "mosaic.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
