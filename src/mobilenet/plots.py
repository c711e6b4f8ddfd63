"""The pictures: the seed's two training curves and a confusion matrix (matplotlib only)."""

from __future__ import annotations

from pathlib import Path

from .files import atomic_savefig


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history: list[dict], out: Path) -> None:
    """total_acc.png (train and test accuracy per epoch) and total_test_loss.png: the
    seed's two figures."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    for name, keys, ylabel in (
        ("total_acc", ("train_acc", "test_acc"), "accuracy (%)"),
        ("total_test_loss", ("test_loss", "train_loss"), "cross-entropy loss"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            values = [100 * h[key] if "acc" in key else h[key] for h in history]
            ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, markersize=3,
                    label=key.replace("_", " "))
        ax.set(title=name, xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        atomic_savefig(out / f"{name}.png", fig)
        plt.close(fig)


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
        ax.set_xticks(range(n), classes, rotation=90, parse_math=False)
        ax.set_yticks(range(n), classes, parse_math=False)
        top = confusion.max() or 1
        for i in range(n):
            for j in range(n):
                v = int(confusion[i, j])
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test split)")
    atomic_savefig(path, fig)
    plt.close(fig)
