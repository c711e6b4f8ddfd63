"""The run folder: its files and their names, the atomic saves of model, config, history
and checkpoint, the lock, and loading a model folder back. Every other module reads and
writes a run folder through here.

A run folder holds: history.csv, total_acc.png, total_test_loss.png (the seed's two
figures), model.safetensors (best test accuracy) + config.json, checkpoint.pt (resume
state, loaded only with weights_only=True), train.log, and TensorBoard scalars when
tensorboard is installed. All but the appended train.log and TensorBoard's own event
files are written atomically (files.py).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import torch

from .config import FASHION_MNIST
from .errors import MobileNetError
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text
from .images import check_metadata
from .model import MobileNetConfig, MobileNetV1

# What a run writes into its folder (atomically, see files.py).
RUN_FILES = ("checkpoint.pt", "model.safetensors", "config.json", "history.csv", "total_acc.png", "total_test_loss.png")
HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds",
                  "images_per_s", "bad_files", "ema_test_loss", "ema_test_acc",  # empty without --ema
                  "val_loss", "val_acc"]  # the kept model's on the validation images; empty without --val-split


def default_out(data: str) -> Path:
    """runs/<data set>-<timestamp>, for a run given no --out."""
    name = FASHION_MNIST if data == FASHION_MNIST else Path(data).resolve().name
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resume_hint(out: Path) -> str:
    """How to go on with a stopped run."""
    return f"Continue with: mobilenet train --out {out} --resume"


def write_history(history: list[dict], out: Path) -> None:
    """history.csv, one row per epoch, whole."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        values = {k: row.get(k, "") for k in HISTORY_FIELDS}  # rows of older runs lack the newer columns
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in values.items()})
    atomic_write_text(out / "history.csv", buf.getvalue())


def save_model(model: MobileNetV1, out: Path, info: dict) -> None:
    """model.safetensors + config.json: all that predict, evaluate and export need."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", save(state, metadata={"format": "mobilenet-v1"}))
    write_config(out, model.config, info)


def write_config(out: Path, model_config: MobileNetConfig, info: dict) -> None:
    """config.json alone, at a run's start: the folder says what it holds before any weights."""
    atomic_write_json(out / "config.json", {"model": model_config.to_dict(), **info})


def save_checkpoint(out: Path, state: dict) -> None:
    """checkpoint.pt: the commit point of an epoch (or of a stopped one)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(out / "checkpoint.pt", buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """checkpoint.pt read with weights_only=True and checked: one clear error if it is not ours."""
    if not path.exists():
        raise MobileNetError(f"--resume: {path} not found; start a new run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as e:
        raise MobileNetError(f"--resume: {path} is not a readable checkpoint ({type(e).__name__}); "
                             "start a new run in another --out folder") from None
    kinds = {"model": dict, "optimizer": dict, "scheduler": dict, "epoch": int, "step": int, "history": list,
             "best_acc": float, "rng": torch.Tensor, "train_config": dict}
    wrong = [k for k, kind in kinds.items() if not isinstance(state, dict) or not isinstance(state.get(k), kind)]
    if wrong:
        raise MobileNetError(f"--resume: {path} is not a checkpoint of `mobilenet train` (no valid {', '.join(wrong)}); "
                             "start a new run in another --out folder")
    return state


def checkpoint_launch(out: Path) -> str | None:
    """The torchrun launch that wrote out's checkpoint (distributed.launch()), if any."""
    try:
        return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True).get("launch")
    except Exception:  # noqa: BLE001 - no readable checkpoint: nothing to resume automatically
        return None


def lock(out: Path):
    """Hold out/.lock for the whole run: a second `mobilenet train` on the same folder is
    refused. The kernel releases the lock when the process ends, even by kill -9, so a
    killed run never blocks the next one. A POSIX record lock (lockf), not flock: forked
    DataLoader workers do not inherit it, so they cannot hold it after a kill -9."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return None
    try:
        handle = open(out / ".lock", "a+")
    except OSError as e:
        raise MobileNetError(f"--out {out}: cannot write there ({e.strerror}); choose a writable folder") from None
    try:
        fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise MobileNetError(f"{out} is in use by another `mobilenet train`; wait for it, stop it, "
                             "or choose another --out") from None
    return handle


def read_config(model_dir) -> dict:
    """config.json of a model folder, checked: one clear error if missing or corrupt."""
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise MobileNetError(f"--model {model_dir}: no such folder; give a folder made by `mobilenet train`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        info["model"] = MobileNetConfig.from_dict(info["model"])
        m = info["model"]
        check_metadata(info["classes"], info["input"], info.get("data"), m.num_classes, m.in_channels, m.resolution)
    except FileNotFoundError:
        raise MobileNetError(f"{path} not found; a model folder holds config.json and model.safetensors") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        detail = f"missing {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise MobileNetError(f"{path} is not a valid model config ({detail}); retrain or re-export the model") from None
    return info


def load_model(model_dir) -> tuple[MobileNetV1, dict]:
    """The model of a folder, in eval mode, and its config.json (model config parsed)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = read_config(model_dir)
    model = MobileNetV1.from_config(info["model"])
    path = Path(model_dir) / "model.safetensors"
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except FileNotFoundError:
        raise MobileNetError(f"{path} not found; train the model first or copy its weights there") from None
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        detail = str(e).splitlines()[0][:200]
        raise MobileNetError(f"{path} does not hold this model's weights ({detail})") from None
    # channels_last, as in training: about 2× faster on CPU for the same results.
    return model.eval().to(memory_format=torch.channels_last), info
