"""The pictures: the seed's two training curves and a confusion matrix (matplotlib only)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import printable
from ..files import atomic_savefig, atomic_write_bytes, figure_bytes
from ..run.names import CURVES


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history: list[dict], out: Path) -> None:
    """total_acc.png (accuracy per epoch) and total_test_loss.png: the seed's two figures, with
    train and test, and validation and EMA where the run has them."""
    for name, data in curve_pngs(history).items():
        atomic_write_bytes(out / name, data)


_drawn: dict = {}  # the last history's curves: a run's page shows what its last epoch drew


def curve_pngs(history: list[dict]) -> dict[str, bytes]:
    """plot_curves' two PNGs, by file name, drawn once for a given history."""
    key = json.dumps(history, sort_keys=True, default=str)
    if key not in _drawn:
        _drawn.clear()
        _drawn[key] = _draw_curves(history)
    return _drawn[key]


def _draw_curves(history: list[dict]) -> dict[str, bytes]:
    plt = _pyplot()
    found = {}
    for name, keys, ylabel in zip(CURVES, (("train_acc", "test_acc", "val_acc", "ema_test_acc"),
                                           ("test_loss", "train_loss", "val_loss", "ema_test_loss")),
                                  ("accuracy (%)", "cross-entropy loss")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            rows = [h for h in history if h.get(key) is not None]  # None: not measured that epoch
            values = [100 * float(h[key]) if "acc" in key else float(h[key]) for h in rows]
            if rows:
                ax.plot([h["epoch"] for h in rows], values, marker="o" if len(rows) < 30 else None,
                        markersize=3, label=key.replace("_", " "))
        ax.set(title=Path(name).stem, xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        found[name] = figure_bytes(fig, tight=False)  # short labels: the default margins hold them
        plt.close(fig)
    return found


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> None:
    """confusion_matrix.png: true class by row, predicted class by column, with counts."""
    import numpy as np

    plt = _pyplot()
    confusion = np.asarray(confusion)
    n = len(classes)
    size = max(5, 0.6 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    if n <= 30:
        # parse_math off: a class name with $ in it is a name, not mathtext (which may not even parse)
        labels = [printable(c) for c in classes]  # no control character reaches matplotlib, or its warnings
        ax.set_xticks(range(n), labels, rotation=90, parse_math=False)
        ax.set_yticks(range(n), labels, parse_math=False)
        top = confusion.max() or 1
        for i in range(n):
            for j in range(n):
                v = int(confusion[i, j])
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test split)")
    atomic_savefig(path, fig)
    plt.close(fig)


def pareto_front(rows: list[dict], cost) -> list[dict]:
    """The rows that no other row beats on both `cost(row)` (lower) and validation accuracy
    (higher), cheapest first."""
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (cost(r), -r["val_acc"])):
        if r["val_acc"] > best:
            front.append(r)
            best = r["val_acc"]
    return front


def _log_axis(axis) -> None:
    """A log axis labelled in plain numbers at 1, 2 and 5 of each decade."""
    import math

    from matplotlib.ticker import FuncFormatter

    axis.axes.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (1, 2, 5)
                          else "")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def score_name(rows: list[dict]) -> str:
    """What a sweep's points' val_acc and test_acc hold: accuracy, or a multi-label sweep's mAP."""
    return "mAP" if any(r.get("score") == "mAP" for r in rows) else "accuracy"


def plot_tradeoff(rows: list[dict], runtime: str, out: Path, on: str | None = None) -> None:
    """A sweep's pictures, validation accuracy against: mult-adds on a log axis, one line
    per α (the paper's Figure 4); parameters on a log axis, one line per ρ (Figure 5); and
    `runtime`'s batch-1 latency, with the Pareto front: this machine's, or device `on`'s."""
    plt = _pyplot()
    acc = lambda r: 100 * r["val_acc"]  # noqa: E731
    where = f" on {printable(on)}" if on else ""
    specs = (("tradeoff_macs", "alpha", lambda r: r["mult_adds"] / 1e6, "mult-adds (millions, log scale)", "α"),
             ("tradeoff_params", "rho", lambda r: r["params"] / 1e6, "parameters (millions, log scale)", "ρ"),
             ("tradeoff_latency", "alpha", lambda r: r["latency_ms"][runtime],
              f"{runtime} latency at batch 1 (ms){where}", "α"))
    for name, group, x, xlabel, symbol in specs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for value in sorted({r[group] for r in rows}, reverse=True):
            line = sorted((r for r in rows if r[group] == value), key=x)
            ax.plot([x(r) for r in line], [acc(r) for r in line], marker="o", label=f"{symbol} = {value:g}")
        if name == "tradeoff_latency":
            front = pareto_front(rows, x)
            ax.step([x(r) for r in front], [acc(r) for r in front], where="post", color="black", linestyle="--",
                    linewidth=1, label="Pareto front")
            ax.scatter([x(r) for r in front], [acc(r) for r in front], s=90, facecolors="none", edgecolors="black")
        if name != "tradeoff_latency":  # as the paper draws them
            _log_axis(ax.xaxis)
        for r in rows:
            ax.annotate(printable(r["run"]), (x(r), acc(r)), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel=xlabel, ylabel=f"validation {score_name(rows)} (%)", title=name.replace("_", " "))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        atomic_savefig(out / f"{name}.png", fig)
        plt.close(fig)
