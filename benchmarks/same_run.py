"""Fingerprints of two seeded 2-epoch CPU runs, to show that a refactoring changed nothing:
run it on the tree before and after, on the same machine, and compare the two outputs.

    PYTHONPATH=src .venv/bin/python benchmarks/same_run.py [--work DIR] > after.json

Run 1: Fashion-MNIST (first 3,000 images) with --ema, --random-erasing and --val-split.
Run 2: a generated folder of PNGs with --augment auto, so the trial trains too.
Printed per run: the SHA-256 of model.safetensors, config.json, history.csv less its timing
columns, the checkpoint's model and EMA tensors, and its `augment` record (the trial's
wall time left out of it and of config.json, and config.json's format number, which only a
change of the run folder's format changes).
"""

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TIMING = {"seconds", "images_per_s"}
COMMON = ["--epochs", "2", "--seed", "3", "--width", "0.25", "--device", "cpu", "--workers", "0"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensors(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _history(path: Path) -> str:
    rows = list(csv.DictReader(path.open()))
    return _sha(json.dumps([{k: v for k, v in r.items() if k not in TIMING} for r in rows]).encode())


def _untimed(record):
    """The augment record less the trial's wall time."""
    if isinstance(record, dict) and isinstance(record.get("trial"), dict):
        record = {**record, "trial": {k: v for k, v in record["trial"].items() if k != "seconds"}}
    return record


def fingerprint(out: Path) -> dict:
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    ema = state.get("ema")
    config = json.loads((out / "config.json").read_text())
    config["augment"] = _untimed(config.get("augment"))
    config.pop("format_version", None)
    return {"model.safetensors": _sha((out / "model.safetensors").read_bytes()),
            "config.json (less the trial's seconds and format)": _sha(json.dumps(config, sort_keys=True).encode()),
            "history.csv (less timing)": _history(out / "history.csv"),
            "checkpoint model": _tensors(state["model"]),
            "checkpoint ema": _tensors(ema) if ema else None,
            "checkpoint augment": _sha(json.dumps(_untimed(state.get("augment")), sort_keys=True).encode())}


def _folder(root: Path) -> Path:
    """4 classes × 60 PNGs of 40×48 pixels: a colour and a stripe per class, plus noise."""
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(60):
            image = rng.integers(0, 80, (40, 48, 3)).astype(np.uint8)
            image[:, :, c % 3] += 120
            image[c * 8:(c + 1) * 8] = 255
            Image.fromarray(image).save(root / f"class{c}" / f"{i}.png")
    return root


def _train(args: list, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "mobilenet", "train", *args, *COMMON, "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="where the runs go (default: a temporary folder)")
    work = Path(parser.parse_args().work or tempfile.mkdtemp())
    _train(["--limit", "3000", "--resolution", "32", "--ema", "0.99", "--random-erasing", "0.5",
            "--val-split", "0.1", "--batch-size", "64"], work / "fashion")
    _train(["--data", str(_folder(work / "images")), "--resolution", "32", "--augment", "auto",
            "--val-split", "0.2", "--batch-size", "8"], work / "folder")
    print(json.dumps({name: fingerprint(work / name) for name in ("fashion", "folder")}, indent=1))


if __name__ == "__main__":
    main()
