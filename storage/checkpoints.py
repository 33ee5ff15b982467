"""Checkpoint files: atomic saving, finding the newest, and loading ours or the released CMD ones.

Released CMD checkpoints (`checkpoint_0450.pth.tar`) hold `{'epoch', 'state_dict', 'optimizer'}` with
the key names of SPEC.md sections 2-3, prefixed by `module.` when saved from DDP. Ours add `args`
(a plain dict), `rng` (see cli/seeding.py) and the encoder record `{"encoder": name, "encoder_config":
{...}}` (cmd_model.encoder_record) from which evaluation rebuilds the model; they stay loadable with
`weights_only=True`.

Every checkpoint we write records `tensor_sha256`, a digest of all its tensors' bytes and plain values
(`state_digest`), which `load_checkpoint` verifies: a file changed after it was written (bit flips, a bad
copy) is refused instead of trusted. Non-finite weights are refused with that reason too. Files
without the digest (released checkpoints, older runs) load as before.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import warnings

import torch
import torch.nn as nn

from storage import atomic_files

CHECKPOINT_PATTERN = "checkpoint_{epoch:04d}.pth.tar"
LAST_CHECKPOINT = "checkpoint_last.pth.tar"
DIGEST_KEY = "tensor_sha256"


class CheckpointError(ValueError, RuntimeError):
    """A checkpoint that cannot be used: unreadable, corrupted, or holding non-finite weights."""


def state_digest(obj) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) and plain value of a checkpoint, in key order.

    The `tensor_sha256` entry itself is left out, so the digest of a loaded checkpoint can be compared
    with the one recorded in it."""
    h = hashlib.sha256()
    _feed(h, obj, "")
    return h.hexdigest()


def _feed(h, obj, where: str) -> None:
    if torch.is_tensor(obj):
        t = obj.detach().cpu().contiguous()
        h.update(f"{where}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())          # the buffer itself, no copy
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            if not (where == "" and key == DIGEST_KEY):
                _feed(h, obj[key], f"{where}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _feed(h, value, f"{where}[{i}]")
    else:
        h.update(f"{where}={obj!r};".encode())


def atomic_save(obj, path: str) -> None:
    """torch.save to `path.tmp`, fsync, rename. A crash mid-write leaves the previous file intact.

    A dict gets its `tensor_sha256` digest recorded (see `state_digest`)."""
    if isinstance(obj, dict):
        obj = dict(obj, **{DIGEST_KEY: state_digest(obj)})
    with atomic_files.atomic_open(path, "wb") as f:
        torch.save(obj, f)


def nonfinite_weights(state_dict: dict) -> list[tuple[str, int]]:
    """(key, number of NaN/inf values) of every floating-point tensor that has any."""
    found = []
    for key, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                found.append((key, bad))
    return found


def verify_checkpoint(checkpoint, path: str) -> None:
    """Refuse a checkpoint whose recorded digest does not match its contents, or with non-finite weights."""
    if not isinstance(checkpoint, dict):
        return
    recorded = checkpoint.get(DIGEST_KEY)
    if recorded is not None and recorded != state_digest(checkpoint):
        raise CheckpointError(f"checkpoint {path} is corrupted: its contents do not match the sha256 "
                              f"recorded when it was written (changed on disk or in a copy)")
    weights = checkpoint.get("state_dict") if isinstance(checkpoint.get("state_dict"), dict) else checkpoint
    bad = nonfinite_weights(weights)
    if bad:
        detail = ", ".join(f"{key} ({n})" for key, n in bad[:3]) + (" ..." if len(bad) > 3 else "")
        raise CheckpointError(f"checkpoint {path} holds non-finite weights: {sum(n for _, n in bad)} NaN/inf "
                              f"values in {len(bad)} tensors: {detail}")


def load_checkpoint(path: str, map_location="cpu", verify: bool = True) -> dict:
    """`torch.load(weights_only=True)` with errors that name the file; verified (see `verify_checkpoint`)."""
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder, expected a checkpoint file "
                              f"(for example {os.path.join(path, LAST_CHECKPOINT)})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # torch's notes on pickle protocols
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, pickle with non-tensor objects, ...
        raise CheckpointError(f"cannot load checkpoint {path!r}: {why_unloadable(path, exc)}") from exc
    if verify:
        verify_checkpoint(checkpoint, path)
    return checkpoint


def why_unloadable(path: str, exc: Exception) -> str:
    """What a file that torch.load(weights_only=True) refused is not, in words of its own: never torch's
    advice to load it with weights_only=False, which runs whatever code a downloaded file holds."""
    text = str(exc)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "an empty file, not a checkpoint"
    if not head.startswith((b"PK", b"\x80")):
        return f"not a PyTorch checkpoint (neither a zip archive nor a pickle; it starts with {head!r})"
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found is None:
            return "not a PyTorch checkpoint (a pickle of other data, or of instructions that are not data)"
        return (f"it holds a pickled {found.group(1)} object, not only tensors and plain values; refused, "
                f"because loading it could run code (checkpoints of this code and of the released CMD hold "
                f"only tensors and plain values)")
    if head.startswith(b"PK"):
        return "a damaged or truncated PyTorch checkpoint (its zip archive is incomplete)"
    return "a damaged or truncated checkpoint in PyTorch's legacy format (its pickle ends early)"


def checkpoint_candidates(directory: str) -> list[str]:
    """`checkpoint_last.pth.tar`, then `checkpoint_NNNN.pth.tar` from the highest number down."""
    numbered = []
    for p in glob.glob(os.path.join(glob.escape(directory), "checkpoint_*.pth.tar")):
        m = re.fullmatch(r"checkpoint_(\d+)\.pth\.tar", os.path.basename(p))
        if m:
            numbered.append((int(m.group(1)), p))
    last = os.path.join(directory, LAST_CHECKPOINT)
    return ([last] if os.path.isfile(last) else []) + [p for _, p in sorted(numbered, reverse=True)]


def newest_verified_checkpoint(directory: str, map_location="cpu"):
    """(path, checkpoint, skipped) of the newest checkpoint in `directory` that loads and verifies.

    `skipped` lists 'path: reason' for each newer one that did not; (None, None, skipped) when none does."""
    skipped = []
    for path in checkpoint_candidates(directory):
        try:
            return path, load_checkpoint(path, map_location), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    return None, None, skipped


def find_latest_checkpoint(directory: str) -> str | None:
    """`checkpoint_last.pth.tar` if present, else the highest-numbered `checkpoint_NNNN.pth.tar` (unverified;
    scripts/eval_common.sh picks the checkpoint to evaluate with it)."""
    candidates = checkpoint_candidates(directory)
    return candidates[0] if candidates else None


def encoder_record(checkpoint, source: str = "checkpoint") -> dict | None:
    """`{"encoder", "encoder_config"}` of one of our checkpoints; None for a file without it (released)."""
    if not isinstance(checkpoint, dict) or "encoder" not in checkpoint:
        return None
    name, config = checkpoint.get("encoder"), checkpoint.get("encoder_config")
    if not isinstance(name, str) or not isinstance(config, dict):
        raise ValueError(f"{source}: malformed encoder record (expected 'encoder' a name and "
                         f"'encoder_config' a dict, got {name!r} and {type(config).__name__})")
    return {"encoder": name, "encoder_config": dict(config)}


def layout_record(checkpoint, source: str = "checkpoint") -> dict | None:
    """The skeleton layout a pretraining checkpoint of ours records (graph.Layout.record); None for a file
    without it (released files, ours written before layouts were recorded)."""
    if not isinstance(checkpoint, dict) or checkpoint.get("layout") is None:
        return None
    if not isinstance(checkpoint["layout"], dict):
        raise ValueError(f"{source}: malformed layout record (expected a dict, got "
                         f"{type(checkpoint['layout']).__name__})")
    return dict(checkpoint["layout"])


def strip_module_prefix(state_dict: dict) -> dict:
    """Drop the `module.` prefix DDP adds (once per key, only where present)."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def extract_state_dict(checkpoint) -> dict:
    """The model weights of a checkpoint dict (ours or released) or of a bare state_dict."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(torch.is_tensor(v) for v in checkpoint.values()):
        raise ValueError("checkpoint holds neither a 'state_dict' entry nor a plain state_dict of tensors")
    return strip_module_prefix(checkpoint)


def _describe(missing, unexpected, limit: int = 20) -> str:
    def fmt(keys):
        keys = sorted(keys)
        more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {fmt(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {fmt(unexpected)}")
    return "; ".join(parts)


def load_pretraining_weights(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Load a full CMD pretraining state (six encoders and three queues) with strict=True."""
    state_dict = strip_module_prefix(state_dict)
    own = model.state_dict()
    missing = set(own) - set(state_dict)
    unexpected = set(state_dict) - set(own)
    if missing or unexpected:
        raise KeyError(f"{source} does not match the pretraining model: {_describe(missing, unexpected)}")
    model.load_state_dict(state_dict, strict=True)


def query_encoder_weights(state_dict: dict, encoder_names) -> dict:
    """The released downstream rule: keep the query encoders' weights, drop their `fc` heads.

    `encoder_names` are the classifier's encoder attributes (`encoder_q`, `encoder_q_motion`, ...).
    Key encoders, queues and pointers are dropped.
    """
    kept = {}
    for key, value in strip_module_prefix(state_dict).items():
        head, _, rest = key.partition(".")
        if head in encoder_names and not rest.startswith("fc."):
            kept[key] = value
    return kept


def load_query_encoders(classifier: nn.Module, state_dict: dict, encoder_names,
                        source: str = "checkpoint") -> None:
    """Load pretrained query encoders into a downstream classifier; only its `fc` heads may stay new.

    Raises KeyError listing missing or unexpected keys otherwise.
    """
    kept = query_encoder_weights(state_dict, encoder_names)
    own = classifier.state_dict()
    missing = {k for k in own if k not in kept and k.partition(".")[2].split(".")[0] != "fc"}
    unexpected = set(kept) - set(own)
    if missing or unexpected or not kept:
        detail = _describe(missing, unexpected) or "no query-encoder keys found"
        raise KeyError(f"{source} does not fit the classifier's query encoders: {detail}")
    result = classifier.load_state_dict(kept, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
