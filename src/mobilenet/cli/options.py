"""Argument types and options that several subcommands share."""

from __future__ import annotations

import argparse
from dataclasses import Field

from ..data.images import FASHION_MNIST
from ..errors import BadArgument, printable
from ..formats import PREDICT_RUNTIMES, RUNTIMES
from ..limits import LIMITS, check_data
from ..net.config import list_models
from ..training.config import cli_fields


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {printable(message)}\n")  # a shell glob may bring hostile names


def number(name: str):
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


WIDTH, RESOLUTION, NUM_CLASSES = number("width"), number("resolution"), number("num-classes")


def data_folder(text):
    return text if text == FASHION_MNIST else check_data(text, argparse.ArgumentTypeError)


data_folder.__name__ = "data"


def variant(text):
    if text not in list_models():
        raise argparse.ArgumentTypeError(f"unknown variant {text!r}; use one of {', '.join(list_models())}")
    return text


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers, e.g. 1,16") from None
    if not values or any(not 1 <= v <= 4096 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: use whole numbers from 1 to 4096, e.g. 1,16")
    return values


def runtime_list(text):
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in RUNTIMES]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: use any of {','.join(RUNTIMES)}")
    return values


def json_option(p, what: str = "print one JSON object") -> None:
    p.add_argument("--json", action="store_true", help=f"{what} (default off: text)")


def option(p, f: Field, **given) -> None:
    """A TrainConfig field as an option: its flag, help, type, choices and default are the
    field's, unless `given` (default=, help=) says otherwise."""
    m = {**f.metadata, "help": given.get("help", f.metadata["help"])}
    if f.default is False:
        p.add_argument(m["flag"], dest=f.name, action="store_true", help=m["help"])
        return
    kind = data_folder if m["folder"] else number(m["flag"][2:]) if m["limit"] else None
    # named after the flag, as argparse would without dest (the field's name: WIDTH_MULT for --width)
    metavar = m["metavar"] or (None if m["choices"] else m["flag"][2:].replace("-", "_").upper())
    p.add_argument(m["flag"], dest=f.name, type=kind, choices=m["choices"], metavar=metavar,
                   default=given.get("default", f.default), help=m["help"])


def workers_option(p) -> None:  # evaluate's --workers is train's
    option(p, next(f for f in cli_fields() if f.name == "workers"))


def runtime_option(p) -> None:
    p.add_argument("--runtime", choices=PREDICT_RUNTIMES,
                   help="default: torch for a run folder, and by its suffix for an exported file: onnxruntime for "
                   ".onnx (torch not needed), executorch for .pte, litert for .tflite (the litert extra; torch not "
                   "needed); openvino: an .onnx file in OpenVINO (the openvino extra)")


def force_option(p, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what} (default: refuse, exit 2)")


def list_of(name: str):
    """An argparse type: a comma-separated list of LIMITS[name] numbers (--widths 1,0.5)."""
    one = number(name)

    def parse(text):
        values = tuple(one(v.strip()) for v in text.split(",") if v.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, e.g. 1,0.5")
        return values
    parse.__name__ = f"{name} list"
    return parse


def shard(text):
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use I/N, e.g. 0/4 (I from 0 to N-1)") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be from 0 to N-1, e.g. 0/4")
    return index, count


def device_options(p, what: str) -> None:
    """--on DEST and what reaching it takes (bench, sweep)."""
    p.add_argument("--on", metavar="DEST", help=f"a device reached by ssh (user@host, a Host of your SSH config, "
                   f"ssh://user@host:port): {what}; it needs Python 3 with numpy and the runtime only (default: "
                   "this machine)")
    p.add_argument("--ssh-config", metavar="FILE", help="with --on: the OpenSSH client config (ssh -F FILE; "
                   "default: yours)")
    p.add_argument("--python", help="with --on: the device's Python; ~/ is its home (default python3)")
    p.add_argument("--device-name", metavar="NAME", help="the name results are kept under (default: the device's "
                   "host and CPU)")


def device_from(args):
    """--on's device (deploy.remote.Device), or None; its options without --on: one line, exit 2."""
    if not args.on:
        stray = [flag for flag, value in (("--ssh-config", args.ssh_config), ("--python", args.python)) if value]
        if stray:
            raise BadArgument(f"{stray[0]} goes with --on DEST, the device it is for")
        return None
    from ..deploy.remote import Device

    return Device(args.on, args.ssh_config, args.python or "python3", args.device_name)
