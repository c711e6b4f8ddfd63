"""The regularization ablation behind the training defaults (issue 12).

    .venv/bin/python benchmarks/recipe.py [--epochs 50] [--resolution 64] [--batch-size 256]
        [--variants baseline,erasing,ema,wd5e-4,smoothing,all] [--out runs/recipe] [--device auto]

Each variant is a `mobilenet train` run from scratch on Fashion-MNIST with a seeded,
stratified 10% of the training images held out for validation. Variants are compared on
that validation accuracy alone; the test figures are reported, never used to choose. Runs
live in --out/<variant>: run the same command again after an interruption and each goes on
from its checkpoint (finished ones are read, not retrained). Prints one JSON line per
variant and, at the end, a Markdown table (also written to --out/results.md).
"""

import argparse
import csv
import json
import platform
from pathlib import Path

import torch

from mobilenet.deploy.benchmark import cpu_features
from mobilenet.training.loop import TrainConfig, train

BASELINE = {"random_erasing": 0.0, "ema": None, "weight_decay": 4e-5, "label_smoothing": 0.0}  # before the recipe
VARIANTS = {  # name: the options that differ from BASELINE
    "baseline": {},
    "erasing": {"random_erasing": 0.5},
    "ema": {"ema": 0.999},
    "wd5e-4": {"weight_decay": 5e-4},
    "smoothing": {"label_smoothing": 0.1},
    "all": {"random_erasing": 0.5, "ema": 0.999, "weight_decay": 5e-4},
    "all+smoothing": {"random_erasing": 0.5, "ema": 0.999, "weight_decay": 5e-4, "label_smoothing": 0.1},
}


def run_variant(name: str, args) -> dict:
    out = Path(args.out) / name
    cfg = TrainConfig(epochs=args.epochs, resolution=args.resolution, batch_size=args.batch_size, val_split=0.1,
                      device=args.device, out=str(out), **{**BASELINE, **VARIANTS[name]})
    rows = _rows(out)
    if len(rows) < args.epochs:
        train(cfg, resume=(out / "checkpoint.pt").exists(), log=lambda line: print(f"[{name}] {line}", flush=True))
        rows = _rows(out)
    last = rows[-1]
    ema = last["ema_test_acc"] != ""
    return {"variant": name, "options": VARIANTS[name], "epochs": len(rows),
            "val_acc": float(last["val_acc"]),  # the last epoch's (the EMA's): what a choice may look at
            "test_acc": float(last["ema_test_acc" if ema else "test_acc"]),
            "test_loss": float(last["ema_test_loss" if ema else "test_loss"]),
            "train_acc": float(last["train_acc"]), "hours": sum(float(r["seconds"]) for r in rows) / 3600}


def _rows(out: Path) -> list[dict]:
    try:
        with open(out / "history.csv") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default="runs/recipe")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    machine = (f"{platform.processor() or platform.machine()} {' '.join(cpu_features())}, "
               f"{torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != 'cpu' else 'CPU'}")
    results = []
    for name in args.variants.split(","):
        results.append(run_variant(name, args))
        print(json.dumps(results[-1]), flush=True)
    lines = [f"{args.epochs} epochs, {args.resolution}×{args.resolution}, batch {args.batch_size}, {machine}", "",
             "| variant | val acc (chooses) | test acc | test loss | train acc | hours |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {100 * r['val_acc']:.2f}% | {100 * r['test_acc']:.2f}% | {r['test_loss']:.4f} | "
              f"{100 * r['train_acc']:.2f}% | {r['hours']:.2f} |" for r in results]
    (Path(args.out) / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
