"""The released pre-normalisation (SPEC section 6), vectorised per clip; tests/test_prepare_data.py holds
the loop version. Any Kinect-style layout can use it with its own joint indices: `zaxis` (bottom, top of
the spine), `xaxis` (right, left shoulder); NTU RGB+D and NW-UCLA share (0, 1) and (8, 4)."""
from __future__ import annotations

import math

import numpy as np


def rotation_matrix(axis, theta) -> np.ndarray:
    """Rotation by theta about axis (identity when the axis's absolute sum or the angle is below 1e-6)."""
    ax, ay, az = (float(v) for v in axis)
    if abs(ax) + abs(ay) + abs(az) < 1e-6 or abs(theta) < 1e-6:
        return np.eye(3)
    norm = math.sqrt(ax * ax + ay * ay + az * az)
    a = math.cos(theta / 2.0)
    sin = math.sin(theta / 2.0)
    b, c, d = -(ax / norm) * sin, -(ay / norm) * sin, -(az / norm) * sin
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
    return np.array([[aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)],
                     [2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)],
                     [2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc]])


def angle_between(v1, v2) -> float:
    """Angle between v1 and v2 with the released arithmetic (float32 unit vector of v1 from the clip)."""
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0
    v1_u = v1 / np.linalg.norm(v1)
    v2_u = v2 / np.linalg.norm(v2)
    return np.arccos(min(max(float(np.dot(v1_u, v2_u)), -1.0), 1.0))


def align_matrix(vector: np.ndarray, target) -> np.ndarray:
    """The rotation taking `vector` onto the direction of `target` (about their cross product)."""
    (a0, a1, a2), (t0, t1, t2) = (float(v) for v in vector), target
    axis = (a1 * t2 - a2 * t1, a2 * t0 - a0 * t2, a0 * t1 - a1 * t0)
    return rotation_matrix(axis, angle_between(vector, np.asarray(target, dtype=np.float64)))


def _rotate_frames(y: np.ndarray, matrix: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """y (C, M, T, V) float32 -> matrix @ xyz of every joint (in float64, stored as float32, as the
    released per-joint np.dot) where `keep` (M, T) is True; other frames unchanged."""
    rotated = np.dot(matrix, y.reshape(3, -1).astype(np.float64)).astype(np.float32).reshape(y.shape)
    if keep.all():
        return rotated
    return np.where(keep[None, :, :, None], rotated, y)


ALIGN_FRAMES = ("first", "all")     # --align-frames: the released frame 0, or the mean over the clip


def _axis_vector(y: np.ndarray, start: int, end: int, keep: np.ndarray, align_frames: str) -> np.ndarray:
    """Joint `end` minus joint `start` of person 0: in frame 0 (released), or averaged over person 0's
    rotated frames (`keep`), which one noisy first frame cannot tip over."""
    if align_frames == "first" or not keep[0].any():
        return y[:, 0, 0, end] - y[:, 0, 0, start]
    frames = np.flatnonzero(keep[0])
    return (y[:, 0, frames, end].astype(np.float64) - y[:, 0, frames, start]).mean(axis=1)


def pre_normalize(clip: np.ndarray, zaxis=(0, 1), xaxis=(8, 4), align_frames: str = "first") -> np.ndarray:
    """One clip (C, T, V, M) float32 -> normalised clip: fill empty frames, centre, two rotations.

    Same steps and the same "empty = sum is 0" tests as the released pre_normalization, without loops
    over frames or joints. Works in a (C, M, T, V) copy; returns a (C, T, V, M) view of it.
    align_frames "all" (an addition, not released) takes both rotations from the clip's mean spine and
    shoulder vectors instead of frame 0's."""
    if align_frames not in ALIGN_FRAMES:
        raise ValueError(f"align_frames {align_frames!r}: expected one of {', '.join(ALIGN_FRAMES)}")
    y = np.ascontiguousarray(clip.transpose(0, 3, 1, 2), dtype=np.float32)     # (C, M, T, V)
    num_t = y.shape[2]
    periods = {}                     # person -> length before its empty tail
    # (1) per person: move non-empty frames to the front when frame 0 is empty; fill the empty tail
    #     by repeating the frames before it
    frame_sums = y.sum(-1).sum(0)                                               # (M, T)
    for p in range(y.shape[1]):
        person = y[:, p]                                                         # (C, T, V) view
        frame_empty = frame_sums[p] == 0
        if frame_empty.all():
            continue
        if frame_empty[0]:
            kept = person[:, ~frame_empty].copy()
            person[:] = 0
            person[:, :kept.shape[1]] = kept
            frame_empty = np.arange(num_t) >= kept.shape[1]
        period = num_t
        if frame_empty[-1]:
            nonempty = np.flatnonzero(~frame_empty)
            period = nonempty[-1] + 1 if len(nonempty) else num_t
        periods[p] = period
    if not periods:                                                              # an empty clip
        return y.transpose(0, 2, 3, 1)
    # Every later step works frame by frame (the rotations come from frame 0), so when all persons
    # repeat with one period, the steps run on one period and the result is tiled at the end: the same
    # numbers for less work. Otherwise each person's empty tail is filled now, as released.
    period = set(periods.values()).pop() if len(set(periods.values())) == 1 else num_t
    if period < num_t:
        y = y[:, :, :period].copy()
    else:
        for p, own_period in periods.items():
            if own_period < num_t:
                y[:, p, own_period:] = y[:, p, np.arange(num_t - own_period) % own_period]
    # (2) subtract joint `zaxis[1]` of person 0, per frame, from every non-zero joint of non-empty persons
    person_nonempty = y.sum(-1).sum(-1).sum(0) != 0
    center = y[:, 0, :, zaxis[1]:zaxis[1] + 1].copy()                           # (C, T, 1)
    joint_nonzero = (y[0] + y[1] + y[2]) != 0                                   # (M, T, V): xyz sum != 0
    for p in np.flatnonzero(person_nonempty):
        y[:, p] = (y[:, p] - center) * joint_nonzero[p]
    # (3) hip -> spine of person 0 in frame 0 along +z; (4) then left -> right shoulder along +x;
    #     only non-empty frames of non-empty persons are rotated
    keep = (y.sum(-1).sum(0) != 0) & person_nonempty[:, None]
    y = _rotate_frames(y, align_matrix(_axis_vector(y, zaxis[0], zaxis[1], keep, align_frames), [0, 0, 1]), keep)
    keep = (y.sum(-1).sum(0) != 0) & person_nonempty[:, None]
    y = _rotate_frames(y, align_matrix(_axis_vector(y, xaxis[1], xaxis[0], keep, align_frames), [1, 0, 0]), keep)
    if period < num_t:
        return y[:, :, np.arange(num_t) % period].transpose(0, 2, 3, 1)
    return y.transpose(0, 2, 3, 1)

