"""Times one exported file on the machine it runs on, and prints one JSON object.

This file is copied alone to a device and run there with `python3 device_runner.py FILE
RUNTIME [options]`, so it imports nothing from this package: only the standard library,
numpy and the runtime itself (onnxruntime, openvino, executorch or ai-edge-litert). It
warms up, then times `--runs` calls at each batch size and thread count, and reports the
median, p10 and p90 of each, the first load and first call, the peak memory where the OS
tells it, and the device: architecture, CPU model, cores, the runtime's version, and the
CPU governor and temperature where they can be read.

It ends when its parent goes: stdin closes when an SSH session dies, and a thread that
reads it then ends the process, so a runner is never left timing alone.

`mobilenet bench --on` runs it through `session`: over SSH, a fixed bootstrap reads this
file from stdin into a fresh temporary folder and runs `device_runner.py --session FOLDER`.
session(folder) reads one JSON line (the job) and the model's bytes from stdin, times it,
prints one JSON object, and removes the folder, also when stdin closes first
(docs/deploy.md: the protocol).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time

try:
    import numpy as np
except ImportError:  # reported as a missing package, as a runtime is
    np = None

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is imported
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "executorch": "executorch",
            "litert": "ai-edge-litert"}
SUFFIXES = (".onnx", ".pte", ".tflite")  # the model's name in the session's folder: model + one of these
GONE = 3  # the exit status when stdin closed first


def _watch_stdin(folder: str | None = None) -> None:
    """End the process when stdin closes (the session that started it is gone), removing
    `folder` first."""
    def watch():
        while sys.stdin.buffer.read(1024):
            pass
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(GONE)
    threading.Thread(target=watch, daemon=True).start()


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read(4096).strip() or None
    except OSError:
        return None


def _cpu_model() -> str | None:
    text = _read_all("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _temperature() -> float | None:
    found = _read("/sys/class/thermal/thermal_zone0/temp")
    try:
        return int(found) / 1000 if found else None
    except ValueError:
        return None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _isa() -> list[str]:
    flags = next((line.split(":", 1)[1].split() for line in (_read_all("/proc/cpuinfo") or "").splitlines()
                  if line.startswith(("flags", "Features")) and ":" in line), [])
    return sorted(set(flags) & {"avx2", "avx512f", "avx512_vnni", "amx_tile", "neon", "asimd", "asimddp", "sve"})


def _read_all(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read(1 << 20)
    except OSError:
        return None


def device(runtime: str | None = None) -> dict:
    """What the timings ran on; the runtime's version when one is named."""
    return {"host": platform.node(), "arch": platform.machine(), "cpu": _cpu_model(), "isa": _isa(),
            "cores": os.cpu_count(), "system": platform.system(), "python": platform.python_version(),
            "numpy": np.__version__ if np else None, "runtime": runtime,
            "runtime_version": _version(PACKAGES[runtime]) if runtime else None,
            "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "temperature_c": _temperature()}


def _onnx(data: bytes, threads: int, openvino: bool):
    if openvino:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(data), "CPU",
                                      {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        shape = [d.get_length() if d.is_static else 1 for d in compiled.input(0).get_partial_shape()]
        return shape, lambda x: compiled(x)[0]
    import onnxruntime as ort

    ort.disable_telemetry_events()  # nothing phones home, on the device either
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name, shape = session.get_inputs()[0].name, session.get_inputs()[0].shape
    return [d if isinstance(d, int) else 1 for d in shape], lambda x: session.run(None, {name: x})[0]


def _litert(data: bytes, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=threads)
    into, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    fixed = into["shape_signature"][0] != -1
    state = {"size": None}

    def run(x):
        if fixed:  # one image at a time, as the toolkit's runner feeds an int8 file
            return np.concatenate([run_batch(x[i:i + 1]) for i in range(len(x))])
        return run_batch(x)

    def run_batch(x):
        if len(x) != state["size"]:
            interpreter.resize_tensor_input(into["index"], list(x.shape))
            interpreter.allocate_tensors()
            state["size"] = len(x)
        if into["dtype"] != np.float32:  # a file for MediaPipe takes pixels without a scale: about 128 ± 64
            scale, zero = into["quantization"] if into["quantization"][0] > 0 else (1 / 64, 128)
            bounds = np.iinfo(into["dtype"])
            x = np.clip(np.round(x / scale) + zero, bounds.min, bounds.max).astype(into["dtype"])
        interpreter.set_tensor(into["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    return [int(d) for d in into["shape"]], run


def _executorch(data: bytes, threads: int):
    import torch  # ExecuTorch's runtime takes torch tensors; the executorch package brings torch
    from executorch.runtime import Runtime

    torch.set_num_threads(threads)
    program = Runtime.get().load_program(data)
    shape = list(program.metadata("forward").input_tensor_meta(0).sizes())
    method = program.load_method("forward")
    return shape, lambda x: method.execute([torch.from_numpy(x)])[0].numpy()


def load(data: bytes, runtime: str, threads: int):
    """(the input's shape, a function that runs one float32 batch) in `runtime`."""
    if runtime in ("onnxruntime", "openvino"):
        return _onnx(data, threads, runtime == "openvino")
    if runtime == "litert":
        return _litert(data, threads)
    if runtime == "executorch":
        return _executorch(data, threads)
    raise ValueError(f"unknown runtime {runtime!r}; use one of {', '.join(PACKAGES)}")


def _peak_mb() -> float | None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def time_file(data: bytes, runtime: str, batch_sizes: list[int], threads: list[int], runs: int,
              warmup: int, seconds: float = 0.0) -> dict:
    """Each thread count's load, then each batch size's first call, `warmup` calls, and at
    least `runs` timed calls lasting at least `seconds` in all."""
    rows, first = [], None
    for count in threads:
        start = time.perf_counter()
        shape, run = load(data, runtime, count)
        loaded = time.perf_counter() - start
        for batch in batch_sizes:
            x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
            start = time.perf_counter()
            run(x)
            first_ms = 1000 * (time.perf_counter() - start)
            for _ in range(warmup):
                run(x)
            times, begun = [], time.perf_counter()
            while len(times) < runs or time.perf_counter() - begun < seconds:
                start = time.perf_counter()
                run(x)
                times.append(1000 * (time.perf_counter() - start))
            p10, median, p90 = np.percentile(times, [10, 50, 90])
            rows.append({"batch_size": batch, "threads": count, "median_ms": float(median), "p10_ms": float(p10),
                         "p90_ms": float(p90), "runs": len(times), "images_per_s": 1000 * batch / float(median),
                         "load_seconds": loaded, "first_run_ms": first_ms})
            if first is None:
                first = {"load_seconds": loaded, "first_run_ms": first_ms}
    return {"device": device(runtime), **(first or {}), "peak_memory_mb": _peak_mb(), "rows": rows}


def _timed_or_error(data: bytes, runtime: str, batch_sizes, threads, runs: int, warmup: int,
                    seconds: float = 0.0) -> tuple[dict, int]:
    """(time_file's object, 0), or ({"error": "missing", "package"} or {"error": "failed",
    "detail"}, 1)."""
    if np is None:
        return {"error": "missing", "package": "numpy", "detail": "numpy is not importable"}, 1
    try:
        return time_file(data, runtime, batch_sizes, threads or [os.cpu_count() or 1], runs, warmup, seconds), 0
    except ImportError as e:
        return {"error": "missing", "package": PACKAGES[runtime], "detail": str(e)[:200]}, 1
    except Exception as e:  # noqa: BLE001 - the runtime's own types, reported as one record
        return {"error": "failed", "detail": f"{type(e).__name__}: {str(e)[:200]}"}, 1


def _read_exactly(stream, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise EOFError("stdin closed before the model's bytes")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def session(folder: str) -> int:
    """One timing over SSH: a JSON line {"runtime", "suffix", "size", "batch_sizes",
    "threads", "runs", "warmup", "seconds"} and `size` bytes of model on stdin. The model is
    written to folder/model<suffix>, timed, and one JSON object printed: time_file's, or an
    error's. {"about": true} instead prints only {"device": ...}, with numpy's presence."""
    os.environ["TMPDIR"] = folder  # what a runtime leaves in the temporary folder goes with ours
    tempfile.tempdir = None
    job = json.loads(sys.stdin.buffer.readline())
    if job.get("about"):
        print(json.dumps({"device": device()}), flush=True)
        return 0
    if job["suffix"] not in SUFFIXES or job["runtime"] not in PACKAGES:
        raise ValueError("a job for another runner")
    path = os.path.join(folder, "model" + job["suffix"])
    with open(path, "wb") as f:
        f.write(_read_exactly(sys.stdin.buffer, int(job["size"])))
    _watch_stdin(folder)
    with open(path, "rb") as f:
        data = f.read()
    result, code = _timed_or_error(data, job["runtime"], [int(b) for b in job["batch_sizes"]],
                                   [int(t) for t in job.get("threads") or []], max(1, int(job["runs"])),
                                   max(0, int(job["warmup"])), float(job.get("seconds", 0.0)))
    print(json.dumps(result), flush=True)
    return code


def _counts(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers of at least 1")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("runtime", choices=sorted(PACKAGES))
    p.add_argument("--batch-size", type=_counts, default=[1])
    p.add_argument("--threads", type=_counts, help="default: the device's cores")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.0, help="time each at least this long")
    p.add_argument("--watch-stdin", action="store_true", help="end when stdin closes")
    args = p.parse_args(argv)
    if args.watch_stdin:
        _watch_stdin()
    with open(args.file, "rb") as f:
        data = f.read()
    result, code = _timed_or_error(data, args.runtime, args.batch_size, args.threads, max(1, args.runs),
                                   max(0, args.warmup), args.seconds)
    print(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(session(sys.argv[2]) if sys.argv[1:2] == ["--session"] else main())
