"""Augmentations of SPEC section 4, twice: small numpy functions applied per clip in the data loader
(dataset.PretrainFeeder, dataset.DownstreamFeeder), and `augment_pretrain_batch`, the same distributions
drawn for a whole batch of tensors on the model's device (for when the data loader is the bottleneck).

Clips are (C, T, V, M) (batches (N, C, T, V, M)) for any skeleton layout: joint corruption picks
`corrupted_joint_count(V)` joints, 15 of NTU's 25.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

WINDOW = 64          # frames of every augmented view (the encoders' input length)


@dataclass(frozen=True)
class PretrainAugment:
    """Settings of the pretraining views. The defaults are the released augmentations (SPEC section 4),
    which draw exactly the released random numbers; `rotate` and `noise` are opt-in additions for
    cross-view data (docs/differences.md), drawn only when set."""
    crop_min_scale: float = 0.1      # crop scale ~ U(crop_min_scale, 1)
    corrupt_prob: float = 0.5        # probability of the joint corruption
    shear_prob: float = 0.5          # probability of the shear
    shear: float = 1.0               # shear entries ~ U(-shear, shear)
    rotate: float = 0.0              # degrees: a random 3-D rotation, U(-rotate, rotate) about x, y and z
    noise: float = 0.0               # standard deviation of Gaussian noise on every non-zero coordinate

    def record(self) -> dict:
        return asdict(self)


RELEASED_AUGMENT = PretrainAugment()


def corrupted_joint_count(num_joints: int) -> int:
    """Joints a corrupted clip loses: 15 of NTU's 25 as released, 3/5 (rounded) of another layout's."""
    return max(1, (3 * num_joints + 2) // 5)


# ----------------------------------------------------------------------------------------------------
# numpy augmentations (SPEC section 4); every function takes the clip (C, T, V, M) and a Generator


def crop_length(n: int, scale: float, min_length: int = WINDOW) -> int:
    """L = clamp(floor(n * scale), 64, n): the minimum of 64 first, then capped at n (Python scalars)."""
    return min(max(int(np.floor(n * scale)), min_length), n)


def resize_time(clip: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Linear interpolation of the time axis to `window` frames, align_corners=False (as F.interpolate)."""
    length = clip.shape[1]
    scale = np.float32(length) / np.float32(window)
    src = np.maximum((np.arange(window, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                     np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, length - 1)
    w1 = (src - i0).astype(np.float32)[None, :, None, None]
    return ((1 - w1) * clip[:, i0] + w1 * clip[:, i1]).astype(np.float32)


def random_crop_resize(clip: np.ndarray, num_frame: int, rng: np.random.Generator,
                       scale_range: tuple[float, float] = (0.1, 1.0), window: int = WINDOW) -> np.ndarray:
    """Temporal crop of a random length (scale ~ U(scale_range)) at a random start, resized to `window`."""
    n = min(int(num_frame), clip.shape[1])
    length = crop_length(n, float(rng.uniform(*scale_range)), window)
    start = int(rng.integers(0, n - length + 1))
    return resize_time(clip[:, start:start + length], window)


def center_crop_resize(clip: np.ndarray, num_frame: int, ratio: float = 0.95,
                       window: int = WINDOW) -> np.ndarray:
    """Frames [start, n - start) with start = int((1 - ratio) * n / 2), resized to `window`."""
    n = min(int(num_frame), clip.shape[1])
    start = int((1 - ratio) * n / 2)
    return resize_time(clip[:, start:n - start], window)


def corrupt_joints(clip: np.ndarray, rng: np.random.Generator, count: int | None = None) -> np.ndarray:
    """Pick `count` joints (default `corrupted_joint_count(V)`: 15 of NTU's 25); with probability 1/2
    zero them, else multiply their xyz by one U(-1,1) 3x3 matrix."""
    out = np.array(clip, dtype=np.float32, copy=True)
    num_joints = clip.shape[2]
    count = corrupted_joint_count(num_joints) if count is None else count
    joints = rng.choice(num_joints, count, replace=False)
    if rng.random() < 0.5:
        out[:, :, joints, :] = 0
    else:
        matrix = rng.uniform(-1, 1, size=(3, 3))
        picked = out[:, :, joints, :]
        out[:, :, joints, :] = np.einsum("ctvm,cd->dtvm", picked, matrix)   # xyz @ R
    return out


def shear(clip: np.ndarray, rng: np.random.Generator, magnitude: float = 1.0) -> np.ndarray:
    """Pose augmentation: S = [[1,a,b],[c,1,d],[e,f,1]], entries U(-1,1) (released; U(-magnitude,
    magnitude) in general), xyz_new = xyz @ S.T."""
    matrix = np.eye(3)
    off_diagonal = ~np.eye(3, dtype=bool)
    matrix[off_diagonal] = rng.uniform(-magnitude, magnitude, size=6)
    return np.einsum("dc,ctvm->dtvm", matrix, clip).astype(np.float32)


def rotation_xyz(angles) -> np.ndarray:
    """R = Rz @ Ry @ Rx for angles (x, y, z) in radians."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def rotate(clip: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
    """Random 3-D rotation of the whole clip (angles U(-degrees, degrees) about x, y, z): xyz_new = R xyz."""
    matrix = rotation_xyz(np.deg2rad(rng.uniform(-degrees, degrees, size=3)))
    return np.einsum("dc,ctvm->dtvm", matrix, clip).astype(np.float32)


def joint_noise(clip: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Gaussian noise N(0, std) on every non-zero coordinate (absent persons and zeroed joints stay 0)."""
    noise = rng.normal(0.0, std, size=clip.shape).astype(np.float32)
    return np.where(clip != 0, clip + noise, clip).astype(np.float32)


def augment_pretrain(clip: np.ndarray, num_frame: int, rng: np.random.Generator,
                     window: int = WINDOW, options: PretrainAugment = RELEASED_AUGMENT) -> np.ndarray:
    """One pretraining view: crop-resize (scale U(0.1,1)), then each of corruption and shear with p = 1/2
    (the released view); then the opt-in rotation and noise of `options`."""
    out = random_crop_resize(clip, num_frame, rng, (options.crop_min_scale, 1.0), window)
    if rng.random() < options.corrupt_prob:
        out = corrupt_joints(out, rng)
    if rng.random() < options.shear_prob:
        out = shear(out, rng, options.shear)
    if options.rotate:
        out = rotate(out, rng, options.rotate)
    if options.noise:
        out = joint_noise(out, rng, options.noise)
    return out


# ----------------------------------------------------------------------------------------------------
# batched torch versions: same distributions, one call for a whole batch on any device


def _uniform(shape, low, high, device, generator) -> torch.Tensor:
    return torch.rand(shape, device=device, generator=generator) * (high - low) + low


def crop_resize_batch(clips: torch.Tensor, num_frame: torch.Tensor, scale_range=(0.1, 1.0),
                      window: int = WINDOW, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random temporal crop-resize of every clip of (N, C, T, V, M), each with its own length and start."""
    n_clips, channels, max_t, joints, persons = clips.shape
    device = clips.device
    n = torch.clamp(num_frame.to(device=device, dtype=torch.int64), max=max_t)
    scale = _uniform((n_clips,), scale_range[0], scale_range[1], device, generator).double()
    length = torch.minimum(torch.clamp(torch.floor(n.double() * scale).long(), min=window), n)
    start = torch.floor(torch.rand(n_clips, device=device, generator=generator, dtype=torch.float64)
                        * (n - length + 1).double()).long()
    start = torch.minimum(start, n - length)
    return _resize_windows(clips, start, length, window)


def _resize_windows(clips: torch.Tensor, start: torch.Tensor, length: torch.Tensor,
                    window: int) -> torch.Tensor:
    """Resize frames [start, start+length) of each clip to `window` frames (align_corners=False)."""
    n_clips, channels, max_t, joints, persons = clips.shape
    device = clips.device
    scale = length.float() / float(window)
    dst = torch.arange(window, device=device, dtype=torch.float32) + 0.5
    src = torch.clamp(dst[None, :] * scale[:, None] - 0.5, min=0)
    i0 = src.long()
    w1 = (src - i0.float()).to(clips.dtype)
    i1 = torch.minimum(i0 + 1, (length - 1)[:, None])
    i0 = i0 + start[:, None]
    i1 = i1 + start[:, None]
    flat = clips.reshape(n_clips, channels, max_t, joints * persons)

    def take(index):
        index = index[:, None, :, None].expand(n_clips, channels, window, joints * persons)
        return torch.gather(flat, 2, index)

    w1 = w1[:, None, :, None]
    out = (1 - w1) * take(i0) + w1 * take(i1)
    return out.reshape(n_clips, channels, window, joints, persons)


def center_crop_resize_batch(clips: torch.Tensor, num_frame: torch.Tensor, ratio: float = 0.95,
                             window: int = WINDOW) -> torch.Tensor:
    n = torch.clamp(num_frame.to(device=clips.device, dtype=torch.int64), max=clips.shape[2])
    start = ((1 - ratio) * n.double() / 2).long()
    return _resize_windows(clips, start, n - 2 * start, window)


def corrupt_joints_batch(x: torch.Tensor, apply: torch.Tensor, generator: torch.Generator | None = None,
                         count: int | None = None) -> torch.Tensor:
    """Joint corruption of the clips where `apply` is True (per clip: `count` joints, default
    `corrupted_joint_count(V)`, zeroed or multiplied by one 3x3 matrix)."""
    n_clips, _, _, joints, _ = x.shape
    count = corrupted_joint_count(joints) if count is None else count
    device = x.device
    chosen_rank = torch.rand(n_clips, joints, device=device, generator=generator).argsort(dim=1)
    chosen = torch.zeros(n_clips, joints, dtype=torch.bool, device=device)
    chosen.scatter_(1, chosen_rank[:, :count], True)
    zero_mode = torch.rand(n_clips, device=device, generator=generator) < 0.5
    matrix = _uniform((n_clips, 3, 3), -1, 1, device, generator).to(x.dtype)
    mixed = torch.einsum("nctvm,ncd->ndtvm", x, matrix)                    # xyz @ R
    replaced = torch.where(zero_mode[:, None, None, None, None], torch.zeros_like(x), mixed)
    mask = (apply[:, None] & chosen)[:, None, None, :, None]
    return torch.where(mask, replaced, x)


def shear_batch(x: torch.Tensor, apply: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    n_clips = x.shape[0]
    matrix = _uniform((n_clips, 3, 3), -1, 1, x.device, generator).to(x.dtype)
    eye = torch.eye(3, device=x.device, dtype=torch.bool)
    matrix = torch.where(eye, torch.ones_like(matrix), matrix)
    sheared = torch.einsum("ndc,nctvm->ndtvm", matrix, x)                 # xyz @ S.T
    return torch.where(apply[:, None, None, None, None], sheared, x)


def augment_pretrain_batch(clips: torch.Tensor, num_frame: torch.Tensor, window: int = WINDOW,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """One pretraining view of a whole batch (N, 3, T, V, M) -> (N, 3, window, V, M), on clips.device.

    Same distributions as `augment_pretrain`; call it twice for the two views."""
    x = crop_resize_batch(clips, num_frame, (0.1, 1.0), window, generator)
    n_clips = x.shape[0]
    x = corrupt_joints_batch(x, torch.rand(n_clips, device=x.device, generator=generator) < 0.5, generator)
    return shear_batch(x, torch.rand(n_clips, device=x.device, generator=generator) < 0.5, generator)
