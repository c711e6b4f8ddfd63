"""latency.json: bench's timings of a run folder's model, kept by device (this machine, and
each device timed with `bench --on`), so that the report shows one column per device. A
device's rows are replaced row by row: the same file, runtime, batch size and threads."""

from __future__ import annotations

from pathlib import Path

from ..files import PRODUCER, atomic_write_json, read_json_object
from .names import CONFIG, LATENCY
from .ownership import refuse_foreign

ROW = ("file", "runtime", "batch_size", "threads")  # what one timing is of


def kept_in(model) -> Path | None:
    """The run folder a model's timings are kept in: the folder itself, or an exported file's
    folder when it is a run folder; None elsewhere (a file the user keeps apart)."""
    folder = Path(model) if Path(model).is_dir() else Path(model).parent
    return folder if (folder / CONFIG).is_file() else None


def keep_latency(folder, result: dict, force: bool = False) -> Path:
    """Add bench's `result` to folder/latency.json under its device's name."""
    path = Path(folder) / LATENCY
    refuse_foreign([path], "--model", force)
    devices = read_latency(folder)
    new = result["rows"]
    fresh = {tuple(r.get(k) for k in ROW) for r in new}
    earlier = devices.get(result["device"], {}).get("rows", [])
    rows = [r for r in earlier if tuple(r.get(k) for k in ROW) not in fresh] + new
    devices[result["device"]] = {"machine": result["machine"], "date": result["date"], "rows": rows}
    atomic_write_json(path, {"producer": PRODUCER, "devices": devices})
    return path


def read_latency(folder) -> dict[str, dict]:
    """{device name: {"machine", "date", "rows"}}, each row a dict; {} when there is none or
    it is not ours to read. Entries of the wrong shape are left out."""
    found = read_json_object(Path(folder) / LATENCY)
    devices = found.get("devices") if found.get("producer") == PRODUCER else None
    if not isinstance(devices, dict):
        return {}
    return {name: {**entry, "rows": [r for r in entry["rows"] if isinstance(r, dict)]}
            for name, entry in devices.items()
            if isinstance(name, str) and isinstance(entry, dict) and isinstance(entry.get("rows"), list)}
