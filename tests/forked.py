"""The real `mobilenet` command in a fresh child process, without a fresh interpreter's
imports: children fork from a server (multiprocessing's forkserver) that imported torch and
the package once, before it ran anything. A child starts with the server's modules and
nothing of the tests' state, takes its own environment, signals and exit status, and is
killed like any process; it saves the 4 s or so that importing torch, torch._dynamo and
matplotlib costs each `python -m mobilenet`. Tests that check the start of a real
interpreter (imports, --help, torchrun) still start one."""

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # as the package's plots do, so the server's import is theirs
import matplotlib.pyplot  # noqa: E402,F401  (imported once, in the server)
import onnx  # noqa: E402,F401
import onnxruntime  # noqa: E402,F401
import torch._dynamo  # noqa: E402,F401  (torch.optim imports it at the first optimizer)

import mobilenet.cli  # noqa: E402,F401
import mobilenet.deploy.exporter  # noqa: E402,F401
import mobilenet.deploy.predictor  # noqa: E402,F401
import mobilenet.deploy.runtime  # noqa: E402,F401
import mobilenet.report.evaluation  # noqa: E402,F401
import mobilenet.training.loop  # noqa: E402,F401
import mobilenet.training.weights  # noqa: E402,F401

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def _start_server() -> None:
    """The server finds this module on PYTHONPATH: Python 3.11's forkserver preloads before it
    takes the parent's sys.path, and an import that fails there is skipped without a word
    (every child would then import it all again)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), old]))
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def _child(argv: list[str], env: dict, out: str, err: str, code: str | None) -> None:
    os.setsid()  # a session of its own, as Popen(start_new_session=True): killpg reaches only it
    # a new interpreter's start method (the server left its own, forkserver): DataLoader workers
    # are then the child's own children, in its process group
    multiprocessing.set_start_method(None, force=True)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(write_through=True)  # as PYTHONUNBUFFERED: a killed child keeps what it printed
    if code is not None:  # as `python -c code argv...`, which ends when the code does
        sys.argv = ["-c", *argv]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
        sys.exit(0)
    sys.argv = ["mobilenet", *argv]
    sys.exit(mobilenet.cli.main(argv))


def run(argv, env: dict | None = None, code: str | None = None, timeout: float | None = None
        ) -> subprocess.CompletedProcess:
    """`python -m mobilenet argv` (or `python -c code argv`) with env over os.environ, as
    subprocess.run(capture_output=True, text=True) returns it; a kill shows as -signal."""
    argv = [str(a) for a in argv]
    _start_server()  # once; then it only checks the server is alive
    with tempfile.TemporaryDirectory() as tmp:
        out, err = str(Path(tmp) / "out"), str(Path(tmp) / "err")
        proc = _CONTEXT.Process(target=_child, args=(argv, {**os.environ, **(env or {})}, out, err, code))
        proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, proc.exitcode, Path(out).read_text(), Path(err).read_text())


class Child:
    """A child that start() began, with what the tests use of a Popen: pid, poll, returncode,
    send_signal, kill, communicate; and output(), what it has printed so far."""

    def __init__(self, proc, tmp: tempfile.TemporaryDirectory, argv: list[str]):
        self._proc, self._tmp, self._argv, self.pid = proc, tmp, argv, proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self) -> tuple[str, str]:
        """stdout and stderr so far, in whole lines while it runs (it may be writing the last)."""
        running = self.poll() is None
        found = []
        for name in ("out", "err"):
            text = (Path(self._tmp.name) / name).read_bytes().decode(errors="replace" if running else "strict")
            found.append(text[:text.rfind("\n") + 1] if running else text)
        return found[0], found[1]

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(self._argv, timeout)
        return self.output()


def start(argv, env: dict | None = None, code: str | None = None) -> Child:
    """run(), without waiting for the end: for a test that signals the child as it runs."""
    argv = [str(a) for a in argv]
    _start_server()
    tmp = tempfile.TemporaryDirectory()
    out, err = str(Path(tmp.name) / "out"), str(Path(tmp.name) / "err")
    for path in (out, err):  # there before the child opens them, for output() to read at once
        Path(path).touch()
    proc = _CONTEXT.Process(target=_child, args=(argv, {**os.environ, **(env or {})}, out, err, code))
    proc.start()
    return Child(proc, tmp, argv)
