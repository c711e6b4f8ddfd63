"""A training step with the depthwise filter gradient of depthwise.py against oneDNN's own.

    .venv/bin/python benchmarks/depthwise_grad.py [--steps 10] [--rounds 3]

Each case is MobileNet V1 on 1-channel images, channels_last as `mobilenet train` runs it,
SGD on random data. The two ways alternate, `--rounds` times, and each takes its median
step, so a busy machine slows both alike. Prints a Markdown table with the CPU's name.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mobilenet.deploy.benchmark import cpu_features, cpu_name
from mobilenet.net import depthwise
from mobilenet.net.model import MobileNetV1

CASES = [(0.5, 256, 32), (1.0, 64, 32), (0.25, 64, 32), (1.0, 64, 64), (0.5, 64, 224)]  # α, batch, ρ


def step_seconds(width: float, batch: int, resolution: int, steps: int) -> float:
    torch.manual_seed(0)
    model = MobileNetV1(num_classes=10, width_mult=width, in_channels=1).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, resolution, resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(steps + 1):  # the first step pays for oneDNN's kernels and first touches
        start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(f"{cpu_name()} ({' '.join(cpu_features())}), {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| α | batch | ρ | oneDNN's gradient, img/s | depthwise.filter_grad, img/s | speed-up |")
    print("|---|---|---|---|---|---|")
    small = depthwise.SMALL
    for width, batch, resolution in CASES:
        seconds = {0: [], small: []}
        for _ in range(args.rounds):
            for depthwise.SMALL in seconds:  # 0: never ours
                seconds[depthwise.SMALL].append(step_seconds(width, batch, resolution, args.steps))
        theirs, ours = (statistics.median(seconds[k]) for k in (0, small))
        print(f"| {width} | {batch} | {resolution} | {batch / theirs:.0f} | {batch / ours:.0f} | "
              f"{theirs / ours:.2f} |", flush=True)
    depthwise.SMALL = small


if __name__ == "__main__":
    main()
