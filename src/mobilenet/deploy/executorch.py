"""ExecuTorch: lower a model to one .pte program (XNNPACK delegate, float32 or int8) and
run .pte files with ExecuTorch's own runtime.

The .pte holds the network; its class names and input preparation travel beside it in
`<file>.pte.json` (ModelInfo.sidecar: classes, input, model and data), which PteModel reads. Needs the
`executorch` extra: .venv/bin/pip install -e '.[executorch]'.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MobileNetError, NotInstalled, install_hint
from ..files import load_json_object, read_regular
from ..net.cost import state_bytes
from ..report.metrics import check_scores
from ..run.info import ModelInfo
from .native import child_fails, detail, probe_file, probe_image, quiet_stderr
from .pt2e import calibrated

MAX_BATCH = 64  # the program's batch dimension is dynamic up to this (XNNPACK plans for a bound)
PROGRAM_LIMIT = 1 << 30  # a program whose sidecar names no network


def sidecar(path) -> Path:
    """Where a .pte's metadata lives: model.pte -> model.pte.json."""
    return Path(str(path) + ".json")


def require_executorch():
    try:
        import executorch  # noqa: F401
    except ImportError:
        hint = install_hint("executorch", "executorch")
        raise NotInstalled(f"ExecuTorch is not installed; {hint}") from None


def _export(model: nn.Module, example: torch.Tensor):
    # Traced at the bound: ExecuTorch plans the input's memory from the example's size, and a
    # smaller example would cap the batch there (2 gave a bound of 15, in executorch 1.5.1).
    example = example.new_zeros(MAX_BATCH, *example.shape[1:])
    # Contiguous weights: XNNPACK's channels-last pass refuses a conv weight already in
    # channels_last (as load_model gives it) once it has more than one input channel.
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def _lower(program) -> bytes:
    with quiet_stderr():  # torchao, imported with them, logs a torch deprecation line
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def pte_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """The model as a float32 .pte program, every layer delegated to XNNPACK."""
    require_executorch()
    return _lower(_export(model.eval(), example))


def pte_int8_bytes(model: nn.Module, example: torch.Tensor, calibration: torch.Tensor) -> bytes:
    """PT2E static quantization with ExecuTorch's XNNPACK quantizer (symmetric int8,
    per-channel weights; activation ranges observed on `calibration`), then lowered."""
    require_executorch()
    with quiet_stderr():  # torchao logs a torch deprecation line as it is imported
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    observed = calibrated(_export(model.eval(), example).module(), quantizer, calibration)
    return _lower(_export(convert_pt2e(observed), example))


def _runtime():
    """executorch.runtime's Runtime, without executorch.exir's package where nothing has
    imported it yet: ExecuTorch's pybindings import exir._warnings (for one warning class),
    and exir's package would bring in the whole exporter (torch.export, its passes,
    torchao), about three quarters of the runtime's import time, for nothing a program's run
    needs. A later `import executorch.exir` (to lower a model) gets the real package."""
    if "executorch.exir" not in sys.modules:
        import executorch

        exir = types.ModuleType("executorch.exir")  # a package with exir's folder, whose __init__ never runs
        exir.__path__ = [os.path.join(folder, "exir") for folder in executorch.__path__]
        sys.modules["executorch.exir"] = exir
        try:
            from executorch.runtime import Runtime
        except ImportError:
            pass  # a version whose runtime needs more of exir: the real package, below
        finally:  # the stub and what was loaded into it go: a later import gets the real package
            if sys.modules.get("executorch.exir") is exir:
                del sys.modules["executorch.exir"]
                sys.modules.pop("executorch.exir._warnings", None)
    from executorch.runtime import Runtime

    return Runtime


class PteModel:
    """An exported .pte: `.info` (its ModelInfo), `.classes`, `.spec` (input preparation),
    `.int8` (as its sidecar says; None for bytes), `.logits(batch)`.

    `source` is a .pte path (its metadata read from sidecar(path); the program checked
    against it and probed in a child process first) or the bytes of a program this process
    has just lowered, with `info` given."""

    def __init__(self, source, info: ModelInfo | None = None):
        require_executorch()
        self.name = name = "the program" if isinstance(source, bytes) else str(source)
        data, self.info, self.int8 = (source, info, None) if isinstance(source, bytes) else _open_file(Path(source))
        self.classes, self.spec = self.info.classes, self.info.input
        self._data = data  # the runtime reads the program from these bytes for as long as it runs
        try:
            with quiet_stderr():  # also torchao's import-time log line
                self._program = _runtime().get().load_program(data)
                self.method = self._program.load_method("forward")
        except Exception as e:  # noqa: BLE001 - the runtime raises its own types for a bad program
            raise MobileNetError(f"{name} is not a loadable ExecuTorch program ({detail(e)}); "
                                 "export it again with `mobilenet export --format executorch`") from None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        try:
            z = np.concatenate([self.method.execute([chunk])[0].numpy() for chunk in x.split(MAX_BATCH)])
        except Exception as e:  # noqa: BLE001 - the runtime's own types
            raise MobileNetError(f"{self.name}: ExecuTorch's runtime failed on {len(batch)} images "
                                 f"({detail(e)})") from None
        check_scores(z, len(self.classes), self.name)
        return z


def _open_file(path: Path) -> tuple[bytes, ModelInfo, bool]:
    """A .pte's bytes, metadata and int8 flag, checked: read_file's checks, and the program,
    probed in a child, takes the input the sidecar prepares."""
    data, info, int8 = read_file(path)
    probe(data, path, info)
    return data, info, int8


def read_file(path: Path) -> tuple[bytes, ModelInfo, bool]:
    """A .pte's bytes, metadata and int8 flag, without running it: the sidecar names the
    program's SHA-256."""
    found = _read_sidecar(path)
    meta = sidecar(path)
    try:
        info = ModelInfo.from_json(found, fixed=(None, None))
    except KeyError as e:
        raise MobileNetError(f"{meta} has no {e}; export the model again with `mobilenet export`") from None
    except (ValueError, TypeError) as e:
        raise MobileNetError(f"{meta} does not describe the network ({e}); export it again") from None
    data = _read(path, info)
    if found.get("sha256") not in (None, hashlib.sha256(data).hexdigest()):
        raise MobileNetError(f"{path} is not the program {meta.name} describes (its SHA-256 differs): "
                             "the file was changed or damaged; export it again")
    return data, info, found.get("int8") is True


def probe(data: bytes, name, info: ModelInfo) -> dict:
    """The program `data`, loaded and run on one non-zero image in a child process and held
    against `info` (native.probe_file): some damaged programs abort or segfault ExecuTorch's
    runtime, in XNNPACK. Its batch bound is at most MAX_BATCH, as this toolkit lowers it."""
    return probe_file(data, name, "mobilenet.deploy.executorch:_probe_child", "ExecuTorch's runtime",
                      "ExecuTorch program", "export it again with `mobilenet export --format executorch`", info,
                      MAX_BATCH)


def _probe_child() -> None:
    """probe's child: the program from stdin, run on one non-zero image; on stdout its
    input's sizes and batch bound, the scores' shape and whether they are finite, or one
    line on stderr if it does not load (the runtime's own lines, if it crashes, stay above)."""
    data = sys.stdin.buffer.read()
    try:
        program = _runtime().get().load_program(data)
        sizes = list(program.metadata("forward").input_tensor_meta(0).sizes())
        if not 1 <= sizes[0] <= MAX_BATCH:  # the parent refuses it: no memory planned for its batch
            print(json.dumps({"input": sizes, "batch": sizes[0], "output": None, "finite": False}))
            return
        z = program.load_method("forward").execute([torch.from_numpy(probe_image(sizes[1:]))])[0].numpy()
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        child_fails(e)
    print(json.dumps({"input": sizes, "batch": sizes[0], "output": list(z.shape), "finite": bool(np.isfinite(z).all())}))


def _read(path: Path, info: ModelInfo) -> bytes:
    # The program holds the weights once, BN folded in; twice that, and a fixed bound for a
    # sidecar that does not say its network.
    limit = 2 * state_bytes(info.model) + (16 << 20) if info.model else PROGRAM_LIMIT
    try:
        return read_regular(path, limit, "--model")
    except FileNotFoundError:
        raise _missing(path) from None


def _missing(path: Path) -> MobileNetError:
    return MobileNetError(f"--model {path}: no such file; give a .pte file made by "
                          "`mobilenet export --format executorch`")


def _read_sidecar(path: Path) -> dict:
    meta = sidecar(path)
    if not path.exists():  # the program's absence first: the sidecar's would mislead
        raise _missing(path)
    try:
        return load_json_object(meta, "--model", "export the model again")
    except FileNotFoundError:
        raise MobileNetError(f"{meta} is missing: it holds the class names and input preparation that travel "
                             f"with {path.name}; export the model again") from None
