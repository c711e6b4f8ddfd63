"""`mobilenet sweep` on a 2 × 2 grid of tiny networks: end to end with --jobs, a shard after
kill -9, shards merged by --collect; the pick against hand-worked rows."""

import csv
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_interrupts import FAULT

from mobilenet.errors import MobileNetError
from mobilenet.net.config import MobileNetConfig
from mobilenet.net.cost import cost_report
from mobilenet.sweep.run import pick, pick_line

import forked
from conftest import cli, make_fashion_like

# 2 × 2 points, 400 images (360 to train after the validation split: 11 steps of 32), 2 epochs.
GRID = ["--widths", "0.5,0.25", "--resolutions", "40,32", "--epochs", "2", "--limit", "400", "--batch-size", "32",
        "--augment", "none", "--ema", "0", "--random-erasing", "0", "--seconds", "0.02"]
STEPS = 11
ORDER = ["a0.5-r40", "a0.5-r32", "a0.25-r40", "a0.25-r32"]  # the paper's: α, then ρ, largest first
TIMING = ("latency_ms_onnxruntime", "train_seconds")
SHARD_1 = [*GRID, "--shard", "1/2"]
SHARD_1_ORDER = ORDER[1::2]


def _once(tmp_path_factory, name: str, make) -> Path:
    """The folder that make(folder) fills, made once a session: pytest-xdist's workers each
    set up a module's fixtures, so the first worker makes it, under a lock the others wait on."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's, above each worker's own
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # left by a worker that failed half way
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def _ran(r: subprocess.CompletedProcess, out: Path) -> dict:
    """What a run gave, and which of the shard's points had a record when it ended."""
    done = [run for run in SHARD_1_ORDER if (out / run / "sweep_point.json").exists()]
    return {"returncode": r.returncode, "stdout": r.stdout, "stderr": r.stderr, "done": done}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    fashion = _once(tmp_path_factory, "sweep-fashion", lambda f: make_fashion_like(f, n_train=640, n_test=200))
    return {"MOBILENET_FASHION_MNIST": str(fashion)}


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    """One uninterrupted, unsharded sweep, two points at a time (--jobs 2), and what it printed."""
    def make(folder):
        r = cli("sweep", "--out", folder / "sweep", *GRID, "--jobs", "2", env=env)
        assert r.returncode == 0, r.stderr
        (folder / "stdout").write_text(r.stdout)

    folder = _once(tmp_path_factory, "sweep-reference", make)
    return folder / "sweep", (folder / "stdout").read_text()


@pytest.fixture(scope="module")
def killed(env, tmp_path_factory):
    """Shard 1/2 (points a0.5-r32 and a0.25-r32) killed twice, then run to its end: first
    while writing its first point's record (that point's training and checkpoint done), then
    in its second point's second epoch. Its folder and what each of the three runs gave."""
    def make(folder):
        out = folder / "sweep"
        runs = []
        for argv in (["write", "sweep_point.json", "1"],
                     ["step", "-", str(STEPS + 5)]):  # the second point's first epoch, 5 steps into its second
            runs.append(_ran(forked.run([*argv, "sweep", "--out", str(out), *SHARD_1], env=env, code=FAULT), out))
        runs.append(_ran(cli("sweep", "--out", out, *SHARD_1, env=env), out))
        (folder / "runs.json").write_text(json.dumps(runs))

    folder = _once(tmp_path_factory, "sweep-killed", make)
    return folder / "sweep", json.loads((folder / "runs.json").read_text())


def _rows(out: Path, timing: bool = False) -> list[dict]:
    with open(out / "sweep.csv") as f:
        return [{k: v for k, v in row.items() if timing or k not in TIMING} for row in csv.DictReader(f)]


def _epoch_lines(out: Path, run: str) -> list[str]:
    return [line for line in (out / run / "train.log").read_text().splitlines() if line.startswith("epoch ")]


def test_end_to_end(reference, env, tmp_path):
    out, stdout = reference
    rows = _rows(out, timing=True)
    assert [r["run"] for r in rows] == ORDER
    for r in rows:  # the mult-adds, parameters and memory columns are `mobilenet cost`'s
        config = MobileNetConfig(num_classes=10, width_mult=float(r["alpha"]), resolution=int(r["rho"]), in_channels=1)
        report = cost_report(config)
        assert int(r["mult_adds"]) == report["mult_adds"] and int(r["params"]) == report["params"]
        assert int(r["peak_activation_bytes"]) == report["peak_activation_bytes"]
        assert 0 <= float(r["val_acc"]) <= 1 and float(r["latency_ms_onnxruntime"]) > 0
        assert float(r["size_mb_onnx"]) == pytest.approx((out / r["run"] / "model.onnx").stat().st_size / 1e6, rel=1e-5)
    saved = json.loads((out / "sweep.json").read_text())
    assert [p["run"] for p in saved["points"]] == ORDER and saved["plan"]["widths"] == [0.5, 0.25]
    for name in ("tradeoff_macs", "tradeoff_params", "tradeoff_latency"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = max(rows, key=lambda r: (float(r["val_acc"]), -int(r["mult_adds"])))["run"]
    assert os.readlink(out / "best") == best and f"picked {best} " in stdout
    assert "training 4 points, 2 at a time" in stdout
    # each point is an ordinary run folder, and its export runs where it is deployed: at ρ 40
    # the last feature map is 2×2, which once put Shape arithmetic into the ONNX graph
    r = cli("evaluate", "--model", out / "best", "--out", tmp_path, "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["images"] == 200, r.stderr
    r = cli("evaluate", "--runtime", "onnxruntime", "--model", out / "a0.5-r40" / "model.onnx", "--out", tmp_path,
            "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["images"] == 200, r.stderr


def test_the_sweep_has_a_page_linking_each_points_page(reference):
    from test_report import _open_in_chromium

    out, _ = reference
    page = (out / "report.html").read_text()
    best = os.readlink(out / "best")
    assert all(f'<a href="./{run}/report.html">{run}</a>' in page for run in ORDER)  # relative: never a scheme
    assert f"{best}</a> (the pick)" in page and page.count('src="data:image/png;base64,') == 3
    assert all((out / run / "report.html").is_file() for run in ORDER)  # each point is a run, with its own page
    seen = _open_in_chromium(out / "report.html")
    assert seen["errors"] == [] and seen["requests"] == [] and seen["sections"] == ["plan", "tradeoff", "points"]
    assert len(seen["images"]) == 3 and all(i["width"] > 0 for i in seen["images"])


def _record(out: Path, run: str) -> dict:
    """A point's sweep_point.json, to the last digit, without its timings and machine."""
    found = json.loads((out / run / "sweep_point.json").read_text())
    return {k: v for k, v in found.items() if k not in ("train_seconds", "latency_ms", "machine")}


def test_kill_9_mid_sweep_then_the_same_command_trains_only_what_is_left(killed, reference):
    """Killed while writing the first point's record: the next run resumes that point with no
    epoch left. Killed in the second point's second epoch: the last run resumes that point
    from its checkpoint. Every epoch of every point is trained once, and each point is an
    uninterrupted sweep's."""
    out, (first, second, last) = killed
    first_point, second_point = SHARD_1_ORDER
    assert first["returncode"] == -9 and first["done"] == []  # its record, half written, is no record
    assert second["returncode"] == -9, second["stderr"]
    assert f"[{first_point}] resuming {out / first_point} at epoch 3" in second["stdout"]  # the first trains no step
    assert second["done"] == [first_point]
    assert last["returncode"] == 0, last["stderr"]
    assert "1 of 2 points already trained" in last["stdout"]
    assert f"[{second_point}] resuming {out / second_point} at epoch 2, step" not in last["stdout"]  # no partial epoch
    assert f"[{second_point}] resuming {out / second_point} at epoch 2" in last["stdout"]
    for run in SHARD_1_ORDER:  # every epoch of every point trained once
        assert [line.split()[1] for line in _epoch_lines(out, run)] == ["1/2", "2/2"], run
        assert _record(out, run) == _record(reference[0], run)


def test_shards_then_collect_equal_one_run(killed, reference, env, tmp_path):
    """Shard 1/2 (its last run in `killed`, one point at a time), then shard 0/2's points
    brought in from another machine (here: the reference's, trained two at a time),
    collected: the table and the pick of one run."""
    out = tmp_path / "sweep"
    shutil.copytree(killed[0], out, symlinks=True)
    shard_1 = killed[1][-1]
    assert shard_1["returncode"] == 0, shard_1["stderr"]
    assert not (out / "sweep.csv").exists() and "--collect" in shard_1["stdout"]
    r = cli("sweep", "--collect", out, env=env)  # shard 0 is not done
    assert r.returncode == 1 and "a0.5-r40, a0.25-r40" in r.stderr and len(r.stderr.splitlines()) == 1
    for run in ORDER[0::2]:  # shard 0/2's points
        shutil.copytree(reference[0] / run, out / run, symlinks=True)
    r = cli("sweep", "--collect", out, env=env)
    assert r.returncode == 0, r.stderr
    assert _rows(out) == _rows(reference[0])
    assert os.readlink(out / "best") == os.readlink(reference[0] / "best")


def test_a_rerun_with_other_settings_is_refused(reference, env, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out, symlinks=True)
    r = cli("sweep", "--out", out, *GRID, "--seed", "3", env=env)
    assert r.returncode == 2 and "other settings (train)" in r.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    r = cli("sweep", "--out", tmp_path / "mine", *GRID, env=env)
    assert r.returncode == 2 and "not a sweep's folder" in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_budget_and_export_on_collect(reference, env, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out, symlinks=True)
    rows = {r["run"]: r for r in _rows(out, timing=True)}
    budget = min(float(r["size_mb_onnx"]) for r in rows.values()) + 1e-6  # the smallest α's points
    r = cli("sweep", "--collect", out, "--budget-mb", str(budget), "--export", "onnx", env=env)
    assert r.returncode == 0, r.stderr
    within = [r for r in rows.values() if float(r["size_mb_onnx"]) <= budget]
    best = max(within, key=lambda r: (float(r["val_acc"]), -int(r["mult_adds"])))["run"]
    assert 0 < len(within) < len(rows) and os.readlink(out / "best") == best
    assert (out / best / "model.onnx").is_file()
    r = cli("sweep", "--collect", out, "--budget-ms", "0.001", env=env)
    assert r.returncode == 1 and "no point fits the budget" in r.stderr
    assert not os.path.lexists(out / "best")  # no pick of another budget is left standing


def _point(out: Path, run: str) -> dict:
    return json.loads((out / run / "sweep_point.json").read_text())


def test_the_sweep_on_a_device_times_there_and_picks_on_its_latency(reference, env, tmp_path, ssh_device):
    """`sweep --on`: every point's export timed on the device (here a loopback SSH server),
    kept in its record so that the same command times nothing twice; another device's
    columns join the first's; the pick under --budget-ms reads the device's latency."""
    out = _copy(reference, tmp_path)
    on = [*ssh_device.args(), "--python", sys.executable]
    r = cli("sweep", "--out", out, *GRID, *on, "--device-name", "board", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("] batch 1 on board:") == 4 and "latency at batch 1 on board" in r.stdout
    timed = {run: _point(out, run) for run in ORDER}
    assert all(p["device_ms"]["board"]["onnxruntime"] > 0 for p in timed.values())
    assert json.loads((out / "sweep.json").read_text())["latency_on"] == "board"
    assert "onnxruntime ms on board" in (out / "report.html").read_text()
    again = cli("sweep", "--out", out, *GRID, *on, "--device-name", "board", env=env)
    assert again.returncode == 0 and "] batch 1 on" not in again.stdout, again.stderr
    assert {run: _point(out, run) for run in ORDER} == timed
    r = cli("sweep", "--collect", out, *on, "--device-name", "board2", "--seconds", "0.02", env=env)
    assert r.returncode == 0 and r.stdout.count("] batch 1 on board2:") == 4, r.stderr
    header = (out / "sweep.csv").read_text().splitlines()[0].split(",")
    assert {"latency_ms_onnxruntime", "latency_ms_onnxruntime@board", "latency_ms_onnxruntime@board2"} <= set(header)
    assert ssh_device.left() == []
    # the most accurate point, made slow on the board only: the board's pick leaves it out, the host's keeps it
    best = os.readlink(out / "best")
    record = _point(out, best)
    record["device_ms"]["board"]["onnxruntime"] = 1000.0
    (out / best / "sweep_point.json").write_text(json.dumps(record))
    r = cli("sweep", "--collect", out, *on, "--device-name", "board", "--budget-ms", "500", env=env)
    assert r.returncode == 0 and os.readlink(out / "best") != best, r.stderr
    assert "500 ms on onnxruntime on board" in r.stdout
    r = cli("sweep", "--collect", out, "--budget-ms", "500", env=env)
    assert r.returncode == 0 and os.readlink(out / "best") == best, r.stderr


def _copy(reference, tmp_path) -> Path:
    return shutil.copytree(reference[0], tmp_path / "sweep", symlinks=True)


def _victim(tmp_path) -> Path:
    """A folder of the user's outside the sweep, with files of the names a point writes."""
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("model.onnx", "metrics.json", "sweep_point.json", "notes.txt"):
        (victim / name).write_text("the user's")
    return victim


def _untouched(victim: Path) -> bool:
    return {p.name: p.read_text() for p in victim.iterdir()} == dict.fromkeys(
        ("model.onnx", "metrics.json", "sweep_point.json", "notes.txt"), "the user's")


@pytest.mark.fault
def test_a_sweep_never_writes_outside_its_folder(reference, env, tmp_path):
    """A point folder that is a link out, a record whose run names another folder, and a
    `best` that is a real folder: the same command, and collect with --export, are one line
    each, and the folder outside keeps its files."""
    victim = _victim(tmp_path)
    out = _copy(reference, tmp_path)
    point = out / ORDER[0]
    shutil.copy(point / "sweep_point.json", victim / "sweep_point.json")
    shutil.rmtree(point)
    point.symlink_to(victim, target_is_directory=True)
    for args in (["sweep", "--out", out, *GRID], ["sweep", "--collect", out, "--export", "onnx"]):
        r = cli(*args, env=env)
        assert r.returncode == 1 and "is a link or a file, not a point folder" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    (victim / "sweep_point.json").write_text("the user's")
    assert _untouched(victim) and not (out / "best").resolve().is_relative_to(victim)
    out = _copy(reference, tmp_path / "2")
    record = json.loads((out / ORDER[0] / "sweep_point.json").read_text())
    (out / ORDER[0] / "sweep_point.json").write_text(json.dumps({**record, "run": "../victim"}))
    r = cli("sweep", "--collect", out, "--export", "onnx", env=env)
    assert r.returncode == 1 and "run must be 'a0.5-r40'" in r.stderr and _untouched(victim), r.stderr
    out = _copy(reference, tmp_path / "3")
    (out / "best").unlink()
    (out / "best").mkdir()
    r = cli("sweep", "--collect", out, env=env)
    assert r.returncode == 1 and "best is not the link the sweep made" in r.stderr, r.stderr


@pytest.mark.fault
@pytest.mark.parametrize("edit, words", [
    (lambda r: r.pop("val_acc"), "val_acc must be a finite number, got None"),
    (lambda r: r.update(val_acc="0.9"), "val_acc must be a finite number"),
    (lambda r: r.update(train_seconds=float("inf")), "train_seconds must be a finite number"),
    (lambda r: r.update(kept_epoch=10.5), "kept_epoch must be a whole number"),
    (lambda r: r.update(size_mb=[1.0]), "size_mb must be an object of finite numbers"),
    (lambda r: r.update(latency_ms={"onnxruntime": "fast"}), "latency_ms must be an object of finite numbers"),
    (lambda r: r.update(alpha=0.75), "alpha and rho must be 0.5 and 40"),
    (lambda r: r.update(run="a0.5-r40\x1b[2J\npicked a0.25-r32"), "run must be 'a0.5-r40', the folder it is in"),
])
def test_an_edited_point_record_is_one_line(reference, tmp_path, edit, words):
    """One line naming the field, and nothing of what the record holds reaches the terminal raw."""
    from mobilenet.sweep.run import collect

    out = _copy(reference, tmp_path)
    path = out / ORDER[0] / "sweep_point.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(MobileNetError, match="sweep_point.json: " + words.replace("(", "\\(")) as found:
        collect(out, log=lambda _: None)
    assert "\x1b" not in str(found.value) and "\n" not in str(found.value)


@pytest.mark.fault
@pytest.mark.parametrize("edit, words", [
    (lambda p: p.update(widths=[0.5, "0.25"]), "widths: width must be a number"),
    (lambda p: p.pop("resolutions"), "resolutions must be a list of different numbers"),
    (lambda p: p.update(widths=[0.25 + i / 4000 for i in range(3000)], resolutions=list(range(32, 3032))),
     "a grid of 9000000 points is too large"),
    (lambda p: p.update(runtimes=["curl"]), "runtimes must list some of"),
    (lambda p: p["train"].update(shell="rm -rf"), "train the options of `mobilenet train`"),
])
def test_an_edited_plan_is_one_line(reference, tmp_path, edit, words):
    from mobilenet.sweep.run import collect

    out = _copy(reference, tmp_path)
    plan = json.loads((out / "sweep_plan.json").read_text())
    edit(plan)
    (out / "sweep_plan.json").write_text(json.dumps(plan))
    with pytest.raises(MobileNetError, match=words.replace("(", "\\(")):
        collect(out, log=lambda _: None)


@pytest.mark.fault
def test_the_sweep_page_embeds_only_its_own_pictures(reference, tmp_path):
    """A link named like a trade-off picture (to a PNG outside, to /dev/zero) and a FIFO: the
    page leaves them out, reads none of them, and does not hang."""
    import base64

    from PIL import Image, PngImagePlugin

    from mobilenet.sweep.page import sweep_report

    out = _copy(reference, tmp_path)
    secret = PngImagePlugin.PngInfo()
    secret.add_text("Comment", "TOKEN=hunter2")
    Image.new("L", (4, 4)).save(tmp_path / "secret.png", pnginfo=secret)
    (out / "tradeoff_env.png").symlink_to(tmp_path / "secret.png")
    (out / "tradeoff_zero.png").symlink_to("/dev/zero")
    os.mkfifo(out / "tradeoff_fifo.png")
    (out / "tradeoff_text.png").write_text("TOKEN=in-the-folder")  # a regular file, but no PNG
    sweep_report(out, log=lambda _: None)
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert base64.b64encode((tmp_path / "secret.png").read_bytes()).decode() not in page
    assert "TOKEN" not in page  # the folder's own non-PNG file is left out too


def _row(run, val, test, ms, mb, macs=1):
    return {"run": run, "val_acc": val, "test_acc": test, "mult_adds": macs, "latency_ms": {"onnxruntime": ms},
            "size_mb": {"onnx": mb}}


# Hand-worked: the test split ranks them the other way round.
ROWS = [_row("big", 0.92, 0.80, 5.0, 4.0, 500), _row("mid", 0.90, 0.85, 2.0, 1.0, 150),
        _row("twin", 0.90, 0.95, 1.9, 1.2, 140), _row("small", 0.85, 0.99, 0.5, 0.3, 40)]


@pytest.mark.parametrize("budget_ms, budget_mb, picked, runner_up", [
    (None, None, "big", "twin"),  # twin: as accurate as mid, fewer mult-adds
    (3.0, None, "twin", "mid"),
    (3.0, 1.1, "mid", "small"),
    (1.0, None, "small", None),
    (None, 0.3, "small", None),
])
def test_the_pick_looks_at_validation_accuracy_only(budget_ms, budget_mb, picked, runner_up):
    choice = pick(ROWS, "onnxruntime", budget_ms, budget_mb)
    assert choice["run"] == picked
    assert (choice["runner_up"] or {}).get("run") == runner_up
    line = pick_line(choice, "onnxruntime", budget_ms, budget_mb)
    assert line.startswith(f"picked {picked} ") and "runner-up" in line and "\n" not in line


def test_no_point_within_the_budget_is_one_line():
    with pytest.raises(MobileNetError, match="fastest is small .* smallest small"):
        pick(ROWS, "onnxruntime", 0.1, None)


def test_the_pareto_front_is_the_points_nothing_beats_on_both():
    from mobilenet.report.plots import pareto_front

    front = pareto_front(ROWS, lambda r: r["latency_ms"]["onnxruntime"])
    assert [r["run"] for r in front] == ["small", "twin", "big"]  # mid: twin is faster and as accurate


@pytest.mark.fault
def test_the_sweep_page_reads_an_edited_table_as_it_is(reference, tmp_path):
    """sweep.json with widths of mixed kinds, no resolutions, runtimes that are no list, a
    point whose latencies are a list and one whose run leads out: the page is written, with
    no traceback and no link out of the folder."""
    from mobilenet.sweep.page import sweep_report

    out = _copy(reference, tmp_path)
    table = json.loads((out / "sweep.json").read_text())
    table["plan"].update(widths=[0.5, "x", None], runtimes=5)
    del table["plan"]["resolutions"]
    table["points"][0]["latency_ms"] = [1, 2]
    table["points"][1]["run"] = "../.."
    table["points"].append("not a point")
    (out / "sweep.json").write_text(json.dumps(table))
    sweep_report(out, log=lambda _: None)
    page = (out / "report.html").read_text()
    assert "0.5, x, None" in page and 'href="./../..' not in page
