"""The package's shape: modules import downwards only (no cycle), and every public name is
the documented object whichever submodules were imported first."""

import ast
import importlib
import pkgutil
from pathlib import Path

import numpy as np

import mobilenet

# Bottom to top: a module may import only those before it.
LAYERS = ["errors", "seeds", "config", "machine", "augment", "train_config", "progress", "files", "run_log",
          "run_state", "plots", "images", "metrics", "cost", "depthwise", "model", "activation_maps", "ema", "optim",
          "step", "data", "model_info", "onnx_check", "native", "pte", "litert", "runtime", "run_folder", "ownership",
          "settings", "predictor", "distributed", "report", "evaluation", "scoring", "trial", "weights", "training",
          "exporter", "benchmark", "sweep_jobs", "sweep", "cli"]
PACKAGE = Path(mobilenet.__file__).parent


def _imports(module: str) -> set[str]:
    """The package modules `module` imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
    return {m.split(".")[0] for m in found} - {module}


def test_every_module_has_a_layer():
    modules = {m.name for m in pkgutil.iter_modules([str(PACKAGE)])} - {"__main__"}
    assert modules == set(LAYERS)


def test_modules_import_downwards_only():
    for i, module in enumerate(LAYERS):
        above = _imports(module) - set(LAYERS[:i]) - {"__version__"}
        assert not above, f"{module} imports {sorted(above)}, which sit above it"


def test_every_public_name_is_the_documented_object(small_run, tmp_path):
    """After importing every submodule, `mobilenet.X` is still the function or class the
    README documents, and works."""
    for m in pkgutil.iter_modules([str(PACKAGE)]):
        if m.name != "__main__":
            importlib.import_module(f"mobilenet.{m.name}")
    names = {name: getattr(mobilenet, name) for name in mobilenet.__all__}
    for name, obj in names.items():
        assert not isinstance(obj, type(mobilenet)), f"mobilenet.{name} is a module"
    out, _ = small_run
    config = mobilenet.MobileNetConfig(num_classes=3, width_mult=0.25, resolution=32)
    assert len(mobilenet.TABLE1) == 27 and "mobilenet_v1_1.0_224" in mobilenet.list_models()
    assert mobilenet.get_config("mobilenet_v1_0.25_128").width_mult == 0.25
    assert mobilenet.MobileNetV1.from_config(config).config == config
    assert mobilenet.mobilenet_v1(num_classes=3, width_mult=0.25).config.num_classes == 3
    assert mobilenet.create_model("mobilenet_v1_0.25_128", num_classes=3).config.resolution == 128
    assert mobilenet.cost_report(config)["params"] > 0 and len(mobilenet.layer_costs(config)) == 29  # Table 1, pool, FC
    assert mobilenet.TrainConfig(epochs=1).epochs == 1 and callable(mobilenet.train)
    model, info = mobilenet.load_model(out)
    assert info.classes[0] == "T-shirt/top"
    assert mobilenet.evaluate(out, out=tmp_path)["images"] == 200
    image = np.zeros((28, 28), np.uint8)
    assert mobilenet.Predictor(out).predict([image], top_k=2)[0][0]["image"] == 0
    records, failed = mobilenet.Predictor(out).predict([tmp_path / "confusion_matrix.png"], top_k=1)
    assert len(records) == 1 and not failed
    assert mobilenet.export(out, "onnx", output=tmp_path / "m.onnx", log=lambda _: None)["bytes"] > 0


# The only sleeps in the suite, and why none of them is a wait for something to happen.
SLEEPS = {
    ("conftest.py", "wait_for"): "the poll between two looks at the event it waits for",
    ("test_interrupts.py", "test_kill_9_at_random_moments"): "a random jitter after the step the kill waits for",
    ("test_interrupts.py", "test_sigterm_in_a_step_and_in_evaluation_and_a_second_ctrl_c"):
        "two Ctrl-C 0.3 s apart, inside one step the test slows by 60 s",
}


def test_no_test_waits_a_fixed_time():
    """README, Any CPU, any speed: tests wait for events (conftest.wait_for), never for a
    fixed time that a slower machine would overrun. Every sleep in tests/ is in SLEEPS."""
    found = set()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    called = node.func if isinstance(node, ast.Call) else None
                    if (isinstance(called, ast.Attribute) and called.attr == "sleep"
                            or isinstance(called, ast.Name) and called.id == "sleep"):
                        found.add((path.name, function.name))
    assert found == set(SLEEPS)
