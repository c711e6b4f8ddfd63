"""`bench --on DEST`: an exported file timed on the user's device (deploy/remote.Device runs
deploy/device_runner.py there), in bench's table shape, so that local and device results
read alike."""

from __future__ import annotations

from pathlib import Path

from ..net.cost import cost_report
from ..progress import bar
from ..run.info import ModelInfo
from .benchmark import bench_result, check_batches, exported_file, machine_record, named_network, table_row
from .device_runner import PACKAGES
from .native import LOAD_SECONDS, probe_seconds
from .remote import ABOUT_SECONDS, DeviceMissing


def bench_on(device, path, batch_sizes=(1, 16), runtimes=None, threads=None, min_seconds: float = 1.0,
             min_iters: int = 10) -> dict:
    """bench_file on another machine: the file timed there by deploy/device_runner.py over
    SSH (deploy/remote.Device), in each runtime the device has (or those asked for), at each
    batch size and thread count. The table has bench's shape; roofline and timm are the
    host's business, so None."""
    check_batches(batch_sizes)
    fits, asked = exported_file(path, runtimes)
    data, info, int8 = read_exported(path)
    cfg = named_network(path, info.model)
    about = device.describe()
    cost = cost_report(cfg)
    timeout = _device_seconds(cost["mult_adds"], batch_sizes, len(threads or [1]), min_iters, min_seconds)
    rows, missing, versions = [], [], {}
    shown = bar(total=len(asked or fits), desc=f"bench on {device.name}")
    for runtime in asked or fits:
        try:
            found = device.time(data, Path(path).suffix, runtime, batch_sizes, threads, min_iters, min_seconds,
                                timeout)
        except DeviceMissing as e:
            if asked is not None:
                raise
            missing.append(e)
            shown.update()
            continue
        versions[PACKAGES[runtime]] = found["device"].get("runtime_version")
        for r in found["rows"]:
            rows.append(table_row(f"{runtime}-int8" if int8 else runtime, r["batch_size"], cost,
                             r["median_ms"], threads=r["threads"],
                             p10_ms=r["p10_ms"], p90_ms=r["p90_ms"], iterations=r["runs"],
                             load_seconds=r["load_seconds"], first_run_ms=r["first_run_ms"],
                             peak_memory_mb=found.get("peak_memory_mb"), file_mb=len(data) / 1e6,
                             file=Path(path).name))
        shown.update()
    shown.close()
    if not rows:
        raise missing[0]
    machine = machine_record(name=device.name, host=about.get("host"), cpu=about.get("cpu"), isa=about.get("isa"),
                       arch=about.get("arch"), system=about.get("system"), cores=about.get("cores"),
                       threads=rows[0]["threads"], python=about.get("python"), governor=about.get("governor"),
                       temperature_c=about.get("temperature_c"), versions={"numpy": about.get("numpy"), **versions},
                       platform=None, ssh=device.dest)
    return bench_result(cfg, rows, None, machine, file=str(path))


def _device_seconds(mult_adds: int, batch_sizes, counts: int, min_iters: int, min_seconds: float) -> float:
    """How long a device may take for one file in one runtime: connecting and loading, then
    at each thread count each call of each batch size (the first, the warm-up and the runs)
    at a pace no CPU is slower than. A bound on a hang, no estimate."""
    calls = min_iters + 4
    each = sum(calls * (probe_seconds(mult_adds * b) - LOAD_SECONDS) + 2 * min_seconds for b in batch_sizes)
    return 2 * ABOUT_SECONDS + counts * each


def read_exported(path) -> tuple[bytes, ModelInfo, bool]:
    """An exported file's bytes, metadata and int8 flag, read and checked here without
    running it (the device runs it): no runtime needed on this machine but for ONNX."""
    suffix = Path(path).suffix
    if suffix == ".pte":
        from .executorch import read_file
    elif suffix == ".tflite":
        from .litert import read_file
    else:
        from .runtime import read_onnx as read_file
    return read_file(Path(path))
