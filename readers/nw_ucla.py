"""Northwestern-UCLA Multiview Action3D (Wang et al., CVPR 2014) in the form the skeleton field
distributes it: the `all_sqe` folder of 1,484 JSON files `aAA_sSS_eEE_vVV.json` (action, subject,
episode, view), each `{"file_name": stem, "skeletons": T x 20 joints x xyz, "label": 1..10}` with one
person per clip, Kinect v1 joint order (graph.py's `nw_ucla` layout). The raw format `nw_ucla` of the
dataset table.

Each file is checked before it is used: its name, `file_name` against it, `label` against the action id
in the name, at least one frame of 20 joints of 3 finite numbers. A clip becomes the on-disk format as an
NTU clip does: person 0 holds the skeleton, person 1 stays zero, frames past the clip's length are
filled by the pre-normalisation's cyclic repeat, and the same pre-normalisation (centre on the spine,
hip -> spine along +z, left -> right shoulder along +x; the joint indices are NTU's) applies. The frame
budget is the format's 300 frames: NW-UCLA clips have 1-201, so none is truncated.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

import dataset
import graph
from readers.common import (Job, RawFormat, Sample, SkeletonFileError, generated_files,
                           note_skipped_generated, to_fixed_length)
from readers.prenormalize import ALIGN_FRAMES, pre_normalize

FILE_NAME = re.compile(r"^a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})$")
# The dataset's action ids (1-12 without 7 and 10) in label order: label = ACTIONS.index(id) + 1 in the
# files, 0-based on disk (dataset_table.py names the classes).
ACTIONS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
VIEWS = (1, 2, 3)
NUM_JOINTS = graph.get_layout("nw_ucla").num_joints


def parse_name(stem: str, path: str) -> tuple[int, int, int, int]:
    """(action, subject, episode, view) of a name aAA_sSS_eEE_vVV; an error naming `path` otherwise."""
    match = FILE_NAME.match(stem)
    if match is None:
        raise SkeletonFileError(f"{path}: expected a file name like a01_s01_e00_v01.json "
                                f"(action, subject, episode, view)")
    action, subject, episode, view = (int(g) for g in match.groups())
    if action not in ACTIONS:
        raise SkeletonFileError(f"{path}: action a{action:02d} is not an NW-UCLA action "
                                f"(expected one of {', '.join(f'a{a:02d}' for a in ACTIONS)})")
    if view not in VIEWS:
        raise SkeletonFileError(f"{path}: view v{view:02d} is not an NW-UCLA view (expected v01, v02 or v03)")
    return action, subject, episode, view


def view_part(view: int, rule: str) -> str | None:
    """train/val of a clip by the split rule of a dataset_table.Protocol: 'view3' (views 1 and 2 train,
    view 3 tests: the standard cross-view protocol) or 'view1' (the validation protocol: view 1 trains,
    view 2 validates, view 3 is left out (None), so that recipes are chosen without reading the test
    view)."""
    if rule == "view3":
        return "val" if view == 3 else "train"
    if rule == "view1":
        return {1: "train", 2: "val"}.get(view)
    raise ValueError(f"unknown NW-UCLA split rule {rule!r}; expected view3 or view1")


def read_nw_ucla_json(path: str) -> np.ndarray:
    """One clip file -> float64 (T, 20, 3), after checking every field against the file name."""
    stem = os.path.splitext(os.path.basename(path))[0]
    action, _, _, _ = parse_name(stem, path)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except json.JSONDecodeError as e:
        raise SkeletonFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected "
                                f'{{"file_name", "skeletons", "label"}}') from None
    except UnicodeDecodeError:
        raise SkeletonFileError(f"{path}: not a UTF-8 text file; expected a JSON clip") from None
    if not isinstance(record, dict) or not {"file_name", "skeletons", "label"} <= set(record):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise SkeletonFileError(f"{path}: expected a JSON object with file_name, skeletons and label, "
                                f"got {keys}")
    if record["file_name"] != stem:
        raise SkeletonFileError(f"{path}: file_name is {str(record['file_name'])[:60]!r}, expected {stem!r} "
                                f"(the file's own name)")
    expected_label = ACTIONS.index(action) + 1
    if type(record["label"]) is not int or record["label"] != expected_label:
        raise SkeletonFileError(f"{path}: label is {str(record['label'])[:20]}, expected {expected_label} "
                                f"(action a{action:02d} of the file name)")
    frames = record["skeletons"]
    if not isinstance(frames, list) or not frames:
        raise SkeletonFileError(f"{path}: skeletons holds no frame; expected at least one frame of "
                                f"{NUM_JOINTS} joints x xyz")
    for t, frame in enumerate(frames):
        if (not isinstance(frame, list) or len(frame) != NUM_JOINTS
                or not all(isinstance(joint, list) and len(joint) == 3 for joint in frame)):
            got = f"{len(frame)} entries" if isinstance(frame, list) else type(frame).__name__
            raise SkeletonFileError(f"{path}: frame {t + 1} of skeletons is not {NUM_JOINTS} joints of 3 "
                                    f"numbers (got {got})")
    try:
        xyz = np.array(frames, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next(t for t, frame in enumerate(frames)
                   if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                              for joint in frame for v in joint))
        raise SkeletonFileError(f"{path}: frame {bad + 1} of skeletons holds a value that is not a "
                                f"number") from None
    if not np.isfinite(xyz).all():
        t = int(np.flatnonzero(~np.isfinite(xyz).all(axis=(1, 2)))[0])
        raise SkeletonFileError(f"{path}: frame {t + 1} of skeletons holds a value that is not finite")
    return xyz


def nw_ucla_sample(path: str, align_frames: str = "first") -> tuple[np.ndarray, int]:
    """(clip float32 (3, CLIP_FRAMES, 20, NUM_PERSONS) pre-normalised, frame count) of one file."""
    xyz = read_nw_ucla_json(path)
    clip = np.zeros((3, len(xyz), NUM_JOINTS, dataset.NUM_PERSONS))
    clip[..., 0] = xyz.transpose(2, 0, 1)
    return pre_normalize(to_fixed_length(clip), align_frames=align_frames), len(xyz)


def nw_ucla_jobs(raw_dir: str, rules: dict[str, str], align_frames: str = "first") -> list[Job]:
    """One job per `aAA_sSS_eEE_vVV.json` in `raw_dir`; `rules` maps each benchmark folder to its split
    rule (view_part). A JSON file with another name is an error (it may be a mislabelled clip)."""
    if not os.path.isdir(raw_dir):
        raise FileNotFoundError(f"--raw-dir {raw_dir}: no such folder (the NW-UCLA all_sqe folder of "
                                f"aAA_sSS_eEE_vVV.json files; docs/data.md says where to get it)")
    jobs, generated, skipped = [], generated_files(raw_dir), 0      # never read generated files
    for filename in sorted(os.listdir(raw_dir)):
        stem, ext = os.path.splitext(filename)
        if ext != ".json":
            continue
        if filename in generated:
            skipped += 1
            continue
        path = os.path.join(raw_dir, filename)
        action, _, _, view = parse_name(stem, path)
        parts = {folder: view_part(view, rule) for folder, rule in rules.items()}
        jobs.append(Job("nw_ucla", path, [Sample(stem, ACTIONS.index(action), parts)],
                        options={"align_frames": align_frames}))
    note_skipped_generated(raw_dir, skipped)
    if not jobs:
        raise ValueError(f"no NW-UCLA clips (aAA_sSS_eEE_vVV.json) found in {raw_dir}")
    return jobs


def _arguments(p, entry) -> None:
    p.add_argument("--raw-dir", required=True,
                   help="the all_sqe folder of aAA_sSS_eEE_vVV.json files (docs/data.md: where to get it)")
    p.add_argument("--align-frames", choices=ALIGN_FRAMES, default="first",
                   help="where the pre-normalisation's two rotations come from: first = frame 0 (released), "
                        "all = the mean spine and shoulder vectors over the clip (an addition: "
                        "docs/differences.md)")


def _jobs(args, entry, rules: dict, out: str) -> list[Job]:
    return nw_ucla_jobs(args.raw_dir, rules, args.align_frames)


def _read(job: Job, notes: list) -> list:
    return [nw_ucla_sample(job.path, job.options["align_frames"])]


FORMAT = RawFormat(_arguments, _jobs, _read)
