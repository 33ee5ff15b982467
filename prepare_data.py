"""Convert raw skeleton downloads to the training format (SPEC section 6), exactly as the released code.

    python prepare_data.py ntu60  --raw-dir RAW/nturgb+d_skeletons
    python prepare_data.py ntu120 --raw-dir RAW/nturgb+d_skeletons RAW/nturgbd_skeletons_s018_to_s032
    python prepare_data.py pku_v1 --root RAW/pku_mmd_v1      (skeleton/, label/, cross-subject.txt ...)
    python prepare_data.py pku_v2 --root RAW/pku_mmd_v2      (skeleton/, label/, cross_subject_v2.txt ...)
    python prepare_data.py synthetic                       (generate the built-in dataset, then convert it)

The subcommands are the datasets of benchmarks.py (`pku1`, `pku2`: the released names of pku_v1, pku_v2).
Per benchmark and part, `{part}_data_joint.npy` float32 (N, 3, 300, 25, 2), `{part}_label.pkl`
= (sample_names, labels) and `{part}_num_frame.npy` land in `--out/<xsub|xview|xsetup>/`. Each file is
parsed and normalised once (vectorised numpy, in `--workers` processes) and written straight into
memory-mapped outputs under temporary names, renamed when whole, so memory stays at a few clips.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

import benchmarks
import cli_errors
import dataset
import graph
import run_folder
import runtime

MAX_BODIES_KINECT = 4    # bodies kept from a raw file, in file order
MAX_BODIES = dataset.NUM_PERSONS                 # bodies kept by energy
KINECT_JOINTS = graph.get_layout("ntu").num_joints   # joints per body in NTU and PKU-MMD files
REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
MISSING_LISTS = {
    "ntu60": os.path.join(REPO_ROOT, "missing_skeletons", "NTU_RGBD_samples_with_missing_skeletons.txt"),
    "ntu120": os.path.join(REPO_ROOT, "missing_skeletons", "NTU_RGBD120_samples_with_missing_skeletons.txt"),
}
# Training performers of the cross-subject benchmarks (NTU-60 uses the first 20; its performers are 1..40).
TRAIN_SUBJECTS = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46,
                            47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84,
                            85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103})
TRAIN_CAMERAS = frozenset({2, 3})
NTU_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")


class SkeletonFileError(ValueError):
    """A malformed input file; the message names the file, the line and what was expected."""


# ----------------------------------------------------------------------------------------------------
# NTU RGB+D .skeleton parser


def _int_line(lines: list[str], i: int, path: str, what: str) -> int:
    if i >= len(lines):
        raise SkeletonFileError(f"{path}:{i + 1}: file ends early, expected {what} (an integer)")
    text = lines[i].strip()
    try:
        value = int(text)
    except ValueError:
        raise SkeletonFileError(f"{path}:{i + 1}: expected {what} (an integer), got {text[:60]!r}") from None
    if value < 0:
        raise SkeletonFileError(f"{path}:{i + 1}: expected {what} >= 0, got {value}")
    return value


def _bad_joint_line(lines: list[str], starts, counts, path: str) -> SkeletonFileError:
    """Slow path after the bulk float conversion failed: find the first offending joint line."""
    for start, count in zip(starts, counts):
        for i in range(start, start + count):
            fields = lines[i].split()
            if len(fields) != 12:
                return SkeletonFileError(f"{path}:{i + 1}: expected a joint line of 12 numbers, got "
                                         f"{len(fields)} fields")
            for field in fields:
                try:
                    float(field)
                except ValueError:
                    return SkeletonFileError(f"{path}:{i + 1}: expected a number, got {field!r}")
    return SkeletonFileError(f"{path}: malformed joint lines")


def _parse_floats(text: str) -> np.ndarray | None:
    """Whitespace-separated numbers -> float64 array in C; None when something is not a number."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # numpy warns (and stops) at the first non-number
        try:
            return np.fromstring(text, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


def read_ntu_skeleton(path: str, strict_joints: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Parse a raw .skeleton file -> (xyz float64 (4, T, 25, 3), bodies per frame (T,)).

    Body m of frame t is the m-th body listed in that frame (file order), as in the released parser;
    bodies past the 4th and joints past the 25th are read over and dropped. Files laid out as NTU
    writes them take a vectorised path; anything else (other whitespace, malformed content) goes
    through a line-by-line reader that names the offending line. With `strict_joints` (the default) a
    body with a joint count other than 25 is an error naming its line (the released parser would pad
    it with zero joints or drop the extra ones without a word)."""
    with open(path, "rb") as f:
        raw = f.read()
    parsed = _read_ntu_fast(raw, strict_joints)
    if parsed is not None:
        return parsed
    return _read_ntu_lines(path, raw.decode("utf-8", errors="replace"), strict_joints)


_NUMBER_BYTES = np.zeros(256, dtype=bool)
_NUMBER_BYTES[np.frombuffer(b"0123456789.-+eE \n", dtype=np.uint8)] = True
_INT, _INFO, _JOINT = 0, 9, 11          # line kinds by their number of single spaces (1, 10, 12 fields)


def _gather_segments(buf: np.ndarray, first: np.ndarray, last: np.ndarray) -> str:
    """The bytes buf[first[i]:last[i] + 1] of every segment i, concatenated, as text."""
    lengths = last - first + 1
    offsets = np.repeat(first - (np.cumsum(lengths) - lengths), lengths)
    return buf[offsets + np.arange(offsets.size)].tobytes().decode()


def _read_ntu_fast(raw: bytes, strict_joints: bool = False):
    """Vectorised reader for well-formed files (single spaces between fields): the structure comes from
    cumulative counts over line kinds, the numbers from one conversion of the x y z fields; None when
    the file does not have exactly the expected layout (the caller then reads it line by line)."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    buf = np.frombuffer(raw.rstrip(), dtype=np.uint8)
    if buf.size == 0 or np.bincount(buf, minlength=256)[~_NUMBER_BYTES].any():
        return None
    is_space = buf == 32
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [buf.size]])                 # exclusive
    if np.any(ends <= starts) or is_space[starts].any() or is_space[ends - 1].any() \
            or (is_space[1:] & is_space[:-1]).any():
        return None
    space_positions = np.flatnonzero(is_space)
    spaces_before_start = np.searchsorted(space_positions, starts)
    kind = np.searchsorted(space_positions, ends) - spaces_before_start
    if not np.isin(kind, (_INT, _INFO, _JOINT)).all() or kind[0] != _INT:
        return None
    # integers: the frame count, body counts and joint counts (each segment ends with its newline)
    int_lines = np.flatnonzero(kind == _INT)
    int_text = _gather_segments(buf, starts[int_lines], np.minimum(ends[int_lines], buf.size - 1))
    if any(c in int_text for c in ".eE+-"):
        return None
    values = _parse_floats(int_text)
    if values is None or values.size != int_lines.size:
        return None
    value_of = np.zeros(kind.size, dtype=np.int64)
    value_of[int_lines] = values.astype(np.int64)
    previous = np.concatenate([[-1], kind[:-1]])
    is_joint_count = (kind == _INT) & (previous == _INFO)
    is_body_count = (kind == _INT) & ~is_joint_count
    is_body_count[0] = False
    num_frames = int(value_of[0])
    body_count_lines = np.flatnonzero(is_body_count)
    if body_count_lines.size != num_frames:
        return None
    # grammar: an info line is followed by its joint count, a joint line follows a joint count or a
    # joint line, and the counts agree with what follows them
    info_lines = np.flatnonzero(kind == _INFO)
    joint_lines = np.flatnonzero(kind == _JOINT)
    if info_lines.size and (info_lines[-1] + 1 >= kind.size or not is_joint_count[info_lines + 1].all()):
        return None
    if joint_lines.size and not ((kind[joint_lines - 1] == _JOINT) | is_joint_count[joint_lines - 1]).all():
        return None
    frame_of_line = np.cumsum(is_body_count) - 1
    body_of_line = np.cumsum(kind == _INFO) - 1
    if info_lines.size and (frame_of_line[info_lines] < 0).any():
        return None
    bodies_per_frame = np.bincount(frame_of_line[info_lines], minlength=num_frames)
    if not np.array_equal(bodies_per_frame, value_of[body_count_lines]):
        return None
    joints_per_body = np.bincount(body_of_line[joint_lines], minlength=info_lines.size)
    if not np.array_equal(joints_per_body, value_of[info_lines + 1]):
        return None
    if strict_joints and (joints_per_body != KINECT_JOINTS).any():
        return None                                     # the line reader names the line
    # body index within its frame and joint index within its body, for every joint line
    first_body_of_frame = np.cumsum(bodies_per_frame) - bodies_per_frame
    body = body_of_line[joint_lines]
    frame = frame_of_line[joint_lines]
    m = body - first_body_of_frame[frame]
    first_joint_of_body = np.cumsum(joints_per_body) - joints_per_body
    j = np.arange(joint_lines.size) - first_joint_of_body[body]
    keep = (m < MAX_BODIES_KINECT) & (j < KINECT_JOINTS)
    # the x y z fields of the kept joint lines: from the line start to its third space
    kept_lines = joint_lines[keep]
    third_space = space_positions[spaces_before_start[kept_lines] + 2]
    numbers = _parse_floats(_gather_segments(buf, starts[kept_lines], third_space))
    if numbers is None or numbers.size != 3 * kept_lines.size:
        return None
    xyz = np.zeros((MAX_BODIES_KINECT, num_frames, KINECT_JOINTS, 3))
    xyz[m[keep], frame[keep], j[keep]] = numbers.reshape(-1, 3)
    return xyz, bodies_per_frame.astype(np.int64)


def _read_ntu_lines(path: str, text: str, strict_joints: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Line-by-line reader: accepts any whitespace and reports the first malformed line."""
    lines = text.rstrip().split("\n")
    num_frames = _int_line(lines, 0, path, "the frame count")
    body_counts = np.zeros(num_frames, dtype=np.int64)
    starts, counts, frame_of, body_of = [], [], [], []
    i = 1
    for t in range(num_frames):      # walks the structure only; the numbers are converted in one go below
        num_bodies = _int_line(lines, i, path, f"the body count of frame {t + 1}")
        body_counts[t] = num_bodies
        i += 1
        for m in range(num_bodies):
            if i >= len(lines):
                raise SkeletonFileError(f"{path}:{i + 1}: file ends early, expected the info line of body "
                                        f"{m + 1} in frame {t + 1}")
            if len(lines[i].split()) != 10:
                raise SkeletonFileError(f"{path}:{i + 1}: expected a body info line of 10 fields, got "
                                        f"{len(lines[i].split())}")
            num_joints = _int_line(lines, i + 1, path, f"the joint count of body {m + 1} in frame {t + 1}")
            if strict_joints and num_joints != KINECT_JOINTS:
                raise SkeletonFileError(f"{path}:{i + 2}: body {m + 1} of frame {t + 1} has {num_joints} "
                                        f"joints, expected {KINECT_JOINTS} (Kinect v2 skeletons)")
            i += 2
            if i + num_joints > len(lines):
                raise SkeletonFileError(f"{path}:{len(lines)}: file ends early, expected {num_joints} joint "
                                        f"lines for body {m + 1} in frame {t + 1}")
            if m < MAX_BODIES_KINECT and num_joints:
                starts.append(i)
                counts.append(min(num_joints, KINECT_JOINTS))
                frame_of.append(t)
                body_of.append(m)
            i += num_joints
    if any(line.strip() for line in lines[i:]):
        raise SkeletonFileError(f"{path}:{i + 1}: expected the end of the file after {num_frames} frames, "
                                f"got {lines[i].strip()[:60]!r}")
    xyz = np.zeros((MAX_BODIES_KINECT, num_frames, KINECT_JOINTS, 3))
    if starts:
        text = "\n".join("\n".join(lines[s:s + c]) for s, c in zip(starts, counts))
        values = _parse_floats(text)
        if values is None or values.size != 12 * sum(counts):
            raise _bad_joint_line(lines, starts, counts, path)
        values = values.reshape(-1, 12)[:, :3]
        counts_arr = np.asarray(counts)
        joint = np.arange(values.shape[0]) - np.repeat(np.cumsum(counts_arr) - counts_arr, counts_arr)
        xyz[np.repeat(body_of, counts_arr), np.repeat(frame_of, counts_arr), joint] = values
    return xyz, body_counts


def body_energy(body: np.ndarray) -> float:
    """std(x) + std(y) + std(z) over the frames where the body (T, V, 3) is non-zero; 0 when empty."""
    valid = body.sum(-1).sum(-1) != 0
    body = body[valid]
    if len(body) == 0:
        return 0
    return body[:, :, 0].std() + body[:, :, 1].std() + body[:, :, 2].std()


def select_bodies(xyz: np.ndarray) -> np.ndarray:
    """(4, T, V, 3) -> (3, T, V, 2): the 2 bodies of largest energy, ordered by argsort(energy)[::-1]."""
    energy = np.array([body_energy(body) for body in xyz])
    index = energy.argsort()[::-1][0:MAX_BODIES]
    return xyz[index].transpose(3, 1, 2, 0)


def to_fixed_length(clip: np.ndarray, max_frames: int = dataset.CLIP_FRAMES) -> np.ndarray:
    """(3, T, V, M) -> float32 (3, max_frames, V, M): truncated past max_frames, zero-padded after T."""
    out = np.zeros((clip.shape[0], max_frames) + clip.shape[2:], dtype=np.float32)
    length = min(clip.shape[1], max_frames)
    out[:, :length] = clip[:, :length]
    return out


# ----------------------------------------------------------------------------------------------------
# pre-normalisation (SPEC section 6), vectorised per clip; tests/test_prepare_data.py holds the loop version


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


def pre_normalize(clip: np.ndarray, zaxis=(0, 1), xaxis=(8, 4)) -> np.ndarray:
    """One clip (C, T, V, M) float32 -> normalised clip: fill empty frames, centre, two rotations.

    Same steps and the same "empty = sum is 0" tests as the released pre_normalization, without loops
    over frames or joints. Works in a (C, M, T, V) copy; returns a (C, T, V, M) view of it."""
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
    y = _rotate_frames(y, align_matrix(y[:, 0, 0, zaxis[1]] - y[:, 0, 0, zaxis[0]], [0, 0, 1]), keep)
    keep = (y.sum(-1).sum(0) != 0) & person_nonempty[:, None]
    y = _rotate_frames(y, align_matrix(y[:, 0, 0, xaxis[0]] - y[:, 0, 0, xaxis[1]], [1, 0, 0]), keep)
    if period < num_t:
        return y[:, :, np.arange(num_t) % period].transpose(0, 2, 3, 1)
    return y.transpose(0, 2, 3, 1)


def ntu_sample(path: str) -> tuple[np.ndarray, int]:
    """The whole per-file pipeline: parse, 2 bodies by energy, fixed length, pre-normalise."""
    xyz, _ = read_ntu_skeleton(path)
    clip = select_bodies(xyz)
    return pre_normalize(to_fixed_length(clip)), clip.shape[1]


# ----------------------------------------------------------------------------------------------------
# PKU-MMD


def read_pku_skeleton(path: str) -> np.ndarray:
    """One PKU-MMD video: T lines of 150 numbers -> float64 (3, T, 25, 2) (2 persons x 25 joints x xyz)."""
    with open(path) as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    values = _parse_floats("\n".join(lines))
    if values is None or values.size != 150 * len(lines):
        for i, line in enumerate(lines):
            fields = line.split()
            if len(fields) != 150:
                raise SkeletonFileError(f"{path}:{i + 1}: expected 150 numbers "
                                        f"(2 persons x 25 joints x xyz), "
                                        f"got {len(fields)} (blank lines are not counted)")
            for field in fields:
                try:
                    float(field)
                except ValueError:
                    raise SkeletonFileError(f"{path}:{i + 1}: expected a number, got {field!r}") from None
    if not lines:
        raise SkeletonFileError(f"{path}: empty skeleton file, expected lines of 150 numbers")
    return values.reshape(len(lines), MAX_BODIES, KINECT_JOINTS, 3).transpose(3, 0, 2, 1)


def read_pku_labels(path: str) -> list[tuple[int, int, int]]:
    """Rows `action,start,end,confidence` -> [(label = action - 1, start, end)]."""
    rows = []
    with open(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            fields = [x.strip() for x in line.strip().split(",")]
            try:
                action, start, end = int(fields[0]), int(fields[1]), int(fields[2])
            except (ValueError, IndexError):
                raise SkeletonFileError(f"{path}:{i + 1}: expected 'action,start,end,confidence' with "
                                        f"integer "
                                        f"action/start/end, got {line.strip()[:60]!r}") from None
            if len(fields) != 4:
                raise SkeletonFileError(f"{path}:{i + 1}: expected 4 comma-separated fields, "
                                        f"got {len(fields)}")
            if action < 1 or start < 0 or end <= start:
                raise SkeletonFileError(f"{path}:{i + 1}: expected action >= 1 and 0 <= start < end, got "
                                        f"action {action}, start {start}, end {end}")
            rows.append((action - 1, start, end))
    return rows


def read_pku_split(path: str) -> tuple[set[str], set[str] | None]:
    """Split file: line 2 lists training videos, line 4 (when present) validation videos."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path}")
    with open(path) as f:
        lines = f.read().split("\n")

    def videos(line: str) -> set[str]:
        return {v.strip() for v in line.split(",") if v.strip()}
    if len(lines) < 2 or not videos(lines[1]):
        raise SkeletonFileError(f"{path}:2: expected a comma-separated list of training videos")
    val = videos(lines[3]) if len(lines) > 3 and lines[3].strip() else None
    return videos(lines[1]), val


def pku_video_samples(path: str, rows: list[tuple[int, int, int]],
                      notes: list | None = None) -> list[tuple[np.ndarray, int]]:
    """All labelled segments of one video, each truncated to 300 frames and pre-normalised.

    A row ending past the video is clipped to the video's last frame (the frames are those the released
    slicing takes; its frame count would be one the clip does not have), noted in `notes`."""
    video = read_pku_skeleton(path)
    out = []
    for k, (label, start, end) in enumerate(rows):
        if start >= video.shape[1]:
            raise SkeletonFileError(f"{path}: a label row starts at frame {start} but the video has "
                                    f"{video.shape[1]} frames")
        if end > video.shape[1]:
            if notes is not None:
                notes.append(f"{path}: label row {k + 1} ({label + 1},{start},{end}) ends past the video's "
                             f"{video.shape[1]} frames")
            end = video.shape[1]
        segment = video[:, start:end]
        out.append((pre_normalize(to_fixed_length(segment)), end - start))
    return out


# ----------------------------------------------------------------------------------------------------
# the conversion driver: jobs -> workers -> memory-mapped outputs


@dataclass
class Sample:
    name: str
    label: int
    parts: dict          # benchmark short name -> 'train' | 'val'


@dataclass
class Job:
    """One input file producing one or more samples (PKU-MMD: one per label row)."""
    kind: str            # the RAW_FORMATS key whose `read` turns it into clips
    path: str
    samples: list        # list[Sample]
    rows: list | None = None


def _run_job(job: Job):
    """(clips, error, notes): the samples of one file, or the message of its first error."""
    notes = []
    try:
        return RAW_FORMATS[job.kind].read(job, notes), None, notes
    except SkeletonFileError as e:
        return None, str(e), notes


def remove_leftover_temporaries(folder: str) -> list[str]:
    """Delete the hidden temporary files an interrupted conversion left in `folder`; returns their paths."""
    removed = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            is_ours = ((name.startswith(".") and name.endswith(".npy.tmp"))
                       or name.endswith(("_label.pkl.tmp", "_num_frame.npy.tmp")))
            if is_ours and os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
    return removed


class _PartWriter:
    """Memory-mapped {part}_data_joint.npy plus labels and frame counts, under temporary names."""

    def __init__(self, folder: str, part: str, capacity: int, num_joints: int = KINECT_JOINTS):
        self.folder, self.part = folder, part
        os.makedirs(folder, exist_ok=True)
        self.tmp_data = os.path.join(folder, f".{part}_data_joint.npy.tmp")
        shape = (capacity, 3, dataset.CLIP_FRAMES, num_joints, dataset.NUM_PERSONS)
        self.data = np.lib.format.open_memmap(self.tmp_data, mode="w+", dtype=np.float32, shape=shape)
        self.names, self.labels, self.num_frame = [], [], []

    def add(self, clip: np.ndarray, sample: Sample, num_frame: int) -> None:
        self.data[len(self.names)] = clip
        self.names.append(sample.name)
        self.labels.append(int(sample.label))
        self.num_frame.append(int(num_frame))

    def discard(self) -> None:
        """Remove the temporary file (after an error)."""
        self.data = None
        if os.path.exists(self.tmp_data):
            os.remove(self.tmp_data)

    def close(self) -> str:
        count = len(self.names)
        if count == 0:
            self.data = None
            os.remove(self.tmp_data)
            raise ValueError(f"no samples left for {self.folder} part {self.part!r}")
        self.data.flush()
        if count < self.data.shape[0]:          # skipped bad files: copy into a file of the right length
            short = os.path.join(self.folder, f".{self.part}_data_joint.short.npy.tmp")
            out = np.lib.format.open_memmap(short, mode="w+", dtype=np.float32,
                                            shape=(count,) + self.data.shape[1:])
            for i in range(0, count, 256):
                out[i:i + 256] = self.data[i:min(i + 256, count)]
            out.flush()
            del out
            self.data = None
            os.replace(short, self.tmp_data)
        self.data = None
        paths = dataset.split_paths(self.folder, self.part)
        with runtime.atomic_open(paths["label"], "wb") as f:
            pickle.dump((self.names, self.labels), f)
        with runtime.atomic_open(paths["num_frame"], "wb") as f:
            np.save(f, np.asarray(self.num_frame, dtype=np.int64))
        os.replace(self.tmp_data, paths["data"])
        return paths["data"]


def convert(jobs: list[Job], out_dir: str, folders: list[str], workers: int = 1, skip_bad: bool = False,
            desc: str = "preparing", num_joints: int = KINECT_JOINTS) -> dict:
    """Process every job once and write each sample to the parts it belongs to in every benchmark."""
    if not jobs:
        raise ValueError("no input files to convert")
    capacity = {}
    for job in jobs:
        for sample in job.samples:
            for bench in folders:
                key = (bench, sample.parts[bench])
                capacity[key] = capacity.get(key, 0) + 1
    for bench in folders:
        for part in ("train", "val"):
            if capacity.get((bench, part), 0) == 0:
                raise ValueError(f"benchmark {bench}: the {part} split would have no samples "
                                 f"({sum(len(j.samples) for j in jobs)} samples found in total)")
    for bench in folders:
        for path in remove_leftover_temporaries(os.path.join(out_dir, bench)):
            print(f"removed {path}, left by an interrupted conversion", file=sys.stderr)
    writers = {key: _PartWriter(os.path.join(out_dir, key[0]), key[1], n, num_joints)
               for key, n in sorted(capacity.items())}
    bad, notes = [], []
    pool = mp.Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_run_job, jobs, chunksize=4) if pool else map(_run_job, jobs)
        for job, (clips, error, job_notes) in tqdm(zip(jobs, results), total=len(jobs), desc=desc,
                                                   unit="file", dynamic_ncols=True):
            notes.extend(job_notes)
            if error is not None:
                if not skip_bad:
                    raise SkeletonFileError(error + "  (use --skip-bad to skip malformed files)")
                tqdm.write(f"skipping malformed file: {error}")
                bad.append(error)
                continue
            for sample, (clip, num_frame) in zip(job.samples, clips):
                for bench in folders:
                    writers[(bench, sample.parts[bench])].add(clip, sample, num_frame)
        written = {f"{bench}/{part}": len(w.names) for (bench, part), w in writers.items()}
        empty = [key for key, count in written.items() if count == 0]
        if empty:
            raise ValueError(f"no samples left in {', '.join(empty)} after skipping {len(bad)} "
                             f"malformed file(s)")
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    finally:
        if pool:
            pool.terminate()
            pool.join()
    for writer in writers.values():
        writer.close()
    if bad:
        print(f"skipped {len(bad)} malformed file(s)", file=sys.stderr)
    if notes:
        print(f"warning: {len(notes)} PKU-MMD label row(s) end past their video and were clipped to its last "
              f"frame (frame count = frames kept); first: {notes[0]}", file=sys.stderr)
    return {"written": written, "skipped": len(bad), "clipped_rows": len(notes)}


# ----------------------------------------------------------------------------------------------------
# datasets


def read_missing_list(path: str) -> set[str]:
    """Official 'samples with missing skeletons' list, with or without its 3-line header."""
    names: set[str] = set()
    with open(path) as f:
        for i, line in enumerate(f):
            text = line.strip()
            if not text:
                continue
            if NTU_NAME.match(text):
                names.add(text)
            elif names:
                raise SkeletonFileError(f"{path}:{i + 1}: expected a sample name like S001C002P005R002A008, "
                                        f"got {text[:60]!r}")
    return names


def ntu_part(name: str, rule: str) -> str:
    """train/val of an NTU-style name SsssCcccPpppRrrrAaaa by the split rule of a benchmarks.Protocol:
    'subject' (training performers), 'camera' (cameras 2 and 3) or 'setup' (even setups)."""
    setup, camera, subject, _, _ = (int(g) for g in NTU_NAME.match(name).groups())
    if rule == "subject":
        train = subject in TRAIN_SUBJECTS
    elif rule == "camera":
        train = camera in TRAIN_CAMERAS
    elif rule == "setup":
        train = setup % 2 == 0
    else:
        raise ValueError(f"unknown NTU split rule {rule!r}; expected subject, camera or setup")
    return "train" if train else "val"


def ntu_jobs(raw_dirs: list[str], rules: dict[str, str], missing: set[str], max_setup: int | None = None,
             max_action: int | None = None, only: set[str] | None = None) -> list[Job]:
    """One job per raw file SsssCcccPpppRrrrAaaa.skeleton; `rules` maps each benchmark folder to its
    split rule (ntu_part); `only` restricts to these sample names."""
    jobs, seen = [], set()
    for raw_dir in raw_dirs:
        if not os.path.isdir(raw_dir):
            raise FileNotFoundError(f"raw skeleton folder not found: {raw_dir}")
        for filename in sorted(os.listdir(raw_dir)):
            stem, ext = os.path.splitext(filename)
            if ext != ".skeleton" or not NTU_NAME.match(stem):
                continue
            setup, _, _, _, action = (int(g) for g in NTU_NAME.match(stem).groups())
            if stem in missing or stem in seen or (only is not None and stem not in only):
                continue
            if (max_setup and setup > max_setup) or (max_action and action > max_action):
                continue
            seen.add(stem)
            parts = {bench: ntu_part(stem, rule) for bench, rule in rules.items()}
            jobs.append(Job("ntu", os.path.join(raw_dir, filename), [Sample(filename, action - 1, parts)]))
    if not jobs:
        raise ValueError(f"no NTU .skeleton files (named SsssCcccPpppRrrrAaaa.skeleton) found in "
                         f"{', '.join(raw_dirs)}")
    return jobs


def pku_jobs(skeleton_dir: str, label_dir: str, split_files: dict[str, str]) -> list[Job]:
    splits = {bench: read_pku_split(path) for bench, path in split_files.items()}
    if not os.path.isdir(skeleton_dir):
        raise FileNotFoundError(f"PKU-MMD skeleton folder not found: {skeleton_dir}")
    jobs = []
    for filename in sorted(os.listdir(skeleton_dir)):
        video, ext = os.path.splitext(filename)
        if ext != ".txt":
            continue
        parts = {}
        for bench, (train, val) in splits.items():
            if video in train:
                parts[bench] = "train"
            elif val is None or video in val:
                parts[bench] = "val"
        if len(parts) != len(splits):
            continue                                   # in none of a benchmark's lists
        label_path = os.path.join(label_dir, filename)
        if not os.path.isfile(label_path):
            raise FileNotFoundError(f"label file not found for video {video}: {label_path}")
        rows = read_pku_labels(label_path)
        samples = [Sample(f"{video}_{i}", label, parts) for i, (label, _, _) in enumerate(rows)]
        if samples:
            jobs.append(Job("pku", os.path.join(skeleton_dir, filename), samples, rows))
    if not jobs:
        raise ValueError(f"no PKU-MMD videos of the split files found in {skeleton_dir}")
    return jobs


# ----------------------------------------------------------------------------------------------------
# raw formats: each reads the datasets whose benchmarks.DatasetEntry.raw_format names it


@dataclass(frozen=True)
class RawFormat:
    """How one raw format is read: its flags `add_arguments(parser, entry)`; `jobs(args, entry, rules,
    out)` -> the Jobs (files, their samples, each sample's part per benchmark folder of `rules`, a dict
    folder -> benchmarks.Protocol.split); `read(job, notes)` -> [(clip float32 (3, CLIP_FRAMES, V,
    NUM_PERSONS), original frame count)] for the job's samples (a module-level function: jobs run in
    worker processes)."""
    add_arguments: Callable
    jobs: Callable
    read: Callable


def _ntu_arguments(p, entry) -> None:
    p.add_argument("--raw-dir", nargs="+", required=True,
                   help="folder(s) holding the raw SsssCcccPpppRrrrAaaa.skeleton files")
    p.add_argument("--missing-list", default=MISSING_LISTS.get(entry.name, "none"),
                   help="samples to skip ('none' to keep all); default: the official list shipped in "
                        "missing_skeletons/")


def _ntu_jobs(args, entry, rules: dict, out: str) -> list[Job]:
    if args.missing_list not in (None, "none") and not os.path.isfile(args.missing_list):
        raise FileNotFoundError(f"--missing-list {args.missing_list}: no such file (the official list of "
                                f"samples with missing skeletons, or 'none' to keep every sample)")
    missing = set() if args.missing_list in (None, "none") else read_missing_list(args.missing_list)
    return ntu_jobs(args.raw_dir, rules, missing, **entry.raw_limits)


def _read_ntu(job: Job, notes: list) -> list:
    return [ntu_sample(job.path)]


def _pku_arguments(p, entry) -> None:
    p.add_argument("--root", default=".", help="folder holding skeleton/, label/ and the split files")
    p.add_argument("--skeleton-dir", default=None, help="default <root>/skeleton")
    p.add_argument("--label-dir", default=None, help="default <root>/label")
    p.add_argument("--split-dir", default=None, help="folder of the split files, default <root>")


def _pku_jobs(args, entry, rules: dict, out: str) -> list[Job]:
    split_dir = args.split_dir or args.root
    return pku_jobs(args.skeleton_dir or os.path.join(args.root, "skeleton"),
                    args.label_dir or os.path.join(args.root, "label"),
                    {folder: os.path.join(split_dir, split_file) for folder, split_file in rules.items()})


def _read_pku(job: Job, notes: list) -> list:
    return pku_video_samples(job.path, job.rows, notes)


def _synthetic_arguments(p, entry) -> None:
    p.add_argument("--raw-dir", default=None, help="where the generated .skeleton files go "
                                                   "(default <out>/raw)")
    p.add_argument("--num-clips", type=int, default=None, help="default synthetic.DEFAULT_NUM_CLIPS")
    p.add_argument("--seed", type=int, default=0)


def _synthetic_jobs(args, entry, rules: dict, out: str) -> list[Job]:
    """Generate the built-in dataset's .skeleton files, then read them as NTU files."""
    import synthetic  # noqa: PLC0415
    raw_dir = args.raw_dir or os.path.join(out, "raw")
    num_clips = args.num_clips or synthetic.DEFAULT_NUM_CLIPS
    names = synthetic.generate(raw_dir, num_clips=num_clips, seed=args.seed, workers=args.workers)
    if not args.raw_dir:      # <out>/raw is ours: files of an earlier, larger generation go
        fresh = {f"{name}.skeleton" for name in names}
        stale = sorted(f for f in os.listdir(raw_dir) if f.endswith(".skeleton") and f not in fresh)
        for name in stale:
            os.remove(os.path.join(raw_dir, name))
        if stale:
            print(f"removed {len(stale)} raw file(s) of an earlier generation from {raw_dir}")
    return ntu_jobs([raw_dir], rules, set(), only=set(names))   # not older files there


RAW_FORMATS = {
    "ntu": RawFormat(_ntu_arguments, _ntu_jobs, _read_ntu),
    "pku": RawFormat(_pku_arguments, _pku_jobs, _read_pku),
    "synthetic": RawFormat(_synthetic_arguments, _synthetic_jobs, _read_ntu),
}


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per dataset of benchmarks.py that has a raw format (its aliases too)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True)
    for entry in benchmarks.ENTRIES.values():
        if entry.raw_format is None:
            continue
        folders = [spec.folder for spec in entry.protocols.values()]
        p = sub.add_parser(entry.name, aliases=list(entry.aliases))
        p.add_argument("--out", default=None, help=f"output root (default ./data/{entry.name}); "
                                                   f"one sub-folder per benchmark")
        p.add_argument("--benchmarks", nargs="+", default=folders, choices=folders)
        p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)),
                       help="processes parsing and normalising files (default: CPU count, at most 8)")
        p.add_argument("--skip-bad", action="store_true",
                       help="log and skip malformed files instead of failing")
        RAW_FORMATS[entry.raw_format].add_arguments(p, entry)
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    entry = benchmarks.get(args.dataset)
    out = args.out or os.path.join("data", entry.name)
    run_folder.check_writable_folder(out, "--out")
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: expected 1 or more")
    split_of = {spec.folder: spec.split for spec in entry.protocols.values()}
    rules = {folder: split_of[folder] for folder in args.benchmarks}
    jobs = RAW_FORMATS[entry.raw_format].jobs(args, entry, rules, out)
    report = convert(jobs, out, list(rules), workers=args.workers, skip_bad=args.skip_bad,
                     desc=entry.name, num_joints=graph.get_layout(entry.layout).num_joints)
    for key, count in sorted(report["written"].items()):
        print(f"{os.path.join(out, key)}: {count} samples")
    return report


if __name__ == "__main__":
    sys.exit(cli_errors.run_main(main))
