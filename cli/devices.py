"""Where a command computes: the device (`--device auto`: this process's GPU when there is one,
else the CPU) and what `--amp` autocasts to there.
"""
from __future__ import annotations

import torch


def resolve_device(name: str = "auto", local_rank: int = 0, set_device: bool = True) -> torch.device:
    """`auto` picks CUDA (this process's local GPU) when present, else CPU. A device that is not there
    is a ValueError naming it."""
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name!r} asked for CUDA, but torch.cuda.is_available() is False "
                             f"(use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s)")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        if set_device:
            torch.cuda.set_device(device)
    return device


def cpu_has_bfloat16() -> bool:
    """True when oneDNN finds bfloat16 matrix units (AVX512-BF16 / AMX) on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """What `--amp` autocasts to on `device`: bfloat16 where the device computes it natively, float16
    (with a GradScaler) on other CUDA GPUs, None (stay in float32) elsewhere."""
    if device.type == "cuda":
        try:
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            bf16 = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float16
    if device.type == "cpu" and cpu_has_bfloat16():
        return torch.bfloat16
    return None
