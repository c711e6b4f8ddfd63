"""The `mobilenet` command. Thin: each subcommand parses its arguments and calls one
library function. User errors (MobileNetError) become one line on stderr and a non-zero
exit status; anything else is a bug, said as one, and keeps its traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import Field

from . import __version__, progress
from .data.images import FASHION_MNIST
from .errors import BadArgument, MobileNetError, printable
from .formats import EXPORT_FORMATS, PREDICT_RUNTIMES, RUNTIMES, runtime_for
from .limits import LIMITS, check_folder
from .net.config import MobileNetConfig, get_config, list_models
from .training.config import TrainConfig, cli_fields


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {printable(message)}\n")  # a shell glob may bring hostile names


def _number(name: str):
    """An argparse type for the number limits.LIMITS names (--batch-size: "batch_size")."""
    low, high, kind = LIMITS[name.replace("-", "_")]

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole ' if kind is int else ''}number; use {low:g} to {high:g}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {low:g} to {high:g}")
        return value
    parse.__name__ = name  # argparse names the type in its messages
    return parse


WIDTH, RESOLUTION, NUM_CLASSES = _number("width"), _number("resolution"), _number("num-classes")


def _data(text):
    return text if text == FASHION_MNIST else check_folder(text, argparse.ArgumentTypeError)


_data.__name__ = "data"


def _variant(text):
    if text not in list_models():
        raise argparse.ArgumentTypeError(f"unknown variant {text!r}; use one of {', '.join(list_models())}")
    return text


def _cmd_cost(args) -> int:
    from .net.cost import cost_report, format_report

    base = get_config(args.variant).to_dict() if args.variant else {}
    for key, value in (("width_mult", args.width), ("resolution", args.resolution),
                       ("num_classes", args.num_classes), ("in_channels", args.channels)):
        if value is not None:
            base[key] = value
    report = cost_report(MobileNetConfig(**base), full_conv=args.full_conv)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _cmd_models(args) -> int:
    from .net.cost import models, models_table

    print(json.dumps(models(), indent=2) if args.json else models_table())
    return 0


def _cmd_train(args) -> int:
    from .training.loop import train

    if args.resume and not args.out:
        raise BadArgument("--resume needs --out DIR, the folder of the run to continue")
    train(_train_config(args), resume=args.resume, progress=sys.stderr.isatty())
    return 0


def _train_config(args) -> TrainConfig:
    """train's arguments as a TrainConfig, field by field. An omitted --epochs parses as None:
    on --resume, None keeps the run's own (settings.run_settings); a new run takes the field's default."""
    given = {f.name: getattr(args, f.name) for f in cli_fields()}
    if given["epochs"] is None and not args.resume:
        del given["epochs"]
    return TrainConfig(**given)


def _cmd_evaluate(args) -> int:
    args.runtime = runtime_for(args.model, args.runtime)
    if args.runtime != "torch":
        from .deploy.runtime import evaluate_file

        m = evaluate_file(args.model, args.runtime, data=args.data, out=args.out)
    else:
        from .report.evaluation import evaluate

        m = evaluate(args.model, data=args.data, out=args.out, workers=args.workers)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"{printable(m['data'])}: {m['images']} test images  top-1 {100 * m['top1']:.2f}%  top-5 {100 * m['top5']:.2f}%  "
          f"loss {m['loss']:.4f}")
    names = {printable(c): acc for c, acc in m["per_class"].items()}  # class names come from the model's files
    width = max(len(c) for c in names)
    for name, acc in names.items():
        print(f"  {name:<{width}}  {100 * acc:6.2f}%")
    if m["bad_files"] or m["skipped"]:
        print(f"left out: {len(m['bad_files'])} files that did not decode, {m['skipped']} entries skipped "
              "(links that leave the folder, or no regular file)")
    where = args.out or (args.model if args.runtime == "torch" else os.path.dirname(args.model) or ".")
    page = " and report.html" if args.runtime == "torch" else ""
    print(f"wrote metrics.json, confusion_matrix.png{page} to {printable(where)}")
    return 0


def _cmd_report(args) -> int:
    from .report.page import report
    from .sweep.page import is_sweep, sweep_report

    if is_sweep(args.model):
        sweep_report(args.model, out=args.out)
    else:
        report(args.model, out=args.out, data=args.data, workers=args.workers)
    return 0


def _cmd_predict(args) -> int:
    from .deploy.predictor import Predictor

    results, failed = Predictor(args.model, runtime=args.runtime).predict(args.images, top_k=args.top_k)
    for f in failed:
        print(printable(f"mobilenet predict: error: {f['image']}: {f['reason']}"), file=sys.stderr)
    if args.json:
        print(json.dumps({"predictions": results, "failed": failed}, indent=2))
    else:
        for r in results:
            print(printable(r["image"]))
            for p in r["predictions"]:
                print(f"  {100 * p['probability']:6.2f}%  {printable(p['class'])}")
    return 1 if failed else 0


def _cmd_samples(args) -> int:
    from .data.sources import write_samples

    for path in write_samples(args.out, args.count):
        print(printable(path))
    return 0


def _cmd_export(args) -> int:
    from .deploy.exporter import export

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
    print(f"{args.format} float32 checked against PyTorch: largest difference {r['random']['max_abs_diff']:.2e} "
          "on random inputs" + (f", {real:.2e} on real test images (top-1 identical: {r['real']['same_top1']})"
                                if real is not None else ""))
    print(f"wrote {printable(r['output'])} ({r['bytes'] / 1e6:.2f} MB)")
    return 0


def _cmd_convert(args) -> int:
    from .training.weights import convert_timm

    print(f"wrote {printable(convert_timm(args.from_timm, args.output, args.resolution or 224, args.force))}")
    return 0


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers, e.g. 1,16") from None
    if not values or any(not 1 <= v <= 4096 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: use whole numbers from 1 to 4096, e.g. 1,16")
    return values


def _runtime_list(text):
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in RUNTIMES]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: use any of {','.join(RUNTIMES)}")
    return values


def _cmd_bench(args) -> int:
    from .deploy.benchmark import bench, format_table

    if args.model:
        if args.width or args.resolution:
            raise BadArgument("--width and --resolution describe an untrained network; with --model they come "
                              "from its config.json: give one or the other")
        from .run.folder import load_model

        model, _ = load_model(args.model)
        result = bench(model=model, batch_sizes=args.batch_size, runtimes=args.runtime, min_seconds=args.seconds)
    else:
        config = MobileNetConfig(width_mult=args.width or 1.0, resolution=args.resolution or 224)
        result = bench(config, batch_sizes=args.batch_size, runtimes=args.runtime, min_seconds=args.seconds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:  # its notes quote runtimes' messages and the CPU's name: escaped line by line
        print("\n".join(printable(line) for line in format_table(result).splitlines()))
    return 0


def _json(p, what: str = "print one JSON object") -> None:
    p.add_argument("--json", action="store_true", help=f"{what} (default off: text)")


def _option(p, f: Field, **given) -> None:
    """A TrainConfig field as an option: its flag, help, type, choices and default are the
    field's, unless `given` (default=, help=) says otherwise."""
    m = {**f.metadata, "help": given.get("help", f.metadata["help"])}
    if f.default is False:
        p.add_argument(m["flag"], dest=f.name, action="store_true", help=m["help"])
        return
    kind = _data if m["folder"] else _number(m["flag"][2:]) if m["limit"] else None
    # named after the flag, as argparse would without dest (the field's name: WIDTH_MULT for --width)
    metavar = m["metavar"] or (None if m["choices"] else m["flag"][2:].replace("-", "_").upper())
    p.add_argument(m["flag"], dest=f.name, type=kind, choices=m["choices"], metavar=metavar,
                   default=given.get("default", f.default), help=m["help"])


def _workers(p) -> None:  # evaluate's --workers is train's
    _option(p, next(f for f in cli_fields() if f.name == "workers"))


def _runtime(p) -> None:
    p.add_argument("--runtime", choices=PREDICT_RUNTIMES,
                   help="default: torch for a run folder, and by its suffix for an exported file: onnxruntime for "
                   ".onnx (torch not needed), executorch for .pte, litert for .tflite (the litert extra; torch not "
                   "needed); openvino: an .onnx file in OpenVINO (the openvino extra)")


def _add_cost(sub) -> None:
    p = sub.add_parser("cost", help="parameters and mult-adds, layer by layer (Tables 1-4)")
    p.add_argument("--variant", type=_variant, help="one of the paper's 16 variants, e.g. mobilenet_v1_0.75_192 "
                   "(default none: α, ρ and classes as given)")
    p.add_argument("--width", type=WIDTH, help="width multiplier α (default 1.0)")
    p.add_argument("--resolution", type=RESOLUTION, help="input size ρ in pixels (default 224)")
    p.add_argument("--num-classes", type=NUM_CLASSES, help="FC outputs (default 1000)")
    p.add_argument("--channels", type=_number("in-channels"), help="input channels: 3 for colour (default), "
                   "1 for grey images such as Fashion-MNIST's")
    p.add_argument("--full-conv", action="store_true", help="Table 4's Conv MobileNet: standard 3×3 convs "
                   "(default off: depthwise separable)")
    _json(p)
    p.set_defaults(func=_cmd_cost)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train on Fashion-MNIST (default) or a folder of images")
    for f in cli_fields():
        _option(p, f)
        if f.name == "out":  # beside the folder it continues; --resume is train()'s argument, not a field
            p.add_argument("--resume", action="store_true", help="continue the run in --out (default off: a new run)")
    p.set_defaults(func=_cmd_train, epochs=None)  # None: the default depends on --resume (_train_config)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="top-1, top-5, per-class accuracy and a confusion matrix")
    p.add_argument("--model", required=True, help="a run folder (config.json + model.safetensors)")
    p.add_argument("--data", type=_data, help="'fashion-mnist' or a folder (default: the data set the model "
                   "was trained on)")
    p.add_argument("--out", help="where metrics.json and confusion_matrix.png go (default: --model)")
    _workers(p)
    _runtime(p)
    _json(p)
    p.set_defaults(func=_cmd_evaluate)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one HTML page: the model card, curves, confusion matrix, per-class scores, "
                       "the most confident mistakes with activation maps, exports")
    p.add_argument("--model", required=True, help="a run folder (config.json + model.safetensors)")
    p.add_argument("--out", help="the page to write (default: report.html in --model)")
    p.add_argument("--data", type=_data, help="'fashion-mnist' or a folder (default: the data set the model "
                   "was trained on)")
    _workers(p)
    p.set_defaults(func=_cmd_report)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="class names with softmax probabilities for images")
    p.add_argument("--model", required=True, help="a run folder (config.json + model.safetensors)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=_number("top-k"), default=5,
                   help="classes shown per image (default 5)")
    _json(p, "{predictions, failed}: each image's classes, and each image that failed with its reason")
    _runtime(p)
    p.set_defaults(func=_cmd_predict)


def _force(p, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what} (default: refuse, exit 2)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="one deployable file (ONNX, ExecuTorch or LiteRT, float32 or int8) that "
                       "checks itself")
    p.add_argument("--model", required=True, help="a run folder (config.json + model.safetensors)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx",
                   help="onnx (default); executorch: a .pte for XNNPACK, with its metadata in FILE.json; litert: a "
                   ".tflite (the litert-export extra)")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantization (ONNX: ONNX Runtime's QDQ; executorch: PT2E with the XNNPACK "
                   "quantizer; litert: PT2E with litert-torch's); default float32")
    p.add_argument("--int8-preset", choices=["portable", "vnni"],
                   help="portable (default): 7-bit weights, exact on every x86-64 and ARM CPU; vnni: 8-bit weights, "
                   "for CPUs with VNNI or ARM only (on AVX2-only x86 its sums can saturate)")
    p.add_argument("--calibration", type=_number("calibration"), default=300,
                   help="training images to calibrate int8 on (default 300)")
    p.add_argument("--output", help="file to write (default: in --model)")
    _force(p, "a file (or its .json) that mobilenet did not write")
    _json(p, "print the export's report as one JSON object")
    p.set_defaults(func=_cmd_export)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="inference speed of each runtime against timm, on this machine")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="a run folder; default: an untrained network of --width and --resolution")
    p.add_argument("--width", type=WIDTH, help="width multiplier α (default 1.0)")
    p.add_argument("--resolution", type=RESOLUTION, help="input size (default 224)")
    p.add_argument("--batch-size", type=_int_list, default=[1, 16], help="comma-separated (default 1,16)")
    p.add_argument("--runtime", type=_runtime_list, default=list(RUNTIMES),
                   help=f"comma-separated, any of {','.join(RUNTIMES)} (default all)")
    p.add_argument("--seconds", type=_number("seconds"), default=1.0,
                   help="timing per runtime and batch size, at least 10 runs (default 1)")
    _json(p)
    p.set_defaults(func=_cmd_bench)


def _list(name: str):
    """An argparse type: a comma-separated list of LIMITS[name] numbers (--widths 1,0.5)."""
    one = _number(name)

    def parse(text):
        values = tuple(one(v.strip()) for v in text.split(",") if v.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, e.g. 1,0.5")
        return values
    parse.__name__ = f"{name} list"
    return parse


def _shard(text):
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use I/N, e.g. 0/4 (I from 0 to N-1)") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be from 0 to N-1, e.g. 0/4")
    return index, count


SWEEP_TRAIN_OPTIONS = ("data", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "augment", "dropout", "ema",
                       "random_erasing", "label_smoothing", "seed", "limit", "test_split", "val_split", "patience",
                       "workers", "device", "compile")


VAL_SPLIT = {"default": 0.1, "help": "hold out F of each point's training images (seeded, stratified): each point "
             "keeps its best epoch on them, and the pick looks at them only (default 0.1)"}


def _cmd_sweep(args) -> int:
    from .sweep.run import SweepConfig, sweep

    train = TrainConfig(**{name: getattr(args, name) for name in SWEEP_TRAIN_OPTIONS})
    sweep(SweepConfig(out=args.out or args.collect, train=train, widths=args.widths, resolutions=args.resolutions,
                      runtimes=tuple(args.runtime), int8=args.int8, seconds=args.seconds, budget_ms=args.budget_ms,
                      budget_mb=args.budget_mb, export=args.export, jobs=args.jobs, shard=args.shard,
                      collect=bool(args.collect)))
    return 0


def _add_sweep(sub) -> None:
    from .sweep.run import SWEEP_RUNTIMES, WIDTHS

    p = sub.add_parser("sweep", help="train a width × resolution grid (the paper's Figures 4-5) and pick the best "
                       "model within a latency or size budget")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="the sweep's folder: one run folder per point, sweep.csv, "
                       "sweep.json, the pictures and best; the same command again goes on where it stopped")
    where.add_argument("--collect", metavar="DIR", help="only merge the points in DIR (every shard's) into the "
                       "table, the pictures and the pick")
    p.add_argument("--widths", type=_list("width"), default=WIDTHS, help="α values (default 1,0.75,0.5,0.25)")
    p.add_argument("--resolutions", type=_list("resolution"), help="ρ values (default 64,48,40,32 for "
                   "Fashion-MNIST, 224,192,160,128 for a folder)")
    for f in cli_fields():
        if f.name in SWEEP_TRAIN_OPTIONS:
            _option(p, f, **(VAL_SPLIT if f.name == "val_split" else {}))
    p.add_argument("--runtime", type=_runtime_list, default=["onnxruntime"], help="comma-separated runtimes to "
                   f"time at batch 1, any of {','.join(SWEEP_RUNTIMES)}; the first is the budget's (default onnxruntime)")
    p.add_argument("--int8", action="store_true", help="also export each point to int8 ONNX and record its test "
                   "accuracy and size (default off)")
    p.add_argument("--seconds", type=_number("seconds"), default=1.0, help="timing per runtime (default 1)")
    p.add_argument("--budget-ms", type=_number("budget-ms"), metavar="X", help="pick within X ms at batch 1 on the "
                   "first --runtime (default: no limit)")
    p.add_argument("--budget-mb", type=_number("budget-mb"), metavar="Y", help="pick within Y MB of that runtime's "
                   "file (default: no limit)")
    p.add_argument("--export", choices=EXPORT_FORMATS, help="export the pick (int8 with --int8; default: none)")
    p.add_argument("--jobs", type=_number("jobs"), default=1, help="points trained at once (default 1; on several "
                   "GPUs, one point per GPU in turn)")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N", help="train every N-th point from the "
                   "I-th (I from 0), for a job array; then --collect (default 0/1: all)")
    p.set_defaults(func=_cmd_sweep)


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="a model folder from a timm mobilenetv1 state dict")
    p.add_argument("--from-timm", required=True, metavar="FILE", help="timm weights (.safetensors or .pth)")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--resolution", type=RESOLUTION, help="input size stored in the config (default 224)")
    _force(p, "a model.safetensors or config.json that mobilenet did not write, or a trained run's model")
    p.set_defaults(func=_cmd_convert)


def _add_samples(sub) -> None:
    p = sub.add_parser("samples", help="write Fashion-MNIST test images as PNG files, to try predict on")
    p.add_argument("--out", default="samples", help="folder (default ./samples)")
    p.add_argument("--count", type=_number("count"), default=5, help="images to write (default 5)")
    p.set_defaults(func=_cmd_samples)


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="the paper's 16 variants with their cost (Tables 6, 7)")
    _json(p)
    p.set_defaults(func=_cmd_models)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mobilenet", description="MobileNet V1: build, cost, train, evaluate, predict, export.")
    parser.add_argument("--version", action="version", version=f"mobilenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_cost(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_report(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_bench(sub)
    _add_sweep(sub)
    _add_convert(sub)
    _add_samples(sub)
    _add_models(sub)
    return parser


def subcommand_options() -> dict[str, list[dict]]:
    """Each subcommand's options: {"option", "takes_value", "choices"} (for tests and shell
    completion; argparse keeps them in private fields)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: [{"option": a.option_strings[-1], "takes_value": a.nargs != 0, "choices": list(a.choices or [])}
                   for a in p._actions if a.option_strings and a.dest != "help"]
            for name, p in sub.choices.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress.show(sys.stderr.isatty())  # bars on a terminal only
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is met inside the try
        return code
    except BrokenPipeError:  # `mobilenet cost | head -1`: the reader left; end quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush has nowhere to fail
        return 141  # 128 + SIGPIPE, what a shell reports for a tool that a closed pipe stopped
    except MobileNetError as e:
        print(f"mobilenet {args.command}: error: {printable(e)}", file=sys.stderr)
        return e.exit_code
    except MemoryError:  # numpy's or Python's; whatever asked for it, the answer is the same
        print(f"mobilenet {args.command}: error: out of memory; use a smaller model, batch or image set",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mobilenet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # not the user's input: keep the traceback, and say so before it
        print(f"mobilenet {args.command}: internal error in mobilenet {__version__}, a bug: please report it with "
              "the command and the traceback below", file=sys.stderr)
        raise
