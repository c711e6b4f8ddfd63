"""Peak memory of `Predictor.predict` over a folder of N images, and over N/10: flat, as
prediction goes in chunks of predictor.CHUNK_SIZE images, never one N-image tensor.

    .venv/bin/python benchmarks/predict_memory.py [--images 10000] [--runtime torch] [--device cpu]

Writes N random 224×224 RGB JPEG files into a temporary folder (N/10 of them in a
sub-folder of their own), saves an untrained α = 0.25, 224×224, 10-class model folder,
then runs each prediction in a fresh child process and prints one JSON object: per run,
the child's peak resident memory in MB (its ru_maxrss, as getrusage(RUSAGE_CHILDREN)
gives it, read with os.wait4 so each run is measured alone), its resident memory just
after loading the model, and images/s of predict() alone. --runtime onnxruntime exports
the model to ONNX first.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilenet.deploy.benchmark import cpu_name

CLASSES = [f"class{i}" for i in range(10)]


def write_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """n random 224×224 RGB JPEGs: N/10 in folder/small, the rest in folder/rest."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = max(1, n // 10)
    for sub in ("small", "rest"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / ("small" if i < small else "rest") / f"{i:06d}.jpg", quality=90)


def write_model(out: Path, runtime: str) -> Path:
    """An untrained α = 0.25 model folder at 224×224 (and its .onnx file for onnxruntime)."""
    from mobilenet.data.images import IMAGENET_MEAN, IMAGENET_STD, crop_input_spec
    from mobilenet.net.config import MobileNetConfig
    from mobilenet.net.model import MobileNetV1
    from mobilenet.run.folder import save_model

    out.mkdir(parents=True, exist_ok=True)
    model = MobileNetV1.from_config(MobileNetConfig(num_classes=10, width_mult=0.25, resolution=224))
    info = {"classes": CLASSES, "input": crop_input_spec(3, 224, IMAGENET_MEAN, IMAGENET_STD),
            "data": {"name": "synthetic"}}
    save_model(model.eval(), out, info)
    if runtime == "torch":
        return out
    from mobilenet.deploy.exporter import export
    export(out, "onnx", output=out / "model.onnx", check_images=16, log=lambda _: None)
    return out / "model.onnx"


def child(model: str, runtime: str, device: str, folder: str) -> None:
    """In the measured process: load, predict the folder, print what happened."""
    from mobilenet.deploy.predictor import CHUNK_SIZE, Predictor

    p = Predictor(model, runtime=runtime, device=device)
    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    records, failed = p.predict([folder])
    seconds = time.perf_counter() - start
    print(json.dumps({"images": len(records), "failed": len(failed), "seconds": round(seconds, 2),
                      "images_per_s": round(len(records) / seconds, 1), "after_load_mb": round(loaded_mb, 1),
                      "chunk_size": CHUNK_SIZE, "torch_imported": "torch" in sys.modules}))


def measure(model: str, runtime: str, device: str, folder: Path) -> dict:
    """One prediction in a fresh child; its own peak RSS from wait4 (Linux: KB -> MB)."""
    cmd = [sys.executable, __file__, "--child", str(model), runtime, device, str(folder)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    return {**json.loads(out), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}




def main():
    if sys.argv[1:2] == ["--child"]:
        return child(*sys.argv[2:6])
    if sys.argv[1:2] == ["--model"]:
        return print(write_model(Path(sys.argv[2]), sys.argv[3]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--runtime", default="torch", choices=("torch", "onnxruntime"))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        start = time.perf_counter()
        write_jpegs(folder, args.images)
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        # in a child: Linux carries a process's peak RSS across fork and exec into its
        # children, so the parent stays small (no torch) to leave their peaks their own
        model = subprocess.run([sys.executable, __file__, "--model", str(Path(tmp) / "model"), args.runtime],
                               check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
        parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        runs = [measure(model, args.runtime, args.device, f) for f in (folder / "small", folder)]
    print(json.dumps({"runtime": args.runtime, "device": args.device, "cpu": cpu_name(),
                      "cores": os.cpu_count(),
                      "parent_peak_rss_mb": round(parent_mb, 1), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
