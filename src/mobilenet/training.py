"""Training: `train(TrainConfig)` runs the loop, writes the run folder and resumes it.

A run folder holds: history.csv, total_acc.png, total_test_loss.png (the seed's two
figures), model.safetensors (best test accuracy) + config.json, checkpoint.pt (resume
state, loaded only with weights_only=True), train.log, and TensorBoard scalars when
tensorboard is installed. All but the appended train.log and TensorBoard's own event
files are written atomically (files.py).

Determinism: the shuffle of each epoch and the augmentation of each step are seeded by
(seed, epoch, step), so a resumed run repeats an uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import AUGMENTATIONS, FASHION_MNIST, _mix, open_source
from .errors import Interrupted, MobileNetError
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text, make_dir, remove_unfinished
from .model import MobileNetConfig, MobileNetV1
from .plots import plot_curves

# Defaults chosen by measurement; the README's "Choosing the defaults" has the numbers.
FASHION_RESOLUTION = 64  # 28×28 upsampled to 64×64: the best of 32, 48, 64 measured (README)
FOLDER_RESOLUTION = 224  # the paper's input size
LR = {"sgd": 0.1, "rmsprop": 0.01, "adamw": 2e-3}  # at batch 128; scaled linearly with batch
WARMUP_EPOCHS = 1

HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds",
                  "images_per_s", "bad_files"]


@dataclass
class TrainConfig:
    data: str = FASHION_MNIST  # 'fashion-mnist' or a folder, one sub-folder per class
    epochs: int = 50  # the seed's budget
    width_mult: float = 1.0  # α
    resolution: int | None = None  # ρ; None: FASHION_RESOLUTION or FOLDER_RESOLUTION
    batch_size: int = 64
    lr: float | None = None  # None: LR[optimizer] × batch_size / 128
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9), rmsprop (the paper's), adamw
    weight_decay: float = 4e-5  # TF-slim's; not applied to depthwise filters, BN or biases (paper §3.2)
    init: str | None = None  # start from weights: timm:NAME, a timm checkpoint, or a model.safetensors
    augment: str = "flip-shift"  # flip-shift (random flips, 2-pixel shifts or crops), flip, none
    dropout: float = 0.0
    activation: str = "relu"
    seed: int = 0
    out: str | None = None  # None: runs/<dataset>-<timestamp>
    limit: int | None = None  # train on only this many images
    val_split: float = 0.2  # held out of a folder without train/ and val/
    strict: bool = False  # a file that does not decode stops the run
    workers: int | None = None  # DataLoader workers for folders (None: up to 4)
    device: str = "auto"  # auto, cpu, cuda

    def validate(self) -> None:
        checks = [
            ("--epochs", self.epochs, 1, 100_000), ("--batch-size", self.batch_size, 2, 65_536),
            ("--seed", self.seed, 0, 2**63 - 1),
        ]
        for name, value, low, high in checks:
            if not (isinstance(value, int) and low <= value <= high):
                raise MobileNetError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
        if self.limit is not None and not (isinstance(self.limit, int) and self.limit >= 2):
            raise MobileNetError(f"--limit must be a whole number of at least 2, got {self.limit!r}")
        if self.optimizer not in LR:
            raise MobileNetError(f"--optimizer must be one of {', '.join(LR)}, got {self.optimizer!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise MobileNetError(f"--lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise MobileNetError(f"--weight-decay must be 0 or more, got {self.weight_decay!r}")
        if self.augment not in AUGMENTATIONS:
            raise MobileNetError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise MobileNetError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise MobileNetError("--device cuda: no CUDA device is available here; use --device cpu")
        if self.data != FASHION_MNIST and not Path(self.data).is_dir():
            raise MobileNetError(f"--data {self.data}: no such folder; give a folder with one sub-folder per class, "
                                 "or 'fashion-mnist'")


class TrainingStopped(MobileNetError):
    """The run stopped early (NaN loss or a signal); its last checkpoint is intact."""


def default_out(data: str) -> Path:
    name = FASHION_MNIST if data == FASHION_MNIST else Path(data).resolve().name
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _optimizer(model: MobileNetV1, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    # Very little or no weight decay on the depthwise filters (paper §3.2), none on BN or biases.
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            depthwise = isinstance(module, torch.nn.Conv2d) and module.groups > 1
            (no_decay if p.ndim <= 1 or depthwise else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "rmsprop":  # TF's RMSprop settings, as the paper trained
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1.0, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def _schedule(optimizer, steps_per_epoch: int, epochs: int):
    """Linear warm-up over the first epoch, then cosine decay to zero, per step."""
    warmup, total = WARMUP_EPOCHS * steps_per_epoch, epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _StopRequested(Exception):
    """A signal came during evaluation: stop before the next test batch."""


def _evaluate(model, source, device, batch_size: int, dist: "_Dist", signals=None) -> dict:
    """Test loss and accuracy; under torchrun each process takes a disjoint share and the
    sums are all-reduced, so every test image counts exactly once. In a single process a
    signal stops it between two batches (under torchrun the processes finish it together)."""
    model.eval()
    loss_sum, correct, seen, bad = 0.0, 0, 0, []
    with torch.inference_mode():
        for batch in source.test_batches(batch_size, dist.rank, dist.world):
            if signals and signals.received and dist.world == 1:
                raise _StopRequested
            bad += batch.bad_files
            if not len(batch.labels):
                continue
            logits = model(batch.images.to(device, memory_format=torch.channels_last))
            labels = batch.labels.to(device)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
    loss_sum, correct, seen, bad_count = dist.sum(loss_sum, correct, seen, len(bad))
    if not seen:
        raise MobileNetError(f"the test split of {source.name} has no readable images")
    return {"test_loss": loss_sum / seen, "test_acc": correct / seen, "bad": bad, "bad_count": int(bad_count),
            "images": int(seen)}


class _Dist:
    """This process's place under torchrun (rank, world size), or a single process.

    Started by torchrun, WORLD_SIZE, RANK and LOCAL_RANK are set: DistributedDataParallel
    over gloo on CPU, NCCL on GPU (one GPU per process)."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local}" if cuda and self.world > 1 else ("cuda" if cuda else "cpu"))
        self.local_rank, self.started = local, False
        if self.world > 1 and not torch.distributed.is_initialized():
            if cuda:
                torch.cuda.set_device(local)
            # Our own key prefix per torchrun attempt: after a restart, the new group must
            # not read the dead workers' addresses (seen with gloo on torch 2.14).
            agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            store = torch.distributed.TCPStore(
                os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500")),
                None if agent else self.world, is_master=not agent and self.rank == 0)
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            torch.distributed.init_process_group(
                "nccl" if cuda else "gloo", store=torch.distributed.PrefixStore(f"mobilenet/attempt_{attempt}", store),
                rank=self.rank, world_size=self.world)
            self.started = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes (the values themselves when alone)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def from_main(self, *values: float) -> list[float]:
        """Rank 0's values, on every rank: decisions all ranks must share."""
        if self.world == 1:
            return list(values)
        return self.sum(*(values if self.main else [0.0] * len(values)))

    def close(self) -> None:
        if self.started:
            torch.distributed.destroy_process_group()


class _Signals:
    """First SIGINT/SIGTERM: stop after the current step (or test batch, or the epoch's
    files) and save. Second: stop now."""

    def __init__(self):
        self.received = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def agreed(self, dist: "_Dist") -> bool:
        """Whether to stop now; under torchrun all processes stop when one was signalled."""
        if dist.world > 1 and dist.sum(float(self.received is not None))[0] > 0:
            self.received = self.received or "a signal to another process"
        return self.received is not None

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# What a run writes into its folder (atomically, see files.py).
RUN_FILES = ("checkpoint.pt", "model.safetensors", "config.json", "history.csv", "total_acc.png", "total_test_loss.png")


def _continue(out: Path) -> str:
    return f"Continue with: mobilenet train --out {out} --resume"


def _write_history(history: list[dict], out: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in HISTORY_FIELDS})
    atomic_write_text(out / "history.csv", buf.getvalue())


def save_model(model: MobileNetV1, out: Path, info: dict) -> None:
    """model.safetensors + config.json: all that predict, evaluate and export need."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", save(state, metadata={"format": "mobilenet-v1"}))
    atomic_write_json(out / "config.json", {"model": model.config.to_dict(), **info})


def _lock(out: Path):
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


def _launch() -> str:
    """Names this torchrun launch (its agent process and run id); '' outside torchrun."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return ""
    return f"{os.environ['TORCHELASTIC_RUN_ID']}:{os.getppid()}"


def _checkpoint_launch(out: Path) -> str | None:
    try:
        return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True).get("launch")
    except Exception:  # noqa: BLE001 - no readable checkpoint: nothing to resume automatically
        return None


def _load_checkpoint(path: Path) -> dict:
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


def train(cfg: TrainConfig, resume: bool = False, log=print, progress: bool = False) -> dict:
    """Train MobileNet V1 as `cfg` says; returns a summary. See the module docstring.

    resume=True continues the run in cfg.out with the settings it was started with; only
    cfg.epochs and cfg.lr (when not None: to extend a run, or to calm one that diverged),
    cfg.device and cfg.workers are taken from `cfg`.
    `log` receives the one-line messages; `progress` shows a tqdm bar per epoch.
    """
    if not cfg.out and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MobileNetError("under torchrun, give --out DIR: every process and every restart must find the same folder")
    if not resume:
        cfg.validate()  # before any folder is made: a bad argument leaves nothing behind
    out = Path(cfg.out) if cfg.out else default_out(cfg.data)
    dist = _Dist(cfg.device)
    try:
        # After torchrun --max-restarts restarts this launch, go on from its own checkpoint.
        # Rank 0 decides for all; a checkpoint of another launch still needs --resume.
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        resume = bool(dist.from_main(float(resume or (restarted and _launch() == _checkpoint_launch(out))))[0])
        if resume and not (out / "checkpoint.pt").exists():
            raise MobileNetError(f"--resume: {out / 'checkpoint.pt'} not found; start a new run without --resume")
        make_dir(out)
    except BaseException:
        dist.close()
        raise
    lock = None
    try:
        lock = _lock(out) if dist.main else None  # the other ranks share rank 0's folder
        if lock and remove_unfinished(out, RUN_FILES):  # the lock makes us the folder's only writer
            log(f"removed the unfinished temporary files of an interrupted run in {out}")
        return _train(cfg, out, resume, log if dist.main else (lambda _: None), progress and dist.main, dist)
    except KeyboardInterrupt:  # a second Ctrl-C (or one before training began): stop now
        saved = (out / "checkpoint.pt").exists()
        raise Interrupted("interrupted at once; " + (f"{out} keeps its last checkpoint. {_continue(out)}"
                                                     if saved else "nothing was saved yet")) from None
    finally:
        if lock:
            lock.close()
        dist.close()


def _train(cfg: TrainConfig, out: Path, resume: bool, log, progress: bool, dist: _Dist) -> dict:
    ckpt_path = out / "checkpoint.pt"
    state = None
    if resume:
        state = _load_checkpoint(ckpt_path)
        saved = TrainConfig(**{k: v for k, v in state["train_config"].items() if k in {f.name for f in fields(TrainConfig)}})
        saved.epochs = cfg.epochs or saved.epochs  # a resumed run may be extended
        saved.lr = cfg.lr or saved.lr
        saved.out, saved.device, saved.workers = str(out), cfg.device, cfg.workers
        cfg = saved
    elif dist.from_main(float(ckpt_path.exists()))[0]:  # every rank refuses together
        raise MobileNetError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
    cfg.validate()

    device = dist.device if dist.world > 1 else _device(cfg.device)
    resolution = cfg.resolution or (FASHION_RESOLUTION if cfg.data == FASHION_MNIST else FOLDER_RESOLUTION)
    source = open_source(cfg.data, resolution, cfg.seed, cfg.limit, cfg.val_split, cfg.workers, cfg.augment)
    init_state = None
    if cfg.init and state is None:
        from .weights import load_init
        init_state, activation = load_init(cfg.init)
        cfg.activation = activation or cfg.activation  # kept in the checkpoint for --resume
    model_cfg = MobileNetConfig(num_classes=len(source.classes), width_mult=cfg.width_mult, resolution=resolution,
                                in_channels=source.in_channels, dropout=cfg.dropout, activation=cfg.activation)
    torch.manual_seed(cfg.seed)
    model = MobileNetV1.from_config(model_cfg)
    if init_state is not None:
        from .weights import fit_state_dict
        model.load_state_dict(fit_state_dict(init_state, model), strict=False)  # the classifier may stay fresh
        log(f"initialised from {cfg.init} (activation {cfg.activation})")
    # channels_last: about 2× faster depthwise convs on CPU (benchmarks/), and the Tensor Core layout on GPU.
    model = model.to(device, memory_format=torch.channels_last)
    net = model  # what the step runs: the model itself, or its DistributedDataParallel wrapper
    if dist.world > 1:
        if device.type == "cuda":  # SyncBatchNorm runs on CUDA only
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # --batch-size is per process; the learning rate follows the global batch linearly (Goyal et al. 2017).
    lr = cfg.lr or LR[cfg.optimizer] * cfg.batch_size * dist.world / 128
    optimizer = _optimizer(model, cfg, lr)
    steps = source.steps_per_epoch(cfg.batch_size, dist.world)
    if steps == 0:
        raise MobileNetError(f"{source.name} has too few training images for one batch")
    scheduler = _schedule(optimizer, steps, cfg.epochs)
    # Mixed precision on GPU: bf16 where supported, else fp16 with a GradScaler. CPU: float32.
    amp = None
    if device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    info = {"classes": source.classes, "input": source.input_spec(), "data": source.provenance()}

    history, best_acc, start_epoch, start_step, partial = [], -1.0, 0, 0, None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise MobileNetError(f"--resume: {ckpt_path} does not fit this run ({str(e).splitlines()[0][:160]}); "
                                 "start a new run in another --out folder") from None
        if scheduler.base_lrs[0] != lr:  # a new --lr on resume: same schedule, new peak
            scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
            for group in optimizer.param_groups:
                group["lr"] = lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
        history, best_acc = list(state["history"]), state["best_acc"]
        start_epoch, start_step, partial = state["epoch"], state["step"], state.get("partial")
        torch.set_rng_state(state["rng"])
        log(f"resuming {out} at epoch {start_epoch + 1}" + (f", step {start_step}" if start_step else ""))
    if history and dist.main:  # redraw what the checkpoint knows, in case a kill came between files
        _write_history(history, out)
        plot_curves(history, out)
    if dist.main and not (out / "config.json").exists():
        atomic_write_json(out / "config.json", {"model": model_cfg.to_dict(), **info})

    args = asdict(cfg)  # stored in the checkpoint, so --resume needs nothing else
    args["data"] = cfg.data if cfg.data == FASHION_MNIST else source.name  # absolute: resume from anywhere
    tb = _tensorboard(out) if dist.main else None
    try:
        run_log = open(out / "train.log", "a", encoding="utf-8") if dist.main else None
    except OSError as e:
        raise MobileNetError(f"--out {out}: cannot write train.log ({e.strerror}); choose a writable folder") from None

    def note(line: str, err: bool = False) -> None:
        (print(line, file=sys.stderr) if err else log(line))
        if run_log:
            try:
                run_log.write(line + "\n")
                run_log.flush()
            except OSError as e:  # a full disk: say so; the checkpoint written before is intact
                raise MobileNetError(f"cannot write {out / 'train.log'}: {e.strerror}") from None

    def checkpoint(epoch: int, step: int, partial_state) -> None:
        if not dist.main:  # only rank 0 writes files
            return
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "epoch": epoch, "step": step, "partial": partial_state,
                    "history": history, "best_acc": best_acc, "rng": torch.get_rng_state(),
                    "train_config": args, "launch": _launch()}, buf)
        atomic_write_bytes(ckpt_path, buf.getvalue())

    total_bad = 0
    try:
        with _Signals() as signals:  # from here a first signal means "save and stop"
            log(f"training MobileNet V1 α={cfg.width_mult} ρ={resolution} on {source.name}: "
                f"{source.num_train} train / {source.num_test} test images, {len(source.classes)} classes, "
                f"{cfg.optimizer} lr {lr:g}, batch {cfg.batch_size}" + (f" × {dist.world} processes" if dist.world > 1 else "")
                + f", {cfg.epochs} epochs, {device.type}; out {out}")
            for epoch in range(start_epoch, cfg.epochs):
                from tqdm import tqdm

                model.train()
                # (after a mid-epoch stop rank 0 holds the all-reduced sums, the others start at 0)
                sums = (partial or {}).get("sums", (0.0, 0, 0, 0, 0.0)) if dist.main else (0.0, 0, 0, 0, 0.0)
                loss_sum, correct, seen, bad, seconds = sums
                began = time.perf_counter() - seconds
                bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           disable=not progress, leave=False, mininterval=1.0, dynamic_ncols=True)
                batches = source.train_batches(epoch, cfg.batch_size, start_step, dist.rank, dist.world)
                for step, batch in enumerate(batches, start_step):
                    for line in batch.bad_files:
                        if cfg.strict:
                            raise MobileNetError(f"{line} (--strict: remove the file or drop --strict)")
                        note(f"skipped {line}", err=True)
                    bad += len(batch.bad_files)
                    usable = len(batch.labels) >= 2  # BatchNorm needs two images
                    if dist.world > 1:  # every rank steps, or none: DDP's collectives must pair up
                        usable = dist.sum(float(usable))[0] == dist.world
                    if usable:
                        torch.manual_seed(_mix(cfg.seed, epoch, step, 1))  # dropout, if any
                        x = batch.images.to(device, non_blocking=True, memory_format=torch.channels_last)
                        y = batch.labels.to(device, non_blocking=True)
                        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                            logits = net(x)
                        loss = F.cross_entropy(logits.float(), y)
                        diverged = not torch.isfinite(loss)
                        if dist.world > 1:  # every rank stops together
                            diverged = dist.sum(float(diverged))[0] > 0
                        if diverged:
                            value = loss.item() if not torch.isfinite(loss) else "non-finite in another process"
                            raise TrainingStopped(
                                f"loss became {value} at epoch {epoch + 1}, step {step + 1}: training "
                                f"diverged; lower --lr (it was {lr:g}). The last good checkpoint is in {out}")
                        optimizer.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                        loss_sum += loss.item() * len(y)
                        correct += (logits.argmax(1) == y).sum().item()
                        seen += len(y)
                    scheduler.step()
                    elapsed = time.perf_counter() - began
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{100 * correct / max(seen, 1):.1f}%",
                                    img_s=f"{seen / max(elapsed, 1e-9):.0f}", refresh=False)
                    if signals.agreed(dist):
                        partial_state = {"sums": tuple(dist.sum(loss_sum, correct, seen, bad)) + (elapsed,)}
                        checkpoint(epoch, step + 1, partial_state)
                        raise Interrupted(f"stopped by {signals.received} at epoch {epoch + 1}, step {step + 1}; "
                                          f"saved. {_continue(out)}")
                bar.close()
                start_step, partial = 0, None
                train_seconds = time.perf_counter() - began
                loss_sum, correct, seen, bad = dist.sum(loss_sum, correct, seen, bad)
                correct, seen, bad = int(correct), int(seen), int(bad)
                try:
                    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                        ev = _evaluate(model, source, device, max(cfg.batch_size, 256), dist, signals)
                except _StopRequested:  # save the trained epoch; --resume evaluates it
                    checkpoint(epoch, steps, {"sums": (loss_sum, correct, seen, bad, train_seconds)})
                    raise Interrupted(f"stopped by {signals.received} while evaluating epoch {epoch + 1}; "
                                      f"saved. {_continue(out)}") from None
                for line in ev["bad"]:
                    note(f"skipped {line}", err=True)
                bad += ev["bad_count"]  # every process's, where the lines above are this one's
                total_bad += bad
                row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                       "test_loss": ev["test_loss"], "test_acc": ev["test_acc"],
                       "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - began,
                       "images_per_s": seen / max(train_seconds, 1e-9), "bad_files": bad}
                history.append(row)
                if row["test_acc"] > best_acc:
                    best_acc = row["test_acc"]
                    if dist.main:
                        save_model(model, out, info)
                if dist.main:
                    _write_history(history, out)
                    plot_curves(history, out)
                checkpoint(epoch + 1, 0, None)  # the commit point of the epoch
                if tb:  # after it: a resumed run never logs an epoch twice
                    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
                        tb.add_scalar(key, row[key], row["epoch"])
                    tb.flush()
                note(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc "
                     f"{100 * row['train_acc']:.2f}%  test loss {row['test_loss']:.4f} acc "
                     f"{100 * row['test_acc']:.2f}%  lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s  "
                     f"{row['seconds']:.1f}s" + (f"  {bad} files skipped" if bad else ""))
                if epoch + 1 < cfg.epochs and signals.agreed(dist):  # came after the evaluation
                    raise Interrupted(f"stopped by {signals.received} after epoch {epoch + 1}; saved. {_continue(out)}")
    finally:
        if run_log:
            run_log.close()
        if tb:
            tb.close()
    best = max(history, key=lambda h: h["test_acc"])
    summary = {"out": str(out), "epochs": len(history), "best_epoch": best["epoch"], "best_test_acc": best["test_acc"],
               "final_test_acc": history[-1]["test_acc"], "final_test_loss": history[-1]["test_loss"],
               "seconds": sum(h["seconds"] for h in history), "bad_files": total_bad}
    log(f"done: best test accuracy {100 * best['test_acc']:.2f}% at epoch {best['epoch']}; "
        f"final test loss {history[-1]['test_loss']:.4f}; model in {out / 'model.safetensors'}")
    return summary


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    try:
        return SummaryWriter(str(out / "tensorboard"))
    except OSError as e:
        raise MobileNetError(f"--out {out}: cannot write the tensorboard folder ({e.strerror}); "
                             "move what is in the way or choose another --out") from None
