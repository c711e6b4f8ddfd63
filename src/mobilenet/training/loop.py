"""Training: `train(TrainConfig)` runs the loop and resumes it. The loop is in named parts,
as torchvision's reference scripts have them: build_run (build.py), _train_one_epoch, _evaluate_epoch,
_end_epoch; _train reads as the table of contents of a run. The step itself is step.py's
(the trial's too), the EMA ema.py's, the optimizer and schedule optim.py's, the log
log.py's and where the run stands state.py's; the run folder's files are
run/folder.py's; torchrun and signals are distributed's.

Determinism: the shuffle of each epoch and the augmentation of each step are seeded by
(seed, epoch, step), so a resumed run repeats an uninterrupted one exactly on CPU; seeds.py
lists every seed a run draws.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data.augment import PRESETS, random_erasing
from ..errors import Interrupted, MobileNetError, printable
from ..files import make_dir, remove_unfinished
from ..limits import EVAL_BATCH_SIZE
from ..machine import describe
from ..progress import Heartbeat, bar as progress_bar, show as show_progress
from ..report.metrics import EvaluationStopped
from ..report.page import report
from ..report.plots import plot_curves
from ..run.folder import (
    checkpoint_launch, default_out, lock, refuse_links, resume_hint, save_checkpoint, save_model, write_config,
    write_history,
)
from ..run.info import ModelInfo
from ..run.names import CHECKPOINT, CONFIG, LOG, RUN_FILES, SELECT_BY, WEIGHTS
from ..run.ownership import refuse_foreign
from ..seeds import DROPOUT, ERASING, generator, mix
from .build import Run, build_run, restore
from .config import TrainConfig
from .distributed import Dist, Signals, launch
from .log import RunLog, epoch_line
from .scoring import score_epoch
from .settings import run_settings
from .state import EpochSums, history_row
from .step import hits, out_of_memory, train_step
from .weights import check_init

# Defaults chosen by measurement; docs/training.md's "How the defaults were chosen" has the numbers.
AUGMENT_GAP = 0.15  # training accuracy this far below validation (halfway) draws a warning
SYNC_EVERY = 50  # training steps between reads of the device's sums (progress bar, non-finite loss)


class TrainingStopped(MobileNetError):
    """The run stopped early (NaN loss or a signal); its last checkpoint is intact."""


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
        if resume and not (out / CHECKPOINT).exists():
            raise MobileNetError(f"--resume: {out / CHECKPOINT} not found; start a new run without --resume")
        if not resume:  # before the folder is made: nothing is left behind
            check_init(cfg.init)
            refuse_foreign([out / name for name in (*RUN_FILES, LOG)], "--out", cfg.force)  # train.log: appended
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
        saved = (out / CHECKPOINT).exists()
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
class _Sums:
    """An epoch's sums on the device, read every SYNC_EVERY steps only: summed loss and
    correct, and the epoch's first step with a non-finite loss (-1: none yet)."""
    totals: torch.Tensor
    first_nonfinite: torch.Tensor


def _train(cfg: TrainConfig, out: Path, resume: bool, log, progress: bool, dist: Dist) -> dict:
    """The table of contents of a run."""
    cfg, checkpoint = run_settings(cfg, out, resume, dist)
    run = build_run(cfg, out, dist, log, fresh=checkpoint is None)
    cfg = run.cfg  # settled
    if checkpoint is not None:
        restore(run, checkpoint)
    if dist.main:
        _open_outputs(run.out, run.state.history, run.info, run.log)
    try:
        for line in run.notes:
            run.log.note(line)
        with Signals() as signals:  # from here a first signal means "save and stop"
            log(_start_line(run))
            for epoch in range(run.state.start_epoch, cfg.epochs):
                if cfg.patience and run.state.since_best >= cfg.patience:
                    log(f"early stop before epoch {epoch + 1}: no better validation "
                        f"{SELECT_BY[cfg.select_by][0]} for {cfg.patience} epochs")
                    break
                sums = _train_one_epoch(run, epoch, signals, progress)
                _end_epoch(run, epoch, sums, _evaluate_epoch(run, epoch, sums, signals))
                if epoch + 1 < cfg.epochs and signals.agreed(dist):  # came after the evaluation
                    raise Interrupted(f"stopped by {signals.received} after epoch {epoch + 1}; saved. "
                                      f"{resume_hint(out)}")
    finally:
        run.log.close()
    summary = _summary(run)
    if dist.main:  # the page of the kept model, from the data set still open
        try:
            report(run.out, source=run.source, log=run.log.say)
        except MobileNetError as e:  # the run itself is saved and whole
            run.log.say(f"warning: no report.html ({e}); `mobilenet report --model {out}` tries again")
    return summary


def _open_outputs(out: Path, history: list, info: ModelInfo, log: RunLog) -> None:
    """Redraw what the checkpoint knows (a kill may have come between files); config.json
    first thing; train.log and TensorBoard opened for appending. Rank 0 only."""
    if history:
        write_history(history, out)
        plot_curves(history, out)
    if not (out / CONFIG).exists():
        write_config(out, info)
    log.open(out)


def _checkpoint(run: Run, epoch: int, step: int, partial) -> None:
    if run.dist.main:  # only rank 0 writes files
        save_checkpoint(run.out, {**run.learner.state_dict(), **run.state.checkpoint(epoch, step, partial),
                                  "rng": torch.get_rng_state(), "train_config": asdict(run.cfg), "launch": launch(),
                                  "augment": run.info.augment, "thresholds": run.info.thresholds,
                                  "machine": describe(run.device)})


def _start_line(run: Run) -> str:
    cfg, source = run.cfg, run.source
    return (f"training MobileNet V1 α={cfg.width_mult} ρ={run.model.config.resolution} on {source.name}: "
            f"{source.num_train} train / {source.num_test} test images, {len(source.classes)} classes, "
            f"{cfg.optimizer} lr {run.lr:g}, batch {cfg.batch_size}"
            + (f" × {run.dist.world} processes" if run.dist.world > 1 else "")
            + f", {cfg.epochs} epochs, {run.device.type}; out {run.out}")


def _train_one_epoch(run: Run, epoch: int, signals: Signals, progress: bool) -> dict:
    """One pass over the training images from the run's start step; the epoch's summed loss,
    correct, seen, bad files and seconds. A signal saves a partial checkpoint and stops.
    Loss and correct are summed on the device and read every SYNC_EVERY steps only: a
    GPU is never made to wait for the host within a step."""
    cfg, dist, state = run.cfg, run.dist, run.state
    run.model.train()
    # (after a mid-epoch stop rank 0 holds the all-reduced sums, the others start at 0)
    so_far = EpochSums(*(state.partial or {}).get("sums", ())) if dist.main else EpochSums()
    sums = _Sums(torch.tensor([so_far.loss_sum, so_far.correct], dtype=torch.float64, device=run.device),
                 torch.tensor(-1, device=run.device))
    seen, bad = so_far.seen, so_far.bad
    began = time.perf_counter() - so_far.seconds
    desc = f"epoch {epoch + 1}/{cfg.epochs}"
    bar = progress_bar(total=run.steps, initial=state.start_step, desc=desc, enabled=progress, mininterval=1.0)
    heartbeat = Heartbeat(run.log.say, desc, run.steps, state.start_step, enabled=not progress)
    batches = run.source.train_batches(epoch, cfg.batch_size, state.start_step, dist.rank, dist.world)
    for step, batch in enumerate(batches, state.start_step):
        for line in batch.bad_files:
            if cfg.strict:
                raise MobileNetError(f"{line} (--strict: remove the file or drop --strict)")
            run.log.note(f"skipped {line}", err=True)
        bad += len(batch.bad_files)
        images = _step(run, epoch, step, batch, sums)
        seen += images
        run.learner.scheduler.step()
        bar.update(1)
        heartbeat.update(step + 1, images * dist.world)
        if (step + 1) % SYNC_EVERY == 0:
            _check_finite(sums, epoch, dist, run.lr, run.out)
            loss_sum, correct = sums.totals.tolist()
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{100 * correct / max(seen, 1):.1f}%",
                            img_s=f"{seen / max(time.perf_counter() - began, 1e-9):.0f}", refresh=False)
        if signals.agreed(dist):
            _check_finite(sums, epoch, dist, run.lr, run.out)  # a diverged model is never saved
            partial = EpochSums(*dist.sum(*sums.totals.tolist(), seen, bad), time.perf_counter() - began)
            _checkpoint(run, epoch, step + 1, {"sums": tuple(partial)})  # a plain tuple: weights_only loads it
            raise Interrupted(f"stopped by {signals.received} at epoch {epoch + 1}, step {step + 1}; "
                              f"saved. {resume_hint(run.out)}")
    bar.close()
    _check_finite(sums, epoch, dist, run.lr, run.out)
    state.start_step, state.partial = 0, None
    train_seconds = time.perf_counter() - began
    loss_sum, correct, seen, bad = dist.sum(*sums.totals.tolist(), seen, bad)
    return {"loss_sum": loss_sum, "correct": int(correct), "seen": int(seen), "bad": int(bad),
            "began": began, "train_seconds": train_seconds}


def _step(run: Run, epoch: int, step: int, batch, sums: _Sums) -> int:
    """The run's side of a step (step.train_step): the batch on the device, seeded dropout
    and random erasing; adds its summed loss and correct to `sums` (on the device) and
    returns its count of images (0 for a batch too small for BatchNorm). A non-finite loss
    is noted in sums.first_nonfinite, for _check_finite."""
    cfg, dist = run.cfg, run.dist
    usable = len(batch.labels) >= 2  # BatchNorm needs two images
    if dist.world > 1 and not run.source.same_batches_on_every_rank:  # DDP's collectives must pair up
        usable = dist.sum(float(usable))[0] == dist.world
    if not usable:
        return 0
    torch.manual_seed(mix(cfg.seed, epoch, step, DROPOUT))  # dropout, if any
    x = batch.images.to(run.device, non_blocking=True)
    if cfg.random_erasing:  # seeded by (seed, epoch, step, rank), as the flips and shifts
        g = generator(x.device, cfg.seed, epoch, step, ERASING, dist.rank)
        x = random_erasing(x, cfg.random_erasing, g)
    x = x.contiguous(memory_format=torch.channels_last)
    y = batch.labels.to(run.device, non_blocking=True)
    with out_of_memory(cfg.batch_size, run.device):
        loss, logits = train_step(run.learner, x, y, cfg.label_smoothing)
    sums.first_nonfinite = torch.where((sums.first_nonfinite < 0) & ~torch.isfinite(loss), step, sums.first_nonfinite)
    sums.totals += torch.stack([loss.detach().double() * len(y), hits(logits, y).double()])
    return len(y)


def _check_finite(sums: _Sums, epoch: int, dist: Dist, lr: float, out: Path) -> None:
    """Stop, on every process together, if a step since the last check had a non-finite
    loss (a host sync: called every SYNC_EVERY steps, before a checkpoint, at the epoch's end)."""
    step = int(sums.first_nonfinite)
    elsewhere = dist.world > 1 and dist.sum(float(step >= 0))[0] > 0
    if step >= 0 or elsewhere:
        where = f"step {step + 1}" if step >= 0 else "a step of another process"
        raise TrainingStopped(f"loss became nan or infinite at epoch {epoch + 1}, {where}: training diverged; "
                              f"lower --lr (it was {lr:g}). The last good checkpoint is in {out}")


def _evaluate_epoch(run: Run, epoch: int, sums: dict, signals: Signals) -> dict:
    """The epoch's scores (scoring.py). In a single process a signal stops the test pass
    between two batches and saves the trained epoch."""
    dist = run.dist
    try:
        return score_epoch(run.learner, run.eval_models, run.source, max(run.cfg.batch_size, EVAL_BATCH_SIZE), dist,
                           run.device, stop=lambda: signals.received is not None and dist.world == 1)
    except EvaluationStopped:  # --resume evaluates it
        _checkpoint(run, epoch, run.steps, {"sums": (sums["loss_sum"], sums["correct"], sums["seen"], sums["bad"],
                                                     sums["train_seconds"])})
        raise Interrupted(f"stopped by {signals.received} while evaluating epoch {epoch + 1}; "
                          f"saved. {resume_hint(run.out)}") from None


def _end_epoch(run: Run, epoch: int, sums: dict, ev: dict) -> None:
    """History, the best model, the curves, then the checkpoint (the epoch's commit point),
    TensorBoard and the epoch's line."""
    for line in ev["bad"]:
        run.log.note(f"skipped {line}", err=True)
    bad = sums["bad"] + ev["bad_count"]  # every process's, where the lines above are this one's
    row = history_row(epoch, sums, ev, run.learner.optimizer.param_groups[0]["lr"], bad)
    keep = run.state.add(row, SELECT_BY[run.cfg.select_by][1])  # on every rank: patience must agree
    ema = run.learner.ema
    if keep and ev["thresholds"] is not None:  # several labels per image: the kept epoch's, chosen on validation
        run.info.thresholds = ev["thresholds"]
    if run.dist.main and keep:  # the EMA's weights with --ema
        save_model(ema.module if ema is not None else run.model, run.out, run.info)
    if run.dist.main:
        write_history(run.state.history, run.out)
        plot_curves(run.state.history, run.out)
    _checkpoint(run, epoch + 1, 0, None)
    if row["epoch"] == math.ceil(run.cfg.epochs / 2) and run.dist.main:
        _warn_if_augmentation_hurts(run.log, run.cfg.augment, row)
    run.log.scalars(row)  # after the commit: a resumed run never logs an epoch twice
    run.log.note(epoch_line(row, run.cfg.epochs, ema is not None, run.source.multi_label))


def _warn_if_augmentation_hurts(log: RunLog, preset: str, row: dict) -> None:
    """Halfway through, one line when the augmented training batches score far below the
    images as they are (validation images, or the test images when there are none): the
    symptom of a preset that hides what the label depends on. Only said: nothing is chosen."""
    name, reference = ("validation", row["val_acc"]) if row["val_acc"] is not None else ("test", row["test_acc"])
    if reference - row["train_acc"] > AUGMENT_GAP:
        milder = PRESETS[:PRESETS.index(preset)] if preset in PRESETS else ("none",)
        log.note(f"warning: halfway, training accuracy on augmented batches is {100 * row['train_acc']:.1f}% against "
                 f"{100 * reference:.1f}% on {name} images: --augment {preset} may be hiding what the "
                 f"classes depend on; try a milder one ({', '.join(reversed(milder)) or 'none'})", err=True)


def _summary(run: Run) -> dict:
    history, ema = run.state.history, run.learner.ema
    kept = history[run.state.kept_epoch - 1]  # the saved model's epoch: the last, or the best on validation
    best = max(history, key=lambda h: h["test_acc"])
    key = "ema_test" if ema is not None else "test"  # the saved model's figures
    name = SELECT_BY[run.cfg.select_by][0]
    chosen = f" (epoch {kept['epoch']}, chosen by its validation {name})" if kept["val_acc"] is not None else ""
    score = (f"test mAP {100 * kept[key + '_map']:.2f}%" if run.source.multi_label
             else f"test accuracy {100 * kept[key + '_acc']:.2f}%")
    run.log.say(f"done: {score}, test loss {kept[key + '_loss']:.4f} of the kept "
                f"model{chosen}" + (", EMA weights" if ema is not None else "")
                + f"; model in {run.out / WEIGHTS}")
    return {"out": str(run.out), "epochs": len(history), "best_epoch": best["epoch"], "best_test_acc": best["test_acc"],
            "kept_epoch": kept["epoch"], "final_test_acc": kept[key + "_acc"], "final_test_loss": kept[key + "_loss"],
            "seconds": sum(h["seconds"] for h in history), "bad_files": run.state.total_bad}
