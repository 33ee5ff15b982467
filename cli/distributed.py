"""torch.distributed set-up from torchrun's environment (a single process when it is absent), the
collectives the training loops need, and a print for rank 0 alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cli import devices


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_arg: str = "auto") -> tuple[DistInfo, torch.device]:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; single process when they are absent.

    NCCL on CUDA, gloo on CPU. Returns the process's rank information and its device.
    """
    info = DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    device = devices.resolve_device(device_arg, info.local_rank)
    if info.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info, device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device(device: torch.device) -> torch.device:
    """Where a collective's tensor must live: the GPU for NCCL, the CPU for gloo."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_int(value: int, device: torch.device) -> int:
    """Rank 0's `value` on every process (itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_collective_device(device))
    dist.broadcast(t, src=0)
    return int(t.item())


def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """'mean' or 'min' of `tensor` over the processes (a new tensor; `tensor` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    t = tensor.to(_collective_device(tensor.device), copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return t / dist.get_world_size() if op == "mean" else t


def main_process_log(is_main: bool):
    """A print for messages that rank 0 alone writes (tqdm.write keeps progress bars intact)."""
    from tqdm import tqdm  # noqa: PLC0415

    def log(msg: str) -> None:
        if is_main:
            tqdm.write(msg)
    return log
