"""Progress bars for the slow passes (evaluation, int8 calibration and checks, bench, folder
scans). Off unless turned on: the CLI turns them on when stderr is a terminal, so logs, pipes
and library callers stay clean. No torch here: the ONNX path uses it too."""

from __future__ import annotations

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
