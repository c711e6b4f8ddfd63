"""A sweep's points timed on the user's device (`sweep --on`), and whose latency a collect
reads: each device's times are kept in the point's record under its name (DEVICE_MS), beside
this machine's latency_ms."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadArgument, printable
from ..files import atomic_write_json
from ..formats import runtime_row, size_key
from .records import DEVICE_MS, POINT, point_dir, read_point


def time_on(out: Path, plan: dict, p: tuple[float, int], device, seconds: float, log) -> None:
    """Phase two on a device: each runtime's file (exported here when the point has none
    yet) timed there at batch 1; the record is written after each, so a killed sweep times
    nothing twice."""
    from ..deploy.on_device import bench_on

    record, folder = read_point(out, p), point_dir(out, p)
    if not device.name:
        device.describe()  # its name, as it reports itself
    done = dict(record.get(DEVICE_MS, {}).get(device.name, {}))
    todo = [r for r in plan["runtimes"] if r not in done]
    say = (lambda line: log(f"[{record['run']}] {line}"))
    for runtime in todo:
        result = bench_on(device, _point_file(folder, runtime, say), [1], [runtime], None, seconds)
        done[runtime] = result["rows"][0]["median_ms"]
        record["size_mb"].setdefault(size_key(runtime), result["rows"][0]["file_mb"])
        record.setdefault(DEVICE_MS, {})[device.name] = done
        atomic_write_json(folder / POINT, record)
    if todo:
        log(printable(f"[{record['run']}] batch 1 on {device.name}: ")
            + ", ".join(f"{r} {ms:.2f} ms" for r, ms in done.items()))


def _point_file(folder: Path, runtime: str, log) -> Path:
    """The point's file that `runtime` runs, exported now if it is not there yet."""
    from ..deploy.exporter import export, export_path

    fmt, int8 = runtime_row(runtime).format, runtime.endswith("-int8")
    path = export_path(folder, fmt, int8)
    if not path.is_file():
        export(folder, fmt, int8=int8, log=log)
    return path


def latency_source(records) -> str | None:
    """Whose latency a collect without --on reads: this machine's when every point has it,
    else the one device every point was timed on (a sweep run with --on)."""
    records = [r for r in records if r]
    if not records or all("latency_ms" in r for r in records):
        return None
    shared = set.intersection(*(set(r.get(DEVICE_MS, {})) for r in records))
    if len(shared) != 1:
        raise BadArgument("the points were timed on " + (f"several devices ({', '.join(sorted(shared))})" if shared
                          else "no one machine") + "; say which with --on DEST (and --device-name NAME)")
    return shared.pop()


def with_latency_of(record: dict, on: str | None) -> dict:
    """The record with `on`'s latency as its latency_ms (the host's when None)."""
    return {**record, "latency_ms": record[DEVICE_MS][on]} if on else record


def devices_of(rows: list[dict]) -> list[str]:
    return sorted({name for r in rows for name in r.get(DEVICE_MS, {})})
