"""`bench --on DEST`: exported files timed on a device over SSH, against a real OpenSSH server
on loopback (tests/sshd.py) whose Python stands in for the device's. Every failure is one
line, and the device keeps nothing: the runner's temporary folders are gone after each
run, failed or killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import _exported, cli, wait_for

PYTHON = ["--python", sys.executable]


def _alone(path: Path, into: Path, name: str | None = None) -> Path:
    """A copy of an exported file (and a .pte's sidecar) in a folder of its own, no run folder."""
    into.mkdir(exist_ok=True)
    copy = into / (name or path.name)
    shutil.copy(path, copy)
    if path.suffix == ".pte":
        shutil.copy(f"{path}.json", f"{copy}.json")
    return copy


def _bench(ssh_device, model, *args, host="device", python=PYTHON):
    return cli("bench", "--model", model, *ssh_device.args(host), *python, "--batch-size", "1,2", "--seconds", "0.02",
               *args)


@pytest.mark.parametrize("runtime, fmt", [("onnxruntime", "onnx"), ("openvino", "onnx"), ("executorch", "executorch"),
                                          ("litert", "litert")])
def test_each_runtimes_file_is_timed_on_the_device(small_run, onnx_file, tmp_path_factory, tmp_path, ssh_device,
                                                   runtime, fmt):
    path = onnx_file if fmt == "onnx" else _exported(small_run, tmp_path_factory, {
        "litert": "m.int8.tflite", "executorch": "m.pte"}[fmt], fmt, **({"int8": True} if fmt == "litert" else {}))[0]
    r = _bench(ssh_device, _alone(path, tmp_path), "--runtime", runtime, "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    name = f"{runtime}-int8" if fmt == "litert" else runtime
    assert [(row["runtime"], row["batch_size"]) for row in found["rows"]] == [(name, 1), (name, 2)]
    assert all(0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"] and row["iterations"] >= 10
               for row in found["rows"])
    machine = found["machine"]
    assert machine["ssh"] == "device" and machine["cores"] >= 1 and machine["arch"] and machine["python"]
    package = {"litert": "ai-edge-litert"}.get(runtime, runtime)
    assert machine["versions"][package] and found["device"] == machine["name"]
    assert ssh_device.left() == []
    assert not (tmp_path / "latency.json").exists()  # a file apart from a run folder: nothing kept beside it


def test_a_devices_result_has_local_benchs_shape_and_is_kept_beside_it(small_run, onnx_file, tmp_path, ssh_device):
    from mobilenet.report.page import latency_table
    from mobilenet.run.latency import read_latency

    folder = shutil.copytree(small_run[0], tmp_path / "run")
    model = _alone(onnx_file, folder, "model.onnx")
    here = cli("bench", "--model", model, "--runtime", "onnxruntime", "--batch-size", "1", "--seconds", "0.02",
               "--device-name", "host", "--json")
    there = _bench(ssh_device, model, "--runtime", "onnxruntime", "--device-name", "board", "--threads", "1", "--json",
                   host=ssh_device.uri)  # DEST as a URI, with its port
    assert here.returncode == 0 and there.returncode == 0, here.stderr + there.stderr
    here, there = json.loads(here.stdout), json.loads(there.stdout)
    assert here.keys() == there.keys() and here["machine"].keys() == there["machine"].keys()
    assert {tuple(r) for r in here["rows"]} == {tuple(r) for r in there["rows"]}
    kept = read_latency(folder)
    assert list(kept) == ["host", "board"] and [len(d["rows"]) for d in kept.values()] == [1, 2]
    page = latency_table(kept)
    assert "<th class=n>host</th><th class=n>board</th>" in page and page.count("<tr>") == 3  # head, batch 1, 2
    again = _bench(ssh_device, model, "--runtime", "onnxruntime", "--device-name", "board", "--threads", "1")  # replaced, not added
    assert again.returncode == 0 and len(read_latency(folder)["board"]["rows"]) == 2, again.stderr


def _python(tmp_path: Path, site: str) -> list[str]:
    """--python for a device whose Python starts with `site` run first (sitecustomize)."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(site)
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={folder} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return ["--python", str(wrapper)]


BLOCK = "import sys\nsys.modules[{!r}] = None\n"
STUB = ("import sys, types\nm = types.ModuleType('onnxruntime')\n"
        "def session(*args, **kw):\n    {}\n"
        "m.InferenceSession, m.SessionOptions = session, types.SimpleNamespace\n"
        "m.disable_telemetry_events = lambda: None\nsys.modules['onnxruntime'] = m\n")


@pytest.mark.fault
@pytest.mark.parametrize("host, site, words", [
    ("stranger", None, "its host key is not known here"),
    ("refused", None, "authentication was refused"),
    ("closed", None, "unreachable"),
    ("silent", None, "the connection timed out"),
    ("device", "absent", "no /nonexistent/python3 there"),
    ("device", BLOCK.format("numpy"), "has no numpy"),
    ("device", BLOCK.format("onnxruntime"), "has no onnxruntime for"),
    ("device", STUB.format("raise RuntimeError('INVALID_GRAPH: refused here')"), "could not run the file there "
     "(RuntimeError: INVALID_GRAPH: refused here)"),
    ("device", STUB.format("import os; os.abort()"), "the runner ended without a result"),
], ids=["unknown-host-key", "authentication-refused", "unreachable", "timeout", "no-python", "no-numpy",
        "no-runtime", "file-refused", "runner-crashes"])
def test_each_failure_is_one_line_and_leaves_nothing_on_the_device(onnx_file, tmp_path, ssh_device, host, site, words):
    python = (["--python", "/nonexistent/python3"] if site == "absent" else _python(tmp_path, site) if site
              else PYTHON)
    r = _bench(ssh_device, _alone(onnx_file, tmp_path / "m"), "--runtime", "onnxruntime", host=host, python=python)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert ssh_device.left() == []


@pytest.mark.fault
def test_a_host_key_is_never_accepted_for_the_user(onnx_file, tmp_path, ssh_device):
    """The unknown host stays unknown: nothing was added to its known_hosts."""
    r = _bench(ssh_device, _alone(onnx_file, tmp_path), host="stranger")
    assert r.returncode == 1 and (ssh_device.folder / "empty_known_hosts").read_text() == ""


@pytest.mark.fault
def test_names_with_quotes_and_commands_run_nothing(onnx_file, tmp_path, ssh_device):
    name = "m $(touch pwned) `touch pwned` 'q\" ;touch pwned.onnx"
    model = _alone(onnx_file, tmp_path / "a b $(touch pwned)", name)
    r = _bench(ssh_device, model, "--runtime", "onnxruntime", "--device-name", "b\x1b]0;x\x07 $(touch pwned)")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout + r.stderr
    r = _bench(ssh_device, model, python=["--python", "~/no python $(touch pwned) `touch pwned`"])
    assert r.returncode == 1 and "no ~/no python $(touch pwned) `touch pwned` there" in r.stderr, r.stderr
    for where in (tmp_path, model.parent, Path.home(), Path.cwd(), ssh_device.remote_tmp):
        assert not (where / "pwned").exists()


@pytest.mark.fault
def test_a_kill_9_of_bench_leaves_nothing_on_the_device(onnx_file, tmp_path, ssh_device):
    """The runner sees its SSH session's stdin close, removes its folder and ends."""
    model = _alone(onnx_file, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "mobilenet", "bench", "--model", str(model), *ssh_device.args(),
                             *PYTHON, "--runtime", "onnxruntime", "--batch-size", "1", "--seconds", "3600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: any((d / "model.onnx").exists() for d in ssh_device.left()), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not ssh_device.left(), ssh_device.proc)


@pytest.mark.fault
def test_a_users_latency_json_is_refused_and_left_as_it_is(small_run, onnx_file, tmp_path):
    """A model folder without our checkpoint (as `convert` writes one): its latency.json is
    ours only by its mark (run/ownership.py)."""
    folder = shutil.copytree(small_run[0], tmp_path / "run")
    (folder / "checkpoint.pt").unlink()
    model = _alone(onnx_file, folder, "model.onnx")
    (folder / "latency.json").write_text('{"mine": true}')
    r = cli("bench", "--model", model, "--runtime", "onnxruntime", "--batch-size", "1", "--seconds", "0.02")
    assert r.returncode == 2 and "latency.json was not written by mobilenet" in r.stderr and r.stdout == ""
    assert (folder / "latency.json").read_text() == '{"mine": true}'


@pytest.mark.fault
def test_an_edited_latency_json_is_shown_as_it_is_and_escaped(tmp_path):
    from mobilenet.files import PRODUCER
    from mobilenet.report.page import latency_table
    from mobilenet.run.latency import read_latency

    (tmp_path / "latency.json").write_text(json.dumps({"producer": PRODUCER, "devices": {
        "<b>\x1b]0;x\x07": {"rows": [{"file": "<i>", "runtime": 3, "batch_size": "1", "threads": None,
                                        "median_ms": "fast"}, "not a row", {"median_ms": 2.5}]},
        "rows not a list": {"rows": "x"}, "no rows": 7}}))
    kept = read_latency(tmp_path)
    assert list(kept) == ["<b>\x1b]0;x\x07"] and len(kept["<b>\x1b]0;x\x07"]["rows"]) == 2
    page = latency_table(kept)
    assert "<b>" not in page and "<i>" not in page and "\x1b" not in page and "\x07" not in page
    assert "2.50" in page


@pytest.mark.fault
@pytest.mark.parametrize("args, words", [
    (["--python", "python3"], "--python goes with --on DEST"),
    (["--ssh-config", "config"], "--ssh-config goes with --on DEST"),
    (["--threads", "1"], "--threads goes with --on"),
    (["--on=-oProxyCommand=touch pwned"], "--on '-oProxyCommand=touch pwned': give user@host"),
])
def test_device_options_without_a_device_or_as_an_option_are_one_line(onnx_file, tmp_path, args, words):
    r = cli("bench", "--model", _alone(onnx_file, tmp_path), *args)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
