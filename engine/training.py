"""What the training loops of pretraining (pretrain_cmd.py) and action classification share: the
optimizer, the learning-rate schedule, and the checkpoints of a run folder (which one a resume
continues from, whether it belongs to this run, writing them)."""
from __future__ import annotations

import itertools
import math
import os

import torch

from engine import resume_check
from storage import checkpoints


def learning_rate(base_lr: float, epoch: int, milestones, cos_epochs: int | None = None) -> float:
    """The released per-epoch rule (epoch counted from 0): cosine over `cos_epochs` epochs when given,
    else x0.1 at every milestone reached."""
    if cos_epochs is not None:
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cos_epochs))
    return base_lr * 0.1 ** sum(epoch >= m for m in milestones)


def sgd(params, lr: float, momentum: float, weight_decay: float):
    """The released optimizer, torch.optim.SGD, with its fused kernel where the device has one: the same
    update in one pass without temporaries (measured on the CPU: bitwise equal to the default loop, and
    2.5x faster on 75 M parameters); the default implementation elsewhere."""
    params = list(params)
    try:
        return torch.optim.SGD(params, lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.SGD(params, lr, momentum=momentum, weight_decay=weight_decay)


def nonfinite_tensors(model) -> list[str]:
    """Names of the model's floating-point parameters and buffers that hold a NaN or an infinity, found
    on the device with one host read (the training loops call it where they read their statistics)."""
    named = [(name, t) for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
             if t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def set_learning_rate(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class RunCheckpoints:
    """The checkpoints of one run folder (`folder`, None when the run writes none).

    `locate` finds the checkpoint a `--resume` value names, `load` reads and verifies it, `check` refuses
    one written by a run with other settings (resume_check), `save` writes `checkpoint_last.pth.tar` and,
    when asked, a numbered copy as a hard link. `last` is the last checkpoint written or resumed from."""

    def __init__(self, folder: str | None, log=print):
        self.folder, self.log = folder, log
        self.last: str | None = None

    def locate(self, resume: str) -> str | None:
        """'' -> None; 'auto' -> the newest checkpoint of the run folder that verifies (None when the folder
        holds none); a folder -> its newest one that verifies; else the file itself."""
        if not resume:
            return None
        if resume != "auto" and not os.path.isdir(resume):
            if not os.path.isfile(resume):
                raise FileNotFoundError(f"--resume {resume}: no such checkpoint file")
            return resume
        folder = self.folder if resume == "auto" else resume
        if folder is None:
            raise ValueError("--resume auto: this run has no run folder to resume from (--checkpoint-path)")
        path, _, skipped = checkpoints.newest_verified_checkpoint(folder)
        for reason in skipped:
            self.log(f"=> --resume {resume}: skipping {reason}")
        if path is None and skipped:
            raise ValueError(f"--resume {resume}: none of the {len(skipped)} checkpoints in {folder} can be "
                             f"used (see above); start again with --overwrite instead of --resume")
        if path is None and resume != "auto":
            raise FileNotFoundError(f"--resume {resume!r}: no usable checkpoint_*.pth.tar in that directory")
        return path

    def load(self, path: str) -> dict:
        checkpoint = checkpoints.load_checkpoint(path)
        self.last = path
        return checkpoint

    @staticmethod
    def check(checkpoint: dict, path: str, identity: dict, allowed, encoder_record: dict) -> list[dict]:
        """The allowed changes (see resume_check.check_resume) of a checkpoint written by this run; a
        ValueError naming every other difference, and another encoder, otherwise."""
        changes = resume_check.check_resume(checkpoint.get("run") or checkpoint.get("args") or {}, identity,
                                            allowed, path)
        record = checkpoints.encoder_record(checkpoint, path)
        if record is not None and record != encoder_record:
            raise ValueError(f"{path} was written with another encoder: {record} there, {encoder_record} "
                             f"here")
        return changes

    def write(self, name: str, state: dict) -> str:
        """Another file of the run folder (e.g. model_best.pth.tar); `last` stays as it is."""
        path = os.path.join(self.folder, name)
        checkpoints.atomic_save(state, path)
        return path

    def save(self, state: dict, numbered: str | None = None) -> str:
        """`checkpoint_last.pth.tar`, and `numbered` (a file name in the folder) as a hard link to it."""
        last = os.path.join(self.folder, checkpoints.LAST_CHECKPOINT)
        checkpoints.atomic_save(state, last)
        self.last = last
        if numbered is not None:
            self.last = os.path.join(self.folder, numbered)
            _link_or_save(last, self.last, state)
        return self.last


def _link_or_save(src: str, dst: str, state) -> None:
    """Make `dst` a hard link to the just-written `src` (no second write of a large file), else save a copy.

    `src` is later replaced by rename, which leaves the linked file's contents untouched.
    """
    tmp = dst + ".tmp"
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        checkpoints.atomic_save(state, dst)
