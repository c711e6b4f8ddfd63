"""The `mobilenet` command. Thin: each subcommand parses its arguments and calls one
library function. User errors (MobileNetError, bad config values) become one line on
stderr and a non-zero exit status; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import json
import sys

from . import model as M
from .errors import MobileNetError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(name, low, high, kind=float):
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


WIDTH = _number("width", M.MIN_WIDTH, M.MAX_WIDTH)
RESOLUTION = _number("resolution", M.MIN_RESOLUTION, M.MAX_RESOLUTION, int)
NUM_CLASSES = _number("num-classes", 1, 10**6, int)


def _variant(text):
    if text not in M.list_models():
        raise argparse.ArgumentTypeError(f"unknown variant {text!r}; use one of {', '.join(M.list_models())}")
    return text


def _cmd_cost(args) -> int:
    from .cost import cost_report, format_report

    base = M.get_config(args.variant).to_dict() if args.variant else {}
    for key, value in (("width_mult", args.width), ("resolution", args.resolution),
                       ("num_classes", args.num_classes)):
        if value is not None:
            base[key] = value
    report = cost_report(M.MobileNetConfig(**base), full_conv=args.full_conv)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _cmd_models(args) -> int:
    from .cost import models_table

    print(models_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mobilenet", description="MobileNet V1: build, cost, train, evaluate, predict, export.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("cost", help="parameters and mult-adds, layer by layer (Tables 1-4)")
    p.add_argument("--variant", type=_variant, help="one of the paper's 16 variants, e.g. mobilenet_v1_0.75_192")
    p.add_argument("--width", type=WIDTH, help="width multiplier α (default 1.0)")
    p.add_argument("--resolution", type=RESOLUTION, help="input size ρ in pixels (default 224)")
    p.add_argument("--num-classes", type=NUM_CLASSES, help="FC outputs (default 1000)")
    p.add_argument("--full-conv", action="store_true", help="Table 4's Conv MobileNet: standard 3×3 convs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_cost)

    p = sub.add_parser("models", help="the paper's 16 variants with their cost (Tables 6, 7)")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (MobileNetError, ValueError) as e:
        print(f"mobilenet {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mobilenet {args.command}: interrupted", file=sys.stderr)
        return 130
