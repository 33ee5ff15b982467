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


# The divergence rule of every training loop (pretraining, linear evaluation, fine-tuning), with finite
# numbers too: a loss read above LOSS_GROWTH_LIMIT times the run's first reading (at least 1), or a trained
# parameter above WEIGHT_LIMIT in absolute value. Chosen from healthy runs (docs/training.md, "When a run
# diverges"): their losses stayed within 12 times the first reading (ST-GCN linear evaluation; BiGRU runs
# within 3) and their largest trained weight below 4; the diverging runs measured there passed the limits
# by many orders of magnitude within a step or two.
LOSS_GROWTH_LIMIT = 1000.0
WEIGHT_LIMIT = 1000.0


class DivergenceCheck:
    """The one divergence rule of the training loops, kept over a run: `loss(value)` at every statistics
    read, `weights(model)` where the loops check their weights (one host read of every trained parameter's
    largest magnitude). Each returns None, or the reason in words for the loop's one-line stop (the loop
    adds where it happened and the likely flag)."""

    def __init__(self, loss_growth: float = LOSS_GROWTH_LIMIT, weight_limit: float = WEIGHT_LIMIT):
        self.loss_growth, self.weight_limit = loss_growth, weight_limit
        self.first_loss: float | None = None

    def loss(self, value: float) -> str | None:
        value = float(value)
        if not math.isfinite(value):
            return f"non-finite loss {value}"
        if self.first_loss is None:
            self.first_loss = value
            return None
        base = max(self.first_loss, 1.0)
        if value > self.loss_growth * base:
            return (f"loss {value:.4g} is {value / base:.3g} times its first reading {self.first_loss:.4g} "
                    f"(the limit is {self.loss_growth:g} times; healthy runs stay within 12)")
        return None

    def weights(self, model) -> str | None:
        named = [(name, p) for name, p in model.named_parameters()
                 if p.requires_grad and p.is_floating_point()]
        if not named:
            return None
        peaks = torch.stack([p.detach().abs().amax().float() for _, p in named]).tolist()
        worst = max(range(len(peaks)), key=lambda i: peaks[i] if math.isfinite(peaks[i]) else math.inf)
        if not math.isfinite(peaks[worst]):
            return f"non-finite weights in {named[worst][0]}"
        if peaks[worst] > self.weight_limit:
            return (f"{named[worst][0]} holds a weight of magnitude {peaks[worst]:.3g}, beyond any sane "
                    f"scale (the limit is {self.weight_limit:g}; healthy runs stay below 4)")
        return None


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
        holds none, or the run has no folder); a folder -> its newest one that verifies; else the file."""
        if not resume:
            return None
        if resume != "auto" and not os.path.isdir(resume):
            if not os.path.isfile(resume):
                raise FileNotFoundError(f"--resume {resume}: no such checkpoint file")
            return resume
        folder = self.folder if resume == "auto" else resume
        if not folder:            # --resume auto without a run folder: nothing to resume (the caller says so)
            return None
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
    def check(checkpoint: dict, path: str, identity: dict, allowed, encoder_record: dict,
              fixed=()) -> list[dict]:
        """The allowed changes (see resume_check.check_resume; `fixed`: fields that cannot change) of a
        checkpoint written by this run; a ValueError naming every other difference, and another encoder,
        otherwise."""
        changes = resume_check.check_resume(checkpoint.get("run") or checkpoint.get("args") or {}, identity,
                                            allowed, path, fixed)
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
