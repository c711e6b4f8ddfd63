"""The run's log: its lines for the user (stdout, or stderr for warnings and skipped files),
the same lines in train.log, and the epochs' scalars in TensorBoard."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import MobileNetError, printable
from ..files import open_append
from ..run.names import LOG, LOG_MARK

SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")  # of a history row, for TensorBoard


class RunLog:
    """`say` reaches the user only; `note` the user and train.log, once `open`."""

    def __init__(self, say):
        self.say = say
        self.file = self.tb = self.path = None

    def open(self, out: Path) -> None:
        """TensorBoard (when installed) and train.log, opened for appending (never through a link)."""
        self.tb = _tensorboard(out)
        self.path = out / LOG
        self.file = open_append(self.path)
        if os.fstat(self.file.fileno()).st_size == 0:  # a new log: its mark first (run/ownership.py)
            self._write(LOG_MARK)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()

    def note(self, line: str, err: bool = False) -> None:
        """A line for the user and for train.log; a file name with a newline in it cannot add a
        line of its own."""
        line = printable(line)
        (print(line, file=sys.stderr) if err else self.say(line))
        if self.file:
            self._write(line)

    def _write(self, line: str) -> None:
        try:
            self.file.write(line + "\n")
            self.file.flush()
        except OSError as e:  # a full disk: say so; the checkpoint written before is intact
            raise MobileNetError(f"cannot write {self.path}: {e.strerror}") from None

    def scalars(self, row: dict) -> None:
        """An epoch's history row in TensorBoard."""
        if self.tb:
            for key in SCALARS:
                self.tb.add_scalar(key, row[key], row["epoch"])
            self.tb.flush()


def epoch_line(row: dict, epochs: int, ema: bool, multi_label: bool = False) -> str:
    """The log's line for an epoch's history row; with several labels per image, accuracy
    is per label (at ½ in training and test, at the thresholds on validation), beside mAP."""
    bad = row["bad_files"]

    def scores(part: str) -> str:
        found = f"{part.replace('_', ' ')} loss {row[part + '_loss']:.4f} acc {100 * row[part + '_acc']:.2f}%"
        return found + (f" mAP {100 * row[part + '_map']:.2f}%" if multi_label and part != "train" else "")

    return (f"epoch {row['epoch']}/{epochs}  {scores('train')}  {scores('test')}  "
            f"lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s"
            + (f"  {scores('ema_test')}" if ema else "")
            + (f"  {scores('val')}" if row["val_acc"] is not None else "")
            + (f"  {bad} files skipped" if bad else ""))


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    try:
        return SummaryWriter(str(out / "tensorboard"))
    except OSError as e:
        raise MobileNetError(f"--out {out}: cannot write the tensorboard folder ({e.strerror}); "
                             "move what is in the way or choose another --out") from None
