"""`bench --on` against local `bench` for the same file, on a loopback device, in one run.

A real OpenSSH server on a free loopback port (tests/sshd.py: its own host key, authorized
key, client config and known_hosts) stands in for the device, with this Python as the
device's. Rounds alternate local bench_file and bench_on on the same file, runtime, batch 1
and thread count, so that a noisy neighbour slows both alike. Reported: the ratio of the
medians (device over local; 1 means the harness adds nothing to a timed call), and the
harness's overhead per `bench --on` call: its wall time less the device's own work (the
load, the first call, the warm-up and the timed runs, as the runner reports them).

    .venv/bin/python benchmarks/device_bench.py [--model FILE.onnx | --width 1 --resolution 224] [--rounds 5]

Without --model, an untrained network of --width and --resolution is exported to ONNX first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="an exported .onnx (default: an untrained network of --width and --resolution)")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()

    import sshd
    from mobilenet.deploy.benchmark import bench_file, cpu_name
    from mobilenet.deploy.on_device import bench_on
    from mobilenet.deploy.remote import Device

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.model:
            args.model = _untrained_onnx(Path(tmp) / "model.onnx", args.width, args.resolution)
        (Path(tmp) / "sshd").mkdir()
        server = sshd.Server(Path(tmp) / "sshd")
        try:
            device = Device("device", str(server.config), sys.executable, "loopback")
            device.describe()
            local, remote, overhead = [], [], []
            for _ in range(args.rounds):
                local.append(bench_file(args.model, [1], [args.runtime], args.seconds)["rows"][0]["median_ms"])
                start = time.perf_counter()
                found = bench_on(device, args.model, [1], [args.runtime], [threads], args.seconds)
                wall = time.perf_counter() - start
                row = found["rows"][0]
                work = (row["load_seconds"] + row["first_run_ms"] / 1000
                        + (row["iterations"] + 3) * row["median_ms"] / 1000)  # 3 warm-up calls
                remote.append(row["median_ms"])
                overhead.append(wall - work)
        finally:
            server.stop()
    ratios = [r / h for r, h in zip(remote, local)]
    print(f"{cpu_name()}, {threads} threads, {args.runtime}, {args.model}, batch 1, {args.rounds} rounds")
    print(f"local bench median ms: {', '.join(f'{v:.3f}' for v in local)}")
    print(f"bench --on median ms:  {', '.join(f'{v:.3f}' for v in remote)}")
    print(f"device / local, per round: {', '.join(f'{v:.3f}' for v in ratios)}; median {statistics.median(ratios):.3f}")
    print(f"harness overhead per bench --on call (s): {', '.join(f'{v:.2f}' for v in overhead)}; "
          f"median {statistics.median(overhead):.2f}")
    return 0


def _untrained_onnx(path: Path, width: float, resolution: int) -> str:
    from mobilenet.deploy.benchmark import _bench_info
    from mobilenet.deploy.exporter import onnx_bytes
    from mobilenet.net.model import MobileNetConfig, MobileNetV1

    model = MobileNetV1.from_config(MobileNetConfig(width_mult=width, resolution=resolution)).eval()
    path.write_bytes(onnx_bytes(model, _bench_info(model, torch.zeros(1, 3, resolution, resolution))))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
