"""Random and boundary arguments for every subcommand (hypothesis): the CLI answers with
output and exit 0, or one line on stderr and a non-zero exit; never a traceback."""


import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from mobilenet.cli import main, subcommand_options

pytestmark = pytest.mark.fault  # counted in the README's fault-case total

SUBCOMMANDS = subcommand_options()

# Appended last, so that a run stops at a missing file instead of training or benchmarking
# for minutes (the last value of an option wins). `samples` is left out: with valid
# arguments it writes up to 10,000 images.
GUARD = {
    "train": ["--data", "{tmp}/no-data", "--out", "{tmp}/run"],
    "evaluate": ["--model", "{tmp}/no-model"],
    "report": ["--model", "{tmp}/no-model"],
    "predict": ["--model", "{tmp}/no-model", "{tmp}/no-image.png"],
    "export": ["--model", "{tmp}/no-model"],
    "bench": ["--model", "{tmp}/no-model"],
    "sweep": ["--data", "{tmp}/no-data", "--out", "{tmp}/sweep"],
    "convert": ["--from-timm", "{tmp}/no-weights.pth", "--output", "{tmp}/converted"],
    "cost": [],
    "models": [],
}
assert set(GUARD) == set(SUBCOMMANDS) - {"samples"}

EDGES = ["0", "-0", "1", "-1", "2", "31", "32", "33", "4096", "4097", "0.03125", "0.03", "4", "4.0001", "1e-8",
         "1e309", "-1e309", "nan", "inf", "-inf", "9" * 30, "0x10", "1_000", " 5", "", "-", "--", "abc", "é",
         "1,16", "1,,16", "0,16", "torch,nope", "onnxruntime", "openvino", "litert", "mobilenet_v1_0.5_160", "mobilenet_v1_9_9",
         "/", "/proc/x", "/dev/null", "--help"]
values = st.one_of(st.sampled_from(EDGES),
                   st.integers(0, 300).map(str), st.sampled_from(["0.25", "0.5", "0.75", "1.0", "0.1", "0.01"]),
                   st.integers(-10**20, 10**20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12))


@st.composite
def command_lines(draw):
    """Mostly well-formed option/value pairs, so that most examples get past argparse into
    the library's own checks, with some missing values and stray tokens."""
    name = draw(st.sampled_from(sorted(GUARD)))
    actions = SUBCOMMANDS[name]
    argv = [name]
    for _ in range(draw(st.integers(0, 5))):
        if actions and draw(st.integers(0, 9)):
            action = draw(st.sampled_from(actions))
            argv.append(action["option"])
            if action["takes_value"] and draw(st.integers(0, 9)):
                argv.append(draw(st.sampled_from(action["choices"]) if action["choices"] and draw(st.booleans())
                                 else values))
        else:
            argv.append(draw(values))
    return name, argv


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command_lines())
def test_random_arguments_get_an_answer_or_one_line(tmp_path, monkeypatch, capsys, command):
    name, argv = command
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOBILENET_FASHION_MNIST", str(tmp_path / "no-fashion"))
    argv += [a.replace("{tmp}", str(tmp_path)) for a in GUARD[name]]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a usage error (2) or --help (0)
        code = e.code
    err = capsys.readouterr().err
    event(f"{name} exit {code}")  # pytest --hypothesis-show-statistics: how deep the examples went
    assert "Traceback" not in err
    assert code in (0, 1, 2), (argv, code, err)
    if code:
        assert len(err.strip().splitlines()) == 1, (argv, err)
    else:  # only the commands that need no file can succeed here
        assert name in ("cost", "models") or "--help" in argv, (argv, err)


@pytest.mark.parametrize("argv", [
    ["cost", "--width", "0.03125", "--resolution", "32", "--num-classes", "1"],      # the smallest network
    ["cost", "--width", "4", "--resolution", "4096", "--num-classes", "1000000"],    # the largest
    ["cost", "--variant", "mobilenet_v1_0.25_128", "--full-conv", "--json"],
])
def test_boundary_arguments_are_accepted(argv, capsys):
    assert main(argv) == 0 and capsys.readouterr().out
