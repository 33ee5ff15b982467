"""Is the encoder learning while it trains? A cheap look at the query encoders, made between epochs.

Three numbers, in the spirit of DINO's kNN monitor:
- `monitor_cos_<modality>`: the mean pairwise cosine of the projected, L2-normalised query features of a
  fixed held batch of training clips (no augmentation). Collapse (every clip mapped to one point) shows as
  values near 1 (0.999 for the collapsed ST-GCN of docs/model.md); the healthy NW-UCLA runs sit at 0.8-0.93.
- `monitor_std_<modality>`: the mean over dimensions of those features' standard deviation over the
  batch, times sqrt(dim): about 1 for features spread over the sphere, near 0 when they collapse.
- `monitor_knn`: when the prepared folder has a labelled `val` part, the 1-NN top-1 (%) of the joint
  query encoder's backbone features (the ones the evaluations use), a fixed subset of validation clips
  classified against a fixed subset of training clips. It is a trend, not a result: the subsets are small.

Everything runs in eval mode under no_grad on fixed centre-cropped clips: the model's weights, BatchNorm
statistics and the random streams are not touched, so a run with the monitor trains exactly as one
without it.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

import cmd_model
from augmentation.augment import center_crop_resize

COLLAPSE_COS = 0.99        # above this mean pairwise cosine the features have collapsed (healthy runs: 0.8-0.93)


def spread_indices(count: int, limit: int) -> np.ndarray:
    """At most `limit` indices spread evenly over range(count) (fixed: the same clips at every look)."""
    return np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(np.int64))


def centre_clips(split, indices, window: int) -> torch.Tensor:
    """The clips `indices` of `split`, 0.95 centre crop resized to `window` frames, as one tensor."""
    clips = [center_crop_resize(np.asarray(split.data[i], dtype=np.float32), int(split.num_frame[i]),
                                0.95, window) for i in indices]
    return torch.from_numpy(np.nan_to_num(np.stack(clips)))


class TrainingMonitor:
    """Holds the fixed clips on the device; `measure(model)` returns the monitor's numbers."""

    def __init__(self, train_split, val_split, window: int, device: torch.device, held: int = 64,
                 knn_clips: int = 256):
        self.held = centre_clips(train_split, spread_indices(len(train_split), held), window).to(device)
        self.reference = self.queries = None
        if val_split is not None and knn_clips > 0:
            ref = spread_indices(len(train_split), knn_clips)
            val = spread_indices(len(val_split), knn_clips)
            self.reference = centre_clips(train_split, ref, window).to(device)
            self.reference_labels = torch.as_tensor(train_split.labels[ref], device=device)
            self.queries = centre_clips(val_split, val, window).to(device)
            self.query_labels = torch.as_tensor(val_split.labels[val], device=device)

    @torch.no_grad()
    def measure(self, model) -> dict:
        """{monitor_cos_<m>, monitor_std_<m>, [monitor_knn], monitor_s} of the CMD model's query encoders."""
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            result = {}
            for mod in cmd_model.MODALITIES:
                encoder = getattr(model, cmd_model.CMDClassifier.ENCODER_NAMES[mod])
                z = F.normalize(encoder(cmd_model.to_modality(self.held, mod, model.layout)).float(), dim=1)
                result.update(feature_spread(z, mod))
            if self.reference is not None:
                ref = F.normalize(model.encoder_q.features(self.reference).float(), dim=1)
                queries = F.normalize(model.encoder_q.features(self.queries).float(), dim=1)
                nearest = (queries @ ref.T).argmax(dim=1)
                hit = self.reference_labels[nearest] == self.query_labels
                result["monitor_knn"] = 100.0 * hit.float().mean().item()
        finally:
            model.train(was_training)
        result["monitor_s"] = time.perf_counter() - started
        return result


def feature_spread(z: torch.Tensor, mod: str) -> dict:
    """Mean pairwise cosine (diagonal excluded) and sqrt(dim)-scaled mean per-dimension std of unit rows."""
    n, dim = z.shape
    cos = (z @ z.T).sum().item() - n        # the diagonal of unit vectors sums to n
    return {f"monitor_cos_{mod}": cos / max(n * (n - 1), 1),
            f"monitor_std_{mod}": z.std(dim=0).mean().item() * dim ** 0.5}


def collapse_warning(result: dict, epoch: int) -> str | None:
    """One line when some modality's features have collapsed, else None."""
    collapsed = [k[len("monitor_cos_"):] for k, v in result.items()
                 if k.startswith("monitor_cos_") and v > COLLAPSE_COS]
    if not collapsed:
        return None
    values = ", ".join(f"{m} {result['monitor_cos_' + m]:.3f}" for m in collapsed)
    return (f"warning: epoch {epoch}: the query features have collapsed (mean pairwise cosine of a fixed "
            f"batch {values}, above {COLLAPSE_COS}); this run is unlikely to learn: lower --lr, or see "
            f"docs/training.md")


def summary(result: dict) -> str:
    """The monitor's part of the epoch line."""
    cos = "/".join(f"{result['monitor_cos_' + m]:.2f}" for m in cmd_model.MODALITIES)
    std = "/".join(f"{result['monitor_std_' + m]:.2f}" for m in cmd_model.MODALITIES)
    knn = f" val 1-NN {result['monitor_knn']:.1f}" if "monitor_knn" in result else ""
    return f" | monitor cos {cos} std {std}{knn} ({result['monitor_s']:.1f} s)"
