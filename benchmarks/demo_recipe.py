"""The demo's recipe: the fastest short run that still reaches 90%, chosen on validation.

    .venv/bin/python benchmarks/demo_recipe.py [--candidates today,a0.5-b256-e4,...] [--out runs/demo-recipe]
        [--fresh]

Each candidate is a `mobilenet train` run on Fashion-MNIST at 32×32 without augmentation,
with a seeded, stratified 10% of the training images held out for validation. The
reference, `today`, is the demo's recipe before this script: α = 1, batch 64, 6 epochs.
Candidates are judged on validation accuracy and on their training time against the
reference's, measured in the same run of this script; the test figures are reported, never
used to choose. Finished runs are read back, not retrained, unless --fresh. Prints a
Markdown table, also written to --out/results.md.
"""

import argparse
import csv
import shutil
import time
from pathlib import Path

import torch

from mobilenet.benchmark import cpu_features, cpu_name
from mobilenet.training import TrainConfig, train

GOAL_ACC = 0.90  # the demo must still end at 90% or more
GOAL_TIME = 0.25  # of the reference's training time
COMMON = {"resolution": 32, "augment": "none", "random_erasing": 0.0, "ema": 0.0, "val_split": 0.1}
CANDIDATES = {  # name: the options that differ from `mobilenet train`'s defaults, besides COMMON
    "today": {"width_mult": 1.0, "batch_size": 64, "epochs": 6},
    "a0.5-b256-e4": {"width_mult": 0.5, "batch_size": 256, "epochs": 4},
    "a0.5-b256-e3": {"width_mult": 0.5, "batch_size": 256, "epochs": 3},
    "a0.5-b128-e3": {"width_mult": 0.5, "batch_size": 128, "epochs": 3},
    "a0.75-b256-e3": {"width_mult": 0.75, "batch_size": 256, "epochs": 3},
    "a1-b256-e2": {"width_mult": 1.0, "batch_size": 256, "epochs": 2},
    "a0.5-b256-e6-half": {"width_mult": 0.5, "batch_size": 256, "epochs": 6, "limit": 30000},
}


def run_candidate(name: str, out: Path, fresh: bool) -> dict:
    folder = out / name
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    options = CANDIDATES[name]
    wall = None
    if len(_rows(folder)) < options["epochs"]:
        shutil.rmtree(folder, ignore_errors=True)  # a half-done run's time would not be one run's
        began = time.perf_counter()
        train(TrainConfig(out=str(folder), **COMMON, **options), log=lambda line: print(f"[{name}] {line}", flush=True))
        wall = time.perf_counter() - began
    last = _rows(folder)[-1]
    return {"name": name, "options": options, "val_acc": float(last["val_acc"]), "test_acc": float(last["test_acc"]),
            "test_loss": float(last["test_loss"]), "seconds": sum(float(r["seconds"]) for r in _rows(folder)),
            "wall": wall}


def _rows(folder: Path) -> list[dict]:
    try:
        with open(folder / "history.csv") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def table(results: list[dict]) -> str:
    reference = next(r for r in results if r["name"] == "today")["seconds"]
    lines = ["| candidate | options | val acc (chooses) | training time | of `today`'s | test acc | test loss |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        options = " ".join(f"{k}={v}" for k, v in r["options"].items())
        lines.append(f"| {r['name']} | {options} | {100 * r['val_acc']:.2f}% | {r['seconds']:.0f} s | "
                     f"{r['seconds'] / reference:.2f} | {100 * r['test_acc']:.2f}% | {r['test_loss']:.4f} |")
    fit = [r for r in results if r["val_acc"] >= GOAL_ACC and r["seconds"] <= GOAL_TIME * reference]
    keep = [r for r in results if r["val_acc"] >= GOAL_ACC]
    pick = min(fit or keep, key=lambda r: r["seconds"])
    lines.append(f"\nchosen on validation: {pick['name']} ({100 * pick['val_acc']:.2f}% val, "
                 f"{pick['seconds'] / reference:.2f} of today's time"
                 + ("" if fit else f"; no candidate keeps {GOAL_ACC:.0%} within {GOAL_TIME} of the time") + ")")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    p.add_argument("--out", default="runs/demo-recipe")
    p.add_argument("--fresh", action="store_true", help="retrain finished candidates too")
    args = p.parse_args()
    names = [n for n in args.candidates.split(",") if n != "today"] + ["today"]  # the reference, always
    print(f"# {cpu_name()} ({' '.join(cpu_features())}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}", flush=True)
    results = [run_candidate(name, Path(args.out), args.fresh) for name in names]
    text = table(results)
    print(text)
    (Path(args.out) / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
