"""`sweep --jobs K`: K points trained at once, each in a worker process of its own.

Workers are spawned (a forked CUDA context is unusable). On several GPUs each worker
takes one, in turn; on one GPU the K workers share it; on a CPU they share its cores,
each with its part of the threads. A worker dies with the sweep (SIGTERM from the kernel
when its parent ends, kill -9 included): it saves its checkpoint, and the same command
goes on from there.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: Linux only
    except (OSError, AttributeError):
        pass


def _start_worker(slots, threads: int) -> None:
    import torch

    _die_with_parent()
    gpu = slots.get()
    if gpu is not None:
        torch.cuda.set_device(gpu)
    torch.set_num_threads(threads)


def run_jobs(train_point, out: str, plan: dict, todo: list, jobs: int, log) -> None:
    """train_point(out, plan, point) for each of `todo`'s points, `jobs` at a time; the first
    error stops the rest and is raised."""
    import torch

    gpus = torch.cuda.device_count() if plan["train"]["device"] != "cpu" else 0
    ctx = multiprocessing.get_context("spawn")
    slots = ctx.Queue()
    for i in range(jobs):
        slots.put(i % gpus if gpus else None)
    # the cores shared out, never more threads than this process was given (OMP_NUM_THREADS)
    threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // jobs)) if not gpus else torch.get_num_threads()
    log(f"training {len(todo)} points, {jobs} at a time" + (f" on {gpus} GPUs" if gpus else f", {threads} threads each"))
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_start_worker, initargs=(slots, threads)) as pool:
        futures = [pool.submit(train_point, out, plan, p) for p in todo]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in done:
            f.result()  # raises the worker's error, if any
