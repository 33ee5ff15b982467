"""PKU-MMD I and II: per video a text file of frames x 150 values (2 persons x 25 joints x xyz) and a
label file of `action,start,end,confidence` rows, one sample per row; the splits come from the dataset's
split files (SPEC section 6). The raw format `pku` of the dataset table."""
from __future__ import annotations

import os

import numpy as np

from readers.common import (Job, RawFormat, Sample, SkeletonFileError, generated_files,
                           note_skipped_generated, parse_floats, to_fixed_length)
from readers.ntu import KINECT_JOINTS, MAX_BODIES
from readers.prenormalize import pre_normalize


def read_pku_skeleton(path: str) -> np.ndarray:
    """One PKU-MMD video: T lines of 150 numbers -> float64 (3, T, 25, 2) (2 persons x 25 joints x xyz)."""
    with open(path) as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    values = parse_floats("\n".join(lines))
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


def read_pku_labels(path: str, num_class: int | None = None) -> list[tuple[int, int, int]]:
    """Rows `action,start,end,confidence` -> [(label = action - 1, start, end)]; with `num_class`, an
    action past it is an error naming the line (every loader would refuse the prepared labels later)."""
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
            if num_class is not None and action > num_class:
                raise SkeletonFileError(f"{path}:{i + 1}: action {action}, but the dataset has {num_class} "
                                        f"classes (actions 1..{num_class} expected)")
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


def pku_jobs(skeleton_dir: str, label_dir: str, split_files: dict[str, str],
             num_class: int | None = None) -> list[Job]:
    splits = {bench: read_pku_split(path) for bench, path in split_files.items()}
    if not os.path.isdir(skeleton_dir):
        raise FileNotFoundError(f"PKU-MMD skeleton folder not found: {skeleton_dir}")
    jobs, generated, skipped = [], generated_files(skeleton_dir), 0      # never read generated files
    for filename in sorted(os.listdir(skeleton_dir)):
        video, ext = os.path.splitext(filename)
        if ext != ".txt":
            continue
        if filename in generated:
            skipped += 1
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
        rows = read_pku_labels(label_path, num_class)
        samples = [Sample(f"{video}_{i}", label, parts) for i, (label, _, _) in enumerate(rows)]
        if samples:
            jobs.append(Job("pku", os.path.join(skeleton_dir, filename), samples, rows))
    note_skipped_generated(skeleton_dir, skipped)
    if not jobs:
        raise ValueError(f"no PKU-MMD videos of the split files found in {skeleton_dir}")
    return jobs


def _pku_arguments(p, entry) -> None:
    p.add_argument("--root", default=".", help="folder holding skeleton/, label/ and the split files")
    p.add_argument("--skeleton-dir", default=None, help="default <root>/skeleton")
    p.add_argument("--label-dir", default=None, help="default <root>/label")
    p.add_argument("--split-dir", default=None, help="folder of the split files, default <root>")


def _pku_jobs(args, entry, rules: dict, out: str) -> list[Job]:
    split_dir = args.split_dir or args.root
    return pku_jobs(args.skeleton_dir or os.path.join(args.root, "skeleton"),
                    args.label_dir or os.path.join(args.root, "label"),
                    {folder: os.path.join(split_dir, split_file) for folder, split_file in rules.items()},
                    entry.num_class)


def _read_pku(job: Job, notes: list) -> list:
    return pku_video_samples(job.path, job.rows, notes)


FORMAT = RawFormat(_pku_arguments, _pku_jobs, _read_pku)
