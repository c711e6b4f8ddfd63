"""`mobilenet export`, `convert` and `bench`: files for other runtimes, and their speed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import BadArgument, printable
from ..formats import EXPORT_FORMATS, RUNTIMES
from ..net.config import MobileNetConfig
from .options import (
    RESOLUTION, WIDTH, device_from, device_options, force_option, int_list, json_option, number, runtime_list,
)


def _cmd_export(args) -> int:
    from ..deploy.exporter import export

    if args.int8_preset and not args.int8:
        raise BadArgument("--int8-preset goes with --int8; add --int8, or drop --int8-preset")
    if args.int8_preset and args.format != "onnx":
        raise BadArgument("--int8-preset is for ONNX files; ExecuTorch's XNNPACK quantizer has one scheme")

    def log(line):  # stdout holds the JSON alone
        print(printable(line), file=sys.stderr if args.json else sys.stdout)

    r = export(args.model, args.format, int8=args.int8, output=args.output, calibration_images=args.calibration,
               int8_preset=args.int8_preset or "portable", log=log, force=args.force)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    real = r["real"]["max_abs_diff"]
    where = f" in {r['checked_in']}" if r.get("checked_in") else ""
    print(f"{args.format} float32 checked against PyTorch{where}: largest difference {r['random']['max_abs_diff']:.2e} "
          "on random inputs" + (f", {real:.2e} on real test images (top-1 identical: {r['real']['same_top1']})"
                                if real is not None else ""))
    print(f"wrote {printable(r['output'])} ({r['bytes'] / 1e6:.2f} MB)")
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="one deployable file (ONNX, ExecuTorch, LiteRT or MediaPipe, float32 or "
                       "int8) that checks itself")
    p.add_argument("--model", required=True, help="a run folder (config.json + model.safetensors)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx",
                   help="onnx (default); executorch: a .pte for XNNPACK, with its metadata in FILE.json; litert: a "
                   ".tflite (the litert-export extra); mediapipe: a .tflite for MediaPipe Tasks' ImageClassifier, "
                   "with its labels (the mediapipe extra)")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantization (ONNX: ONNX Runtime's QDQ; executorch: PT2E with the XNNPACK "
                   "quantizer; litert and mediapipe: PT2E with litert-torch's); default float32")
    p.add_argument("--int8-preset", choices=["portable", "vnni"],
                   help="portable (default): 7-bit weights, exact on every x86-64 and ARM CPU; vnni: 8-bit weights, "
                   "for CPUs with VNNI or ARM only (on AVX2-only x86 its sums can saturate)")
    p.add_argument("--calibration", type=number("calibration"), default=300,
                   help="training images to calibrate int8 on (default 300)")
    p.add_argument("--output", help="file to write (default: in --model)")
    force_option(p, "a file (or its .json) that mobilenet did not write")
    json_option(p, "print the export's report as one JSON object")
    p.set_defaults(func=_cmd_export)


def _cmd_convert(args) -> int:
    from ..training.weights import convert_timm

    print(f"wrote {printable(convert_timm(args.from_timm, args.output, args.resolution or 224, args.force))}")
    return 0


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="a model folder from a timm mobilenetv1 state dict")
    p.add_argument("--from-timm", required=True, metavar="FILE", help="timm weights (.safetensors or .pth)")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--resolution", type=RESOLUTION, help="input size stored in the config (default 224)")
    force_option(p, "a model.safetensors or config.json that mobilenet did not write, or a trained run's model")
    p.set_defaults(func=_cmd_convert)


def _cmd_bench(args) -> int:
    from ..deploy.benchmark import bench, bench_file, format_table
    from ..run.latency import keep_latency, kept_in

    if args.model and (args.width or args.resolution):
        raise BadArgument("--width and --resolution describe an untrained network; with --model they come "
                          "from the model: give one or the other")
    if args.threads and not args.on:
        raise BadArgument("--threads goes with --on; here bench uses torch's threads (set OMP_NUM_THREADS)")
    keep = kept_in(args.model) if args.model else None
    if keep:
        from ..run.names import LATENCY
        from ..run.ownership import refuse_foreign

        refuse_foreign([keep / LATENCY], "--model", args.force)  # before any timing
    device = device_from(args)
    if device:
        result = _bench_on(args, device)
    elif args.model and not os.path.isdir(args.model):  # an exported file, timed as it is
        result = bench_file(args.model, args.batch_size, args.runtime, args.seconds, name=args.device_name)
    elif args.model:
        from ..run.folder import load_model

        model, _ = load_model(args.model)
        result = bench(model=model, batch_sizes=args.batch_size, runtimes=args.runtime or RUNTIMES,
                       min_seconds=args.seconds, name=args.device_name)
    else:
        config = MobileNetConfig(width_mult=args.width or 1.0, resolution=args.resolution or 224)
        result = bench(config, batch_sizes=args.batch_size, runtimes=args.runtime or RUNTIMES,
                       min_seconds=args.seconds, name=args.device_name)
    if keep:
        kept = keep_latency(keep, result, force=args.force)
    if args.json:
        print(json.dumps(result, indent=2))
    else:  # its notes quote runtimes' messages and the CPU's name: escaped line by line
        print("\n".join(printable(line) for line in format_table(result).splitlines()))
        if keep:
            print(printable(f"kept in {kept} under {result['device']!r}"))
    return 0


def _bench_on(args, device) -> dict:
    """Each exported file given (or every one in a run folder) timed on the device."""
    from ..deploy.on_device import bench_on
    from ..formats import title_of

    if not args.model:
        raise BadArgument("--on needs --model: an exported file (.onnx, .pte, .tflite) or a run folder with some")
    if not os.path.isdir(args.model):
        return bench_on(device, args.model, args.batch_size, args.runtime, args.threads, args.seconds)
    files = sorted(f for f in Path(args.model).iterdir() if title_of(f) and f.is_file() and not f.is_symlink())
    if not files:
        raise BadArgument(f"--model {printable(args.model)}: no exported file there; `mobilenet export` one first")
    results = [bench_on(device, f, args.batch_size, args.runtime, args.threads, args.seconds) for f in files]
    return {**results[0], "file": None, "rows": [row for r in results for row in r["rows"]]}


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="inference speed of each runtime against timm, on this machine or a device "
                       "over SSH")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="a run folder, or an exported file (.onnx, .pte, .tflite) timed as it is; "
                                     "default: an untrained network of --width and --resolution")
    p.add_argument("--width", type=WIDTH, help="width multiplier α (default 1.0)")
    p.add_argument("--resolution", type=RESOLUTION, help="input size (default 224)")
    p.add_argument("--batch-size", type=int_list, default=[1, 16], help="comma-separated (default 1,16)")
    p.add_argument("--runtime", type=runtime_list,
                   help=f"comma-separated, any of {','.join(RUNTIMES)} (default all, or all that run the file)")
    p.add_argument("--seconds", type=number("seconds"), default=1.0,
                   help="timing per runtime and batch size, at least 10 runs (default 1)")
    device_options(p, "time --model's exported files there (every one in a run folder), in each runtime it has")
    p.add_argument("--threads", type=int_list, help="with --on: comma-separated thread counts (default: the "
                   "device's cores)")
    force_option(p, "a latency.json that mobilenet did not write")
    json_option(p)
    p.set_defaults(func=_cmd_bench)
