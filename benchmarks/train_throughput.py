"""Training throughput: a whole `mobilenet train` epoch (data, augmentation, step) against
the bare forward/backward/step loop of timm's mobilenetv1_100, same batch and size, one run.

    .venv/bin/python benchmarks/train_throughput.py [--device cpu|cuda] [--resolution 32]
        [--batch-size 64 256] [--images 6400] [--compile off on graphs] [--full-run]
    .venv/bin/python benchmarks/train_throughput.py --folder 512 [--workers 2] [--prefetch 2 4]

Prints one JSON object. Ratios are ours / timm: machines are shared and noisy, so only a
ratio measured in the same run means anything.
- Epochs: each `mobilenet train` run trains two epochs and the second one's training
  images/s counts (the first pays for first-touch allocations and for the compiler). timm
  is timed in its default NCHW layout and in channels_last (what `mobilenet train` uses);
  on CUDA both sides run under bf16 autocast, timm in channels_last only.
- --full-run: the wall time of the default 50-epoch Fashion-MNIST run (64×64) at each batch size and
  --compile mode, the command a GPU user types.
- --folder N: N random JPEG photos (10 classes, 4:3, about 400×300) read at 224×224 with
  the training augmentation, our FolderSource's batches against a plain
  `DataLoader(ImageFolder)` loop with the same workers and transforms; no model runs, so
  this is the data side alone. With CUDA each batch is also copied to the GPU.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

from mobilenet.data import folder as data_module
from mobilenet.data.augment import folder_transforms
from mobilenet.data.images import IMAGENET_MEAN, IMAGENET_STD
from mobilenet.deploy.benchmark import cpu_name
from mobilenet.training.config import COMPILE_MODES
from mobilenet.training.loop import TrainConfig, train


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model, batch_size, resolution, in_chans, steps, channels_last, device):
    """timm's network in a bare loop on one random batch: the network's own speed."""
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, in_chans, resolution, resolution, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch_size,), device=device)
    amp = device.type == "cuda"
    for i in range(steps + 10):  # 10 warm-up steps
        if i == 10:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def our_epoch(args, batch_size, compile_mode, out):
    """The second epoch's training images/s of a two-epoch `mobilenet train` run."""
    train(TrainConfig(epochs=2, limit=args.images, batch_size=batch_size, resolution=args.resolution,
                      device=args.device, compile=compile_mode, out=out), log=lambda _: None)
    with open(Path(out) / "history.csv") as f:
        header, _, second = f.read().splitlines()[:3]
    return float(second.split(",")[header.split(",").index("images_per_s")])


def full_run(batch_size, compile_mode, device, out):
    """Wall seconds of the default run (50 epochs, 64×64, Fashion-MNIST) and its result."""
    start = time.perf_counter()
    summary = train(TrainConfig(batch_size=batch_size, device=device, compile=compile_mode, out=out),
                    log=lambda _: None)
    return {"batch_size": batch_size, "compile": compile_mode, "wall_s": time.perf_counter() - start,
            "final_test_acc": summary["final_test_acc"], "final_test_loss": summary["final_test_loss"]}


def epochs(args, device, tmp):
    rows = []
    for batch_size in args.batch_size:
        steps = args.images // batch_size
        ours = {mode: our_epoch(args, batch_size, mode, f"{tmp}/b{batch_size}-{mode}") for mode in args.compile}
        layouts = (True,) if device.type == "cuda" else (False, True)
        timm_ips = {("channels_last" if cl else "nchw"): bare_loop(
            timm.create_model("mobilenetv1_100", num_classes=10, in_chans=1), batch_size, args.resolution, 1,
            steps, cl, device) for cl in layouts}
        rows.append({"batch_size": batch_size, "mobilenet_train_images_per_s": ours, "timm_bare_images_per_s": timm_ips,
                     "ratio_vs_timm": {f"{mode} / {layout}": ours[mode] / ips
                                       for mode in ours for layout, ips in timm_ips.items()}})
    return rows


def _jpeg_folder(root: Path, count: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, size=(300, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def _timed_epochs(batches_of_epoch, device, epochs=2):
    """Images/s of the last of `epochs` passes (the first starts the workers)."""
    for epoch in range(epochs):
        start, seen = time.perf_counter(), 0
        for images in batches_of_epoch(epoch):
            images = images.to(device, non_blocking=True)
            seen += len(images)
        _sync(device)
    return seen / (time.perf_counter() - start)


def folders(args, device, tmp):
    from torchvision.datasets import ImageFolder

    root = _jpeg_folder(Path(tmp) / "jpegs", args.folder)
    result = {"images": args.folder, "workers": args.workers, "resolution": 224, "batch_size": args.batch_size[0]}
    batch = args.batch_size[0]
    for prefetch in args.prefetch:
        data_module.PREFETCH = prefetch
        source = data_module.FolderSource(root, 224, seed=0, workers=args.workers,  # its 80% training part
                                          augment="crop-flip")
        result[f"ours_prefetch_{prefetch}"] = _timed_epochs(
            lambda e: (b.images for b in source.train_batches(e, batch)), device)
        del source
    transform = folder_transforms(224, IMAGENET_MEAN, IMAGENET_STD, "crop-flip")
    loader = torch.utils.data.DataLoader(ImageFolder(str(root), transform=transform), batch_size=batch, shuffle=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda")
    result["plain_imagefolder"] = _timed_epochs(lambda e: (x for x, _ in loader), device)
    for prefetch in args.prefetch:
        result[f"ratio_prefetch_{prefetch}"] = result[f"ours_prefetch_{prefetch}"] / result["plain_imagefolder"]
    return result




def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, nargs="+", default=[64])
    p.add_argument("--images", type=int, default=6400, help="images in each timed epoch")
    p.add_argument("--compile", nargs="+", default=["off"], choices=list(COMPILE_MODES))
    p.add_argument("--full-run", action="store_true", help="also time the default 50-epoch run")
    p.add_argument("--folder", type=int, help="time the data side on this many JPEGs at 224×224 instead")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--prefetch", type=int, nargs="+", default=[2, 4])
    args = p.parse_args()
    device = torch.device(args.device)

    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
              "threads": torch.get_num_threads(),
              "torch": torch.__version__, "timm": timm.__version__, "resolution": args.resolution}
    with tempfile.TemporaryDirectory() as tmp:
        if args.folder:
            result["folder"] = folders(args, device, tmp)
        else:
            result["epochs"] = epochs(args, device, tmp)
        if args.full_run:
            result["full_runs"] = [full_run(b, mode, args.device, f"{tmp}/full-{b}-{mode}")
                                   for b in args.batch_size for mode in args.compile]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
