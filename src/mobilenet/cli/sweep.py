"""`mobilenet sweep`: the α × ρ grid, with the training options every point shares."""

from __future__ import annotations

from ..formats import EXPORT_FORMATS
from ..training.config import TrainConfig, cli_fields
from .options import device_from, device_options, list_of, number, option, runtime_list, shard

# every train option but the grid's own (α, ρ), the point's folder and what a sweep cannot share
NOT_SWEPT = {"width_mult", "resolution", "out", "force", "init", "strict"}
SWEEP_TRAIN_OPTIONS = tuple(f.name for f in cli_fields() if f.name not in NOT_SWEPT)


VAL_SPLIT = {"default": 0.1, "help": "hold out F of each point's training images (seeded, stratified): each point "
             "keeps its best epoch on them, and the pick looks at them only (default 0.1)"}


def _cmd_sweep(args) -> int:
    from ..sweep.run import SweepConfig, sweep

    train = TrainConfig(**{name: getattr(args, name) for name in SWEEP_TRAIN_OPTIONS})
    device = device_from(args)
    sweep(SweepConfig(out=args.out or args.collect, train=train, widths=args.widths, resolutions=args.resolutions,
                      runtimes=tuple(args.runtime), int8=args.int8, seconds=args.seconds, budget_ms=args.budget_ms,
                      budget_mb=args.budget_mb, export=args.export, jobs=args.jobs, shard=args.shard,
                      collect=bool(args.collect), device=device))
    return 0


def add_sweep(sub) -> None:
    from ..sweep.run import SWEEP_RUNTIMES, WIDTHS

    p = sub.add_parser("sweep", help="train a width × resolution grid (the paper's Figures 4-5) and pick the best "
                       "model within a latency or size budget")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="the sweep's folder: one run folder per point, sweep.csv, "
                       "sweep.json, the pictures and best; the same command again goes on where it stopped")
    where.add_argument("--collect", metavar="DIR", help="only merge the points in DIR (every shard's) into the "
                       "table, the pictures and the pick")
    p.add_argument("--widths", type=list_of("width"), default=WIDTHS, help="α values (default 1,0.75,0.5,0.25)")
    p.add_argument("--resolutions", type=list_of("resolution"), help="ρ values (default 64,48,40,32 for "
                   "Fashion-MNIST, 224,192,160,128 for a folder)")
    for f in cli_fields():
        if f.name in SWEEP_TRAIN_OPTIONS:
            option(p, f, **(VAL_SPLIT if f.name == "val_split" else {}))
    p.add_argument("--runtime", type=runtime_list, default=["onnxruntime"], help="comma-separated runtimes to "
                   f"time at batch 1, any of {','.join(SWEEP_RUNTIMES)}; the first is the budget's (default onnxruntime)")
    p.add_argument("--int8", action="store_true", help="also export each point to int8 ONNX and record its test "
                   "accuracy and size (default off)")
    p.add_argument("--seconds", type=number("seconds"), default=1.0, help="timing per runtime (default 1)")
    p.add_argument("--budget-ms", type=number("budget-ms"), metavar="X", help="pick within X ms at batch 1 on the "
                   "first --runtime (default: no limit)")
    p.add_argument("--budget-mb", type=number("budget-mb"), metavar="Y", help="pick within Y MB of that runtime's "
                   "file (default: no limit)")
    device_options(p, "time each point there instead (with --collect: the points it has not timed yet); its latency "
                   "is then the table's, the picture's and --budget-ms's")
    p.add_argument("--export", choices=EXPORT_FORMATS, help="export the pick (int8 with --int8; default: none)")
    p.add_argument("--jobs", type=number("jobs"), default=1, help="points trained at once (default 1; on several "
                   "GPUs, one point per GPU in turn)")
    p.add_argument("--shard", type=shard, default=(0, 1), metavar="I/N", help="train every N-th point from the "
                   "I-th (I from 0), for a job array; then --collect (default 0/1: all)")
    p.set_defaults(func=_cmd_sweep)
