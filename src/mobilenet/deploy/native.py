"""Native runtimes (ExecuTorch, LiteRT) kept from the user's terminal and process: their
C++ log lines go to /dev/null, and a file from elsewhere is first loaded and run once in a
child process, so that one that crashes or hangs the runtime ends the child, not us. No
torch here: the deployed path uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import MobileNetError, first_line, printable

PROBE_SECONDS = 300  # loading a model takes seconds; one that takes longer is refused, not waited on
PR_SET_PDEATHSIG = 1  # linux/prctl.h


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


def probe(data: bytes, name, child: str, engine: str, kind: str, again: str):
    """What `child` ("module:function", run in a fresh interpreter with `data` on stdin)
    prints as JSON. A crash, a hang or a failure there is a MobileNetError naming `engine`
    or the `kind` of file it wanted, and saying `again` (how to make a good one)."""
    module, function = child.split(":")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    code = f"{_die_with(os.getpid())}from {module} import {function}; {function}()"
    try:
        r = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=PROBE_SECONDS,
                           env=env)
    except subprocess.TimeoutExpired:
        raise MobileNetError(f"{name}: {engine} did not load it in {PROBE_SECONDS} s: not a file this toolkit "
                             f"wrote, or damaged; {again}") from None
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


def child_fails(e: BaseException) -> None:
    """A probe child's end on failure: one line on stderr for the parent, exit status 1."""
    sys.stderr.write(detail(e) + "\n")
    sys.exit(1)
