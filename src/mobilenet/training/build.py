"""What a run is made of, before its first step: the data source, the model (maybe from
--init), its learner (optimizer, schedule, precision, EMA, wrappers), --augment auto's trial,
the settled config (settings.settle), and, on --resume, the checkpoint's weights and state put back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.augment import PRESETS, choice_line
from ..data.batches import Source
from ..data.images import FASHION_MNIST
from ..data.sources import open_source
from ..errors import MobileNetError, first_line
from ..net.model import MobileNetConfig, MobileNetV1
from ..run.info import ModelInfo
from .balance import class_weights, pos_weights, sampler_line, weights_line
from .config import COMPILE_MODES, LR, TASKS, TrainConfig
from .distributed import Dist
from .ema import EMA
from .log import RunLog
from .optim import make_optimizer, make_schedule, set_peak
from .scoring import default_thresholds
from .settings import Facts, data_preset, data_resolution, settle
from .state import RunState
from .step import Learner, check_batch_memory
from .weights import fit_state_dict, load_init


def device_named(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass
class Run:
    """What a run holds while it trains: made by build_run, moved on by each epoch."""
    cfg: TrainConfig  # settled: what the checkpoint stores
    out: Path
    dist: Dist
    log: RunLog
    source: Source
    learner: Learner  # the model and what steps it
    eval_models: list  # evaluation's: the model, then the EMA (compiled with --compile)
    device: torch.device
    lr: float
    steps: int
    info: ModelInfo  # what config.json says
    notes: tuple[str, ...] = ()  # --augment auto's and the class weights' lines, for the log once it is open
    state: RunState = field(default_factory=RunState)

    @property
    def model(self) -> MobileNetV1:
        return self.learner.model


def build_run(cfg: TrainConfig, out: Path, dist: Dist, log, fresh: bool) -> Run:
    """Data, model (maybe from --init), optimizer, schedule and precision for this run, and
    its settled config. `cfg` is the user's (or the checkpoint's), as run_settings gave it."""
    device = dist.device if dist.world > 1 else device_named(cfg.device)
    source = open_source(cfg.data, data_resolution(cfg), cfg.seed, cfg.limit, cfg.test_split, cfg.workers,
                         data_preset(cfg), cfg.val_split, TASKS[cfg.task])
    init_state, activation = load_init(cfg.init) if cfg.init and fresh else (None, None)
    source.to(device)  # in memory: held on the device, batches made there
    if getattr(source, "skipped", 0):
        log(f"skipped {source.skipped} entries of {source.name}: links that leave it, or no regular file")
    model = _model(cfg, source, activation or cfg.activation, init_state, log)
    check_batch_memory(cfg.batch_size, model.config, source.num_train // dist.world, device)
    # --batch-size is per process; the learning rate follows the global batch linearly (Goyal et al. 2017).
    lr = cfg.lr or LR[cfg.optimizer] * cfg.batch_size * dist.world / 128
    steps = source.steps_per_epoch(cfg.batch_size, dist.world)
    if steps == 0:
        raise MobileNetError(f"{source.name} has too few training images for one batch")
    learner = _learner(cfg, model, device, dist, lr, steps)
    eval_models = [learner.model] + ([learner.ema.module] if learner.ema is not None else [])
    if cfg.compile != "off":
        eval_models = [torch.compile(m, mode=COMPILE_MODES[cfg.compile]) for m in eval_models]
    record = None
    if cfg.augment == "auto" and cfg.data != FASHION_MNIST:  # a new run's: a resumed one's preset is settled
        record = _trial(cfg, source, model, dist, device, lr, steps, learner.amp)
    counts = source.class_counts()["train"]
    chosen = cfg.class_weights, cfg.sampler
    cfg = settle(cfg, Facts(activation, record and record["preset"], tuple(counts), source.multi_label))
    if record:
        source.set_augment(cfg.augment)
    source.set_sampler(cfg.sampler)
    images = source.num_train if source.multi_label else None  # several labels: weights of the positives
    weights = class_weights(cfg.class_weights, counts) if images is None else pos_weights(cfg.class_weights, counts,
                                                                                         images)
    if weights is not None:
        learner.class_weights = torch.tensor(weights, dtype=torch.float32, device=device)
    info = ModelInfo(source.classes, source.input_spec(), model.config, source.provenance(),
                     record or {"preset": cfg.augment}, default_thresholds(source))
    notes = []  # the main process's: the others hold no trial's figures to tell
    if dist.main:
        notes = [choice_line(record) if record else None, sampler_line(chosen[1], cfg.sampler, counts),
                 weights_line(chosen[0], cfg.class_weights, counts, source.classes, images)]
    return Run(cfg, out, dist, RunLog(log), source, learner, eval_models, device, lr, steps, info,
               tuple(n for n in notes if n))


def _trial(cfg: TrainConfig, source, model, dist: Dist, device, lr: float, steps: int, amp) -> dict:
    """--augment auto on a folder: rank 0's trial (trial.py) picks the preset for every rank;
    its record goes to config.json and the checkpoint."""
    from .trial import run_trial

    record = (run_trial(source, cfg.seed, model.config, lr, cfg.batch_size, steps * cfg.epochs, device, amp)
              if dist.main else {"preset": "none"})  # the others take rank 0's
    return {**record, "preset": PRESETS[int(dist.from_main(float(PRESETS.index(record["preset"])))[0])]}


def _learner(cfg: TrainConfig, model: MobileNetV1, device: torch.device, dist: Dist, lr: float,
             steps: int) -> Learner:
    """The model on the device, wrapped for torchrun and --compile, with its optimizer, schedule,
    GradScaler and EMA; mixed precision on GPU (bf16 where supported, else fp16 with the
    GradScaler), float32 on CPU."""
    # channels_last: about 2× faster depthwise convs on CPU (benchmarks/), and the Tensor Core layout on GPU.
    model = model.to(device, memory_format=torch.channels_last)
    net = model
    if dist.world > 1:
        if device.type == "cuda":  # SyncBatchNorm runs on CUDA only
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile != "off":  # the step's forward and backward; learner.model stays the module we save
        net = torch.compile(net, mode=COMPILE_MODES[cfg.compile])
    amp = None
    if device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    optimizer = make_optimizer(model, cfg.optimizer, cfg.weight_decay, lr)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    return Learner(model, net, optimizer, make_schedule(optimizer, steps, cfg.epochs),
                   torch.amp.GradScaler("cuda", enabled=amp == torch.float16), ema, amp)


def _model(cfg: TrainConfig, source, activation: str, init_state, log) -> MobileNetV1:
    model_cfg = MobileNetConfig(num_classes=len(source.classes), width_mult=cfg.width_mult,
                                resolution=data_resolution(cfg), in_channels=source.in_channels, dropout=cfg.dropout,
                                activation=activation)
    torch.manual_seed(cfg.seed)
    model = MobileNetV1.from_config(model_cfg)
    if init_state is not None:
        model.load_state_dict(fit_state_dict(init_state, model), strict=False)  # the classifier may stay fresh
        log(f"initialised from {cfg.init} (activation {activation})")
    return model


def restore(run: Run, checkpoint: dict) -> None:
    """Weights, optimizer, schedule, where the run stands and RNG from the checkpoint."""
    try:
        run.learner.load_state_dict(checkpoint)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise MobileNetError(f"--resume: {run.out / 'checkpoint.pt'} does not fit this run "
                             f"({first_line(e)}); start a new run in another --out folder") from None
    set_peak(run.learner.scheduler, run.learner.optimizer, run.lr)
    state = run.state = RunState.from_checkpoint(checkpoint)
    run.info.augment = checkpoint.get("augment") or run.info.augment  # with the trial's figures
    run.info.thresholds = checkpoint.get("thresholds", run.info.thresholds)  # the kept epoch's
    torch.set_rng_state(checkpoint["rng"])
    run.log.say(f"resuming {run.out} at epoch {state.start_epoch + 1}"
                + (f", step {state.start_step}" if state.start_step else ""))
