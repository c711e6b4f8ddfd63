"""What a sweep folder holds, read back as checked records: the plan (sweep_plan.json), each
point's record (sweep_point.json) and the point folders. A field of the wrong kind is one
line naming the file and the field; a point folder is the plan's name for the point, never
a record's, and must be a real folder inside the sweep folder (not a link); `best` is only
ever a link the sweep made, replaced atomically."""

from __future__ import annotations

import os
import secrets
from dataclasses import fields
from pathlib import Path

from ..errors import BadArgument, MobileNetError, printable
from ..files import TEMP_PREFIX, load_json_object
from ..formats import RUNTIMES
from ..limits import check_number, finite_number
from ..training.config import TrainConfig

PLAN = "sweep_plan.json"  # what every point shares, written first
POINT = "sweep_point.json"  # each point's record, in its run folder
BEST = "best"  # the link to the picked point
SWEEP_RUNTIMES = tuple(r for r in RUNTIMES if r != "timm")  # timm is bench's reference, not a deployment
MAX_POINTS = 64  # a grid larger than this is no sweep that one machine here would finish
AGAIN = "remove it to run that part again"

# A point's record: each field's kind (int, float, a {name: float} map), and whether the
# first phase (training) or the second (timing) writes it.
TRAINED = {"alpha": float, "rho": int, "params": int, "mult_adds": int, "peak_activation_bytes": int,
           "val_acc": float, "test_acc": float, "test_loss": float, "kept_epoch": int, "epochs": int,
           "train_seconds": float, "size_mb": dict}
TIMED = {"latency_ms": dict}
DEVICE_MS = "device_ms"  # {device name: {runtime: ms}}: `sweep --on`'s times, each device's own


def point_name(alpha: float, rho: int) -> str:
    return f"a{alpha:g}-r{rho}"


def points(plan: dict) -> list[tuple[float, int]]:
    """The grid in the paper's order: α, then ρ, each from the largest."""
    return [(a, r) for a in sorted(plan["widths"], reverse=True) for r in sorted(plan["resolutions"], reverse=True)]


def point_dir(out: Path, p: tuple[float, int]) -> Path:
    """The point's run folder: out/a{α}-r{ρ}, a real folder (or none yet), never a link out."""
    folder = Path(out) / point_name(*p)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise MobileNetError(f"{printable(folder)} is a link or a file, not a point folder of this sweep; {AGAIN}")
    return folder


def check_grid(count: int) -> None:
    if count > MAX_POINTS:
        raise BadArgument(f"a grid of {count} points is too large for one sweep (at most {MAX_POINTS}); "
                          "give fewer --widths or --resolutions, or split them over several sweeps")


def read_plan(path: Path) -> dict:
    """sweep_plan.json, checked: every field the points need, of its kind and within limits."""
    plan = load_json_object(path, "--out", AGAIN)
    where = printable(path)
    widths, resolutions = plan.get("widths"), plan.get("resolutions")
    for key, values, limit in (("widths", widths, "width"), ("resolutions", resolutions, "resolution")):
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            raise MobileNetError(f"{where}: {key} must be a list of different numbers; {AGAIN}")
        for value in values:
            try:
                check_number(limit, value, exact=True)
            except ValueError as e:
                raise MobileNetError(f"{where}: {key}: {e}; {AGAIN}") from None
    check_grid(len(widths) * len(resolutions))
    runtimes = plan.get("runtimes")
    if not isinstance(runtimes, list) or not runtimes or not all(r in SWEEP_RUNTIMES for r in runtimes):
        raise MobileNetError(f"{where}: runtimes must list some of {', '.join(SWEEP_RUNTIMES)}; {AGAIN}")
    train = plan.get("train")
    names = {f.name for f in fields(TrainConfig)}
    if not isinstance(plan.get("int8"), bool) or not isinstance(train, dict) or not set(train) <= names:
        raise MobileNetError(f"{where}: int8 must be true or false and train the options of `mobilenet train`; {AGAIN}")
    return plan


def read_point(out: Path, p: tuple[float, int]) -> dict | None:
    """The point's record, checked; None when the point has none yet."""
    path = point_dir(out, p) / POINT
    if not os.path.lexists(path):
        return None
    record = load_json_object(path, "--out", AGAIN)
    where = printable(path)
    if record.get("run") != point_name(*p):
        raise MobileNetError(f"{where}: run must be {point_name(*p)!r}, the folder it is in; {AGAIN}")
    for key, kind in {**TRAINED, **(TIMED if "latency_ms" in record else {})}.items():
        _field(where, key, record.get(key), kind)
    devices = record.get(DEVICE_MS, {})
    if not isinstance(devices, dict) or not all(isinstance(k, str) for k in devices):
        raise MobileNetError(f"{where}: {DEVICE_MS} must map device names to times; {AGAIN}")
    for name, times in devices.items():
        _field(where, f"{DEVICE_MS}: {printable(name)[:40]}", times, dict)
    if record.get("score", "accuracy") not in ("accuracy", "mAP"):  # what val_acc and test_acc hold
        raise MobileNetError(f"{where}: score must be accuracy or mAP; {AGAIN}")
    if "test_acc_int8" in record:
        _field(where, "test_acc_int8", record["test_acc_int8"], float)
    if (record["alpha"], record["rho"]) != p:
        raise MobileNetError(f"{where}: alpha and rho must be {p[0]:g} and {p[1]}, the folder's; {AGAIN}")
    return record


def _field(where: str, key: str, value, kind) -> None:
    if kind is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) and finite_number(v) for k, v in value.items())
        what = "an object of finite numbers"
    else:
        ok = finite_number(value, whole=kind is int)
        what = "a whole number" if kind is int else "a finite number"
    if not ok:
        raise MobileNetError(f"{where}: {key} must be {what}, got {printable(repr(value))[:40]}; {AGAIN}")


def link_best(out: Path, run: str) -> None:
    """out/best -> the picked point folder, replaced atomically (a temporary link of a random
    name, renamed over it). Only a link is ever replaced."""
    best = Path(out) / BEST
    if os.path.lexists(best) and not best.is_symlink():
        raise MobileNetError(f"{printable(best)} is not the link the sweep made (a folder or a file); remove it, "
                             "then collect again")
    tmp = Path(out) / f"{TEMP_PREFIX}{BEST}.{secrets.token_hex(4)}.tmp"
    os.symlink(run, tmp)
    os.replace(tmp, best)


def unlink_best(out: Path) -> None:
    """An earlier pick's link, when no point fits a new budget."""
    best = Path(out) / BEST
    if best.is_symlink():
        best.unlink()
