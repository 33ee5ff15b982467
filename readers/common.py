"""What every raw reader shares: the job and sample records, the reader interface, the error type, the
number parser and the fixed-length step of the on-disk format."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import dataset


class SkeletonFileError(ValueError):
    """A malformed input file; the message names the file, the line and what was expected."""


@dataclass
class Sample:
    name: str
    label: int
    parts: dict          # benchmark folder -> 'train' | 'val'


@dataclass
class Job:
    """One input file producing one or more samples (PKU-MMD: one per label row)."""
    kind: str            # the readers.RAW_FORMATS key whose `read` turns it into clips
    path: str
    samples: list        # list[Sample]
    rows: list | None = None
    options: dict | None = None     # what the reader needs besides the file (readers/arrays.py)


@dataclass(frozen=True)
class RawFormat:
    """How one raw format is read: its flags `add_arguments(parser, entry)`; `jobs(args, entry, rules,
    out)` -> the Jobs (files, their samples, each sample's part per benchmark folder of `rules`, a dict
    folder -> dataset_table.Protocol.split); `read(job, notes)` -> [(clip float32 (3, CLIP_FRAMES, V,
    NUM_PERSONS), original frame count)] for the job's samples (a module-level function: jobs run in
    worker processes); `notes` collects warnings that prepare_data.py counts at the end."""
    add_arguments: Callable
    jobs: Callable
    read: Callable


def parse_floats(text: str) -> np.ndarray | None:
    """Whitespace-separated numbers -> float64 array in C; None when something is not a number."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # numpy warns (and stops) at the first non-number
        try:
            return np.fromstring(text, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None



def to_fixed_length(clip: np.ndarray, max_frames: int = dataset.CLIP_FRAMES) -> np.ndarray:
    """(3, T, V, M) -> float32 (3, max_frames, V, M): truncated past max_frames, zero-padded after T."""
    out = np.zeros((clip.shape[0], max_frames) + clip.shape[2:], dtype=np.float32)
    length = min(clip.shape[1], max_frames)
    out[:, :length] = clip[:, :length]
    return out
