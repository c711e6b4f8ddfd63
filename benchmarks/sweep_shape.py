"""The shape of a sweep's trade-off beside the paper's: does accuracy fall off smoothly, and
log-linearly in mult-adds (Figure 4, Tables 6-7)?

For a sweep.json (`mobilenet sweep`) and for the paper's seven ImageNet points, a least-
squares line of accuracy (points) against log10(mult-adds): its slope (points per tenfold
mult-adds), R² and the largest residual; then, per α, the accuracy at each ρ from the
largest down. Reads the recorded figures only; nothing is trained or timed here.

    .venv/bin/python benchmarks/sweep_shape.py runs/sweep-cpu/sweep.json [--key val_acc|test_acc]
"""

from __future__ import annotations

import argparse
import json
import math

# Tables 6 and 7 (ImageNet top-1 %, mult-adds in millions), as shared/paper-figures.md gives them.
PAPER = [(1.0, 224, 70.6, 569), (0.75, 224, 68.4, 325), (0.5, 224, 63.7, 149), (0.25, 224, 50.6, 41),
         (1.0, 192, 69.1, 418), (1.0, 160, 67.2, 290), (1.0, 128, 64.4, 186)]


def fit(points: list[tuple[float, float]]) -> dict:
    """Least squares of y on log10(x): slope, R² and the largest residual (signed)."""
    xs, ys = [math.log10(x) for x, _ in points], [y for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    residuals = [y - my - slope * (x - mx) for x, y in zip(xs, ys)]
    total = sum((y - my) ** 2 for y in ys) or 1.0
    return {"slope": slope, "r2": 1 - sum(r * r for r in residuals) / total, "max_residual": max(residuals, key=abs)}


def line(name: str, f: dict) -> str:
    return (f"{name:<28} {f['slope']:6.2f} points per 10× mult-adds   R² {f['r2']:.3f}   "
            f"largest residual {f['max_residual']:+.2f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_json")
    parser.add_argument("--key", default="val_acc", choices=["val_acc", "test_acc"])
    args = parser.parse_args()
    with open(args.sweep_json) as f:
        rows = json.load(f)["points"]
    ours = [(r["mult_adds"], 100 * r[args.key]) for r in rows]
    print(line(f"this sweep ({args.key})", fit(ours)))
    print(line("the paper (ImageNet top-1)", fit([(m, a) for _, _, a, m in PAPER])))
    print()
    for alpha in sorted({r["alpha"] for r in rows}, reverse=True):
        line_rows = sorted((r for r in rows if r["alpha"] == alpha), key=lambda r: -r["rho"])
        steps = "  ".join(f"ρ {r['rho']}: {100 * r[args.key]:.2f}%" for r in line_rows)
        print(f"α {alpha:g}: {steps}")
    for rho in sorted({r["rho"] for r in rows}, reverse=True):
        col = sorted((r for r in rows if r["rho"] == rho), key=lambda r: -r["alpha"])
        steps = "  ".join(f"α {r['alpha']:g}: {100 * r[args.key]:.2f}%" for r in col)
        print(f"ρ {rho}: {steps}")


if __name__ == "__main__":
    main()
