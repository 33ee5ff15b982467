"""What this machine has: the cores this process may use, and the memory a model may take (the
GPU's, else the machine's or its container's), with the check that refuses a model that does not fit.
"""
from __future__ import annotations

import os

import torch


def _container_limit() -> int | None:
    """The cgroup's memory limit (v2, else v1) when one is set."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def device_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are) that a model on `device` can use: the GPU's memory, else the machine's
    physical memory (the container's limit when that is lower)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"{device}'s memory"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 62, "memory (unknown)"
    limit = _container_limit()
    if limit is not None and limit < total:
        return limit, "memory (its container's limit)"
    return total, "memory"


def gib(size: int) -> str:
    value = size / 2 ** 30
    return f"{value:.3g}" if value < 1e6 else f"{value:.2e}"


def check_memory(needed: int, device: torch.device, what: str, advice: str) -> None:
    """ValueError `WHAT needs at least X GiB, this machine has Y GiB of memory; ADVICE` when `needed`
    bytes exceed what `device` has (device_memory): refused before anything is allocated."""
    have, kind = device_memory(device)
    if needed > have:
        raise ValueError(f"{what} needs at least {gib(needed)} GiB, this machine has {gib(have)} GiB of "
                         f"{kind}; {advice}")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def process_cores() -> int:
    """Usable cores of this process: torchrun's processes on one machine share them out."""
    return max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
