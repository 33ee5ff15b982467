"""What a flag's value must mean, checked when the command line is parsed (argparse `type=` functions).

Every float is finite; a temperature or a learning rate is > 0; a momentum lies in [0, 1]; a weight or
a weight decay is >= 0; a count is >= 0 (or >= 1 where zero means nothing); a seed fits numpy's
32 bits; process and thread counts stay within what the machine can run. A bad value stops the command
with argparse's `prog: error: argument --flag: expected ..., got VALUE` (exit status 2) before any work.
Sizes that depend on each other (a model and its queues against the machine's memory) are checked after
parsing, where they are known together (cmd_model.memory_estimate).
"""
from __future__ import annotations

import argparse
import math

from cli import machine

SEED_LIMIT = 2 ** 32          # numpy's global seed range


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite(text: str) -> float:
    return _number(text)


def positive(text: str) -> float:
    """A temperature or a learning rate: finite and > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """A loss weight or a weight decay: finite and >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A momentum: in [0, 1]."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def fraction(text: str) -> float:
    """A share of a set: in (0, 1]."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def count(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_count(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def seed(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2^32), got {text!r}")
    return value


def max_processes() -> int:
    """The most loader workers or threads a flag may ask for: 4 per usable core, at least 32. More only
    waits for a core (or, for a huge count, never finishes starting)."""
    return max(32, 4 * machine.usable_cores())


def _bounded(text: str, low: int) -> int:
    value = _number(text, int)
    limit = max_processes()
    if not low <= value <= limit:
        raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {limit}] (this machine has "
                                         f"{machine.usable_cores()} usable cores; at most 4 processes "
                                         f"per core, or 32), got {text!r}")
    return value


def processes(text: str) -> int:
    """Loader workers (0: load in the main process) or threads (0: automatic)."""
    return _bounded(text, 0)


def worker_processes(text: str) -> int:
    """Worker processes of a command that needs at least one (prepare_data.py --workers)."""
    return _bounded(text, 1)
