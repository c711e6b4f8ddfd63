"""The demo's recipe: the fastest short run that holds 90.5% at every seed, chosen on validation.

    .venv/bin/python benchmarks/demo_recipe.py [--candidates today,a0.5-b256-e4,...] [--out runs/demo-recipe]
        [--fresh] [--seeds 3]

Each candidate is a `mobilenet train` run on Fashion-MNIST at 32×32 without augmentation,
with a seeded, stratified 10% of the training images held out for validation. The
reference, `today`, is the demo's recipe before this script: α = 1, batch 64, 6 epochs.
Candidates are judged on validation accuracy and on their training time against the
reference's, measured in the same run of this script. A candidate at 90.5% on validation is
trained again at more seeds (--seeds in all) and must hold 90.5% at each. The test figures are
reported, never used to choose. Finished runs are read back, not retrained, unless --fresh.
With --reference-epochs N, `today` trains N of its 6 epochs and its time is scaled by 6 / N:
its epochs all take the same steps, and on a slow CPU the whole run takes half an hour.
Prints a Markdown table, also written to --out/results.md.
"""

import argparse
import csv
import shutil
from pathlib import Path

import torch

from mobilenet.deploy.benchmark import cpu_features, cpu_name
from mobilenet.training.loop import TrainConfig, train

GOAL_ACC = 0.905  # the demo must end at 90% with half a point to spare: on validation, at every seed
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
    "a0.5-b256-e2": {"width_mult": 0.5, "batch_size": 256, "epochs": 2},
    "a0.5-b512-e4": {"width_mult": 0.5, "batch_size": 512, "epochs": 4},
    "a0.25-b256-e4": {"width_mult": 0.25, "batch_size": 256, "epochs": 4},
    "a0.5-b256-e4-part": {"width_mult": 0.5, "batch_size": 256, "epochs": 4, "limit": 36000},
    "a0.5-b512-e5": {"width_mult": 0.5, "batch_size": 512, "epochs": 5},
    "a0.5-b256-e5": {"width_mult": 0.5, "batch_size": 256, "epochs": 5},
    "a0.75-b512-e3": {"width_mult": 0.75, "batch_size": 512, "epochs": 3},
    "a0.5-b512-e5-ls": {"width_mult": 0.5, "batch_size": 512, "epochs": 5, "label_smoothing": 0.1},
    "a0.5-b256-e4-lr0.4": {"width_mult": 0.5, "batch_size": 256, "epochs": 4, "lr": 0.4},
    "a0.5-b256-e4-ls": {"width_mult": 0.5, "batch_size": 256, "epochs": 4, "label_smoothing": 0.1},
    "a0.5-b256-e4-adamw": {"width_mult": 0.5, "batch_size": 256, "epochs": 4, "optimizer": "adamw"},
    "a0.5-b256-e4-lr0.1": {"width_mult": 0.5, "batch_size": 256, "epochs": 4, "lr": 0.1},
    "a0.5-b512-e4-lr0.2": {"width_mult": 0.5, "batch_size": 512, "epochs": 4, "lr": 0.2},
}


def run_candidate(name: str, out: Path, fresh: bool, seed: int = 0, epochs: int | None = None) -> dict:
    folder = out / (name if seed == 0 else f"{name}-seed{seed}")
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    options = CANDIDATES[name]
    scale = options["epochs"] / (epochs or options["epochs"])
    options = {**options, "epochs": epochs or options["epochs"]}
    if len(_rows(folder)) < options["epochs"]:
        shutil.rmtree(folder, ignore_errors=True)  # a half-done run's time would not be one run's
        train(TrainConfig(out=str(folder), seed=seed, **COMMON, **options),
              log=lambda line: print(f"[{folder.name}] {line}", flush=True))
    last = _rows(folder)[-1]
    return {"name": name, "options": options, "val_acc": float(last["val_acc"]), "test_acc": float(last["test_acc"]),
            "test_loss": float(last["test_loss"]), "seconds": scale * sum(float(r["seconds"]) for r in _rows(folder))}


def add_seeds(results: list[dict], out: Path, fresh: bool, seeds: int) -> None:
    """Seeds 1.. of each candidate at 90.5% on validation: a demo that trains on all images, in
    another order, is one more draw, so a recipe must hold at every seed, not at one."""
    for r in results:
        if r["name"] != "today" and r["val_acc"] >= GOAL_ACC:
            r["seed_vals"] = [run_candidate(r["name"], out, fresh, seed)["val_acc"] for seed in range(1, seeds)]


def _rows(folder: Path) -> list[dict]:
    try:
        with open(folder / "history.csv") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def table(results: list[dict]) -> str:
    reference = next(r for r in results if r["name"] == "today")["seconds"]
    lines = ["| candidate | options | val acc (chooses) | val acc, other seeds | training time | of `today`'s | "
             "test acc | test loss |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        options = " ".join(f"{k}={v}" for k, v in r["options"].items())
        seeds = ", ".join(f"{100 * v:.2f}%" for v in r.get("seed_vals", [])) or "-"
        lines.append(f"| {r['name']} | {options} | {100 * r['val_acc']:.2f}% | {seeds} | {r['seconds']:.0f} s | "
                     f"{r['seconds'] / reference:.2f} | {100 * r['test_acc']:.2f}% | {r['test_loss']:.4f} |")
    keep = [r for r in results if min([r["val_acc"], *r.get("seed_vals", [])]) >= GOAL_ACC]
    fit = [r for r in keep if r["seconds"] <= GOAL_TIME * reference]
    if not keep:
        best = max((r for r in results if r["name"] != "today"), key=lambda r: r["val_acc"])
        return "\n".join(lines) + (f"\n\nno candidate holds {GOAL_ACC:.1%} on validation; the best: {best['name']} "
                                   f"({100 * best['val_acc']:.2f}%, {best['seconds'] / reference:.2f} of today's time)")
    pick = min(fit or keep, key=lambda r: r["seconds"])
    worst = min([pick["val_acc"], *pick.get("seed_vals", [])])
    lines.append(f"\nchosen on validation: {pick['name']} (at least {100 * worst:.2f}% val at every seed, "
                 f"{pick['seconds'] / reference:.2f} of today's time"
                 + ("" if fit else f"; no candidate keeps {GOAL_ACC:.1%} within {GOAL_TIME} of the time") + ")")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    p.add_argument("--out", default="runs/demo-recipe")
    p.add_argument("--fresh", action="store_true", help="retrain finished candidates too")
    p.add_argument("--seeds", type=int, default=3, help="seeds of each candidate at 90.5%% on validation")
    p.add_argument("--reference-epochs", type=int, help="train `today` for this many epochs; its time scaled to 6")
    args = p.parse_args()
    names = [n for n in args.candidates.split(",") if n != "today"] + ["today"]  # the reference, always
    print(f"# {cpu_name()} ({' '.join(cpu_features())}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}", flush=True)
    results = [run_candidate(name, Path(args.out), args.fresh, epochs=args.reference_epochs if name == "today" else None)
               for name in names]
    add_seeds(results, Path(args.out), args.fresh, args.seeds)  # after `today`: their times are not compared
    text = table(results)
    print(text)
    (Path(args.out) / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
