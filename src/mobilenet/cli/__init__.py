"""The `mobilenet` command. Thin: each subcommand parses its arguments and calls one
library function. User errors (MobileNetError) become one line on stderr and a non-zero
exit status; anything else is a bug, said as one, and keeps its traceback."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__, progress
from ..errors import MobileNetError, printable
from .model import add_cost, add_models
from .options import Parser
from .ship import add_bench, add_convert, add_export
from .sweep import add_sweep
from .train import add_train
from .use import add_evaluate, add_predict, add_report, add_samples


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mobilenet", description="MobileNet V1: build, cost, train, evaluate, predict, export.")
    parser.add_argument("--version", action="version", version=f"mobilenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_cost(sub)
    add_train(sub)
    add_evaluate(sub)
    add_report(sub)
    add_predict(sub)
    add_export(sub)
    add_bench(sub)
    add_sweep(sub)
    add_convert(sub)
    add_samples(sub)
    add_models(sub)
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
