"""A model's MediaPipe files through MediaPipe Tasks' ImageClassifier against our own
LiteRT runtime: accuracy on the whole test split, float32 and int8, the share of images
where both give the same top-1, and the task's latency at batch 1 beside `bench`'s LiteRT
row for the same file, timed in one run on this machine (docs/results.md, "In an app").

    .venv/bin/python benchmarks/mediapipe_task.py runs/demo [--seconds 3] [--json OUT]

The files are runs/demo/model.mediapipe[.int8].tflite; export them first with
`mobilenet export --model runs/demo --format mediapipe [--int8]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from mobilenet.deploy.benchmark import bench_file
from mobilenet.deploy.litert import LiteRtModel
from mobilenet.deploy.mediapipe import classify, pixel_images, require_mediapipe
from mobilenet.run.folder import load_model


def task_latency(data: bytes, image: np.ndarray, seconds: float) -> dict:
    """The task's classify() on one image, again and again for `seconds`: median, p10, p90 (ms)."""
    mp = require_mediapipe()
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    options = ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=data), max_results=1)
    frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
    times = []
    with ImageClassifier.create_from_options(options) as task:
        for _ in range(10):  # warm-up
            task.classify(frame)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 10:
            start = time.perf_counter()
            task.classify(frame)
            times.append(1000 * (time.perf_counter() - start))
    cuts = statistics.quantiles(times, n=10)
    return {"median_ms": statistics.median(times), "p10_ms": cuts[0], "p90_ms": cuts[-1], "iterations": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run folder with model.mediapipe.tflite and model.mediapipe.int8.tflite")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per row (default 3)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    run = Path(args.model)
    info = load_model(run)[1]
    rgb, labels = pixel_images(info, 0)
    found = {"model": str(run), "images": len(labels), "files": {}}
    for name in ("model.mediapipe.tflite", "model.mediapipe.int8.tflite"):
        data = (run / name).read_bytes()
        task = classify(data, rgb, len(info.classes))[0]
        ours = LiteRtModel(data, info, threads=1).probabilities(rgb)
        bench = bench_file(run / name, batch_sizes=(1,), runtimes=["litert"], min_seconds=args.seconds)
        row, found["machine"] = bench["rows"][0], bench["machine"]
        found["files"][name] = {
            "bytes": len(data),
            "task_top1": float((task.argmax(1) == labels).mean()),
            "litert_top1": float((ours.argmax(1) == labels).mean()),
            "same_top1": float((task.argmax(1) == ours.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(task - ours).max()),
            "task_latency": task_latency(data, rgb[0], args.seconds),
            "bench_litert": {k: row[k] for k in ("runtime", "threads", "median_ms", "p10_ms", "p90_ms")},
        }
    text = json.dumps(found, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
