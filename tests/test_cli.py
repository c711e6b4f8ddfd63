"""The command line as a finished tool: --version, exit 2 for every bad argument with
nothing left behind, quiet closed pipes, progress bars on terminals only, --json
everywhere, and a default named in every option's help."""

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from importlib.metadata import version

import pytest

from mobilenet import progress
from mobilenet.cli import main

from conftest import cli

SUBCOMMANDS = ["cost", "models", "train", "evaluate", "report", "predict", "export", "bench", "convert", "samples"]
REQUIRED = {"evaluate": ["--model"], "report": ["--model"], "predict": ["--model"], "export": ["--model"], "convert": ["--from-timm", "--output"],
            "sweep": ["--out", "--collect"]}


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"mobilenet {version('mobilenet')}"


@pytest.mark.fault
@pytest.mark.parametrize("args", [
    ["train", "--data", "/nonexistent"], ["train", "--data", "/nonexistent", "--epochs", "1"],
    ["train", "--resume"], ["train", "--epochs", "0"], ["evaluate", "--model", "m", "--data", "/nonexistent"],
    ["bench", "--model", "m", "--width", "0.5"], ["export", "--model", "m", "--int8-preset", "avx9"],
    ["export", "--model", "m", "--int8-preset", "vnni"], ["train", "--lr", "1000"], ["train", "--ema", "1"],
    ["train", "--patience", "3"], ["export", "--model", "m", "--format", "executorch", "--int8", "--int8-preset", "vnni"],
    ["export", "--model", "m", "--format", "torchscript"], ["train", "--ema", "-0.5"],
    ["predict", "--model", "m.onnx", "--runtime", "openvino-int8", "x.png"], ["bench", "--runtime", "openvino,ov"],
    ["export", "--model", "m", "--format", "tflite"], ["predict", "--model", "m.tflite", "--runtime", "tflite", "x.png"],
    ["bench", "--runtime", "litert,litert-fp16"], ["evaluate", "--model", "m.tflite", "--runtime", "litert-int8"],
])
def test_bad_arguments_exit_2_and_leave_no_folder(args, tmp_path):
    r = subprocess.run([sys.executable, "-m", "mobilenet", *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []  # no runs/… folder


@pytest.mark.fault
@pytest.mark.parametrize("command", [["cost"], ["models"], ["cost", "--json"]])
def test_a_closed_pipe_ends_quietly(command):
    """`mobilenet cost | head -1`: the reader is gone before the output is written."""
    proc = subprocess.Popen([sys.executable, "-m", "mobilenet", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""


def _help_blocks(command: str, capsys) -> dict[str, str]:
    """Each option of `mobilenet COMMAND --help` with its help text."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out.split("options:", 1)[1]
    blocks = re.split(r"\n  (?=-)", "\n" + text)
    return {b.split()[0].rstrip(","): " ".join(b.split()) for b in blocks if b.strip().startswith("-")}


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_option_says_its_default(command, capsys):
    blocks = _help_blocks(command, capsys)
    assert blocks
    for option, text in blocks.items():
        if option == "-h" or option in REQUIRED.get(command, ()):
            continue  # no default to name
        assert "default" in text, f"mobilenet {command} {option}: {text}"


def test_train_options_are_the_train_config_fields():
    """Each TrainConfig field but activation is a train option: its flag, its choices (the
    values validate() allows), its limits (limits.LIMITS) and, parsed from `train` alone, its
    default. The one exception is --epochs: omitted, it is None, which --resume reads as the
    run's own and a new run turns into the field's default."""
    from dataclasses import fields

    from mobilenet.cli import build_parser, subcommand_options
    from mobilenet.cli.train import _train_config
    from mobilenet.data.augment import AUGMENTATIONS
    from mobilenet.limits import LIMITS
    from mobilenet.training.config import COMPILE_MODES, LR, TrainConfig

    options = {o["option"]: o for o in subcommand_options()["train"]}
    flags = {f.name: f.metadata.get("flag") for f in fields(TrainConfig)}
    assert {name for name, flag in flags.items() if not flag} == {"activation"}  # --init's weights may set it
    assert set(options) == {*filter(None, flags.values()), "--resume"}
    parser, plain = build_parser(), build_parser().parse_args(["train"])
    for f in fields(TrainConfig):
        if flags[f.name]:
            assert getattr(plain, f.name) == (None if f.name == "epochs" else f.default), f.name
            assert options[flags[f.name]]["choices"] == list(f.metadata["choices"] or ()), f.name
    allowed = {"--optimizer": list(LR), "--augment": list(AUGMENTATIONS), "--device": ["auto", "cpu", "cuda"],
               "--compile": list(COMPILE_MODES), "--class-weights": ["auto", "none", "inverse", "effective"],
               "--select-by": ["auto", "top1", "balanced-accuracy", "macro-f1", "map"], "--sampler": ["auto", "shuffle", "balanced"],
               "--task": ["auto", "single-label", "multi-label"]}
    assert {flag: o["choices"] for flag, o in options.items() if o["choices"]} == allowed
    for f in fields(TrainConfig):
        if f.metadata.get("limit"):
            high, kind = LIMITS[f.metadata["limit"]][1:]
            assert getattr(parser.parse_args(["train", flags[f.name], str(high)]), f.name) == high
            with pytest.raises(SystemExit):
                parser.parse_args(["train", flags[f.name], str(kind(2 * high))])
    assert _train_config(plain) == TrainConfig()
    assert _train_config(parser.parse_args(["train", "--resume", "--out", "run"])).epochs is None
    # the sweep takes every train option but the grid's, the point's folder and three it cannot share
    sweep = {o["option"] for o in subcommand_options()["sweep"]}
    unshared = {"--width", "--resolution", "--out", "--force", "--init", "--strict", "--resume"}
    assert set(options) - unshared <= sweep and not (unshared - {"--out"}) & sweep


def test_json_models_evaluate_export(small_run, tmp_path, capsys):
    out, _ = small_run
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 16 and rows[0] == {"name": "mobilenet_v1_1.0_224", "width_mult": 1.0, "resolution": 224,
                                           "mult_adds": 568_740_352, "params": 4_231_976}
    assert main(["evaluate", "--model", str(out), "--out", str(tmp_path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 200 and len(metrics["confusion_matrix"]) == 10
    assert main(["export", "--model", str(out), "--output", str(tmp_path / "m.onnx"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == str(tmp_path / "m.onnx") and report["bytes"] == (tmp_path / "m.onnx").stat().st_size


@pytest.fixture
def bars():
    progress.show(True)
    yield
    progress.show(False)


def test_slow_passes_show_progress_bars(small_run, image_folder, tmp_path, capsys, bars):
    from mobilenet.data.images import scan_folder
    from mobilenet.deploy.benchmark import bench
    from mobilenet.deploy.exporter import export
    from mobilenet.report.evaluation import evaluate

    out, _ = small_run
    evaluate(out, out=tmp_path)
    export(out, "onnx", int8=True, output=tmp_path / "q.onnx", calibration_images=32, log=lambda _: None)
    bench(model=_tiny(), batch_sizes=[1], runtimes=["torch"], min_seconds=0.01, min_iters=1)
    scan_folder(image_folder)
    err = capsys.readouterr().err
    for desc in ("evaluate", "int8: calibration", "int8: test accuracy", "bench", f"scanning {image_folder}"):
        assert f"{desc}:" in err, desc


def _tiny():
    from mobilenet.net.model import MobileNetConfig, MobileNetV1

    return MobileNetV1.from_config(MobileNetConfig(width_mult=0.25, resolution=32, num_classes=2))


def test_bars_on_a_terminal_only(small_run, tmp_path):
    """The CLI turns the bars on when stderr is a terminal, and leaves pipes clean."""
    out, _ = small_run
    command = ["evaluate", "--model", str(out), "--out", str(tmp_path)]
    piped = cli(*command)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 wide
    proc = subprocess.Popen([sys.executable, "-m", "mobilenet", *command], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal's other end closed: the command is done
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait() == 0 and b"evaluate:" in seen and b"img" in seen


def test_a_bug_keeps_its_traceback_after_one_line_that_says_so(monkeypatch, capsys):
    """Only the user's errors (MobileNetError) become one line; anything else is a bug, said
    as one, and its traceback is kept."""
    from mobilenet.cli import model

    def broken(args):
        raise ValueError("an internal slip")
    monkeypatch.setattr(model, "_cmd_models", broken)
    with pytest.raises(ValueError, match="an internal slip"):
        main(["models"])
    assert "mobilenet models: internal error" in capsys.readouterr().err
