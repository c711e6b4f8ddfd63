"""Training throughput: a whole `mobilenet train` epoch (data, augmentation, step) against
the bare forward/backward/step loop of timm's mobilenetv1_100, same batch and size, one run.

    .venv/bin/python benchmarks/train_throughput.py [--resolution 32] [--batch-size 64] [--images 6400]

Prints one JSON object. The ratio is ours / timm: these machines are shared and noisy,
so only a ratio measured in the same run means anything. timm is timed twice: in its
default NCHW layout and in channels_last (what `mobilenet train` uses).
"""

import argparse
import json
import platform
import tempfile
import time

import timm
import torch
import torch.nn.functional as F

from mobilenet.training import TrainConfig, train


def bare_loop(model, batch_size, resolution, in_chans, steps, channels_last):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch_size, in_chans, resolution, resolution).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch_size,))
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=6400, help="images in the timed epoch")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as out:
        # warm-up run (first-touch allocations, thread pools), then the timed one
        train(TrainConfig(epochs=1, limit=args.batch_size * 4, batch_size=args.batch_size,
                          resolution=args.resolution, out=out + "/warm"), log=lambda _: None)
        train(TrainConfig(epochs=1, limit=args.images, batch_size=args.batch_size, resolution=args.resolution,
                          out=out + "/run"), log=lambda _: None)
        with open(out + "/run/history.csv") as f:
            ours = float(f.read().splitlines()[1].split(",")[7])  # images_per_s of the training part
    steps = args.images // args.batch_size
    reference = {}
    for channels_last in (False, True):
        model = timm.create_model("mobilenetv1_100", num_classes=10, in_chans=1)
        reference["channels_last" if channels_last else "nchw"] = bare_loop(
            model, args.batch_size, args.resolution, 1, steps, channels_last)
    result = {
        "mobilenet_train_images_per_s": ours,
        "timm_bare_images_per_s": reference,
        "ratio_vs_timm_nchw": ours / reference["nchw"],
        "ratio_vs_timm_channels_last": ours / reference["channels_last"],
        "resolution": args.resolution, "batch_size": args.batch_size, "images": args.images,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "timm": timm.__version__,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
