"""What defines a run, recorded in its checkpoints, and the check that a resumed run is the same run.

A resume that silently changed the benchmark, protocol, data, model, batch, schedule, learning rate,
seed or code would mix two experiments into one set of weights (resuming a cross-subject run with
`--protocol cross_view` trains on the subjects held out for testing). Every difference is an error
naming each field and both values, unless the field is listed in `--resume-allow-changes`; allowed
changes are returned so the caller records them in its log.
"""
from __future__ import annotations

import glob
import hashlib
import os

# the fields of a pretraining run that a resume must keep (names of pretrain_cmd's args where they exist)
PRETRAIN_FIELDS = ("pre_dataset", "protocol", "data_folder", "encoder", "encoder_config", "hidden_size",
                   "mlp", "contrast_dim", "contrast_k", "contrast_m", "contrast_t", "teacher_t", "student_t",
                   "cmd_weight", "topk", "batch_size", "world_size", "epochs", "schedule", "cos", "lr",
                   "momentum", "weight_decay", "seed", "batch_augment", "shuffle_bn", "window", "aug_crop_min",
                   "aug_corrupt_prob", "aug_shear_prob", "aug_shear", "aug_rotate", "aug_noise", "code_version")
# those of them the saved weights' shapes depend on: never allowed to change on a resume
PRETRAIN_FIXED = ("encoder", "encoder_config", "hidden_size", "mlp", "contrast_dim", "contrast_k")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ResumeMismatch(ValueError):
    """The checkpoint to resume was written by a run with other settings (a user error: exit status 2)."""


def source_files(root: str = REPO_ROOT) -> list[str]:
    """The project's Python sources: the top level's and those of every package folder (a folder with an
    `__init__.py`: encoders/, readers/, cli/, storage/, engine/, ...), at any depth."""
    sources = glob.glob(os.path.join(glob.escape(root), "*.py"))
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        if folder != root and "__init__.py" in files:
            sources += [os.path.join(folder, f) for f in files if f.endswith(".py")]
        elif folder != root:
            dirs[:] = []
    return sorted(sources)


def code_version() -> str:
    """sha256 (first 16 hex digits) of the repository's Python sources (`source_files`): changes with any
    code change."""
    h = hashlib.sha256()
    for path in source_files():
        h.update(os.path.relpath(path, REPO_ROOT).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def run_identity(args, fields=PRETRAIN_FIELDS, **extra) -> dict:
    """The defining fields of a run: those of `args` named in `fields`, then `extra` (computed values)."""
    identity = {f: _plain(getattr(args, f)) for f in fields if hasattr(args, f)}
    identity.update({k: _plain(v) for k, v in extra.items()})
    return identity


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def check_resume(saved: dict, current: dict, allowed, source: str, fixed=()) -> list[dict]:
    """Compare a checkpoint's recorded identity with this run's; returns the allowed changes.

    `fixed` names the fields the saved weights depend on (the model's shape): they are never offered as
    `--resume-allow-changes` (the advice would only lead to a failed load) and cannot be allowed. Fields
    missing on either side (checkpoints written before a field was recorded) are not compared."""
    allowed = list(allowed or [])
    unknown = [f for f in allowed if f not in current]
    if unknown:
        raise ResumeMismatch(f"--resume-allow-changes {' '.join(unknown)}: unknown field(s); valid fields: "
                             f"{', '.join(sorted(f for f in current if f not in fixed))}")
    differ = [(f, saved[f], current[f]) for f in current if f in saved and _plain(saved[f]) != current[f]]
    refused = [d for d in differ if d[0] not in allowed or d[0] in fixed]
    if refused:
        detail = "; ".join(f"{f}: {old!r} in the checkpoint, {new!r} now" for f, old, new in refused)
        changeable = " ".join(f for f, _, _ in refused if f not in fixed)
        frozen = " ".join(f for f, _, _ in refused if f in fixed)
        if frozen:
            advice = (f"{frozen} cannot change on a resume (the saved weights depend on it): resume with the "
                      f"same value{'s' if ' ' in frozen else ''}, or start a new run in another folder")
            if changeable:
                advice += f"; the others can be allowed with --resume-allow-changes {changeable}"
        else:
            advice = (f"Resume with the same settings, or add --resume-allow-changes {changeable} to change "
                      f"them on purpose")
        raise ResumeMismatch(f"{source} was written by a run with other settings: {detail}. {advice}")
    return [{"field": f, "checkpoint": old, "now": new} for f, old, new in differ]
