import json
import subprocess
import sys

import pytest

from mobilenet.cli import main


def run(*args):
    """The real console entry point in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "mobilenet", *args], capture_output=True, text=True)


def test_cost_prints_the_papers_figures(capsys):
    assert main(["cost"]) == 0
    out = capsys.readouterr().out
    assert "568,740,352" in out and "4,231,976" in out and "94.86%" in out and "conv_dw_13" in out


def test_cost_json_full_conv(capsys):
    assert main(["cost", "--json", "--full-conv"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mult_adds"] == 4_867_293_184


def test_cost_variant_and_overrides(capsys):
    assert main(["cost", "--json", "--variant", "mobilenet_v1_0.25_128", "--num-classes", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["width_mult"] == 0.25 and report["config"]["num_classes"] == 10


def test_cost_of_a_grey_model_counts_one_input_channel(capsys):
    """--channels 1 (a Fashion-MNIST model): only the first layer's 3×3 filters shrink, 9 × 2 ×
    8 fewer weights at α = 0.25, each applied at every one of its 16 × 16 outputs."""
    reports = []
    for channels in ("3", "1"):
        assert main(["cost", "--json", "--width", "0.25", "--resolution", "32", "--channels", channels]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[1]["config"]["in_channels"] == 1
    assert reports[0]["params"] - reports[1]["params"] == 9 * 2 * 8
    assert reports[0]["mult_adds"] - reports[1]["mult_adds"] == 9 * 2 * 8 * 16 * 16


def test_models_lists_16_variants(capsys):
    assert main(["models"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 17


@pytest.mark.fault
@pytest.mark.parametrize("args, word", [
    (["--width", "0"], "--width"), (["--width", "-0.5"], "--width"), (["--width", "abc"], "--width"),
    (["--resolution", "31"], "--resolution"), (["--resolution", "2.5"], "--resolution"),
    (["--variant", "mobilenet_v1_2.0_224"], "--variant"), (["--num-classes", "0"], "--num-classes"),
    (["--channels", "0"], "--channels"), (["--channels", "rgb"], "--channels"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, word):
    result = run("cost", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in result.stderr
