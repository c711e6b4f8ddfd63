"""`mobilenet cost` and `mobilenet models`: what a network costs, from Table 1."""

from __future__ import annotations

import json

from ..net.config import MobileNetConfig, get_config
from .options import NUM_CLASSES, RESOLUTION, WIDTH, json_option, number, variant


def _cmd_cost(args) -> int:
    from ..net.cost import cost_report, format_report

    base = get_config(args.variant).to_dict() if args.variant else {}
    for key, value in (("width_mult", args.width), ("resolution", args.resolution),
                       ("num_classes", args.num_classes), ("in_channels", args.channels)):
        if value is not None:
            base[key] = value
    report = cost_report(MobileNetConfig(**base), full_conv=args.full_conv)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def add_cost(sub) -> None:
    p = sub.add_parser("cost", help="parameters and mult-adds, layer by layer (Tables 1-4)")
    p.add_argument("--variant", type=variant, help="one of the paper's 16 variants, e.g. mobilenet_v1_0.75_192 "
                   "(default none: α, ρ and classes as given)")
    p.add_argument("--width", type=WIDTH, help="width multiplier α (default 1.0)")
    p.add_argument("--resolution", type=RESOLUTION, help="input size ρ in pixels (default 224)")
    p.add_argument("--num-classes", type=NUM_CLASSES, help="FC outputs (default 1000)")
    p.add_argument("--channels", type=number("in-channels"), help="input channels: 3 for colour (default), "
                   "1 for grey images such as Fashion-MNIST's")
    p.add_argument("--full-conv", action="store_true", help="Table 4's Conv MobileNet: standard 3×3 convs "
                   "(default off: depthwise separable)")
    json_option(p)
    p.set_defaults(func=_cmd_cost)


def _cmd_models(args) -> int:
    from ..net.cost import models, models_table

    print(json.dumps(models(), indent=2) if args.json else models_table())
    return 0


def add_models(sub) -> None:
    p = sub.add_parser("models", help="the paper's 16 variants with their cost (Tables 6, 7)")
    json_option(p)
    p.set_defaults(func=_cmd_models)
