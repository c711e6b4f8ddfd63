"""How long the report takes against one training epoch of the same model, on this machine,
in one run: one epoch is trained (its own figure: history.csv's seconds, the training steps
only), then `report` is timed on the whole test split (loading the model and the data, the
pass, the maps, the curves and the page), and the ratio printed.

    .venv/bin/python benchmarks/report_speed.py                       # the demo's model: α 0.5 at 32
    .venv/bin/python benchmarks/report_speed.py --width 1 --resolution 64 --batch-size 64 --augment flip-shift
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from mobilenet.machine import cpu_features, cpu_name
from mobilenet.report.page import report
from mobilenet.training.loop import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--augment", default="none")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(TrainConfig(epochs=1, width_mult=args.width, resolution=args.resolution,
                                    batch_size=args.batch_size, augment=args.augment, random_erasing=0, ema=None,
                                    out=f"{tmp}/run"), log=lambda _: None)
        start = time.perf_counter()
        found = report(f"{tmp}/run", out=f"{tmp}/page.html", log=lambda _: None)
        seconds = time.perf_counter() - start
    print(json.dumps({"cpu": f"{cpu_name()} ({' '.join(cpu_features())})", "threads": torch.get_num_threads(),
                      "width": args.width, "resolution": args.resolution, "batch_size": args.batch_size,
                      "epoch_seconds": round(summary["seconds"], 2), "report_seconds": round(seconds, 2),
                      "test_images": found["metrics"]["images"],
                      "report_over_epoch": round(seconds / summary["seconds"], 4)}, indent=2))


if __name__ == "__main__":
    main()
