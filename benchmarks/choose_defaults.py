"""How should Fashion-MNIST's 28×28 images meet a network designed for 224×224?

    .venv/bin/python benchmarks/choose_defaults.py [--epochs 3] [--resolutions 32,48,64]

Trains the default recipe (α = 1, batch 64, SGD, flips and 2-pixel shifts) for a few
epochs at each input size (28×28 upsampled bilinearly; 32 is the smallest size the
body's five stride-2 layers allow) on all 60,000 images and prints test accuracy and
seconds per epoch. A short budget is a proxy for the 50-epoch one: see the README.
"""

import argparse
import json
import tempfile

from mobilenet.training.loop import TrainConfig, train


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--resolutions", default="32,48,64")
    p.add_argument("--augment", default="flip-shift")
    args = p.parse_args()
    rows = []
    for r in map(int, args.resolutions.split(",")):
        with tempfile.TemporaryDirectory() as out:
            s = train(TrainConfig(epochs=args.epochs, resolution=r, augment=args.augment, out=out),
                      log=lambda _: None)
        rows.append({"resolution": r, "test_acc": s["final_test_acc"], "seconds_per_epoch": s["seconds"] / s["epochs"]})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
