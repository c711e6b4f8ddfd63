"""What a run is made of, before its first step: the data source, the model (maybe from
--init), its learner (optimizer, schedule, precision, EMA, wrappers), and, on --resume,
the checkpoint's weights and state put back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data.batches import Source
from ..data.images import FASHION_MNIST
from ..data.sources import open_source
from ..errors import MobileNetError, first_line
from ..net.model import MobileNetConfig, MobileNetV1
from ..run.info import ModelInfo
from .config import COMPILE_MODES, LR, TrainConfig
from .distributed import Dist
from .ema import EMA
from .log import RunLog
from .optim import make_optimizer, make_schedule, set_peak
from .state import RunState
from .step import Learner, check_batch_memory
from .weights import fit_state_dict, load_init

# Defaults chosen by measurement; docs/training.md's "How the defaults were chosen" has the numbers.
FASHION_RESOLUTION = 64  # 28×28 upsampled to 64×64: the best of 32, 48, 64 measured (docs/results.md)
FOLDER_RESOLUTION = 224  # the paper's input size


def device_named(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass
class Run:
    """What a run holds while it trains: made by build_run, moved on by each epoch."""
    cfg: TrainConfig
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
    args: dict  # the TrainConfig stored in the checkpoint
    state: RunState = field(default_factory=RunState)

    @property
    def model(self) -> MobileNetV1:
        return self.learner.model


def build_run(cfg: TrainConfig, out: Path, dist: Dist, log, fresh: bool) -> Run:
    """Data, model (maybe from --init), optimizer, schedule and precision for this run."""
    device = dist.device if dist.world > 1 else device_named(cfg.device)
    resolution = cfg.resolution or (FASHION_RESOLUTION if cfg.data == FASHION_MNIST else FOLDER_RESOLUTION)
    source = open_source(cfg.data, resolution, cfg.seed, cfg.limit, cfg.test_split, cfg.workers, cfg.augment,
                         cfg.val_split)
    init_state = None
    if cfg.init and fresh:
        init_state, activation = load_init(cfg.init)
        cfg.activation = activation or cfg.activation  # kept in the checkpoint for --resume
    source.to(device)  # in memory: held on the device, batches made there
    if getattr(source, "skipped", 0):
        log(f"skipped {source.skipped} entries of {source.name}: links that leave it, or no regular file")
    model = _model(cfg, source, resolution, init_state, log)
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
    info = ModelInfo(source.classes, source.input_spec(), model.config, source.provenance(), {"preset": cfg.augment})
    args = asdict(cfg)  # stored in the checkpoint, so --resume needs nothing else
    args["data"] = cfg.data if cfg.data == FASHION_MNIST else source.name  # absolute: resume from anywhere
    return Run(cfg, out, dist, RunLog(log), source, learner, eval_models, device, lr, steps, info, args)


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


def _model(cfg: TrainConfig, source, resolution: int, init_state, log) -> MobileNetV1:
    model_cfg = MobileNetConfig(num_classes=len(source.classes), width_mult=cfg.width_mult, resolution=resolution,
                                in_channels=source.in_channels, dropout=cfg.dropout, activation=cfg.activation)
    torch.manual_seed(cfg.seed)
    model = MobileNetV1.from_config(model_cfg)
    if init_state is not None:
        model.load_state_dict(fit_state_dict(init_state, model), strict=False)  # the classifier may stay fresh
        log(f"initialised from {cfg.init} (activation {cfg.activation})")
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
    torch.set_rng_state(checkpoint["rng"])
    run.log.say(f"resuming {run.out} at epoch {state.start_epoch + 1}"
                + (f", step {state.start_step}" if state.start_step else ""))
