"""Seeds and RNG state: seeding every generator we use, seeds derived from several integers, and
snapshots of the generators' state that checkpoints keep (`torch.load(weights_only=True)` accepts them).
"""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def derived_seed(*values: int) -> int:
    """A 63-bit seed that is a fixed function of the given integers (e.g. seed, epoch, rank, stream)."""
    return int(np.random.SeedSequence([int(v) % (2 ** 32) for v in values]).generate_state(2, np.uint64)[0]
               % (2 ** 63))


def rng_state() -> dict:
    """Snapshot of every RNG we use, in types that `torch.load(weights_only=True)` accepts."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
