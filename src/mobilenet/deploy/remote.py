"""Timing on the user's own device over SSH (`bench --on`, `sweep --on`).

The system's OpenSSH client runs everything, so the user's keys, agent, ProxyJump and
known_hosts apply; host-key checking is never turned off, and BatchMode keeps ssh from
asking for anything. Each timing is one SSH session whose remote command is fixed text: a
bootstrap that reads device_runner.py from stdin into a fresh temporary folder and runs it
in a child that reads the rest of stdin (one JSON job and the model's bytes, written there
as model.<suffix>). No name from a file, the user or the device reaches the remote shell:
the only words in the command are the interpreter (quoted) and the bootstrap. The bootstrap
removes the folder when the runner ends, fails or crashes; the runner ends when it sees
stdin close (the SSH session died, or this process did). What the device says back is
read to a bound and checked before it is used.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadArgument, MobileNetError, NotInstalled, has_control, printable
from ..limits import finite_number

RUNNER = Path(__file__).with_name("device_runner.py")
STARTED = "mobilenet-device-runner: started"  # the bootstrap's first line: Python runs there
# The remote command's program: Python 3 of any version a board has, nothing of this package.
BOOT = f"""\
import os, shutil, subprocess, sys, tempfile
sys.dont_write_bytecode = True
d = tempfile.mkdtemp(prefix="mobilenet-device-")
code = 1
print({STARTED!r})
sys.stdout.flush()
def read(n):  # unbuffered: what follows the runner on stdin is the child's
    got = b""
    while len(got) < n:
        more = os.read(0, n - len(got))
        if not more:
            raise EOFError
        got += more
    return got
try:
    size = b""
    while not size.endswith(b"\\n"):
        size += read(1)
    runner = os.path.join(d, "device_runner.py")
    with open(runner, "wb") as f:
        f.write(read(int(size)))
    code = subprocess.call([sys.executable, "-B", runner, "--session", d])
finally:
    shutil.rmtree(d, ignore_errors=True)
sys.exit(128 - code if code < 0 else code)
"""
ABOUT_SECONDS = 120  # connect, log in, start Python and read the device: a slow board on a slow link
ANSWER_LIMIT = 1 << 20  # bytes of the device's stdout and stderr kept: its answer is a few kilobytes
NO_PYTHON = 127  # the remote shell's status for a command it cannot find
# What OpenSSH says (stderr, exit 255), and the line we say instead. {dest} is filled in.
SSH_FAILURES = (
    (("Host key verification failed", "host key is known", "HOST IDENTIFICATION HAS CHANGED"),
     "{dest}: its host key is not known here (or has changed); connect once with `ssh {dest}` to check and accept "
     "it, then run this again"),
    (("Permission denied", "Too many authentication failures"),
     "{dest}: authentication was refused; `ssh {dest}` must log in with a key, without a password prompt"),
    (("timed out", "Timeout"), "{dest}: the connection timed out; check that the device is on and reachable"),
    (("Could not resolve hostname", "Connection refused", "No route to host", "Network is unreachable",
      "Connection closed", "Connection reset", "kex_exchange_identification"),
     "{dest}: unreachable ({detail}); check the name, the port and that its SSH server runs"),
)


class DeviceError(MobileNetError):
    """The device could not time the file: unreachable, refused, or missing what it needs."""


class DeviceMissing(DeviceError, NotInstalled):
    """The device lacks the runtime's package: bench leaves that runtime out unless asked for."""


def check_dest(dest: str) -> str:
    """What ssh accepts as a destination, and no option in disguise."""
    if not dest or dest.startswith("-") or has_control(dest) or any(c.isspace() for c in dest):
        raise BadArgument(f"--on {printable(dest)!r}: give user@host, a Host from your SSH config, or "
                          "ssh://user@host:port")
    return dest


@dataclass
class Device:
    """A device reached by `ssh DEST`. name: what its results are kept under (default: its
    host and CPU, as it reports them)."""

    dest: str
    ssh_config: str | None = None
    python: str = "python3"
    name: str | None = None
    about: dict | None = field(default=None, repr=False)

    def __post_init__(self):
        check_dest(self.dest)
        if self.ssh_config and not Path(self.ssh_config).is_file():
            raise BadArgument(f"--ssh-config {printable(self.ssh_config)}: no such file; give an OpenSSH client config")
        if not self.python or has_control(self.python):
            raise BadArgument(f"--python {printable(self.python)!r}: give the device's Python 3, e.g. python3")

    def ssh_command(self) -> list[str]:
        config = ["-F", self.ssh_config] if self.ssh_config else []
        # a leading ~/ is the device's home: its shell expands $HOME, and the rest stays quoted
        python = '"$HOME"/' + shlex.quote(self.python[2:]) if self.python.startswith("~/") else shlex.quote(self.python)
        remote = f"exec {python} -c {shlex.quote(BOOT)}"
        return ["ssh", *config, "-o", "BatchMode=yes", "-T", "--", self.dest, remote]

    def describe(self) -> dict:
        """The device as the runner reports it (one session, which also finds a missing
        Python or numpy before any work), and the name its results go under."""
        if self.about is None:
            found = self._session({"about": True}, b"", ABOUT_SECONDS)
            if not isinstance(found.get("device"), dict):
                raise DeviceError(f"{self.dest}: the runner did not describe the device; is {printable(self.python)} "
                                  "running this toolkit's runner?")
            self.about = found["device"]
            if not self.about.get("numpy"):
                raise DeviceError(f"{self.dest}: {self.python} there has no numpy; install it there "
                                  "(pip install numpy, or the system's python3-numpy)")
            if not self.name:
                host, cpu = self.about.get("host") or self.dest, self.about.get("cpu") or "CPU unknown"
                self.name = printable(f"{host} ({cpu})")
        return self.about

    def time(self, data: bytes, suffix: str, runtime: str, batch_sizes, threads, runs: int, seconds: float,
             timeout: float, warmup: int = 3) -> dict:
        """The runner's result for one file in one runtime (device_runner.time_file's object)."""
        self.describe()
        job = {"runtime": runtime, "suffix": suffix, "batch_sizes": list(batch_sizes),
               "threads": list(threads or []), "runs": runs, "warmup": warmup, "seconds": seconds}
        found = self._session(job, data, timeout)
        if found.get("error") == "missing":
            package = printable(str(found.get("package")))
            raise DeviceMissing(f"{self.dest} has no {package} for {self.python}: install it there "
                                f"(pip install {package}) to time {runtime} files")
        if found.get("error"):
            raise DeviceError(f"{self.dest}: {runtime} could not run the file there "
                              f"({printable(str(found.get('detail')))[:200]})")
        return self._checked(found, job)

    def _checked(self, found: dict, job: dict) -> dict:
        """The runner's answer as time_file gives it: a row per batch size and thread count
        asked for, each of finite numbers; anything else is one line, not a traceback."""
        rows = found.get("rows")
        numbers = ("median_ms", "p10_ms", "p90_ms", "load_seconds", "first_run_ms")
        good = (isinstance(rows, list) and isinstance(found.get("device"), dict)
                and len(rows) == len(job["batch_sizes"]) * max(1, len(job["threads"]))
                and all(isinstance(r, dict) and all(finite_number(r.get(k)) and r[k] >= 0 for k in numbers)
                        and r.get("batch_size") in job["batch_sizes"] and finite_number(r.get("threads"), whole=True)
                        and finite_number(r.get("runs"), whole=True) for r in rows)
                and (found.get("peak_memory_mb") is None or finite_number(found["peak_memory_mb"])))
        if not good:
            raise DeviceError(f"{self.dest}: the runner's answer is not the timings it should be; is "
                              f"{printable(self.python)} running this toolkit's runner?")
        return found

    def _session(self, job: dict, data: bytes, timeout: float) -> dict:
        """One SSH session: the bootstrap, the runner, the job and the model on stdin; the
        runner's JSON line from stdout. stdin stays open until the runner has answered, for
        the runner ends when it closes."""
        runner = RUNNER.read_bytes()
        stream = b"%d\n" % len(runner) + runner + json.dumps({**job, "size": len(data)}).encode() + b"\n" + data
        try:
            proc = subprocess.Popen(self.ssh_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise DeviceError("ssh: not found; install the OpenSSH client (Debian: openssh-client)") from None
        out, err = [], []
        readers = [threading.Thread(target=_drain, args=(s, into), daemon=True)
                   for s, into in ((proc.stdout, out), (proc.stderr, err))]
        readers.append(threading.Thread(target=_feed, args=(proc.stdin, stream), daemon=True))
        for t in readers:
            t.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.dest}: no answer within {timeout:.0f} s; the device or its link is too slow "
                              "or stuck") from None
        finally:
            _close(proc)
        for t in readers[:2]:
            t.join(timeout=10)
        return self._answer(code, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace"))

    def _answer(self, code: int, stdout: str, stderr: str) -> dict:
        lines = [line for line in stdout.splitlines() if line.strip()]
        try:
            found = json.loads(lines[-1]) if lines else None
        except (ValueError, RecursionError):
            found = None
        if isinstance(found, dict):
            return found
        said = [line.strip() for line in stderr.splitlines() if line.strip()]
        last = printable(said[-1] if said else "nothing said")[:200]
        if STARTED in stdout:  # Python ran there: the runner or its runtime ended it (a crash: ssh says 255)
            raise DeviceError(f"{self.dest}: the runner ended without a result (exit {code}: {last})")
        if code == 255:  # ssh's own failure
            for words, line in SSH_FAILURES:
                if any(w in stderr for w in words):
                    raise DeviceError(line.format(dest=self.dest, detail=last))
            raise DeviceError(f"{self.dest}: ssh failed ({last})")
        if code == NO_PYTHON or (not lines and "No such file" in stderr and "Traceback" not in stderr):
            raise DeviceError(f"{self.dest}: no {printable(self.python)} there; install Python 3 there, or give "
                              "its path with --python")
        raise DeviceError(f"{self.dest}: {printable(self.python)} there ended before the runner started "
                          f"(exit {code}: {last}); it must be Python 3")


def _drain(stream, into: list) -> None:
    """Read `stream` to its end, keeping its first ANSWER_LIMIT bytes."""
    kept = 0
    while chunk := stream.read(1 << 16):
        if kept < ANSWER_LIMIT:
            into.append(chunk[:ANSWER_LIMIT - kept])
            kept += len(into[-1])


def _feed(stdin, data: bytes) -> None:
    try:
        stdin.write(data)
        stdin.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass  # ssh has ended; its status and stderr say why


def _close(proc: subprocess.Popen) -> None:
    """Close ssh's stdin (the runner ends and removes its folder), then make sure ssh ends."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
