"""Progress bars for the slow passes (evaluation, int8 calibration and checks, bench, folder
scans). Off unless turned on: the CLI turns them on when stderr is a terminal, so logs, pipes
and library callers stay clean. Training's epochs, in a pipe or a log, print a Heartbeat line
instead. No torch here: the ONNX path uses it too."""

from __future__ import annotations

import time

_shown = False


def show(enabled: bool) -> None:
    """Turn the bars on or off for this process."""
    global _shown
    _shown = bool(enabled)


def bar(iterable=None, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool | None = None,
        **options):
    """A tqdm bar on stderr over `iterable` (or updated by hand); silent unless show(True),
    or unless `enabled` says otherwise. `options` go to tqdm (e.g. initial)."""
    from tqdm import tqdm

    options = {"leave": False, "mininterval": 0.5, "dynamic_ncols": True, **options}
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not (_shown if enabled is None else enabled),
                **options)


NOTE_SECONDS = 60.0  # in a pipe or a log, a long pass says how far it is about this often
clock = time.monotonic  # the Heartbeat's clock (a test slows it)


class Heartbeat:
    """Where no bar shows (a pipe, a log), a long pass prints one line about every
    NOTE_SECONDS: steps done, images per second and the time left, so it never looks hung."""

    def __init__(self, log, desc: str, total: int, done: int = 0, enabled: bool = True):
        self.log, self.desc, self.total, self.enabled = log, desc, total, enabled
        self.began = self.last = clock()
        self.first, self.images = done, 0

    def update(self, done: int, images: int) -> None:
        """`done` steps of `total` so far; `images` more seen since the last call."""
        self.images += images
        if not self.enabled:
            return
        now = clock()
        if now - self.last < NOTE_SECONDS:
            return
        self.last = now
        elapsed, steps = now - self.began, max(done - self.first, 1)
        left = elapsed / steps * (self.total - done)
        self.log(f"{self.desc}: step {done}/{self.total}, {self.images / max(elapsed, 1e-9):.0f} img/s, "
                 f"{_duration(left)} left in the epoch")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
