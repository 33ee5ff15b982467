"""Running meters of the training loops: an average on the host (`AverageMeter`) and per-step sums kept
on the device, read once per epoch over every process (`DeviceMeters`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cli import distributed


class AverageMeter:
    """Running average of a scalar, weighted by the number of samples each update stands for."""

    def __init__(self, name: str):
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.val = self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(self.count, 1)


@dataclass
class MeterReading:
    means: dict              # name -> mean over the updates so far (over every process)
    first_bad: int | None    # the first update step with a non-finite value (None: all finite)
    bad_values: dict         # name -> value at that step


class DeviceMeters:
    """Sums of named per-step statistics kept on the device: `update` never reads a value on the host
    (no synchronisation per step); `read` is one host read of the means so far, all-reduced over the
    processes, and of the first step whose values were not all finite."""

    def __init__(self, names, device: torch.device, no_step: int):
        self.names, self.no_step, self.count = tuple(names), no_step, 0
        dtype = torch.float64 if device.type != "mps" else torch.float32
        self.sums = torch.zeros(len(self.names), dtype=dtype, device=device)
        self.first_bad = torch.full((1,), no_step, dtype=torch.long, device=device)
        self.bad_values = torch.zeros_like(self.sums)

    @torch.no_grad()
    def update(self, step: int, values: dict) -> None:
        stats = torch.stack([values[n].detach().float() for n in self.names]).to(self.sums.dtype)
        self.sums += stats
        is_first_bad = (~torch.isfinite(stats).all()) & (self.first_bad == self.no_step)
        self.first_bad.copy_(torch.where(is_first_bad, step, self.first_bad))
        self.bad_values.copy_(torch.where(is_first_bad, stats, self.bad_values))
        self.count += 1

    def read(self) -> MeterReading:
        sums, first_bad = distributed.all_reduce(self.sums, "mean"), distributed.all_reduce(self.first_bad, "min")
        values = torch.cat([sums.double().cpu(), first_bad.double().cpu(), self.bad_values.double().cpu()])
        values = values.tolist()
        n = len(self.names)
        means, bad = {k: v / max(self.count, 1) for k, v in zip(self.names, values[:n])}, int(values[n])
        finite = bad >= self.no_step and all(np.isfinite(v) for v in means.values())
        return MeterReading(means, None if finite else bad, dict(zip(self.names, values[n + 1:])))
