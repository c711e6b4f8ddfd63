"""What the child-process probe adds to opening a .pte: PteModel(path), which checks the
sidecar and probes the program in a child before loading it here, against loading the same
bytes in this process alone, interleaved in one run.

    .venv/bin/python benchmarks/pte_probe.py [--repeats 3] [--width 1.0] [--resolution 224]

Lowers an untrained 10-class model of that width and resolution with pte.pte_bytes, writes
it and its sidecar, and prints one JSON object: seconds per open, each way (median), and
their ratio. The first in-process load is left out of the median: it imports the runtime.
"""

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mobilenet.data.images import crop_input_spec
from mobilenet.deploy.benchmark import cpu_name
from mobilenet.deploy.executorch import PteModel, pte_bytes, sidecar
from mobilenet.net.model import MobileNetConfig, MobileNetV1
from mobilenet.run.info import ModelInfo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args()
    config = MobileNetConfig(num_classes=10, width_mult=args.width, resolution=args.resolution)
    data = pte_bytes(MobileNetV1.from_config(config).eval(), torch.zeros(1, 3, args.resolution, args.resolution))
    info = ModelInfo([str(i) for i in range(10)], crop_input_spec(3, args.resolution, [0.5] * 3, [0.5] * 3),
                     config, {"name": "random"})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pte"
        path.write_bytes(data)
        sidecar(path).write_text(json.dumps(info.sidecar(False, hashlib.sha256(data).hexdigest())))
        PteModel(data, info)  # imports the runtime
        alone, probed = [], []
        for _ in range(args.repeats):
            for times, open_ in ((alone, lambda: PteModel(data, info)), (probed, lambda: PteModel(path))):
                start = time.perf_counter()
                open_()
                times.append(time.perf_counter() - start)
    alone_s, probed_s = statistics.median(alone), statistics.median(probed)
    print(json.dumps({"cpu": cpu_name(), "width": args.width, "resolution": args.resolution, "program_mb":
                      round(len(data) / 1e6, 2), "in_process_s": round(alone_s, 3), "probed_s": round(probed_s, 3),
                      "ratio": round(probed_s / alone_s, 1)}, indent=1))


if __name__ == "__main__":
    main()
