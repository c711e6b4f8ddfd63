"""Training: `train(TrainConfig)` runs the loop and resumes it. The loop is in named parts,
as torchvision's reference scripts have them: _build, _train_one_epoch, _evaluate_epoch,
_end_epoch; _train reads as the table of contents of a run. The run folder's files are
run_folder's; torchrun and signals are distributed's.

Determinism: the shuffle of each epoch and the augmentation of each step are seeded by
(seed, epoch, step), so a resumed run repeats an uninterrupted one exactly on CPU; seeds.py
lists every seed a run draws.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import COMPILE_MODES, EVAL_BATCH_SIZE
from .augment import FASHION_PRESET, PRESETS, random_erasing
from .data import FASHION_MNIST, open_source
from .distributed import Dist, Signals, launch
from .errors import Interrupted, MobileNetError, printable
from .evaluation import torch_logits
from .files import make_dir, open_append, remove_unfinished
from .metrics import EvaluationStopped, Metrics, evaluate_batches
from .model import MobileNetConfig, MobileNetV1
from .model_info import ModelInfo
from .plots import plot_curves
from .progress import Heartbeat, bar as progress_bar, show as show_progress
from .run_folder import (
    RUN_FILES, checkpoint_launch, default_out, load_checkpoint, lock, refuse_links, resume_hint, save_checkpoint,
    save_model, write_config, write_history,
)
from .seeds import DROPOUT, ERASING, generator, mix
from .train_config import LR, TrainConfig

# Defaults chosen by measurement; docs/training.md's "How the defaults were chosen" has the numbers.
FASHION_RESOLUTION = 64  # 28×28 upsampled to 64×64: the best of 32, 48, 64 measured (docs/results.md)
FOLDER_RESOLUTION = 224  # the paper's input size
WARMUP_EPOCHS = 1
AUGMENT_GAP = 0.15  # training accuracy this far below validation (halfway) draws a warning
SYNC_EVERY = 50  # training steps between reads of the device's sums (progress bar, non-finite loss)
FASHION_ERASING = 0.5  # --random-erasing's default on Fashion-MNIST; folders: 0 (benchmarks/recipe.py)
OLD_DEFAULTS = {"ema": None, "random_erasing": 0.0}  # what checkpoints without these keys ran with


class TrainingStopped(MobileNetError):
    """The run stopped early (NaN loss or a signal); its last checkpoint is intact."""


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


def train(cfg: TrainConfig, resume: bool = False, log=print, progress: bool = False) -> dict:
    """Train MobileNet V1 as `cfg` says; returns a summary. See the module docstring.

    resume=True continues the run in cfg.out with the settings it was started with; only
    cfg.epochs and cfg.lr (when not None: to extend a run, or to calm one that diverged),
    cfg.device, cfg.workers and cfg.compile are taken from `cfg`.
    `log` receives the one-line messages; `progress` shows a tqdm bar per epoch.
    """
    if not cfg.out and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MobileNetError("under torchrun, give --out DIR: every process and every restart must find the same folder")
    if not resume:
        cfg.validate()  # before any folder is made: a bad argument leaves nothing behind
    out = Path(cfg.out) if cfg.out else default_out(cfg.data)
    log = _escaped(log)
    dist = Dist(cfg.device)
    if not dist.main:
        show_progress(False)  # one process speaks for the run
    try:
        # After torchrun --max-restarts restarts this launch, go on from its own checkpoint.
        # Rank 0 decides for all; a checkpoint of another launch still needs --resume.
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        resume = bool(dist.from_main(float(resume or (restarted and launch() == checkpoint_launch(out))))[0])
        if resume and not (out / "checkpoint.pt").exists():
            raise MobileNetError(f"--resume: {out / 'checkpoint.pt'} not found; start a new run without --resume")
        make_dir(out)
    except BaseException:
        dist.close()
        raise
    held = None
    try:
        held = lock(out) if dist.main else None  # the other ranks share rank 0's folder
        if dist.main:
            refuse_links(out)  # before anything in it is read or written
        if held and remove_unfinished(out, RUN_FILES):  # the lock makes us the folder's only writer
            log(f"removed the unfinished temporary files of an interrupted run in {out}")
        return _train(cfg, out, resume, log if dist.main else (lambda _: None), progress and dist.main, dist)
    except KeyboardInterrupt:  # a second Ctrl-C (or one before training began): stop now
        saved = (out / "checkpoint.pt").exists()
        raise Interrupted("interrupted at once; " + (f"{out} keeps its last checkpoint. {resume_hint(out)}"
                                                     if saved else "nothing was saved yet")) from None
    finally:
        if held:
            held.close()
        dist.close()


def _escaped(log):
    """`log` with control characters escaped: paths and class names come from folders we did not make."""
    return lambda line: log(printable(line))


@dataclass
class _Run:
    """What a run holds while it trains: made by _build, moved on by each epoch."""
    cfg: TrainConfig
    out: Path
    dist: Dist
    log: Callable
    source: object
    model: MobileNetV1
    net: torch.nn.Module  # what a step runs: the model, or its DistributedDataParallel wrapper
    device: torch.device
    amp: torch.dtype | None
    lr: float
    steps: int
    optimizer: torch.optim.Optimizer = None
    ema: torch.optim.swa_utils.AveragedModel | None = None  # --ema: the averaged weights
    eval_models: list = field(default_factory=list)  # evaluation's: the model, then the EMA (compiled with --compile)
    scheduler: object = None
    scaler: torch.amp.GradScaler = None
    info: ModelInfo = None  # what config.json says
    args: dict = field(default_factory=dict)  # the TrainConfig stored in the checkpoint
    history: list = field(default_factory=list)
    best_acc: float = -1.0
    best_val: float = -1.0  # with --val-split: the kept epoch's validation accuracy
    since_best: int = 0  # epochs since it
    kept_epoch: int = 0  # the epoch whose weights model.safetensors holds
    start_epoch: int = 0
    start_step: int = 0
    partial: dict | None = None  # a stopped epoch's sums
    train_log: object = None
    tb: object = None
    total_bad: int = 0
    notes: list = field(default_factory=list)  # lines for the log and train.log from before train.log was open
    ema_updates: int = 0  # the EMA's count of updates, kept on the host (its n_averaged is the checkpoint's copy)
    first_nonfinite: torch.Tensor | None = None  # on the device: the epoch's first step with a non-finite loss, or -1


def _train(cfg: TrainConfig, out: Path, resume: bool, log, progress: bool, dist: Dist) -> dict:
    """The table of contents of a run."""
    cfg, state = _settings(cfg, out, resume, dist)
    run = _build(cfg, out, dist, log, fresh=state is None)
    if state is not None:
        _restore(run, state)
    elif cfg.augment == "auto":
        _choose_augmentation(run)
    _open_outputs(run)
    try:
        for line in run.notes:
            _note(run, line)
        with Signals() as signals:  # from here a first signal means "save and stop"
            log(_start_line(run))
            for epoch in range(run.start_epoch, cfg.epochs):
                if cfg.patience and run.since_best >= cfg.patience:
                    log(f"early stop before epoch {epoch + 1}: no better validation accuracy for {cfg.patience} epochs")
                    break
                sums = _train_one_epoch(run, epoch, signals, progress)
                _end_epoch(run, epoch, sums, _evaluate_epoch(run, epoch, sums, signals))
                if epoch + 1 < cfg.epochs and signals.agreed(dist):  # came after the evaluation
                    raise Interrupted(f"stopped by {signals.received} after epoch {epoch + 1}; saved. "
                                      f"{resume_hint(out)}")
    finally:
        _close_outputs(run)
    return _summary(run)


def _settings(cfg: TrainConfig, out: Path, resume: bool, dist: Dist) -> tuple[TrainConfig, dict | None]:
    """The run's settings: `cfg` for a new run; the checkpoint's, with what may change, on resume."""
    state = None
    if resume:
        state = load_checkpoint(out / "checkpoint.pt")
        args = dict(state["train_config"])
        if "test_split" not in args:  # runs before 2026-11-28 called the test hold-out val_split
            args["test_split"] = args.pop("val_split", 0.2)
        args = {**OLD_DEFAULTS, **args}  # runs from before these options had them off
        if "compile" not in args and args["data"] != FASHION_MNIST and args.get("augment") == "flip-shift":
            args["augment"] = "crop-flip"  # what a folder's flip-shift was before the presets
        saved = TrainConfig(**{k: v for k, v in args.items() if k in {f.name for f in fields(TrainConfig)}})
        if saved.data != FASHION_MNIST and not os.path.isabs(saved.data):  # ours are absolute (_build)
            raise MobileNetError(f"--resume: the checkpoint's data folder {saved.data!r} is not an absolute path, "
                                 "so this run was not written by `mobilenet train`; start a new run in another --out")
        if saved.data != FASHION_MNIST and not Path(saved.data).is_dir():
            raise MobileNetError(f"--resume: the run's data folder {saved.data} is gone; put it back to continue")
        saved.epochs = cfg.epochs or saved.epochs  # a resumed run may be extended
        saved.lr = cfg.lr or saved.lr
        saved.out, saved.device, saved.workers, saved.compile = str(out), cfg.device, cfg.workers, cfg.compile
        cfg = saved
    elif dist.from_main(float((out / "checkpoint.pt").exists()))[0]:  # every rank refuses together
        raise MobileNetError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
    if cfg.augment == "auto" and cfg.data == FASHION_MNIST:  # a folder's is its trial's (_build)
        cfg.augment = FASHION_PRESET
    if cfg.random_erasing is None:  # stored resolved, so a resume or a re-read config says what ran
        cfg.random_erasing = FASHION_ERASING if cfg.data == FASHION_MNIST else 0.0
    cfg.ema = cfg.ema or None
    cfg.validate()
    return cfg, state


def _build(cfg: TrainConfig, out: Path, dist: Dist, log, fresh: bool) -> _Run:
    """Data, model (maybe from --init), optimizer, schedule and precision for this run."""
    device = dist.device if dist.world > 1 else _device(cfg.device)
    resolution = cfg.resolution or (FASHION_RESOLUTION if cfg.data == FASHION_MNIST else FOLDER_RESOLUTION)
    source = open_source(cfg.data, resolution, cfg.seed, cfg.limit, cfg.test_split, cfg.workers, cfg.augment,
                         cfg.val_split)
    init_state = None
    if cfg.init and fresh:
        from .weights import load_init
        init_state, activation = load_init(cfg.init)
        cfg.activation = activation or cfg.activation  # kept in the checkpoint for --resume
    if hasattr(source, "to"):  # in memory: held on the device, batches made there
        source.to(device)
    if getattr(source, "skipped", 0):
        log(f"skipped {source.skipped} entries of {source.name}: links that leave it, or no regular file")
    model = _model(cfg, source, resolution, init_state, log)
    _check_batch_memory(cfg.batch_size, model.config, source.num_train // dist.world, device)
    # channels_last: about 2× faster depthwise convs on CPU (benchmarks/), and the Tensor Core layout on GPU.
    model = model.to(device, memory_format=torch.channels_last)
    net = model
    if dist.world > 1:
        if device.type == "cuda":  # SyncBatchNorm runs on CUDA only
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile != "off":  # the step's forward and backward; run.model stays the module we save
        net = torch.compile(net, mode=COMPILE_MODES[cfg.compile])
    # --batch-size is per process; the learning rate follows the global batch linearly (Goyal et al. 2017).
    lr = cfg.lr or LR[cfg.optimizer] * cfg.batch_size * dist.world / 128
    steps = source.steps_per_epoch(cfg.batch_size, dist.world)
    if steps == 0:
        raise MobileNetError(f"{source.name} has too few training images for one batch")
    # Mixed precision on GPU: bf16 where supported, else fp16 with a GradScaler. CPU: float32.
    amp = None
    if device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    run = _Run(cfg, out, dist, log, source, model, net, device, amp, lr, steps)
    run.optimizer = _optimizer(model, cfg, lr)
    if cfg.ema:  # BN's running statistics averaged too (use_buffers), so the EMA evaluates as it is
        run.ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=_ema_with_warmup(cfg.ema), use_buffers=True)
    run.eval_models = [model] + ([run.ema.module] if run.ema is not None else [])
    if cfg.compile != "off":
        run.eval_models = [torch.compile(m, mode=COMPILE_MODES[cfg.compile]) for m in run.eval_models]
    run.scheduler = _schedule(run.optimizer, steps, cfg.epochs)
    run.scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    run.info = ModelInfo(source.classes, source.input_spec(), model.config, source.provenance(), {"preset": cfg.augment})
    run.args = asdict(cfg)  # stored in the checkpoint, so --resume needs nothing else
    run.args["data"] = cfg.data if cfg.data == FASHION_MNIST else source.name  # absolute: resume from anywhere
    return run


ACTIVATION_BYTES = 8  # per element of every layer's output: autograd keeps the conv's and the (in-place) ReLU's


def _check_batch_memory(batch_size: int, model_config: MobileNetConfig, images: int, device: torch.device) -> None:
    """One clear line for a batch whose activations (Table 1's shapes, the least a step
    keeps for its backward pass) exceed the machine's memory, before anything is allocated."""
    if device.type != "cpu" or not hasattr(os, "sysconf"):
        return  # a GPU's limit is met in _step
    from .cost import layer_costs

    per_image = ACTIVATION_BYTES * sum(math.prod(layer.output_shape) for layer in layer_costs(model_config))
    need, have = per_image * min(batch_size, images), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise MobileNetError(f"--batch-size {batch_size}: one step needs at least {need / 1e9:,.0f} GB here, the machine "
                             f"has {have / 1e9:,.0f} GB; use --batch-size {max(2, int(have / 2 / per_image))} or less")


def _ema_with_warmup(decay: float):
    """swa_utils' EMA update, with decay min(decay, (1 + n) / (10 + n)) after n updates (as TF's
    ExponentialMovingAverage with num_updates): a short run's EMA is not stuck near the initial weights."""
    @torch.no_grad()
    def update(ema_params, params, n):
        if torch.is_floating_point(ema_params[0]):
            f = np.float32  # rounded as float32 tensors, as the runs before 2026-11-28 (afternoon) computed it
            torch._foreach_lerp_(ema_params, params, float(f(1) - min(f(1 + int(n)) / f(10 + int(n)), f(decay))))
        else:  # BN's num_batches_tracked: a count, not averaged
            torch._foreach_copy_(ema_params, params)
    return update


@torch.no_grad()
def _update_ema(run: _Run) -> None:
    """AveragedModel.update_parameters, less its host sync: on a GPU it copies its count
    n_averaged (a CPU tensor) to the device with a blocking copy every step. Here the count
    is run.ema_updates on the host, and only the averaging runs on the device."""
    averaged = [*run.ema.module.parameters(), *run.ema.module.buffers()]
    current = [*run.model.parameters(), *run.model.buffers()]
    if run.ema_updates == 0:
        torch._foreach_copy_(averaged, current)
    else:
        for floating in (True, False):
            pairs = [(a, c) for a, c in zip(averaged, current, strict=True) if torch.is_floating_point(a) == floating]
            if pairs:
                run.ema.multi_avg_fn(*map(list, zip(*pairs)), run.ema_updates)
    run.ema_updates += 1
    run.ema.n_averaged.fill_(run.ema_updates)  # what the checkpoint stores


def _model(cfg: TrainConfig, source, resolution: int, init_state, log) -> MobileNetV1:
    model_cfg = MobileNetConfig(num_classes=len(source.classes), width_mult=cfg.width_mult, resolution=resolution,
                                in_channels=source.in_channels, dropout=cfg.dropout, activation=cfg.activation)
    torch.manual_seed(cfg.seed)
    model = MobileNetV1.from_config(model_cfg)
    if init_state is not None:
        from .weights import fit_state_dict
        model.load_state_dict(fit_state_dict(init_state, model), strict=False)  # the classifier may stay fresh
        log(f"initialised from {cfg.init} (activation {cfg.activation})")
    return model


def _restore(run: _Run, state: dict) -> None:
    """Weights, optimizer, schedule, history and RNG from the checkpoint."""
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        if run.ema is not None:
            run.ema.load_state_dict(state["ema"])
            run.ema_updates = int(run.ema.n_averaged)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise MobileNetError(f"--resume: {run.out / 'checkpoint.pt'} does not fit this run "
                             f"({str(e).splitlines()[0][:160]}); start a new run in another --out folder") from None
    scheduler, lr = run.scheduler, run.lr
    if scheduler.base_lrs[0] != lr:  # a new --lr on resume: same schedule, new peak
        scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        for group in run.optimizer.param_groups:
            group["lr"] = lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
    run.history, run.best_acc = list(state["history"]), state["best_acc"]
    run.best_val, run.since_best = state.get("best_val", -1.0), state.get("since_best", 0)
    run.kept_epoch = state.get("kept_epoch", len(run.history))
    run.start_epoch, run.start_step, run.partial = state["epoch"], state["step"], state.get("partial")
    run.info.augment = state.get("augment") or run.info.augment  # with the trial's figures
    torch.set_rng_state(state["rng"])
    run.log(f"resuming {run.out} at epoch {run.start_epoch + 1}" + (f", step {run.start_step}" if run.start_step else ""))


def _choose_augmentation(run: _Run) -> None:
    """--augment auto on a folder: rank 0's trial (trial.py) picks the preset for every rank;
    the choice and its figures go to the log, config.json and the checkpoint."""
    from .trial import run_trial

    cfg, dist = run.cfg, run.dist
    record = (run_trial(run.source, run.model.config, run.lr, cfg.batch_size, run.steps * cfg.epochs, run.device,
                        run.amp) if dist.main else {"preset": "none"})  # the other ranks take rank 0's
    preset = PRESETS[int(dist.from_main(float(PRESETS.index(record["preset"])))[0])]
    cfg.augment = run.args["augment"] = preset  # --resume and a re-run take this
    run.source.set_augment(preset)
    run.info.augment = record
    run.notes.append(_choice_line(record))  # for the log and train.log, once it is open


def _choice_line(record: dict) -> str:
    if record["chosen_by"] == "fallback":
        return f"--augment auto: {record['preset']}, the mild preset for these images: {record['reason']}"
    trial = record["trial"]
    kept = ", ".join(f"{p} {100 * share:.0f}%" for p, share in trial["kept"].items())
    return (f"--augment auto: {record['preset']}, by a trial of {trial['steps']} steps on {trial['train_images']} "
            f"training images ({trial['seconds']:.1f}s), judged on {trial['val_images']} held-out training images: "
            f"{100 * trial['val_accuracy']['none']:.1f}% as they are; accuracy above chance kept by {kept}")


def _open_outputs(run: _Run) -> None:
    """Redraw what the checkpoint knows (a kill may have come between files); config.json
    first thing; train.log and TensorBoard opened for appending. Rank 0 only."""
    if not run.dist.main:
        return
    if run.history:
        write_history(run.history, run.out)
        plot_curves(run.history, run.out)
    if not (run.out / "config.json").exists():
        write_config(run.out, run.info)
    run.tb = _tensorboard(run.out)
    run.train_log = open_append(run.out / "train.log")  # never through a link


def _close_outputs(run: _Run) -> None:
    if run.train_log:
        run.train_log.close()
    if run.tb:
        run.tb.close()


def _note(run: _Run, line: str, err: bool = False) -> None:
    """A line for the user (stdout, or stderr for skipped files) and for train.log; a file
    name with a newline in it cannot add a line of its own."""
    line = printable(line)
    (print(line, file=sys.stderr) if err else run.log(line))
    if run.train_log:
        try:
            run.train_log.write(line + "\n")
            run.train_log.flush()
        except OSError as e:  # a full disk: say so; the checkpoint written before is intact
            raise MobileNetError(f"cannot write {run.out / 'train.log'}: {e.strerror}") from None


def _checkpoint(run: _Run, epoch: int, step: int, partial) -> None:
    if run.dist.main:  # only rank 0 writes files
        save_checkpoint(run.out, {
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "epoch": epoch, "step": step, "partial": partial, "history": run.history, "best_acc": run.best_acc,
            "best_val": run.best_val, "since_best": run.since_best, "kept_epoch": run.kept_epoch,
            "rng": torch.get_rng_state(), "train_config": run.args, "launch": launch(),
            "augment": run.info.augment})


def _start_line(run: _Run) -> str:
    cfg, source = run.cfg, run.source
    return (f"training MobileNet V1 α={cfg.width_mult} ρ={run.model.config.resolution} on {source.name}: "
            f"{source.num_train} train / {source.num_test} test images, {len(source.classes)} classes, "
            f"{cfg.optimizer} lr {run.lr:g}, batch {cfg.batch_size}"
            + (f" × {run.dist.world} processes" if run.dist.world > 1 else "")
            + f", {cfg.epochs} epochs, {run.device.type}; out {run.out}")


def _train_one_epoch(run: _Run, epoch: int, signals: Signals, progress: bool) -> dict:
    """One pass over the training images from run.start_step; the epoch's summed loss,
    correct, seen, bad files and seconds. A signal saves a partial checkpoint and stops.
    Loss and correct are summed on the device and read every SYNC_EVERY steps only: a
    GPU is never made to wait for the host within a step."""
    cfg, dist = run.cfg, run.dist
    run.model.train()
    # (after a mid-epoch stop rank 0 holds the all-reduced sums, the others start at 0)
    zero = (0.0, 0, 0, 0, 0.0)
    loss_sum, correct, seen, bad, seconds = (run.partial or {}).get("sums", zero) if dist.main else zero
    sums = torch.tensor([loss_sum, correct], dtype=torch.float64, device=run.device)
    run.first_nonfinite = torch.tensor(-1, device=run.device)
    began = time.perf_counter() - seconds
    desc = f"epoch {epoch + 1}/{cfg.epochs}"
    bar = progress_bar(total=run.steps, initial=run.start_step, desc=desc, enabled=progress, mininterval=1.0)
    heartbeat = Heartbeat(run.log, desc, run.steps, run.start_step, enabled=not progress)
    batches = run.source.train_batches(epoch, cfg.batch_size, run.start_step, dist.rank, dist.world)
    for step, batch in enumerate(batches, run.start_step):
        for line in batch.bad_files:
            if cfg.strict:
                raise MobileNetError(f"{line} (--strict: remove the file or drop --strict)")
            _note(run, f"skipped {line}", err=True)
        bad += len(batch.bad_files)
        images = _step(run, epoch, step, batch, sums)
        seen += images
        run.scheduler.step()
        bar.update(1)
        heartbeat.update(step + 1, images * dist.world)
        if (step + 1) % SYNC_EVERY == 0:
            _check_finite(run, epoch)
            loss_sum, correct = sums.tolist()
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{100 * correct / max(seen, 1):.1f}%",
                            img_s=f"{seen / max(time.perf_counter() - began, 1e-9):.0f}", refresh=False)
        if signals.agreed(dist):
            _check_finite(run, epoch)  # a diverged model is never saved
            partial = tuple(dist.sum(*sums.tolist(), seen, bad)) + (time.perf_counter() - began,)
            _checkpoint(run, epoch, step + 1, {"sums": partial})
            raise Interrupted(f"stopped by {signals.received} at epoch {epoch + 1}, step {step + 1}; "
                              f"saved. {resume_hint(run.out)}")
    bar.close()
    _check_finite(run, epoch)
    run.start_step, run.partial = 0, None
    train_seconds = time.perf_counter() - began
    loss_sum, correct, seen, bad = dist.sum(*sums.tolist(), seen, bad)
    return {"loss_sum": loss_sum, "correct": int(correct), "seen": int(seen), "bad": int(bad),
            "began": began, "train_seconds": train_seconds}


def _step(run: _Run, epoch: int, step: int, batch, sums: torch.Tensor) -> int:
    """One optimizer step on the batch; adds its summed loss and correct to `sums` (on the
    device) and returns its count of images (0 for a batch too small for BatchNorm). A
    non-finite loss is noted in run.first_nonfinite, for _check_finite."""
    dist = run.dist
    usable = len(batch.labels) >= 2  # BatchNorm needs two images
    if dist.world > 1 and not run.source.same_batches_on_every_rank:  # DDP's collectives must pair up
        usable = dist.sum(float(usable))[0] == dist.world
    if not usable:
        return 0
    torch.manual_seed(mix(run.cfg.seed, epoch, step, DROPOUT))  # dropout, if any
    x = batch.images.to(run.device, non_blocking=True)
    if run.cfg.random_erasing:  # seeded by (seed, epoch, step, rank), as the flips and shifts
        g = generator(x.device, run.cfg.seed, epoch, step, ERASING, dist.rank)
        x = random_erasing(x, run.cfg.random_erasing, g)
    x = x.contiguous(memory_format=torch.channels_last)
    y = batch.labels.to(run.device, non_blocking=True)
    with _out_of_memory(run), torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
        logits = run.net(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=run.cfg.label_smoothing)
    run.first_nonfinite = torch.where((run.first_nonfinite < 0) & ~torch.isfinite(loss), step, run.first_nonfinite)
    run.optimizer.zero_grad(set_to_none=True)
    with _out_of_memory(run):
        run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        _update_ema(run)
    sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()])
    return len(y)


def _check_finite(run: _Run, epoch: int) -> None:
    """Stop, on every process together, if a step since the last check had a non-finite
    loss (a host sync: called every SYNC_EVERY steps, before a checkpoint, at the epoch's end)."""
    step = int(run.first_nonfinite)
    elsewhere = run.dist.world > 1 and run.dist.sum(float(step >= 0))[0] > 0
    if step >= 0 or elsewhere:
        where = f"step {step + 1}" if step >= 0 else "a step of another process"
        raise TrainingStopped(f"loss became nan or infinite at epoch {epoch + 1}, {where}: training diverged; "
                              f"lower --lr (it was {run.lr:g}). The last good checkpoint is in {run.out}")


@contextmanager
def _out_of_memory(run: _Run):
    """A failed allocation in a step is one line naming --batch-size (torch.OutOfMemoryError
    on a GPU; on the CPU a RuntimeError from the allocator)."""
    try:
        yield
    except RuntimeError as e:
        if not isinstance(e, torch.OutOfMemoryError) and "allocate" not in str(e):
            raise
        raise MobileNetError(f"out of memory in a step of --batch-size {run.cfg.batch_size} on {run.device.type}; "
                             "use a smaller --batch-size") from None


def _evaluate_epoch(run: _Run, epoch: int, sums: dict, signals: Signals) -> dict:
    """Test loss and accuracy through metrics.evaluate_batches. Under torchrun each process
    takes a disjoint share and the sums are all-reduced, so every test image counts once. In
    a single process a signal stops it between two batches and saves the trained epoch."""
    dist, source = run.dist, run.source
    modules = [run.model] + ([run.ema.module] if run.ema is not None else [])
    dist.share_buffers(*modules)  # _validate, after this, scores the same weights
    for model in modules:
        model.eval()
    batches = source.test_batches(max(run.cfg.batch_size, EVAL_BATCH_SIZE), dist.rank, dist.world)
    try:
        found = evaluate_batches([torch_logits(m, run.device, run.amp) for m in run.eval_models], batches,
                                 len(source.classes),
                                 stop=lambda: signals.received is not None and dist.world == 1, desc="test",
                                 confusion=False)
    except EvaluationStopped:  # --resume evaluates it
        _checkpoint(run, epoch, run.steps, {"sums": (sums["loss_sum"], sums["correct"], sums["seen"], sums["bad"],
                                                     sums["train_seconds"])})
        raise Interrupted(f"stopped by {signals.received} while evaluating epoch {epoch + 1}; "
                          f"saved. {resume_hint(run.out)}") from None
    metrics = [Metrics(len(source.classes), False).from_list(dist.sum(*m.to_list())) for m in found["metrics"]]
    if not metrics[0].images:
        raise MobileNetError(f"the test split of {source.name} has no readable images")
    ema = metrics[1] if len(metrics) > 1 else None
    return {"test_loss": metrics[0].loss, "test_acc": metrics[0].top1, "bad": found["bad_files"],
            "ema_test_loss": ema.loss if ema else "", "ema_test_acc": ema.top1 if ema else "",
            "bad_count": int(dist.sum(len(found["bad_files"]))[0]), **_validate(run)}


def _validate(run: _Run) -> dict:
    """The kept model's (the EMA's with --ema) loss and accuracy on the validation images,
    which alone choose the epoch to keep; empty without --val-split."""
    dist, source = run.dist, run.source
    if not source.num_val:
        return {"val_loss": "", "val_acc": ""}
    batches = source.val_batches(max(run.cfg.batch_size, EVAL_BATCH_SIZE), dist.rank, dist.world)
    found = evaluate_batches([torch_logits(run.eval_models[-1], run.device, run.amp)], batches, len(source.classes),
                             desc="val", confusion=False)
    metrics = Metrics(len(source.classes), False).from_list(dist.sum(*found["metrics"][0].to_list()))
    return {"val_loss": metrics.loss, "val_acc": metrics.top1}


def _keep(run: _Run, row: dict) -> bool:
    """Whether this epoch's weights replace the saved ones: always without a validation
    split (the latest); with one, when its validation accuracy is the best so far."""
    if row["val_acc"] != "" and row["val_acc"] <= run.best_val:
        run.since_best += 1
        return False
    if row["val_acc"] != "":
        run.best_val, run.since_best = row["val_acc"], 0
    run.kept_epoch = row["epoch"]
    return True


def _end_epoch(run: _Run, epoch: int, sums: dict, ev: dict) -> None:
    """History, the best model, the curves, then the checkpoint (the epoch's commit point),
    TensorBoard and the epoch's line."""
    for line in ev["bad"]:
        _note(run, f"skipped {line}", err=True)
    bad = sums["bad"] + ev["bad_count"]  # every process's, where the lines above are this one's
    run.total_bad += bad
    seen = sums["seen"]
    row = {"epoch": epoch + 1, "train_loss": sums["loss_sum"] / max(seen, 1), "train_acc": sums["correct"] / max(seen, 1),
           "test_loss": ev["test_loss"], "test_acc": ev["test_acc"], "lr": run.optimizer.param_groups[0]["lr"],
           "seconds": time.perf_counter() - sums["began"], "images_per_s": seen / max(sums["train_seconds"], 1e-9),
           "bad_files": bad, **{k: ev[k] for k in ("ema_test_loss", "ema_test_acc", "val_loss", "val_acc")}}
    run.history.append(row)
    run.best_acc = max(run.best_acc, row["test_acc"])  # reported only: nothing is chosen on the test split
    keep = _keep(run, row)  # on every rank: patience must agree
    if run.dist.main and keep:  # the EMA's weights with --ema
        save_model(run.ema.module if run.ema is not None else run.model, run.out, run.info)
    if run.dist.main:
        write_history(run.history, run.out)
        plot_curves(run.history, run.out)
    _checkpoint(run, epoch + 1, 0, None)
    if row["epoch"] == math.ceil(run.cfg.epochs / 2) and run.dist.main:
        _warn_if_augmentation_hurts(run, row)
    if run.tb:  # after the commit: a resumed run never logs an epoch twice
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            run.tb.add_scalar(key, row[key], row["epoch"])
        run.tb.flush()
    _note(run, f"epoch {epoch + 1}/{run.cfg.epochs}  train loss {row['train_loss']:.4f} acc "
               f"{100 * row['train_acc']:.2f}%  test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:.2f}%  "
               f"lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s"
               + (f"  ema test loss {row['ema_test_loss']:.4f} acc {100 * row['ema_test_acc']:.2f}%" if run.ema else "")
               + (f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%" if row["val_acc"] != "" else "")
               + (f"  {bad} files skipped" if bad else ""))


def _warn_if_augmentation_hurts(run: _Run, row: dict) -> None:
    """Halfway through, one line when the augmented training batches score far below the
    images as they are (validation images, or the test images when there are none): the
    symptom of a preset that hides what the label depends on. Only said: nothing is chosen."""
    name, reference = ("validation", row["val_acc"]) if row["val_acc"] != "" else ("test", row["test_acc"])
    if reference - row["train_acc"] > AUGMENT_GAP:
        milder = PRESETS[:PRESETS.index(run.cfg.augment)] if run.cfg.augment in PRESETS else ("none",)
        _note(run, f"warning: halfway, training accuracy on augmented batches is {100 * row['train_acc']:.1f}% against "
                   f"{100 * reference:.1f}% on {name} images: --augment {run.cfg.augment} may be hiding what the "
                   f"classes depend on; try a milder one ({', '.join(reversed(milder)) or 'none'})", err=True)


def _summary(run: _Run) -> dict:
    history = run.history
    kept = history[run.kept_epoch - 1]  # the saved model's epoch: the last, or the best on validation
    best = max(history, key=lambda h: h["test_acc"])
    key = "ema_test" if run.ema is not None else "test"  # the saved model's figures
    chosen = f" (epoch {kept['epoch']}, chosen on the validation images)" if kept["val_acc"] != "" else ""
    run.log(f"done: test accuracy {100 * kept[key + '_acc']:.2f}%, test loss {kept[key + '_loss']:.4f} of the kept "
            f"model{chosen}" + (", EMA weights" if run.ema is not None else "")
            + f"; model in {run.out / 'model.safetensors'}")
    return {"out": str(run.out), "epochs": len(history), "best_epoch": best["epoch"], "best_test_acc": best["test_acc"],
            "kept_epoch": kept["epoch"], "final_test_acc": kept[key + "_acc"], "final_test_loss": kept[key + "_loss"],
            "seconds": sum(h["seconds"] for h in history), "bad_files": run.total_bad}


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
