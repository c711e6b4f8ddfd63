"""`mobilenet bench`: inference speed of each way of running the model, on this machine.

Each runtime is warmed up, then all are timed in turn over several rounds of repeated
batches (so a noisy neighbour slows them alike); the median is reported with
images/s, effective GFLOP/s (2 × mult-adds per image) and the share of a measured float32
matmul roofline. timm's mobilenetv1_100 in eager mode is the reference row when timm is
installed and α = 1: compare runtimes by their ratio to it, measured in the same run,
since shared machines are noisy.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import MobileNetError, NotInstalled
from ..formats import RUNTIMES, file_runtimes, get_format, runtime_for, runtime_row
from ..machine import cpu_features, cpu_name  # noqa: F401 - benchmark.cpu_name for the scripts
from ..net.cost import cost_report
from ..net.model import MobileNetConfig, MobileNetV1
from ..progress import bar
from ..run.info import ModelInfo
from .runtime import open_file, open_openvino, open_session


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None  # not Linux


class _PeakMemory:
    """Peak resident memory above the level at entry, sampled every few milliseconds."""

    def __enter__(self):
        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb() or 0)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.mb = None if self.base is None else max(0.0, self.peak - self.base)


def _time(run, min_seconds: float, min_iters: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        run()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return times


def _interleaved(runs: dict, min_seconds: float, min_iters: int, rounds: int = 5) -> dict[str, list[float]]:
    """Time every runtime in turn, round after round, so that a noisy neighbour slows them
    all alike and the ratios stay fair."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name] += _time(run, min_seconds / rounds, max(1, min_iters // rounds), warmup=0)
    return times


def matmul_gflops(n: int = 1024, seconds: float = 0.5) -> float:
    """This machine's float32 matmul speed, the roofline of the table: the faster of
    torch's BLAS and ONNX Runtime's MLAS on an n×n product, with the same threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.inference_mode():
        best = statistics.median(_time(lambda: torch.mm(a, b), seconds, 5))
    try:
        from onnx import TensorProto, helper

        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                                  [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = open_session(proto.SerializeToString(), torch.get_num_threads())
        feed = {"a": a.numpy(), "b": b.numpy()}
        best = min(best, statistics.median(_time(lambda: session.run(None, feed), seconds, 5)))
    except ImportError:
        pass
    return 2 * n**3 / best / 1e9


def _prepare(name: str, model: MobileNetV1, x: torch.Tensor, calibration: np.ndarray | None):
    """What the runtime loads: the exported file's bytes (maybe quantized), else None."""
    fmt, int8 = runtime_row(name).format, name.endswith("-int8")
    if not get_format(fmt).exported:
        return None
    calib = calibration if calibration is not None else np.random.default_rng(0).standard_normal(
        (64, *x.shape[1:])).astype(np.float32)
    if fmt == "executorch":
        from .executorch import pte_bytes, pte_int8_bytes

        example = torch.zeros(2, *x.shape[1:])
        return pte_int8_bytes(model, example, torch.from_numpy(calib)) if int8 else pte_bytes(model, example)
    if fmt == "litert":
        from .litert import litert_bytes

        return litert_bytes(model, _bench_info(model, x), calib if int8 else None)
    from .exporter import onnx_bytes, quantize_onnx

    data = onnx_bytes(model, _bench_info(model, x))
    return quantize_onnx(data, calib) if int8 else data


def _bench_info(model: MobileNetV1, x: torch.Tensor) -> ModelInfo:
    """A model folder's info for an untrained network: what the exporters and runtimes read."""
    spec = {"channels": x.shape[1], "resolution": x.shape[-1], "mean": [0.0] * x.shape[1], "std": [1.0] * x.shape[1],
            "image_size": x.shape[-1]}
    return ModelInfo([str(i) for i in range(model.config.num_classes)], spec, model.config)


def _runner(name: str, model: MobileNetV1, x: torch.Tensor, data: bytes | None):
    """A function that runs one batch with the named runtime. torch and timm get the same
    NCHW tensor: the layout of a model's weights is its own business."""
    name = runtime_row(name).name  # an int8 file runs in its runtime like the float32 one
    if name == "torch":  # eager, in the layout the library trains and loads it in
        eager = model.to(memory_format=torch.channels_last)
        return lambda: eager(x)
    if name == "torch-fast":
        from .exporter import fast_inference

        xf = x.contiguous(memory_format=torch.channels_last)
        fast = fast_inference(model, xf)
        return lambda: fast(xf)
    if name == "timm":
        import timm

        cfg = model.config
        ref = timm.create_model("mobilenetv1_100", num_classes=cfg.num_classes, in_chans=cfg.in_channels).eval()
        return lambda: ref(x)
    if name == "executorch":
        from .executorch import PteModel

        program = PteModel(data, _bench_info(model, x))
        xn = x.numpy()
        return lambda: program.logits(xn)
    xn = x.numpy()
    if name == "litert":  # through LiteRtModel: int8 files take int8, so it quantizes as a user's call would
        from .litert import LiteRtModel

        converted = LiteRtModel(data, _bench_info(model, x), threads=torch.get_num_threads())
        return lambda: converted.logits(xn)
    if name == "openvino":
        _, compiled = open_openvino(data, torch.get_num_threads())
        return lambda: compiled(xn)
    session = open_session(data, torch.get_num_threads())
    return lambda: session.run(None, {"images": xn})


def _available(runtimes, cfg: MobileNetConfig) -> list[str]:
    """The asked-for runtimes that can run here, timm (the reference) first: an extra that is
    not installed leaves its rows out, and timm's reference exists at α = 1 only."""
    needs = {r: runtime_row(r).package for r in runtimes}
    here = [r for r in runtimes if needs[r] is None or _version(needs[r]) is not None]
    if cfg.width_mult != 1.0:
        here = [r for r in here if r != "timm"]
    return (["timm"] if "timm" in here else []) + [r for r in here if r != "timm"]


def check_batches(batch_sizes) -> None:
    if any(b < 1 for b in batch_sizes):
        raise MobileNetError(f"--batch-size must be whole numbers of at least 1, got {list(batch_sizes)}")


def bench(config: MobileNetConfig | None = None, model: MobileNetV1 | None = None, batch_sizes=(1, 16),
          runtimes=RUNTIMES, min_seconds: float = 1.0, min_iters: int = 10,
          calibration: np.ndarray | None = None, files: dict[str, bytes] | None = None,
          name: str | None = None) -> dict:
    """Time each runtime at each batch size; returns the table as plain data. `files`: a
    runtime's file already exported from `model`, timed as it is instead of exported again."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise MobileNetError(f"--runtime {','.join(unknown)}: unknown; use any of {','.join(RUNTIMES)}")
    check_batches(batch_sizes)
    model = (model or MobileNetV1.from_config(config or MobileNetConfig())).eval()
    order = _available(runtimes, model.config)
    # export and quantization, once: the exported graphs take any batch size; not timed
    sample = torch.randn(1, model.config.in_channels, model.config.resolution, model.config.resolution)
    shown = bar(total=len(order) + len(batch_sizes), desc="bench")
    prepared = {}
    for name in order:  # openvino runs onnxruntime's file: quantized once when both are asked for
        same = name.replace("openvino", "onnxruntime")
        if same in (files or {}):
            prepared[name] = files[same]
        else:
            prepared[name] = prepared[same] if same in prepared else _prepare(name, model, sample, calibration)
        shown.update()
    sizes = {name: len(data) if data else None for name, data in prepared.items()}
    return _timed(model.config, {name: lambda x, name=name: _runner(name, model, x, prepared[name]) for name in order},
                  sizes, batch_sizes, min_seconds, min_iters, shown, name=name)


def exported_file(path, runtimes) -> tuple[list[str], list[str] | None]:
    """The runtimes that run the file, and those asked for (None: all of them, leaving out
    the ones not installed); one line for a path that is no exported file, or a runtime
    that does not run it."""
    fits = file_runtimes(path)
    if not fits:
        found = "not an exported file" if os.path.exists(path) else "no such folder or file"
        raise MobileNetError(f"--model {path}: {found}; give a run folder, or an .onnx, .pte or .tflite file made "
                             "by `mobilenet export`")
    asked = None if runtimes is None else list(dict.fromkeys(r.removesuffix("-int8") for r in runtimes))
    for runtime in asked or []:
        runtime_for(path, runtime)  # a runtime that does not run the file: one line, exit 2
    return fits, asked


def named_network(path, cfg: MobileNetConfig | None) -> MobileNetConfig:
    if cfg is None:
        raise MobileNetError(f"--model {path}: its metadata does not name the network, so its cost is unknown; "
                             "export it again with `mobilenet export`")
    return cfg


def bench_file(path, batch_sizes=(1, 16), runtimes=None, min_seconds: float = 1.0, min_iters: int = 10,
               name: str | None = None) -> dict:
    """Time an exported file (.onnx, .pte, .tflite) as it is, in each runtime that runs its
    format, or in those of `runtimes` (names with or without "-int8": the file says which it
    is). Each loads it as predict does, with its checks; a row is named "<runtime>-int8" for
    an int8 file. The table has bench's shape."""
    check_batches(batch_sizes)
    fits, asked = exported_file(path, runtimes)
    shown = bar(total=len(asked or fits) + len(batch_sizes), desc="bench")
    loaded, missing, load_seconds = {}, [], {}
    for runtime in asked or fits:
        try:
            start = time.perf_counter()
            model = open_file(path, runtime, torch.get_num_threads())
            row = f"{runtime}-int8" if model.int8 else runtime
            loaded[row], load_seconds[row] = model, time.perf_counter() - start
        except NotInstalled as e:  # as bench leaves out an extra that is not installed, unless it was asked for
            if asked is not None:
                raise
            missing.append(e)
        shown.update()
    if not loaded:
        raise missing[0]
    cfg = named_network(path, next(iter(loaded.values())).info.model)
    return _timed(cfg, {name: _file_runner(model) for name, model in loaded.items()},
                  dict.fromkeys(loaded, os.path.getsize(path)), batch_sizes, min_seconds, min_iters, shown,
                  file=str(path), name=name, load_seconds=load_seconds)


def _file_runner(model):
    """bench's runner for a loaded file: its logits on the batch, as predict gets them; a
    file that takes other images than the network (MediaPipe's: pixels at the data's size)
    gets random ones of its own size."""
    spec = model.spec
    shape = (spec["channels"], spec["resolution"], spec["resolution"])

    def runner(x: torch.Tensor):
        xn = x.numpy() if tuple(x.shape[1:]) == shape else np.random.default_rng(0).uniform(
            0, 255, (len(x), *shape)).astype(np.float32)
        return lambda: model.logits(xn)
    return runner


ROW_KEYS = ("file", "runtime", "batch_size", "threads", "median_ms", "p10_ms", "p90_ms", "images_per_s", "iterations",
            "load_seconds", "first_run_ms", "peak_memory_mb", "file_mb", "params", "mult_adds", "gflops",
            "roofline_pct", "speedup_vs_timm")
MACHINE_KEYS = ("name", "host", "cpu", "isa", "arch", "system", "cores", "threads", "python", "governor",
                "temperature_c", "versions", "platform", "ssh")


def table_row(runtime: str, batch: int, cost: dict, median_ms: float, **found) -> dict:
    """One row of bench's table, the same keys wherever it was timed (None where unknown)."""
    gflops = 2 * cost["mult_adds"] * batch / (median_ms / 1000) / 1e9
    row = {"runtime": runtime, "batch_size": batch, "median_ms": median_ms, "images_per_s": 1000 * batch / median_ms,
           "params": None if runtime == "timm" else cost["params"],  # timm: its own module
           "mult_adds": cost["mult_adds"], "gflops": gflops, **found}
    return {k: row.get(k) for k in ROW_KEYS}


def machine_record(**found) -> dict:
    return {k: found.get(k) for k in MACHINE_KEYS}


def bench_result(cfg: MobileNetConfig, rows: list[dict], roofline: float | None, machine: dict, file: str | None) -> dict:
    return {"model": cfg.to_dict(), "file": file, "device": machine["name"], "rows": rows,
            "roofline_gflops": roofline, "machine": machine, "date": time.strftime("%Y-%m-%d")}


def local_name() -> str:
    """This machine's name for its kept results, as a device's: its host and CPU."""
    return f"{platform.node()} ({cpu_name()})"


def _timed(cfg: MobileNetConfig, runners: dict, sizes: dict, batch_sizes, min_seconds: float, min_iters: int, shown,
           file: str | None = None, name: str | None = None, load_seconds: dict | None = None) -> dict:
    """bench's table: runners[name](x) gives a function that runs the batch x once; each is
    warmed up and timed at each batch size, interleaved with the others."""
    cost = cost_report(cfg)
    roofline = matmul_gflops(seconds=min(0.5, min_seconds))
    threads = torch.get_num_threads()
    rows = []
    for batch in batch_sizes:
        x = torch.randn(batch, cfg.in_channels, cfg.resolution, cfg.resolution)
        runs, memory, first = {}, {}, {}
        with torch.inference_mode():
            for runtime, runner in runners.items():
                with _PeakMemory() as peak:
                    runs[runtime] = runner(x)
                    start = time.perf_counter()
                    runs[runtime]()
                    first[runtime] = 1000 * (time.perf_counter() - start)
                    for _ in range(2):  # warm-up, inside the memory window: first runs allocate
                        runs[runtime]()
                memory[runtime] = peak.mb
            times = _interleaved(runs, min_seconds * len(runs), min_iters)
        reference = statistics.median(times["timm"]) if "timm" in times else None
        for runtime in runners:
            ms = [1000 * t for t in times[runtime]]
            p10, median, p90 = np.percentile(ms, [10, 50, 90])
            rows.append(table_row(runtime, batch, cost, float(median), threads=threads, p10_ms=float(p10),
                             p90_ms=float(p90), iterations=len(ms), load_seconds=(load_seconds or {}).get(runtime),
                             first_run_ms=first[runtime], peak_memory_mb=memory[runtime],
                             file_mb=sizes[runtime] / 1e6 if sizes[runtime] else None,
                             roofline_pct=100 * 2 * cost["mult_adds"] * batch / (median / 1000) / 1e9 / roofline,
                             speedup_vs_timm=1000 * reference / median if reference else None,
                             file=Path(file).name if file else None))
        shown.update()
    shown.close()
    versions = {p: _version(p) for p in ("torch", "onnxruntime", "openvino", "executorch", "ai-edge-litert", "timm",
                                         "numpy")}
    machine = machine_record(name=name or local_name(), host=platform.node(), cpu=cpu_name(), isa=cpu_features(),
                       arch=platform.machine(), system=platform.system(), cores=os.cpu_count(), threads=threads,
                       python=platform.python_version(), versions=versions, platform=platform.platform())
    return bench_result(cfg, rows, roofline, machine, file)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def format_table(result: dict) -> str:
    m, cfg, v = result["machine"], result["model"], result["machine"]["versions"]
    lines = [f"timed as it is: {result['file']}"] if result.get("file") else []
    where = f"on {m['name']} over SSH" if m.get("ssh") else m["name"]
    lines += [f"MobileNet V1 α={cfg['width_mult']} {cfg['resolution']}×{cfg['resolution']}×{cfg['in_channels']}, "
              f"{cfg['num_classes']} classes; {where}: {m['cpu']} ({' '.join(m.get('isa') or ['no AVX2'])}), "
              f"{m['cores']} cores; " + ", ".join(f"{k} {val}" for k, val in v.items() if val)]
    if result["roofline_gflops"]:
        lines.append(f"roofline: float32 matmul {result['roofline_gflops']:.1f} GFLOP/s")
    lines += ["", f"{'runtime':<17} {'batch':>5} {'threads':>7} {'ms/batch':>9} {'p10-p90 ms':>15} {'images/s':>9} "
              f"{'GFLOP/s':>8} {'roofline':>8} {'peak MB':>8} {'file MB':>8} {'vs timm':>8}"]
    for r in result["rows"]:
        mem = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        size = "-" if r.get("file_mb") is None else f"{r['file_mb']:.2f}"
        vs = "-" if r["speedup_vs_timm"] is None else f"{r['speedup_vs_timm']:.2f}×"
        roof = "-" if r["roofline_pct"] is None else f"{r['roofline_pct']:.1f}%"
        spread = f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f}"
        lines.append(f"{r['runtime']:<17} {r['batch_size']:>5} {r['threads']:>7} {r['median_ms']:>9.2f} {spread:>15} "
                     f"{r['images_per_s']:>9.1f} {r['gflops']:>8.1f} {roof:>8} {mem:>8} {size:>8} {vs:>8}")
    return "\n".join(lines)
