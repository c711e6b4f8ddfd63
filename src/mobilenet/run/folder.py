"""The run folder: its files and their names, the atomic saves of model, config, history
and checkpoint, the lock, and loading a model folder back. Every other module reads and
writes a run folder through here.

A run folder holds: history.csv, total_acc.png, total_test_loss.png (the seed's two
figures), model.safetensors (the last epoch's, or the best on validation) + config.json,
checkpoint.pt (resume state, loaded only with weights_only=True), train.log, and TensorBoard scalars when
tensorboard is installed. All but the appended train.log and TensorBoard's own event
files are written atomically (files.py).
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime
from pathlib import Path
from typing import TypedDict

import torch

from ..data.images import FASHION_MNIST
from ..errors import MobileNetError, first_line, printable
from ..files import (
    PRODUCER, atomic_write_bytes, atomic_write_json, atomic_write_text, load_json_object, open_lock_file,
    read_json_object, read_regular,
)
from ..limits import check_number, finite_number
from ..net.config import TABLE1, channels
from ..net.cost import state_bytes
from ..net.model import MobileNetConfig, MobileNetV1
from .info import SAFETENSORS_FORMAT, ModelInfo
from .names import CHECKPOINT, CONFIG, EXPORTS, HISTORY, WEIGHTS


class EpochRow(TypedDict):
    """An epoch's row of history.csv and of the checkpoint's history. None where the run
    measured nothing: the EMA's without --ema, the validation images' without --val-split
    (history.csv writes it as an empty field)."""
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float
    seconds: float
    images_per_s: float
    bad_files: int
    ema_test_loss: float | None
    ema_test_acc: float | None
    val_loss: float | None  # the kept model's on the validation images
    val_acc: float | None
    val_balanced_acc: float | None  # --select-by's other scores (empty in runs from before them)
    val_macro_f1: float | None
    test_map: float | None  # several labels per image: mAP (empty in single-label runs)
    ema_test_map: float | None
    val_map: float | None


HISTORY_FIELDS = list(EpochRow.__annotations__)

# A checkpoint holds the model, its EMA, two optimizer moments and the history: 4 GiB is
# about 250 M parameters, beyond any MobileNet V1 a run here would train.
CHECKPOINT_LIMIT = 4 << 30
HEADER_LIMIT = 1 << 20  # a safetensors header of MobileNet's 140 tensors takes about 20 kB


def record_export(model_dir, name: str, found: dict) -> None:
    """Note in model_dir/exports.json what `export` checked of the file `name` beside the model."""
    atomic_write_json(Path(model_dir) / EXPORTS, {**read_exports(model_dir), name: found, "producer": PRODUCER})


def read_exports(model_dir) -> dict:
    """exports.json's records, by file name; {} when there is none to read."""
    return {k: v for k, v in read_json_object(Path(model_dir) / EXPORTS).items() if k != "producer"}


def weights_limit(config: MobileNetConfig) -> int:
    """The most bytes a weights file of `config` may take: its float32 tensors and a header."""
    return state_bytes(config) + HEADER_LIMIT


def default_out(data: str) -> Path:
    """runs/<data set>-<timestamp>, for a run given no --out."""
    name = FASHION_MNIST if data == FASHION_MNIST else Path(data).resolve().name
    name = Path(name).stem if os.path.isfile(data) else name  # labels.csv: runs/labels-<timestamp>
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
        values = {k: row.get(k) for k in HISTORY_FIELDS}  # rows of older runs lack the newer columns
        writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else "" if v is None else v for k, v in values.items()})
    atomic_write_text(out / HISTORY, buf.getvalue())


def save_model(model: MobileNetV1, out: Path, info: ModelInfo) -> None:
    """model.safetensors + config.json: all that predict, evaluate and export need."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / WEIGHTS, save(state, metadata={"format": SAFETENSORS_FORMAT}))
    write_config(out, info)


def write_config(out: Path, info: ModelInfo) -> None:
    """config.json alone, at a run's start: the folder says what it holds before any weights."""
    atomic_write_json(out / CONFIG, {"format_version": FORMAT_VERSION, **info.to_json()})


def save_checkpoint(out: Path, state: dict) -> None:
    """checkpoint.pt: the commit point of an epoch (or of a stopped one)."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    atomic_write_bytes(out / CHECKPOINT, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """checkpoint.pt read with weights_only=True, checked (one clear error if it is not ours)
    and brought to this format (MIGRATIONS)."""
    try:
        data = read_regular(path, CHECKPOINT_LIMIT, "--resume")
    except FileNotFoundError:
        raise MobileNetError(f"--resume: {path} not found; start a new run without --resume") from None
    check_archive(data, path, "--resume")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as e:
        raise MobileNetError(f"--resume: {path} is not a readable checkpoint ({type(e).__name__}); "
                             "start a new run in another --out folder") from None
    kinds = {"model": dict, "optimizer": dict, "scheduler": dict, "epoch": int, "step": int, "history": list,
             "best_acc": float, "rng": torch.Tensor, "train_config": dict}
    wrong = [k for k, kind in kinds.items() if not isinstance(state, dict) or not isinstance(state.get(k), kind)]
    if wrong:
        raise MobileNetError(f"--resume: {path} is not a checkpoint of `mobilenet train` (no valid {', '.join(wrong)}); "
                             "start a new run in another --out folder")
    state = _upgraded(state, path)
    _check_state(state, path)
    return {**state, "history": [{k: row.get(k) for k in HISTORY_FIELDS} for row in state["history"]]}


ESSENTIAL = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")  # in every run's rows
# train_config's numbers (each a LIMITS entry) that a resume, the report or evaluate reads;
# None: off, or resolved by the data
CONFIG_NUMBERS = ("epochs", "batch_size", "lr", "weight_decay", "dropout", "ema", "random_erasing", "label_smoothing",
                  "seed", "limit", "test_split", "val_split", "patience")


def _check_state(state: dict, path: Path) -> None:
    """One line naming the checkpoint and the field, for a history row, kept epoch or
    setting of the wrong kind: what reads them (resume, the report) then needs no checks."""
    def wrong(what: str, value, kind: str):
        return MobileNetError(f"--resume: {path}: {what} must be {kind}, got {printable(repr(value))[:40]}; "
                              "start a new run in another --out folder")

    for i, row in enumerate(state["history"], 1):
        if not isinstance(row, dict):
            raise wrong(f"history row {i}", row, "a row of figures")
        for key, kind in EpochRow.__annotations__.items():
            value = row.get(key)  # rows of older runs lack the newer columns: None
            whole = getattr(kind, "__forward_arg__", kind) == "int"
            if not ((value is None and key not in ESSENTIAL) or finite_number(value, whole)):
                raise wrong(f"history row {i}'s {key}", value, "a number")
    partial = state.get("partial")
    sums = partial.get("sums") if isinstance(partial, dict) else None
    if partial is not None and not (isinstance(sums, (list, tuple)) and len(sums) == 5
                                    and all(map(finite_number, sums))):
        raise wrong("partial", partial, "a stopped epoch's five sums")
    kept = state.get("kept_epoch")
    if not (isinstance(kept, int) and 0 <= kept <= len(state["history"])):
        raise wrong("kept_epoch", kept, f"an epoch of its history (0 to {len(state['history'])})")
    args = state["train_config"]
    for key in CONFIG_NUMBERS:
        if args.get(key) is not None:
            try:
                check_number(key, args[key], f"train_config's {key}", exact=True)
            except ValueError as e:
                raise MobileNetError(f"--resume: {path}: {e}; start a new run in another --out folder") from None
    for key in ("data", "optimizer", "augment"):
        if not isinstance(args.get(key), str):
            raise wrong(f"train_config's {key}", args.get(key), "a name")


def _upgraded(state: dict, path: Path) -> dict:
    """A checkpoint of any format up to FORMAT_VERSION, in this one: its migrations in order."""
    version = state.get("format_version", 0)
    if not isinstance(version, int) or not 0 <= version <= FORMAT_VERSION:
        raise MobileNetError(f"--resume: {path} is of format {printable(str(version))}, and this mobilenet reads up to "
                             f"{FORMAT_VERSION}; resume it with the mobilenet that wrote it, or a newer one")
    for migrate in MIGRATIONS[version:]:
        state = migrate(state)
    return {**state, "format_version": FORMAT_VERSION}


def _from_unversioned(state: dict) -> dict:
    """Format 0, the checkpoints written before formats were numbered, in format 1. They
    came in several shapes, each told by what it lacks; every step fills in what its runs
    had, so it leaves a newer shape as it is."""
    args = dict(state["train_config"])
    if "test_split" not in args:  # the test hold-out was once called val_split
        args["test_split"] = args.pop("val_split", 0.2)
    args = {"ema": None, "random_erasing": 0.0, **args}  # runs from before these options had them off
    if "compile" not in args and args["data"] != FASHION_MNIST and args.get("augment") == "flip-shift":
        args["augment"] = "crop-flip"  # what a folder's flip-shift was before the presets were named
    history = [{k: None if v == "" else v for k, v in row.items()} for row in state["history"]]  # "": not measured
    # before validation splits: no best validation accuracy, and the last epoch kept
    return {"best_val": -1.0, "since_best": 0, "kept_epoch": len(state["history"]), "partial": None, **state,
            "train_config": args, "history": history}


# The run folder's format: each checkpoint and config.json says which it was written in,
# and MIGRATIONS[v] brings format v to v + 1. A change to what a checkpoint holds adds a
# version and its migration.
MIGRATIONS = (_from_unversioned,)
FORMAT_VERSION = len(MIGRATIONS)


def checkpoint_launch(out: Path) -> str | None:
    """The torchrun launch that wrote out's checkpoint (distributed.launch()), if any."""
    try:
        data = read_regular(out / CHECKPOINT, CHECKPOINT_LIMIT, "--out")
        check_archive(data, out / CHECKPOINT, "--out")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True).get("launch")
    except Exception:  # noqa: BLE001 - no readable checkpoint: nothing to resume automatically
        return None


class _Lock:
    """A held run-folder lock: the lockf lock on .lock and this process's claim on the folder."""

    def __init__(self, fd: int, key: tuple[int, int]):
        self.fd, self.key = fd, key

    def close(self) -> None:
        if self.fd is not None:
            _HELD.discard(self.key)
            os.close(self.fd)  # releases the lockf lock
            self.fd = None


# Folders (device, inode) this process holds: lockf locks are per process, so a second
# lock() in the same process would succeed and its close would release the first.
_HELD: set[tuple[int, int]] = set()


def lock(out: Path) -> _Lock | None:
    """Hold out/.lock for the whole run: a second `mobilenet train` on the same folder is
    refused, from another process or this one. The kernel releases the lock when the
    process ends, even by kill -9, so a killed run never blocks the next one. A POSIX record
    lock (lockf), not flock: forked DataLoader workers do not inherit it, so they cannot
    hold it after a kill -9. .lock is opened without following a link."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return None
    st = os.stat(out)
    key = (st.st_dev, st.st_ino)
    if key in _HELD:
        raise MobileNetError(f"{out} is in use by another run in this process; wait for it, or choose another --out")
    fd = open_lock_file(out / ".lock")
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise MobileNetError(f"{out} is in use by another `mobilenet train`; wait for it, stop it, "
                             "or choose another --out") from None
    _HELD.add(key)
    return _Lock(fd, key)


def refuse_links(out: Path) -> None:
    """One clear error if a file or sub-folder of the run folder (or of its tensorboard/) is
    a symbolic link: we write only into files of our own."""
    for folder in (out, out / "tensorboard"):  # out itself may be a link: the user named it
        if folder != out and not folder.is_dir():
            continue  # no tensorboard/ yet (a link to one was refused as an entry of out)
        with os.scandir(folder) as entries:
            link = next((e for e in entries if e.is_symlink()), None)
        if link is not None:
            raise MobileNetError(f"--out {out}: {printable(Path(link.path).relative_to(out))} is a symbolic link; "
                                 "a run folder's files must be its own (remove the link, or choose another --out)")


def read_config(model_dir) -> ModelInfo:
    """config.json of a model folder, checked: one clear error if missing or corrupt."""
    path = Path(model_dir) / CONFIG
    if not Path(model_dir).is_dir():
        raise MobileNetError(f"--model {model_dir}: no such folder; give a folder made by `mobilenet train`")
    try:
        found = load_json_object(path, "--model", "retrain or re-export the model")
        version = found.get("format_version", 0)  # config.json has kept its form since format 0
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise MobileNetError(f"{path} is of format {printable(str(version))}, and this mobilenet reads up to "
                                 f"{FORMAT_VERSION}; use the mobilenet that wrote it, or a newer one")
        info = ModelInfo.from_json(found)
    except FileNotFoundError:
        raise MobileNetError(f"{path} not found; a model folder holds config.json and model.safetensors") from None
    except (KeyError, TypeError, ValueError) as e:
        detail = f"missing {e}" if isinstance(e, KeyError) else (str(e).splitlines() or [type(e).__name__])[0]
        raise MobileNetError(f"{path} is not a valid model config ({detail}); retrain or re-export the model") from None
    return info


def load_model(model_dir) -> tuple[MobileNetV1, ModelInfo]:
    """The model of a folder, in eval mode, and what its config.json says."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    info = read_config(model_dir)
    path = Path(model_dir) / WEIGHTS
    try:
        state = load(read_regular(path, weights_limit(info.model), "--model"))
        _check_shapes(state, info.model)  # before the model is built: a config.json that lies allocates nothing
        model = MobileNetV1.from_config(info.model)
        model.load_state_dict(state, strict=True)
    except FileNotFoundError:
        raise MobileNetError(f"{path} not found; train the model first or copy its weights there") from None
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        detail = first_line(e)
        raise MobileNetError(f"{path} does not hold this model's weights ({detail})") from None
    # channels_last, as in training: about 2× faster on CPU for the same results.
    return model.eval().to(memory_format=torch.channels_last), info


def _check_shapes(state: dict, config: MobileNetConfig) -> None:
    """ValueError unless the first conv and the classifier of `state` have the shapes
    config.json implies."""
    expected = {"features.conv1.0.weight": [channels(TABLE1[0][2], config.width_mult), config.in_channels, 3, 3],
                "classifier.weight": [config.num_classes, channels(TABLE1[-1][2], config.width_mult)]}
    for name, shape in expected.items():
        got = list(state[name].shape) if name in state else None
        if got != shape:
            raise ValueError(f"{name} is {got}, config.json asks for {shape}")


def check_archive(data: bytes, path: Path, what: str) -> None:
    """Refuse a torch zip archive (the bytes of `path`) with compressed entries before
    torch.load reads it: torch.save stores every entry as it is, and a deflated one may
    expand far beyond the file (2 MB to 512 MiB). Other files are left to torch.load."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            packed = next((i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED), None)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    if packed is not None:
        raise MobileNetError(f"{what} {path}: {printable(packed)} is compressed, which torch.save never does, "
                             "so the file was not written by torch; give a checkpoint saved by torch")
