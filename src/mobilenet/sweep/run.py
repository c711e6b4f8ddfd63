"""`mobilenet sweep`: the paper's width × resolution trade-off (§4.2, Figures 4-5, Tables
6-7) on the user's data and machine, and the best model under a budget.

Each grid point (α, ρ) is an ordinary run folder DIR/a{α}-r{ρ}. A point is done in two
phases, each recorded in the folder's sweep_point.json, so that the sweep resumes as a
whole after a kill: training (with --resume semantics when a checkpoint is there), the
test split's evaluation and the exports; then latency at batch 1, timed by `bench` with
nothing else of the sweep running, or with --on on the user's device over SSH (each
device's times kept in the record under its name, so the host's and several devices'
columns stand side by side). DIR/sweep_plan.json holds what every point shares;
shards (--shard I/N) write into one DIR and `collect` merges their points.

The pick looks at validation accuracy only (a multi-label sweep's mAP): the test split never chooses.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.images import FASHION_MNIST
from ..errors import BadArgument, Interrupted, MobileNetError, printable
from ..files import (
    JSON_LIMIT, TEMP_PREFIX, atomic_write_json, atomic_write_text, make_dir, read_json_object, read_regular,
)
from ..formats import EXPORT_FORMATS, size_key
from ..net.cost import cost_report
from ..report.plots import score_name
from ..run.names import CHECKPOINT, EXPORTS, HISTORY, WEIGHTS
from ..training.config import TrainConfig
from .page import TABLE, sweep_report
from .devices import devices_of, latency_source, time_on, with_latency_of
from .records import (
    DEVICE_MS, PLAN, POINT, SWEEP_RUNTIMES, check_grid, link_best, point_dir, point_name, points, read_plan, read_point,
    unlink_best,
)

WIDTHS = (1.0, 0.75, 0.5, 0.25)  # the paper's α
RESOLUTIONS = {FASHION_MNIST: (64, 48, 40, 32),  # small sizes from 32 up: Fashion-MNIST is 28×28
               "folder": (224, 192, 160, 128)}  # the paper's ρ


@dataclass
class SweepConfig:
    """A sweep's settings. `train` holds the options every point shares (its width,
    resolution and out are each point's own); resolutions None: RESOLUTIONS by data."""

    out: str
    train: TrainConfig = field(default_factory=lambda: TrainConfig(val_split=0.1))
    widths: tuple[float, ...] = WIDTHS
    resolutions: tuple[int, ...] | None = None
    runtimes: tuple[str, ...] = ("onnxruntime",)
    int8: bool = False  # also measure int8 ONNX accuracy and size
    seconds: float = 1.0  # bench's timing per runtime
    budget_ms: float | None = None  # latency at batch 1 of runtimes[0]
    budget_mb: float | None = None  # file size of runtimes[0]'s format
    export: str | None = None  # export the pick to this format
    jobs: int = 1  # points trained at once
    shard: tuple[int, int] = (0, 1)  # (I, N): every N-th point from the I-th
    collect: bool = False  # only merge the points already in `out`
    device: object = None  # deploy.remote.Device: time on it, and pick on its latency

    def validate(self) -> None:
        if not self.collect:
            self.train.validate()
            if not self.train.val_split:
                raise BadArgument("sweep needs --val-split: the pick looks at validation images, never the test split")
        unknown = [r for r in self.runtimes if r not in SWEEP_RUNTIMES]
        if unknown or not self.runtimes:
            raise BadArgument(f"--runtime {','.join(unknown)}: use any of {','.join(SWEEP_RUNTIMES)}")
        if self.export and self.export not in EXPORT_FORMATS:
            raise BadArgument(f"--export must be one of {', '.join(EXPORT_FORMATS)}, got {self.export!r}")
        index, count = self.shard
        if not 0 <= index < count:
            raise BadArgument(f"--shard {index}/{count}: I must be from 0 to N-1")
        if len(set(self.widths)) != len(self.widths) or len(set(self.resolutions or ())) != len(self.resolutions or ()):
            raise BadArgument("--widths and --resolutions take each value once")
        check_grid(len(self.widths) * len(self.resolutions or RESOLUTIONS[FASHION_MNIST]))

    def plan(self) -> dict:
        """What every point of this sweep shares: a rerun, a shard and collect must agree on it."""
        resolutions = self.resolutions or RESOLUTIONS[FASHION_MNIST if self.train.data == FASHION_MNIST else "folder"]
        train = {k: v for k, v in asdict(self.train).items() if k not in ("width_mult", "resolution", "out", "force")}
        if train["data"] != FASHION_MNIST:
            train["data"] = str(Path(train["data"]).resolve())
        return {"widths": list(self.widths), "resolutions": list(resolutions), "train": train,
                "runtimes": list(self.runtimes), "int8": self.int8}


def sweep(cfg: SweepConfig, log=print) -> dict:
    """Train, evaluate, export and time every point of this shard that is not done yet,
    then (unsharded) collect: the table, the pictures and the pick. Returns collect's
    result, or {"shard": ..., "points": [...]} for a shard."""
    cfg.validate()
    out = Path(cfg.out)
    if cfg.collect:
        return collect(out, cfg.budget_ms, cfg.budget_mb, cfg.export, log, cfg.device, cfg.seconds)
    plan = _open_plan(out, cfg.plan())
    mine = points(plan)[cfg.shard[0]::cfg.shard[1]]
    todo = [p for p in mine if read_point(out, p) is None]
    if len(todo) < len(mine):
        log(f"{len(mine) - len(todo)} of {len(mine)} points already trained in {printable(out)}; going on with the rest")
    _train_points(out, plan, todo, cfg.jobs, log)
    for p in mine:
        if cfg.device:
            time_on(out, plan, p, cfg.device, cfg.seconds, log)
        else:
            _time_point(out, plan, p, cfg.seconds, log)
    if cfg.shard[1] > 1:
        log(f"shard {cfg.shard[0]}/{cfg.shard[1]} done ({len(mine)} points); when every shard is done: "
            f"mobilenet sweep --collect {printable(out)}")
        return {"shard": list(cfg.shard), "points": [point_name(*p) for p in mine]}
    return collect(out, cfg.budget_ms, cfg.budget_mb, cfg.export, log, cfg.device, cfg.seconds)


def _open_plan(out: Path, plan: dict) -> dict:
    """DIR's plan: written by the first run, and the same for every later run or shard."""
    path = out / PLAN
    if os.path.lexists(path):
        found = read_plan(path)
        if found != plan:
            differ = sorted(k for k in plan if found.get(k) != plan[k])
            raise BadArgument(f"--out {printable(out)} holds a sweep with other settings ({', '.join(differ)}); "
                              "repeat its command to go on with it, or choose another --out")
        return found
    ours = {point_name(*p) for p in points(plan)}  # another shard of this sweep may have begun just now
    if out.is_dir() and any(e.name not in ours and not e.name.startswith(TEMP_PREFIX) for e in out.iterdir()):
        raise BadArgument(f"--out {printable(out)} holds files and no {PLAN}: not a sweep's folder; "
                          "choose a new or empty --out")
    make_dir(out)
    atomic_write_json(path, plan)
    return plan




def _train_points(out: Path, plan: dict, todo: list, jobs: int, log) -> None:
    """Phase one of each point: here one after another, or `jobs` at once in worker processes
    (one GPU each where there are several; threads shared out on a CPU)."""
    if jobs <= 1 or len(todo) <= 1:
        for p in todo:
            train_point(str(out), plan, p, log)
        return
    from .jobs import run_jobs

    run_jobs(train_point, str(out), plan, todo, jobs, log)


def _say(line: str) -> None:
    print(line, flush=True)  # a worker's lines, as they come


def train_point(out: str, plan: dict, p: tuple[float, int], log=_say) -> dict:
    """Train one point (resuming its checkpoint if any), evaluate it on the test split,
    export it, and write the phase's record."""
    from ..report.evaluation import evaluate
    from ..training.loop import train

    alpha, rho = p
    folder = point_dir(Path(out), p)
    resume = (folder / CHECKPOINT).is_file()
    cfg = TrainConfig(**{**plan["train"], "width_mult": alpha, "resolution": rho, "out": str(folder)})
    say = (lambda line: log(f"[{point_name(alpha, rho)}] {line}"))
    try:
        summary = train(cfg, resume=resume, log=say)
    except Interrupted as e:  # train's hint names `mobilenet train`; the sweep goes on as a whole
        raise Interrupted(f"{point_name(alpha, rho)}: {str(e).split('. Continue with')[0]}. Continue with the same "
                          "mobilenet sweep command") from None
    metrics = evaluate(folder)
    several = metrics.get("task") == "multi-label"  # its score is mAP, in the same fields
    record = {"run": point_name(alpha, rho), "alpha": alpha, "rho": rho, **_cost(folder),
              **({"score": "mAP"} if several else {}),
              "val_acc": _kept_val_score(folder, summary["kept_epoch"], "val_map" if several else "val_acc"),
              "test_acc": metrics["mAP"] if several else metrics["top1"],
              "test_loss": metrics["loss"], "kept_epoch": summary["kept_epoch"], "epochs": summary["epochs"],
              "train_seconds": summary["seconds"], **_exports(folder, plan["int8"], say)}
    atomic_write_json(folder / POINT, record)
    return record


def _cost(folder: Path) -> dict:
    """The point's parameters, mult-adds and peak activation memory: `mobilenet cost`'s numbers."""
    from ..run.folder import read_config

    report = cost_report(read_config(folder).model)
    return {k: report[k] for k in ("params", "mult_adds", "peak_activation_bytes")}


def _kept_val_score(folder: Path, kept_epoch: int, column: str) -> float:
    text = read_regular(folder / HISTORY, JSON_LIMIT, "--out").decode()
    row = next(r for r in csv.DictReader(io.StringIO(text)) if int(r["epoch"]) == kept_epoch)
    return float(row[column])


def _exports(folder: Path, int8: bool, log) -> dict:
    """Each format's file size in MB, and int8's test accuracy with --int8 (export's own check)."""
    from ..deploy.exporter import export

    sizes = {"safetensors": (folder / WEIGHTS).stat().st_size / 1e6}
    sizes["onnx"] = export(folder, "onnx", log=log)["bytes"] / 1e6
    found = {"size_mb": sizes}
    if int8:
        report = export(folder, "onnx", int8=True, log=log)
        sizes["onnx-int8"] = report["bytes"] / 1e6
        found["test_acc_int8"] = report["accuracy_int8"]
    return found


def _time_point(out: Path, plan: dict, p: tuple[float, int], seconds: float, log) -> None:
    """Phase two: batch-1 latency of each runtime, by bench, unless the record has it."""
    record, folder = read_point(out, p), point_dir(out, p)
    if set(record.get("latency_ms", {})) >= set(plan["runtimes"]):
        return
    from ..deploy.benchmark import bench
    from ..run.folder import load_model

    model, _ = load_model(folder)
    result = bench(model=model, batch_sizes=[1], runtimes=plan["runtimes"], min_seconds=seconds,
                   files=_exported_onnx(folder))
    rows = {r["runtime"]: r for r in result["rows"]}
    record["latency_ms"] = {r: rows[r]["median_ms"] for r in plan["runtimes"]}
    for r in plan["runtimes"]:  # the .pte sizes come from bench's own lowering
        if rows[r]["file_mb"] is not None:
            record["size_mb"].setdefault(size_key(r), rows[r]["file_mb"])
    record["machine"] = {k: result["machine"][k] for k in ("cpu", "isa", "threads")}
    atomic_write_json(folder / POINT, record)
    log(f"[{record['run']}] batch 1: " + ", ".join(f"{r} {ms:.2f} ms" for r, ms in record["latency_ms"].items()))


def _exported_onnx(folder: Path) -> dict:
    """The point's model.onnx, for bench to time rather than export the model once more (the
    same graph; only its metadata differs): when it is the file export checked, by the digest
    in exports.json; else nothing, and bench exports its own."""
    from ..files import FILE_LIMIT

    try:
        data = read_regular(folder / "model.onnx", FILE_LIMIT, "--out")
        checked = read_json_object(folder / EXPORTS, "--out")["model.onnx"]["sha256"]
    except (OSError, LookupError, TypeError, MobileNetError):
        return {}
    return {"onnxruntime": data} if hashlib.sha256(data).hexdigest() == checked else {}


def collect(out, budget_ms: float | None = None, budget_mb: float | None = None, export: str | None = None,
            log=print, device=None, seconds: float = 1.0) -> dict:
    """Merge the points in `out` (one run or every shard's): sweep.csv, sweep.json, the
    three pictures, the table on `log`, and the pick, linked as `best` (and exported). With
    a `device`, the points it has not timed yet are timed there first, and its latency is
    the table's, the picture's and the budget's."""
    out = Path(out)
    if not os.path.lexists(out / PLAN):
        raise BadArgument(f"--collect {printable(out)}: no {PLAN} there; give the --out of a sweep")
    plan = read_plan(out / PLAN)
    records = {p: read_point(out, p) for p in points(plan)}
    if device:
        for p, record in records.items():
            if record is not None:
                time_on(out, plan, p, device, seconds, log)
                records[p] = read_point(out, p)
    on = device.name if device else latency_source(records.values())
    rows, missing = [], []
    for p, record in records.items():
        timed = record and (record.get(DEVICE_MS, {}).get(on) if on else record.get("latency_ms"))
        if not timed or not set(plan["runtimes"]) <= set(timed):
            missing.append(point_name(*p))
        else:
            rows.append(record)
    if missing:
        raise MobileNetError(f"{printable(out)}: {len(missing)} points are not done ({', '.join(missing)}); run the "
                             "shards that hold them (the same command), then collect again")
    result = {"plan": plan, "points": rows, "latency_on": on}
    atomic_write_json(out / TABLE, result)
    atomic_write_text(out / "sweep.csv", table_csv(rows, plan))
    from ..report.plots import plot_tradeoff

    rows = [with_latency_of(r, on) for r in rows]  # the pick, table and picture read the latency of `on`
    plot_tradeoff(rows, plan["runtimes"][0], out, on)
    if on:
        log(printable(f"latency at batch 1 on {on}"))
    log(format_table(rows, plan))
    try:
        result["pick"] = pick(rows, plan["runtimes"][0], budget_ms, budget_mb)
    except MobileNetError:
        unlink_best(out)  # an earlier pick, under another budget
        sweep_report(out, log=lambda _: None, force=True)  # the page of a folder whose plan is this sweep's
        raise
    log(pick_line(result["pick"], plan["runtimes"][0], budget_ms, budget_mb, on))
    picked = next(p for p in points(plan) if point_name(*p) == result["pick"]["run"])
    link_best(out, point_name(*picked))
    # report.html: the grid, the pictures, each point's page linked; ours, as the folder's plan is
    # (older sweeps' pages carry no mark)
    sweep_report(out, log=lambda _: None, force=True)
    if export:
        result["export"] = _export_pick(point_dir(out, picked), export, plan["int8"], log)
    return result


def _columns(plan: dict, devices=()) -> list[str]:
    int8 = ["test_acc_int8"] if plan["int8"] else []
    sizes = ["safetensors", "onnx"] + (["onnx-int8"] if plan["int8"] else [])
    sizes += [size_key(r) for r in plan["runtimes"] if size_key(r) not in sizes]
    return (["run", "alpha", "rho", "params", "mult_adds", "peak_activation_bytes", "val_acc", "test_acc", "test_loss"]
            + int8 + [f"size_mb_{s}" for s in sizes] + [f"latency_ms_{r}" for r in plan["runtimes"]]
            + [f"latency_ms_{r}@{d}" for d in devices for r in plan["runtimes"]]
            + ["kept_epoch", "epochs", "train_seconds"])


def _flat(record: dict) -> dict:
    flat = {k: v for k, v in record.items() if not isinstance(v, dict)}
    flat.update({f"size_mb_{k}": v for k, v in record["size_mb"].items()})
    flat.update({f"latency_ms_{k}": v for k, v in record.get("latency_ms", {}).items()})
    flat.update({f"latency_ms_{k}@{d}": v for d, times in record.get(DEVICE_MS, {}).items() for k, v in times.items()})
    return flat


def table_csv(rows: list[dict], plan: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(plan, devices_of(rows)), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in _flat(r).items()})
    return buf.getvalue()


def format_table(rows: list[dict], plan: dict) -> str:
    runtime = plan["runtimes"][0]
    size = size_key(runtime)
    score = "mAP" if score_name(rows) == "mAP" else "acc"
    lines = [f"{'run':<12} {'params':>8} {'mult-adds':>10} {'peak act.':>11} {'val ' + score:>8} "
             f"{'test ' + score:>8} {'test loss':>9}" + (f" {'int8 ' + score:>8}" if plan["int8"] else "")
             + f" {runtime + ' ms':>16} "
             f"{size + ' MB':>14}"]
    for r in rows:
        int8 = f" {100 * r['test_acc_int8']:7.2f}%" if plan["int8"] else ""
        lines.append(f"{r['run']:<12} {r['params'] / 1e6:7.3f}M {r['mult_adds'] / 1e6:9.2f}M "
                     f"{r['peak_activation_bytes'] / 1024:7.0f} KiB {100 * r['val_acc']:7.2f}% "
                     f"{100 * r['test_acc']:7.2f}% {r['test_loss']:9.4f}{int8} {r['latency_ms'][runtime]:16.3f} "
                     f"{r['size_mb'][size]:14.3f}")
    return "\n".join(lines)


def pick(rows: list[dict], runtime: str, budget_ms: float | None = None, budget_mb: float | None = None) -> dict:
    """The point with the best validation accuracy within the budget (fewer mult-adds on a
    tie), and the runner-up. MobileNetError when no point fits."""
    size = size_key(runtime)
    within = [r for r in rows if (budget_ms is None or r["latency_ms"][runtime] <= budget_ms)
              and (budget_mb is None or r["size_mb"][size] <= budget_mb)]
    if not within:
        fastest = min(rows, key=lambda r: r["latency_ms"][runtime])
        smallest = min(rows, key=lambda r: r["size_mb"][size])
        raise MobileNetError(f"no point fits the budget; the fastest is {fastest['run']} "
                             f"({fastest['latency_ms'][runtime]:.3f} ms on {runtime}), the smallest "
                             f"{smallest['run']} ({smallest['size_mb'][size]:.3f} MB as {size}): raise the budget")
    ranked = sorted(within, key=lambda r: (-r["val_acc"], r["mult_adds"]))
    return {"run": ranked[0]["run"], "within": len(within), "point": ranked[0],
            "runner_up": ranked[1] if len(ranked) > 1 else None}


def _describe(r: dict, runtime: str) -> str:
    return (f"{r['run']} (validation {'mAP ' if r.get('score') == 'mAP' else ''}{100 * r['val_acc']:.2f}%, "
            f"{r['latency_ms'][runtime]:.3f} ms, "
            f"{r['size_mb'][size_key(runtime)]:.3f} MB)")


def pick_line(choice: dict, runtime: str, budget_ms: float | None, budget_mb: float | None,
              on: str | None = None) -> str:
    limits = []
    if budget_ms is not None:
        limits.append(f"{budget_ms:g} ms on {runtime}" + (f" on {printable(on)}" if on else ""))
    if budget_mb is not None:
        limits.append(f"{budget_mb:g} MB as {size_key(runtime)}")
    score = score_name([choice["point"]])
    why = (f"the best validation {score} of the {choice['within']} points within " + " and ".join(limits)
           if limits else f"the best validation {score} of all {choice['within']} points (no budget given)")
    runner = choice["runner_up"]
    return (f"picked {_describe(choice['point'], runtime)}: {why}; runner-up "
            + (_describe(runner, runtime) if runner else "none"))


def _export_pick(folder: Path, fmt: str, int8: bool, log) -> dict:
    from ..deploy.exporter import export

    report = export(folder, fmt, int8=int8, log=log)
    log(f"exported {printable(report['output'])} ({report['bytes'] / 1e6:.2f} MB)")
    return {"output": report["output"], "bytes": report["bytes"]}

