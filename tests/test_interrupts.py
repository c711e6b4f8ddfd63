"""Interruptions against the real CLI: kill -9 at many points (in a step, in evaluation, in
the middle of each file's write), SIGTERM, and a second Ctrl-C. Every time, --resume
finishes the run with the history and weights of an uninterrupted one, and no file in the
run folder is ever truncated."""

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mobilenet.run.folder import HISTORY_FIELDS
from mobilenet.run.names import RUN_FILES

import forked
from conftest import HANG, TINY, history, make_fashion_like, make_image_folder, wait_for

pytestmark = pytest.mark.fault  # counted in the README's fault-case total

EPOCHS = ["--epochs", "3"]

# Runs the real CLI (sys.argv[4:]) with one fault planted in the process:
#   write FILE K  the K-th write of FILE: its temporary file is cut in half, then SIGKILL
#   sigwrite FILE K   SIGTERM during the K-th write of FILE
#   eval - K      SIGKILL before the K-th test batch of evaluation
#   evalsig - K   SIGTERM before the K-th test batch of evaluation
#   step - K      SIGKILL in the K-th training step, after backward, before the update
#   sigstep - K   SIGTERM in the K-th training step, after backward, before the update
#   slow - 0      every step takes 60 s longer (two signals land inside one step on any machine)
#   trace - 0     no fault: prints "trained epoch E step S" after each training step
FAULT = r"""
import os, signal, sys, time
kind, target, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
count = 0

def reached():
    global count
    count += 1
    return count == k

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kind in ("write", "sigwrite"):
    real_fsync = os.fsync
    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(f".mobilenet-{target}.") and name.endswith(".tmp") and reached():
            if kind == "sigwrite":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                die()
        return real_fsync(fd)
    os.fsync = fsync
elif kind in ("eval", "evalsig"):
    from mobilenet.data.fashion import TensorSource
    real_batches = TensorSource.test_batches
    def test_batches(self, *a, **kw):
        for batch in real_batches(self, *a, **kw):
            if reached():
                die() if kind == "eval" else os.kill(os.getpid(), signal.SIGTERM)
            yield batch
    TensorSource.test_batches = test_batches
elif kind in ("step", "sigstep", "slow"):
    import torch
    real_step = torch.amp.GradScaler.step
    def step(self, *a, **kw):
        if kind == "slow":
            time.sleep(60.0)
        elif reached():
            die() if kind == "step" else os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, *a, **kw)
    torch.amp.GradScaler.step = step
elif kind == "trace":
    import mobilenet.training.loop as training
    real_train_step = training._step
    def traced(run, epoch, step, *args, **kw):
        done = real_train_step(run, epoch, step, *args, **kw)
        print(f"trained epoch {epoch + 1} step {step + 1}", flush=True)
        return done
    training._step = traced

from mobilenet.cli import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Data with 20 training steps (640 / 32) and 3 test batches (600 / 256) per epoch, and the
    uninterrupted run."""
    root = tmp_path_factory.mktemp("interrupts")
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "MOBILENET_FASHION_MNIST": str(make_fashion_like(root / "f", n_train=640, n_test=600))}
    reference = root / "reference"
    r = forked.run(["train", *TINY, *EPOCHS, "--out", str(reference)], env=env)
    assert r.returncode == 0, r.stderr
    return root, env, reference


def _args(out: Path) -> list[str]:
    # --resume once a checkpoint exists; before that, a new run is the only way on
    return ["train", *TINY, *EPOCHS, "--out", str(out)] + (["--resume"] if (out / "checkpoint.pt").exists() else [])


_LIVE: list[forked.Child] = []


def _fork(argv: list[str], env: dict | None = None, code: str | None = None) -> forked.Child:
    """forked.start: the CLI in a session of its own, killed (workers too) when the test ends,
    even failed."""
    proc = forked.start(argv, env=env, code=code)
    _LIVE.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while _LIVE:
        proc = _LIVE.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _start(argv: list[str], env: dict, code: str | None = None) -> forked.Child:
    """Start a run and return once it says it is about to take its first step."""
    proc = _fork(argv, env, code)
    wait_for(lambda: any(x.startswith("training MobileNet") for x in proc.output()[0].splitlines()), proc)
    return proc


def assert_whole(out: Path) -> None:
    """Every file of the run folder reads completely; a killed writer's temporary file may stay."""
    for path in out.iterdir():
        if path.name.endswith(".tmp") or path.name == ".lock" or path.is_dir():
            continue
        if path.suffix == ".pt":
            torch.load(path, weights_only=True)
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            lines = path.read_text().splitlines()
            assert lines[0].split(",") == HISTORY_FIELDS and all(len(x.split(",")) == len(HISTORY_FIELDS) for x in lines)
        elif path.suffix == ".png":
            with Image.open(path) as im:
                im.load()
        elif path.name == "train.log":
            text = path.read_text()
            assert text == "" or text.endswith("\n")  # whole lines only
        elif path.suffix == ".html":
            assert path.read_text().endswith("</html>\n")  # the whole page
        else:
            raise AssertionError(f"unexpected file {path.name}")


def finish_and_compare(out: Path, env: dict, reference: Path) -> None:
    """Resume the run to its end with the plain CLI; it must equal the uninterrupted one."""
    r = forked.run(_args(out), env=env)
    assert r.returncode == 0, r.stderr
    assert_whole(out)
    assert_same_run(out, reference)


def assert_same_run(out: Path, reference: Path) -> None:
    assert history(out) == history(reference)
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    final, ref = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (out, reference))
    assert all(torch.equal(final["model"][k], ref["model"][k]) for k in ref["model"])
    # the temporary files of the killed writers were cleared by the runs that followed
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# Each row is one process, killed where it says; the next row goes on from what it left.
CHAIN = [
    ("write", "config.json", 1),         # at the start, before anything else is written
    ("write", "model.safetensors", 1),   # end of epoch 1, before its checkpoint: a new run again
    ("write", "checkpoint.pt", 1),       # epoch 1's commit point, half written
    ("write", "checkpoint.pt", 2),       # epoch 1 commits; killed in epoch 2's commit
    ("eval", "-", 2),                    # in epoch 2's evaluation
    ("step", "-", 7),                    # in epoch 2's 7th step
    ("write", "history.csv", 2),         # (write 1 redraws it on resume) end of epoch 2
    ("write", "total_test_loss.png", 2),
    ("write", "checkpoint.pt", 2),       # epoch 2 commits; killed in epoch 3's commit
]


def test_kill_9_inside_steps_evaluation_and_every_file_write(setup):
    root, env, reference = setup
    out = root / "chain"
    for kind, target, k in CHAIN:
        r = forked.run([kind, target, str(k), *_args(out)], env=env, code=FAULT)
        assert r.returncode == -signal.SIGKILL, (kind, target, k, r.returncode, r.stderr)  # the fault was reached
        assert_whole(out)
    finish_and_compare(out, env, reference)


STEPS = 20  # training steps per epoch in `setup`: 640 images / 32


def _saved_at(out: Path) -> tuple[int, int]:
    """(epochs done, steps done in the next) of the run's checkpoint; (0, 0) before there is one."""
    if not (out / "checkpoint.pt").exists():
        return 0, 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    return state["epoch"], state["step"]


def _resume_line(out: Path) -> str:
    epoch, step = _saved_at(out)
    return f"resuming {out} at epoch {epoch + 1}" + (f", step {step}" if step else "")


def _trained(lines: list[str]) -> list[tuple[int, int]]:
    """The (epoch, step) of each training step a traced run took, from its output."""
    return [(int(x.split()[2]), int(x.split()[4])) for x in lines if x.startswith("trained epoch ")]


def _steps_done(trained: list[tuple[int, int]]) -> int:
    """The steps of the run taken up to the last traced one."""
    return (trained[-1][0] - 1) * STEPS + trained[-1][1] if trained else 0


def _left(epoch: int, step: int) -> list[tuple[int, int]]:
    """The steps a run saved at (epoch, step) still has to take."""
    every = [(e, s) for e in range(1, 4) for s in range(1, STEPS + 1)]
    return every[epoch * STEPS + step:]


def _first_line(lines: list[str]) -> str:
    """The run's first line, after the note on the temporary files a killed writer left."""
    return next(x for x in lines if not x.startswith("removed the unfinished temporary files"))


def finish_traced(out: Path, env: dict, reference: Path) -> None:
    """finish_and_compare, counting the steps: the run starts at its checkpoint's epoch and
    step, says so first, and trains only what is left."""
    expected, where = _left(*_saved_at(out)), _resume_line(out)
    r = forked.run(["trace", "-", "0", *_args(out)], env=env, code=FAULT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert _first_line(lines) == where, lines[:3]
    assert _trained(lines) == expected
    assert_whole(out)
    assert_same_run(out, reference)


def test_a_resumed_run_starts_at_its_checkpoint_and_trains_only_what_is_left(setup):
    """kill -9 after epoch 1 of 3 loses nothing finished: the resumed run says it starts at
    epoch 2 and takes 2 × 20 training steps, not 3 × 20. SIGTERM in epoch 2's 5th step: the
    resumed run starts at step 6 and takes 15 + 20 steps. Both end equal to the reference."""
    root, env, reference = setup
    out = root / "after_epoch_1"
    # killed while epoch 2's checkpoint is written
    r = forked.run(["write", "checkpoint.pt", "2", *_args(out)], env=env, code=FAULT)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert _saved_at(out) == (1, 0)
    finish_traced(out, env, reference)

    out = root / "in_epoch_2"
    r = forked.run(["sigstep", "-", str(STEPS + 5), *_args(out)], env=env, code=FAULT)
    assert r.returncode == 130 and "stopped by SIGTERM at epoch 2, step 5; saved" in r.stderr, r.stderr
    assert _saved_at(out) == (1, 5)
    finish_traced(out, env, reference)


def test_kill_9_at_random_moments(setup):
    """Four kill -9 at random moments, drawn in training steps rather than seconds so that
    they land alike on a fast or a slow machine: each after a random step of the run (one
    in each quarter of its 60 steps), plus up to half a second. Each kill loses at most the
    epoch in progress: the checkpoint holds every epoch whose last step came before the
    kill, and the next run says it resumes there."""
    root, env, reference = setup
    out, rng = root / "random", random.Random(6)
    marks = [rng.randint(14 * i + 1, 14 * i + 14) for i in range(4)]  # steps 1-56 of the run's 60
    landed = []
    for mark in marks:
        start, where = _saved_at(out), _resume_line(out)
        proc = _fork(["trace", "-", "0", *_args(out)], env, code=FAULT)
        wait_for(lambda: _steps_done(_trained(proc.output()[0].splitlines())) >= mark, proc)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        lines = proc.communicate()[0].splitlines()
        seen = _trained(lines)  # every step it printed: all taken before the kill
        assert_whole(out)
        if start != (0, 0):  # this run resumed where the last kill left the checkpoint
            assert _first_line(lines) == where, lines[:3]
        assert seen[0] == _left(*start)[0]
        done = _steps_done(seen)  # steps known to be taken when the kill came
        landed.append(_saved_at(out))
        assert landed[-1][0] >= (done - 1) // STEPS, (mark, done, landed)  # at most the epoch in progress lost
    # so the kills cover a start from nothing and resumes from saved epochs
    assert landed[0] == (0, 0) and landed[-1][0] >= 2, landed
    finish_traced(out, env, reference)


def test_sigterm_in_a_step_and_in_evaluation_and_a_second_ctrl_c(setup):
    root, env, reference = setup
    out = root / "signals"
    # SIGTERM while epoch 1's files are written: the run stops once they are, exits 130
    r = forked.run(["sigwrite", "history.csv", "1", *_args(out)], env=env, code=FAULT)
    assert r.returncode == 130 and "stopped by SIGTERM after epoch 1; saved" in r.stderr, r.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert_whole(out)

    # SIGTERM in a step: the run stops after that step and saves it
    proc = _start(_args(out), env)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert proc.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"stopped by SIGTERM at epoch {state['epoch'] + 1}, step {state['step']}; saved" in err
    assert state["step"] > 0  # the partial epoch was saved, not thrown away
    assert_whole(out)

    # Two Ctrl-C inside one (slowed) step: the first asks for a stop after the step, the
    # second stops at once, writing nothing: the checkpoint stays the one SIGTERM left.
    saved = (out / "checkpoint.pt").read_bytes()
    proc = _start(["slow", "-", "0", *_args(out)], env, code=FAULT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 130 and "interrupted at once" in err and "--resume" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (out / "checkpoint.pt").read_bytes() == saved
    assert_whole(out)

    # SIGTERM during evaluation: it stops before the next test batch and saves the trained epoch
    r = forked.run(["evalsig", "-", "2", *_args(out)], env=env, code=FAULT)
    assert r.returncode == 130 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert f"stopped by SIGTERM while evaluating epoch {state['epoch'] + 1}; saved" in r.stderr, r.stderr
    assert state["step"] == 20  # all of the epoch's training steps
    assert_whole(out)

    finish_and_compare(out, env, reference)


def test_kill_9_once_an_epoch_is_saved_then_one_ctrl_c_then_resume(setup):
    """The plain CLI, signalled from outside: kill -9 once the first epoch is saved loses at
    most the epoch in progress; one Ctrl-C mid-run saves after the current step; the resumed
    run equals the uninterrupted one."""
    root, env, reference = setup
    out = root / "killed"
    proc = _fork(_args(out), env)
    wait_for(lambda: (out / "checkpoint.pt").exists(), proc)
    proc.kill()
    proc.communicate()
    assert len(history(out)) < 3
    proc = _fork(_args(out), env)
    wait_for(lambda: len(history(out)) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=HANG)
    if proc.returncode != 0:  # (the run may have finished before the signal landed)
        assert proc.returncode == 130 and "saved" in err and "Traceback" not in err, err
    finish_and_compare(out, env, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_process_group_with_dataloader_workers(tmp_path, sig):
    """Ctrl-C in a terminal and job schedulers signal every process of the job,
    DataLoader workers included: the trainer still stops after its step and saves."""
    images = make_image_folder(tmp_path / "images", per_class=20, corrupt=False)
    out = tmp_path / "run"
    command = ["train", "--data", str(images), *TINY, "--batch-size", "4", "--workers", "2", "--epochs", "1",
               "--out", str(out)]
    proc = _fork(command)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    wait_for(lambda: len(children.read_text().split()) >= 2, proc)  # the two workers are up
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 130 and f"stopped by {sig.name}" in err and "saved" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] > 0
    r = forked.run([*command, "--resume"])
    assert r.returncode == 0, r.stderr
    assert [row["epoch"] for row in history(out)] == ["1"]


def test_run_files_are_what_a_run_writes(setup):
    _, _, reference = setup
    written = {p.name for p in reference.iterdir() if p.is_file()} - {".lock", "train.log"}
    assert written == set(RUN_FILES)  # so the clean-up on resume knows every file that can be half written


def test_resume_is_exact_with_every_regularizer_on(setup, tmp_path):
    """EMA, random erasing, label smoothing, a validation split with patience on macro F1, class
    weights and the balanced sampler's drawn epochs: killed in a step twice (epochs 1 and 2),
    resumed, and equal to an uninterrupted run, the EMA's weights included."""
    _, env, _ = setup
    options = ["--ema", "0.9", "--random-erasing", "0.5", "--label-smoothing", "0.1", "--val-split", "0.2",
               "--patience", "5", "--select-by", "macro-f1", "--class-weights", "effective", "--sampler", "balanced"]

    def command(out: Path) -> list[str]:
        again = ["--resume"] if (out / "checkpoint.pt").exists() else []
        return ["train", *TINY, *EPOCHS, *options, "--out", str(out), *again]

    reference = tmp_path / "reference"
    r = forked.run(command(reference), env=env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "killed"
    for k in (7, 21):  # step 7 of epoch 1; then, resumed there, step 12 of epoch 2 (16 steps per epoch)
        r = forked.run(["step", "-", str(k), *command(out)], env=env, code=FAULT)
        assert r.returncode == -signal.SIGKILL, r.stderr
    r = forked.run(command(out), env=env)
    assert r.returncode == 0, r.stderr
    assert_same_run(out, reference)
    final, ref = (torch.load(p / "checkpoint.pt", weights_only=True)["ema"] for p in (out, reference))
    assert all(torch.equal(final[k], ref[k]) for k in ref)
