"""NTU RGB+D 60/120 raw `.skeleton` files (SPEC section 6): the parser (vectorised, with a line-by-line
fallback naming the first malformed line), the 2 bodies of largest energy, the official lists of
samples with missing skeletons, the cross-subject / cross-view / cross-setup splits, and the raw format
`ntu` of the dataset table."""
from __future__ import annotations

import os
import re

import numpy as np

import dataset
import graph
from readers.common import (Job, RawFormat, Sample, SkeletonFileError, generated_files,
                           note_skipped_generated, parse_floats, to_fixed_length)
from readers.prenormalize import pre_normalize

MAX_BODIES_KINECT = 4    # bodies kept from a raw file, in file order
MAX_BODIES = dataset.NUM_PERSONS                 # bodies kept by energy
KINECT_JOINTS = graph.get_layout("ntu").num_joints   # joints per body in NTU and PKU-MMD files
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    values = parse_floats(int_text)
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
    numbers = parse_floats(_gather_segments(buf, starts[kept_lines], third_space))
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
        values = parse_floats(text)
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



def ntu_sample(path: str) -> tuple[np.ndarray, int]:
    """The whole per-file pipeline: parse, 2 bodies by energy, fixed length, pre-normalise."""
    xyz, _ = read_ntu_skeleton(path)
    clip = select_bodies(xyz)
    return pre_normalize(to_fixed_length(clip)), clip.shape[1]



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
    """train/val of an NTU-style name SsssCcccPpppRrrrAaaa by the split rule of a dataset_table.Protocol:
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
    split rule (ntu_part); `only` restricts to these sample names (the synthetic set's own files). Without
    `only`, the files a synthetic manifest in the folder lists are skipped, with a line saying how many."""
    jobs, seen = [], set()
    for raw_dir in raw_dirs:
        if not os.path.isdir(raw_dir):
            raise FileNotFoundError(f"raw skeleton folder not found: {raw_dir}")
        generated = generated_files(raw_dir) if only is None else set()     # never read as recordings
        skipped = 0
        for filename in sorted(os.listdir(raw_dir)):
            stem, ext = os.path.splitext(filename)
            if ext != ".skeleton" or not NTU_NAME.match(stem):
                continue
            if filename in generated:
                skipped += 1
                continue
            setup, _, _, _, action = (int(g) for g in NTU_NAME.match(stem).groups())
            if stem in missing or stem in seen or (only is not None and stem not in only):
                continue
            if (max_setup and setup > max_setup) or (max_action and action > max_action):
                continue
            seen.add(stem)
            parts = {bench: ntu_part(stem, rule) for bench, rule in rules.items()}
            jobs.append(Job("ntu", os.path.join(raw_dir, filename), [Sample(filename, action - 1, parts)]))
        note_skipped_generated(raw_dir, skipped)
    if not jobs:
        raise ValueError(f"no NTU .skeleton files (named SsssCcccPpppRrrrAaaa.skeleton) found in "
                         f"{', '.join(raw_dirs)}")
    return jobs



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



FORMAT = RawFormat(_ntu_arguments, _ntu_jobs, _read_ntu)
