"""The machine a run or a timing happened on, as a person would name it: the CPU, its vector
extensions, the device, threads and torch."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The x86 vector extensions that decide which kernels run (and how fast int8 is)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]


def describe(device) -> dict:
    """What a run's checkpoint records of where it trained (the report's card shows it)."""
    import torch

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": f"{cpu_name()} ({' '.join(cpu_features()) or 'no AVX2'})", "gpu": gpu,
            "threads": torch.get_num_threads(), "torch": str(torch.__version__)}  # a str: weights_only loads it
