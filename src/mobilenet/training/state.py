"""Where a run stands between steps: its history, the epoch it keeps and its patience, and
where it goes on from; the part of the checkpoint that says so, and each epoch's history row."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # an annotation: run.folder imports torch, and this module does not
    from ..run.folder import EpochRow


class EpochSums(NamedTuple):
    """An epoch's sums so far: what a checkpoint saved mid-epoch keeps (as a plain tuple) so
    that the resumed epoch reports the whole epoch's loss, accuracy and time."""
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    bad: int = 0
    seconds: float = 0.0


@dataclass
class RunState:
    history: list = field(default_factory=list)
    best_acc: float = -1.0  # reported only: nothing is chosen on the test split
    best_val: float = -1.0  # with --val-split: the kept epoch's validation score (--select-by)
    since_best: int = 0  # epochs since it
    kept_epoch: int = 0  # the epoch whose weights model.safetensors holds
    start_epoch: int = 0
    start_step: int = 0
    partial: dict | None = None  # a stopped epoch's {"sums": tuple(EpochSums)}
    total_bad: int = 0

    @classmethod
    def from_checkpoint(cls, state: dict) -> "RunState":
        """From a checkpoint in today's form (run.folder.load_checkpoint)."""
        return cls(list(state["history"]), state["best_acc"], state["best_val"], state["since_best"],
                   state["kept_epoch"], state["epoch"], state["step"], state["partial"])

    def checkpoint(self, epoch: int, step: int, partial: dict | None) -> dict:
        """The checkpoint's record of where the run stands: go on at (epoch, step) with `partial`'s sums."""
        return {"epoch": epoch, "step": step, "partial": partial, "history": self.history, "best_acc": self.best_acc,
                "best_val": self.best_val, "since_best": self.since_best, "kept_epoch": self.kept_epoch}

    def add(self, row: dict, score: str = "val_acc") -> bool:
        """Appends an epoch's row; whether its weights replace the saved ones: always without a
        validation split (the latest); with one, when its validation `score` (--select-by's
        column) is the best so far."""
        self.history.append(row)
        self.best_acc = max(self.best_acc, row["test_acc"])
        self.total_bad += row["bad_files"]
        if row[score] is not None and row[score] <= self.best_val:
            self.since_best += 1
            return False
        if row[score] is not None:
            self.best_val, self.since_best = row[score], 0
        self.kept_epoch = row["epoch"]
        return True


def history_row(epoch: int, sums: dict, ev: dict, lr: float, bad: int) -> EpochRow:
    """history.csv's row of an epoch from its training sums and its evaluation (`ev`)."""
    seen = sums["seen"]
    return {"epoch": epoch + 1, "train_loss": sums["loss_sum"] / max(seen, 1), "train_acc": sums["correct"] / max(seen, 1),
            "test_loss": ev["test_loss"], "test_acc": ev["test_acc"], "lr": lr,
            "seconds": time.perf_counter() - sums["began"], "images_per_s": seen / max(sums["train_seconds"], 1e-9),
            "bad_files": bad, **{k: ev[k] for k in ("ema_test_loss", "ema_test_acc", "val_loss", "val_acc",
                                                   "val_balanced_acc", "val_macro_f1", "test_map", "ema_test_map",
                                                   "val_map")}}
