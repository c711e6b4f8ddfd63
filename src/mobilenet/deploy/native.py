"""Native runtimes (ExecuTorch, LiteRT) kept from the user's terminal and process: their
C++ log lines go to /dev/null, and a file from elsewhere is first loaded and run on one
non-zero image in a child process, within a time its network's mult-adds bound, so that
one that crashes or hangs the runtime, or works far more than its network, ends the child,
not us. No torch here: the deployed path uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import MobileNetError, first_line, printable
from ..net.cost import cost_report
from ..run.info import ModelInfo

PROBE_SECONDS = 300  # a probe of a file whose metadata does not name its network
LOAD_SECONDS = 120  # a fresh interpreter, the runtime's import and the file's load, on a slow, busy CPU
SLOWEST_MACS = 1e7  # mult-adds a second: slower than any CPU's reference kernels, so only a loop gets there
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def probe_seconds(mult_adds: int | None) -> float:
    """How long a probe may take: the load, then one image of a network of `mult_adds` at a
    pace no CPU is slower than. A file that takes longer does more than its network: refused."""
    return PROBE_SECONDS if mult_adds is None else LOAD_SECONDS + mult_adds / SLOWEST_MACS


def _die_with(parent: int) -> str:
    """The child's first lines: it is killed when its parent ends, by a SIGTERM or kill -9 too
    (Linux's parent-death signal), and ends at once if the parent is already gone, so a
    probe left hanging never runs on alone."""
    return ("import ctypes, os, signal, sys\n"
            "try:\n"
            f"    ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGKILL)\n"
            "except (OSError, AttributeError):\n"  # not Linux: the parent's timeout still ends it
            "    pass\n"
            f"if os.getppid() != {parent}:\n"
            "    sys.exit(1)\n")


@contextlib.contextmanager
def quiet_stderr():
    """Native runtimes log CPU probing and delegate lines on stderr as a model loads; a
    user's terminal gets one line per problem, from us."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def detail(e: BaseException) -> str:
    return printable(first_line(e))


def probe(data: bytes, name, child: str, engine: str, kind: str, again: str, seconds: float = PROBE_SECONDS):
    """What `child` ("module:function", run in a fresh interpreter with `data` on stdin)
    prints as JSON, within `seconds`. A crash, a hang or a failure there is a MobileNetError
    naming `engine` or the `kind` of file it wanted, and saying `again` (how to make a good one)."""
    module, function = child.split(":")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    code = f"{_die_with(os.getpid())}from {module} import {function}; {function}()"
    try:
        r = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=seconds, env=env)
    except subprocess.TimeoutExpired:
        raise MobileNetError(f"{name}: {engine} did not load and run it on one image in {seconds:.0f} s, far "
                             f"more than its network needs: not a file this toolkit wrote, or damaged; {again}") \
            from None
    last = printable((r.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1].strip()[:200])
    if r.returncode < 0:
        words = ": ".join(filter(None, [signal.Signals(-r.returncode).name, last]))
        raise MobileNetError(f"{name} crashed {engine} while loading ({words}): not a file this toolkit wrote, "
                             f"or damaged; {again}")
    if r.returncode != 0:
        raise MobileNetError(f"{name} is not a loadable {kind} ({last}); {again}")
    try:
        return json.loads(r.stdout)
    except ValueError:  # the child ended well but said nothing: not our child's way
        raise MobileNetError(f"{name} is not a loadable {kind} (its probe gave no answer); {again}") from None


def probe_file(data: bytes, name, child: str, engine: str, kind: str, again: str, info: ModelInfo,
               batches: int, wanted: tuple | None = None) -> dict:
    """probe()'s findings, held against the file's metadata `info`: the file takes the input it
    prepares (or `wanted`, an image's sizes) in batches of at most `batches` images, or any
    batch; one non-zero image gives a finite score for each class; and all of it within
    probe_seconds of its network."""
    wanted, classes = wanted or info.input_shape, len(info.classes)
    found = probe(data, name, child, engine, kind, again,
                  probe_seconds(info.model and cost_report(info.model)["mult_adds"]))
    try:
        sizes, batch, scores, finite = found["input"], found["batch"], found["output"], found["finite"]
    except (KeyError, TypeError):
        raise MobileNetError(f"{name} is not a loadable {kind} (its probe gave no answer); {again}") from None
    if tuple(sizes[1:]) != tuple(wanted):
        raise MobileNetError(f"{name}: its metadata prepares images as {tuple(wanted)}, the {kind} takes "
                             f"{tuple(sizes[1:])}; {again}")
    if batch is not None and not 1 <= batch <= batches:
        raise MobileNetError(f"{name} takes {batch:,} images at a time, where this toolkit's files take "
                             f"{'one' if batches == 1 else f'up to {batches}'} or any number; {again}")
    if scores != [1, classes] or not finite:
        raise MobileNetError(f"{name} gives {'non-finite ' if not finite else ''}scores of shape {scores} for one "
                             f"image, where its metadata names {classes} classes; {again}")
    return found


def probe_image(shape) -> np.ndarray:
    """The probe's image: one of `shape` (channels, height, width), non-zero, as real images
    are once normalized (a file may behave on zeros and not on them)."""
    return np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)


def child_fails(e: BaseException) -> None:
    """A probe child's end on failure: one line on stderr for the parent, exit status 1."""
    sys.stderr.write(detail(e) + "\n")
    sys.exit(1)
