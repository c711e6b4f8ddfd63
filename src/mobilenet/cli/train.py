"""`mobilenet train`: its options come from TrainConfig's fields."""

from __future__ import annotations

import sys

from ..errors import BadArgument
from ..training.config import TrainConfig, cli_fields
from .options import option


def _cmd_train(args) -> int:
    from ..training.loop import train

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


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train on Fashion-MNIST (default), a folder of images or a label file")
    for f in cli_fields():
        option(p, f)
        if f.name == "out":  # beside the folder it continues; --resume is train()'s argument, not a field
            p.add_argument("--resume", action="store_true", help="continue the run in --out (default off: a new run)")
    p.set_defaults(func=_cmd_train, epochs=None)  # None: the default depends on --resume (_train_config)
