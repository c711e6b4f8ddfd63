import contextlib
import csv
import fcntl
import gzip
import hashlib
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# `make test` runs two pytest-xdist workers on the two cores. One thread each keeps them and
# their child processes from oversubscribing the cores with spinning OpenMP threads (that
# cost about a quarter more CPU time). Multi-threaded determinism has a test of its own, whose
# two threads sleep rather than spin while they wait, since the other worker holds a core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import forked  # noqa: E402  (imports torch: after the thread count is set)

# A network small enough to train in seconds on 2 cores.
TINY = ["--width", "0.25", "--resolution", "32", "--batch-size", "32"]


def unavailable(why: str):
    """Skip the test (or the module) saying `why`; in CI (.ci/run sets MOBILENET_CI) fail
    instead, so that the optional paths are never skipped there."""
    if os.environ.get("MOBILENET_CI"):
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)


def optional(module: str, why: str):
    """`module` imported, or unavailable(why)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        unavailable(why)


def cli(*args, env=None, timeout=None, **kw):
    """The real `mobilenet` command in a child process: forked from a server that imported
    torch once (forked.py), or, with Popen's keywords (preexec_fn), a new interpreter."""
    if not kw:
        return forked.run(args, env=env, timeout=timeout)
    return subprocess.run([sys.executable, "-m", "mobilenet", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, **kw)


def history(run: Path, timing=False) -> list[dict]:
    """history.csv's rows, without the timing columns unless asked."""
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return rows if timing else [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


# Tests wait for events (a file, a line, a process's end), never for a fixed time. This
# bound only keeps a hung process from hanging the suite: it is no speed limit, so it is
# far above what the slowest, busiest machine needs.
HANG = 1800  # seconds


def wait_for(predicate, proc, timeout=HANG):
    """Poll until predicate() holds; fails at once if proc ends first."""
    start = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout, "gave up waiting: the process seems to hang"
        time.sleep(0.02)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_like(folder: Path, n_train: int = 400, n_test: int = 200, seed: int = 0,
                      train_counts: list[int] | None = None) -> Path:
    """IDX files in Fashion-MNIST's layout: 28×28 images whose class is the row of a bright
    bar, so a model can learn them in an epoch or two; `train_counts`: the training split's
    images per class (default n_train, spread evenly)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", sum(train_counts) if train_counts else n_train), ("t10k", n_test)):
        labels = np.repeat(np.arange(10), train_counts) if train_counts and prefix == "train" else np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label: 5 + 2 * label, 4:24] = 255
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    folder = make_fashion_like(tmp_path / "fashion")
    monkeypatch.setenv("MOBILENET_FASHION_MNIST", str(folder))
    return folder


@pytest.fixture
def few_fashion(tmp_path, monkeypatch):
    """fake_fashion's kind of data, fewer images (128 to train, 64 to test): for a test that
    compares runs bit for bit, where what matters is that several steps and epochs ran, not
    what the model learned."""
    folder = make_fashion_like(tmp_path / "few-fashion", n_train=128, n_test=64)
    monkeypatch.setenv("MOBILENET_FASHION_MNIST", str(folder))
    return folder


def make_image_folder(root: Path, per_class: int = 6, corrupt: bool = True) -> Path:
    """Three classes of images in many formats and modes, and one file that does not decode."""
    rng = np.random.default_rng(0)
    formats = [("png", "RGB"), ("jpg", "L"), ("bmp", "RGB"), ("gif", "P"), ("webp", "RGB"),
               ("tiff", "RGBA"), ("png", "I;16"), ("jpg", "CMYK"), ("png", "P")]
    for c, name in enumerate(["cat", "dog", "fox"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext, mode = formats[(i + c) % len(formats)]
            base = rng.integers(0, 255, size=(40 + i, 48, 3), dtype=np.uint8)
            base[:, :, c] = 255  # the class is the dominant colour
            im = Image.fromarray(base, "RGB")
            if mode == "I;16":
                im = Image.fromarray(np.asarray(im.convert("L"), dtype=np.uint16) * 257)  # 16-bit grey
                assert im.mode.startswith("I;16")
            elif mode == "P":
                im = im.convert("P")
                im.info["transparency"] = 0
            else:
                im = im.convert(mode)
            im.save(root / name / f"{i}.{ext}")
    if corrupt:
        (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """One small run on Fashion-MNIST-like data, shared by the tests that only read it. α = 0.5:
    as cheap to export as 0.25 (the graph is the same), and wide enough that an int8 file
    saves what INT8_MIN_SHRINK asks of a real model."""
    from mobilenet.training.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("small")
    old = os.environ.get("MOBILENET_FASHION_MNIST")
    os.environ["MOBILENET_FASHION_MNIST"] = str(make_fashion_like(root / "fashion"))
    out = root / "run"
    # no augmentation: the bars of make_fashion_like are 2 pixels apart, so shifts would blur the classes
    summary = train(TrainConfig(epochs=3, width_mult=0.5, resolution=32, batch_size=16, augment="none", out=str(out)),
                    log=lambda _: None)
    yield out, summary
    if old is None:
        del os.environ["MOBILENET_FASHION_MNIST"]
    else:
        os.environ["MOBILENET_FASHION_MNIST"] = old


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder `name`, filled by build(folder) once per test run: the first xdist worker
    that asks builds it, one that asks meanwhile waits for it, and every test then only reads
    it (a test that changes a file copies it first). The folder is this run's own, so a later
    run never gets what an older version of the code built."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own
    folder = base / "built-once" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(str(folder) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when a worker dies
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".done").touch()
    return folder


def _exported(small_run, tmp_path_factory, name: str, fmt: str, **options) -> tuple[Path, dict]:
    """export(small_run's model, fmt) at built_once's folder, and export's report, with the
    deprecation warnings it raised under "deprecated". Named by the weights' hash: workers
    whose small_run differed would each export their own."""
    from mobilenet.deploy.exporter import export

    weights = hashlib.sha256((small_run[0] / "model.safetensors").read_bytes()).hexdigest()[:16]

    def build(folder):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = export(small_run[0], fmt, output=folder / name, log=lambda _: None, **options)
        report["deprecated"] = [f"{w.category.__name__}: {w.message}" for w in caught
                                if issubclass(w.category, (FutureWarning, DeprecationWarning))]
        (folder / "report.json").write_text(json.dumps(report))
    folder = built_once(tmp_path_factory, f"{name}-{weights}", build)
    return folder / name, json.loads((folder / "report.json").read_text())


@contextlib.contextmanager
def converted_once(module, function: str, small_run, data: bytes):
    """module.function (a converter: model, ... -> bytes) gives `data` for small_run's model,
    which a fixture has just converted with it. The int8 exports convert the float32 model
    first, to check it and to compare with it: those conversions are deterministic (the same
    bytes each time), so the test run need not pay for each twice."""
    import torch

    from mobilenet.run.folder import load_model

    real = getattr(module, function)
    state = load_model(small_run[0])[0].state_dict()

    def convert(model, *args):
        mine = model.state_dict()
        same = mine.keys() == state.keys() and all(torch.equal(mine[k], state[k]) for k in state)
        return data if same else real(model, *args)
    setattr(module, function, convert)
    try:
        yield
    finally:
        setattr(module, function, real)


@pytest.fixture(scope="session")
def onnx_export(small_run, tmp_path_factory):
    """small_run's model exported to ONNX (m.onnx), and export's report."""
    return _exported(small_run, tmp_path_factory, "m.onnx", "onnx")


@pytest.fixture(scope="session")
def onnx_file(onnx_export):
    """small_run's model exported to ONNX, for the tests that run an .onnx file."""
    return onnx_export[0]


@pytest.fixture(scope="session")
def onnx_int8_export(small_run, onnx_export, tmp_path_factory):
    """small_run's model exported to int8 ONNX (the default preset and calibration), and export's report."""
    import mobilenet.deploy.exporter as exporter

    with converted_once(exporter, "onnx_bytes", small_run, onnx_export[0].read_bytes()):
        return _exported(small_run, tmp_path_factory, "m.int8.onnx", "onnx", int8=True)


@pytest.fixture(scope="session")
def pte_export(small_run, tmp_path_factory):
    """small_run's model as a float32 ExecuTorch program (m.pte and its sidecar), and export's report."""
    pytest.importorskip("executorch")
    return _exported(small_run, tmp_path_factory, "m.pte", "executorch")


@pytest.fixture(scope="session")
def pte_int8_export(small_run, pte_export, tmp_path_factory):
    """small_run's model as an int8 ExecuTorch program (m.int8.pte and its sidecar), and export's report."""
    import mobilenet.deploy.executorch as pte

    with converted_once(pte, "pte_bytes", small_run, pte_export[0].read_bytes()):
        return _exported(small_run, tmp_path_factory, "m.int8.pte", "executorch", int8=True)


@pytest.fixture(scope="session")
def ssh_device(tmp_path_factory):
    """A real OpenSSH server on loopback (tests/sshd.py), one per worker, as the device of
    `bench --on` and `sweep --on`; its Python is this one. CI installs openssh-server and
    never skips these tests."""
    import sshd

    if not (shutil.which("sshd") or os.path.exists(sshd.SSHD)) or not shutil.which("ssh"):
        unavailable("OpenSSH's server and client are needed: apt-get install openssh-server")
    server = sshd.Server(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
