"""The package's shape: modules import downwards only (no cycle), and every public name is
the documented object whichever submodules were imported first."""

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import numpy as np

import mobilenet

PACKAGE = Path(mobilenet.__file__).parent
ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"
# every module by its name under mobilenet ("net.model"; a sub-package by its own name)
MODULES = {".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__"): p
           for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem not in ("__init__", "__main__")}


def _floors() -> dict[str, int]:
    """docs/architecture.md's table: area -> floor. The doc is the one place the order is written."""
    return {area: int(floor) for floor, area in re.findall(r"^\| (\d+) \| (\w+) \|", ARCHITECTURE.read_text(), re.M)}


def _area(module: str) -> str:
    """The area a module belongs to: its sub-package, or base for the flat modules."""
    top = module.split(".")[0]
    return top if (PACKAGE / top).is_dir() or top == "cli" else "base"


def _imports(module: str) -> set[str]:
    """The package modules `module` imports, at the top or inside a function."""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            named = {".".join([*base, a.name]) for a in node.names} & set(MODULES)
            found |= named or {".".join(base)}
    return found - {module, ""}


def test_every_area_has_a_floor():
    areas = {_area(m) for m in MODULES}
    assert areas == set(_floors()), "docs/architecture.md's table of floors and the package's areas differ"


def test_areas_import_from_lower_floors_only():
    floors = _floors()
    for module in MODULES:
        for target in _imports(module):
            a, b = _area(module), _area(target)
            assert a == b or floors[b] < floors[a], \
                f"{module} ({a}, floor {floors[a]}) imports {target} ({b}, floor {floors[b]})"


def test_no_module_imports_itself_back():
    graph = {m: _imports(m) for m in MODULES}
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m):] + [m])}"
        if m not in done:
            path.append(m)
            for n in sorted(graph[m]):
                visit(n)
            path.pop()
            done.add(m)
    for m in sorted(graph):
        visit(m)


def test_every_public_name_is_the_documented_object(small_run, tmp_path):
    """After importing every submodule, `mobilenet.X` is still the function or class the
    README documents, and works."""
    for m in pkgutil.walk_packages([str(PACKAGE)], "mobilenet."):
        if m.name != "mobilenet.__main__":
            importlib.import_module(m.name)
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
