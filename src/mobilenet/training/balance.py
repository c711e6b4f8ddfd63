"""An imbalanced training split: --sampler and --class-weights.

A class's weight multiplies its images' share of the cross-entropy, so the loss no longer
belongs to the largest classes. "inverse" gives each class N / (C · n_c), as scikit-learn's
"balanced" and Keras' usual recipe do; "effective" is Cui et al.'s class-balanced weight
(CVPR 2019), (1 − β) / (1 − β^n_c), which grows more slowly than 1 / n_c for tiny classes;
both are scaled so that an image's mean weight over the split is 1, which makes them
readable (the loss divides by its batch's summed weights, so the scale changes nothing in
training). "auto" turns AUTO_SCHEME on when the largest class has more than
IMBALANCE times the images of the smallest, the report's warning threshold, unless the
sampler balances the batches already: `--sampler auto` draws them balanced above the same
threshold (data/batches.py), which did better on validation than either weighting
(docs/results.md). With several labels per image the weights are binary cross-entropy's
pos_weight (pos_weights). No torch.
"""

from __future__ import annotations

from ..limits import IMBALANCE

SCHEMES = ("inverse", "effective")
CLASS_WEIGHTS = ("auto", "none", *SCHEMES)  # --class-weights
SAMPLERS = ("auto", "shuffle", "balanced")  # --sampler: data/batches.py draws a balanced epoch
AUTO_SCHEME = "effective"  # what auto turns on: chosen on validation figures (docs/results.md)
EFFECTIVE_BETA = 0.999  # Cui et al.'s β for data sets of thousands of images per class


def imbalance(counts: list[int]) -> float:
    """The largest class's count over the smallest's, among the classes with images."""
    present = [n for n in counts if n > 0]
    return max(present) / min(present) if present else 1.0


def settled_sampler(choice: str, counts: list[int]) -> str:
    """--sampler with auto decided by the counts: balanced above IMBALANCE, else shuffle."""
    if choice != "auto":
        return choice
    return "balanced" if imbalance(counts) > IMBALANCE else "shuffle"


def settled(choice: str, counts: list[int], sampler: str = "shuffle") -> str:
    """--class-weights with auto decided by the counts: AUTO_SCHEME above IMBALANCE, else
    none; none when a balanced sampler already gives every class its share."""
    if choice != "auto":
        return choice
    return AUTO_SCHEME if imbalance(counts) > IMBALANCE and sampler != "balanced" else "none"


def class_weights(scheme: str, counts: list[int]) -> list[float] | None:
    """Each class's weight under a settled scheme (None for "none"): a class without training
    images gets 0, and the images' mean weight is 1."""
    if scheme == "none":
        return None
    if scheme == "inverse":
        raw = [1.0 / n if n else 0.0 for n in counts]
    elif scheme == "effective":
        raw = [(1 - EFFECTIVE_BETA) / (1 - EFFECTIVE_BETA ** n) if n else 0.0 for n in counts]
    else:
        raise ValueError(f"unknown class weighting {scheme!r}")
    scale = sum(counts) / sum(w * n for w, n in zip(raw, counts))
    return [w * scale for w in raw]


def pos_weights(scheme: str, counts: list[int], images: int) -> list[float] | None:
    """Several labels per image: binary cross-entropy's pos_weight for each class under a
    settled scheme (None for "none"), its negatives over its positives (inverse), or the
    ratio of their effective numbers, (1 − β^negatives) / (1 − β^positives) (effective); 1
    for a class without positives, whose weight nothing multiplies."""
    if scheme == "none":
        return None
    if scheme == "inverse":
        return [(images - n) / n if n else 1.0 for n in counts]
    if scheme == "effective":
        return [(1 - EFFECTIVE_BETA ** (images - n)) / (1 - EFFECTIVE_BETA ** n) if n else 1.0 for n in counts]
    raise ValueError(f"unknown class weighting {scheme!r}")


def sampler_line(choice: str, sampler: str, counts: list[int]) -> str | None:
    """The run's first line about a balanced sampler, or None when there is none to tell."""
    if sampler != "balanced":
        return None
    why = (f"auto: the largest training class has {imbalance(counts):.1f}× the images of the smallest; "
           "--sampler shuffle turns it off" if choice == "auto" else "--sampler balanced")
    return f"sampler: balanced ({why}): each epoch draws every class equally often, with replacement"


def weights_line(choice: str, scheme: str, counts: list[int], classes: list[str],
                 images: int | None = None) -> str | None:
    """The run's first line about weighting, or None when there is none to tell; with
    `images` (several labels per image), about the positives' weights."""
    if scheme == "none":
        return None
    weights = class_weights(scheme, counts) if images is None else pos_weights(scheme, counts, images)
    low, high = min(w for w in weights if w), max(weights)
    why = (f"auto: the largest training class has {imbalance(counts):.1f}× the images of the smallest; "
           "--class-weights none turns it off" if choice == "auto" else f"--class-weights {scheme}")
    return (f"{'class' if images is None else 'positive-label'} weights: {scheme} ({why}), from {low:.3g} "
            f"({classes[weights.index(low)]}) to {high:.3g} ({classes[weights.index(high)]})")
