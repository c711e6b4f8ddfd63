"""Distributed plumbing: this process's place under torchrun, signals that stop a run
together, and the launch token that tells a torchrun restart from a new run. Outside
torchrun it is a single process and every method is a no-op."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import torch


class Dist:
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

    def gather(self, rows) -> "np.ndarray":
        """Every process's rows (a 2-D array), stacked in rank order: each puts its own in a
        zero block of its own, and the blocks are summed."""
        rows = np.asarray(rows, np.float64)
        if self.world == 1:
            return rows
        counts = [int(n) for n in self.sum(*(float(len(rows)) if r == self.rank else 0.0 for r in range(self.world)))]
        blocks = torch.zeros(self.world, max(counts), rows.shape[1], dtype=torch.float64, device=self.device)
        blocks[self.rank, :len(rows)] = torch.from_numpy(rows).to(self.device)
        torch.distributed.all_reduce(blocks)
        return np.concatenate([blocks[r, :n].cpu().numpy() for r, n in enumerate(counts)])

    def from_main(self, *values: float) -> list[float]:
        """Rank 0's values, on every rank: decisions all ranks must share."""
        if self.world == 1:
            return list(values)
        return self.sum(*(values if self.main else [0.0] * len(values)))

    def share_buffers(self, *modules: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every rank. Each rank's last
        forward pass updated its own, so without this each would score its share of the test
        images with statistics other than those of the model rank 0 saves."""
        if self.world > 1:
            for module in modules:
                for buffer in module.buffers():
                    torch.distributed.broadcast(buffer, 0)

    def close(self) -> None:
        if self.started:
            torch.distributed.destroy_process_group()


class Signals:
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

    def agreed(self, dist: "Dist") -> bool:
        """Whether to stop now; under torchrun all processes stop when one was signalled."""
        if dist.world > 1 and dist.sum(float(self.received is not None))[0] > 0:
            self.received = self.received or "a signal to another process"
        return self.received is not None

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def launch() -> str:
    """Names this torchrun launch (its agent process and run id); '' outside torchrun."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return ""
    return f"{os.environ['TORCHELASTIC_RUN_ID']}:{os.getppid()}"
