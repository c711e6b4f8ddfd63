"""--class-weights and --sampler balanced on an imbalanced Fashion-MNIST: the training
split cut to 1:10:100 per class (6,000, 600 and 60 images, by class index mod 3), the test
split whole. Each weighting trains the same run (same seed, epochs and validation hold-out);
the table gives
validation and test top-1, balanced accuracy and macro F1, and the smallest classes'
recall. `auto`'s scheme is chosen on the validation columns only (docs/results.md).

    .venv/bin/python benchmarks/imbalance.py --out runs/imbalance [--epochs 5] [--weights none,inverse,effective,sampler] [--seed 0]

"sampler" is `--sampler balanced` with no class weights.

The runs are the demo's recipe (α 0.5, ρ 32, batch 256, 5 epochs) on the cut split.

Resumable: a finished run (its metrics.json) is not trained again.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from mobilenet.data.images import DEBIAN_DIR, fashion_files, read_idx
from mobilenet.report.metrics import Metrics, class_means

COUNTS = (6000, 600, 60)  # images of class c: COUNTS[c % 3]
TRAIN_OPTIONS = {"sampler": ["--sampler", "balanced", "--class-weights", "none"]}  # else shuffled, weighted by NAME


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def imbalanced_fashion(folder: Path) -> Path:
    """Fashion-MNIST's IDX files with the training split cut to COUNTS (the first images of
    each class), the test split as it is."""
    if (folder / "t10k-labels-idx1-ubyte.gz").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = (read_idx(p) for p in fashion_files(DEBIAN_DIR, "train"))
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:COUNTS[c % 3]] for c in range(10)]))
    _write_idx(folder / "train-images-idx3-ubyte.gz", images[keep])
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels[keep])
    for kind, array in zip(("images-idx3", "labels-idx1"), (read_idx(p) for p in fashion_files(DEBIAN_DIR, "test"))):
        _write_idx(folder / f"t10k-{kind}-ubyte.gz", array)
    return folder


def validation_figures(run: Path, val_split: float) -> dict:
    """The run's model on its own validation hold-out: top-1, balanced accuracy, macro F1."""
    import torch

    from mobilenet.run.folder import load_model

    model, info = load_model(run)
    source = info.open_data(workers=0, val_split=val_split)
    metrics = Metrics(len(info.classes))
    with torch.inference_mode():
        for batch in source.val_batches(256):
            metrics.add(model(batch.images).numpy(), batch.labels.numpy())
    return {"top1": metrics.top1, **class_means(metrics.confusion)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--weights", default="none,inverse,effective,sampler")
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    env = {**os.environ, "MOBILENET_FASHION_MNIST": str(imbalanced_fashion(out / "data"))}
    rows = {}
    for scheme in args.weights.split(","):
        run = out / scheme
        if not (run / "metrics.json").exists():
            resume = ["--resume"] if (run / "checkpoint.pt").exists() else []
            subprocess.run([sys.executable, "-m", "mobilenet", "train", "--out", str(run), "--epochs", str(args.epochs),
                            "--width", "0.5", "--resolution", "32", "--batch-size", "256", "--val-split", str(args.val_split),
                            *TRAIN_OPTIONS.get(scheme, ["--sampler", "shuffle", "--class-weights", scheme]), "--seed", str(args.seed), *resume],
                           env=env, check=True)
            subprocess.run([sys.executable, "-m", "mobilenet", "evaluate", "--model", str(run)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        os.environ["MOBILENET_FASHION_MNIST"] = env["MOBILENET_FASHION_MNIST"]
        test = json.loads((run / "metrics.json").read_text())
        small = [c for i, c in enumerate(test["per_class"]) if COUNTS[i % 3] == min(COUNTS)]
        rows[scheme] = {"val": validation_figures(run, args.val_split),
                        "test": {k: test[k] for k in ("top1", "balanced_accuracy", "macro_f1")},
                        "smallest_classes_recall": {c: test["per_class"][c] for c in small}}
    print(json.dumps(rows, indent=2))
    (out / "imbalance.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
