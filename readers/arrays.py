"""Skeletons of any layout given as numpy arrays: the raw format `arrays` (`prepare_data.py arrays`), so
that a new set needs no code, only its layout (a built-in name or a layout file, graph.py).

Input (docs/data.md, "Your own skeletons"):
- `--clips`: a folder of `<name>.npy` files, one per clip, each (T, V, 3) (one person) or (T, M, V, 3)
  with M <= 2 persons; or one `.npy` file holding every clip, (N, T, V, 3) or (N, T, M, V, 3), where a
  clip's all-zero frames after its last non-zero one are padding.
- `--labels`: a CSV file, one line `name,label,part` per clip (a header line `name,label,part` may come
  first): the clip's file stem (a folder) or any unique name (one array: lines in the array's order), its
  0-based class, and `train` or `val`.
Each clip is checked (shape, the layout's joint count, finite values, at least one non-zero frame), laid
out as the on-disk format (person 0 first, the second person zero when absent, 300 frames: longer clips
are truncated and the frame count is the frames kept) and pre-normalised with the layout's `zaxis` and
`xaxis` joints (readers.prenormalize), unless --no-pre-normalize."""
from __future__ import annotations

import csv
import os

import numpy as np

import dataset
from readers import dataset_table
from readers.common import Job, RawFormat, Sample, SkeletonFileError, to_fixed_length
from readers.prenormalize import pre_normalize

PARTS = dataset.PARTS
HEADER = ["name", "label", "part"]


def add_arguments(p, entry=None) -> None:
    p.add_argument("--clips", required=True, metavar="DIR|FILE.npy",
                   help="a folder of <name>.npy clips (T, V, 3) or (T, M, V, 3), or one .npy of all clips "
                        "(N, T, V, 3) or (N, T, M, V, 3)")
    p.add_argument("--labels", required=True, metavar="FILE.csv",
                   help="one line name,label,part per clip (part: train or val); for one array, in its "
                        "order")
    p.add_argument("--layout", required=True, metavar="NAME|FILE.json",
                   help="the clips' skeleton layout: a built-in name or a layout file (graph.py)")
    p.add_argument("--no-pre-normalize", action="store_true",
                   help="store the clips as given (default: the released pre-normalisation with the "
                        "layout's zaxis and xaxis joints)")


def read_labels(path: str) -> list[tuple[str, int, str]]:
    """(name, label, part) per line of the labels file; SkeletonFileError naming the line otherwise."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = list(csv.reader(f))
    except OSError as exc:
        raise SkeletonFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SkeletonFileError(f"{path}: not a UTF-8 text file; expected lines name,label,part") from None
    rows, seen = [], {}
    for number, line in enumerate(lines, 1):
        cells = [c.strip() for c in line]
        if not cells or cells == [""] or (number == 1 and cells == HEADER):
            continue
        if len(cells) != 3 or not cells[0]:
            raise SkeletonFileError(f"{path}:{number}: expected name,label,part, got {','.join(cells)!r}")
        name, label, part = cells
        if not label.isdigit():
            raise SkeletonFileError(f"{path}:{number}: label {label!r} is not a 0-based class index")
        if part not in PARTS:
            raise SkeletonFileError(f"{path}:{number}: part {part!r}, expected train or val")
        if name in seen:
            raise SkeletonFileError(f"{path}:{number}: clip {name!r} listed twice (first on line "
                                    f"{seen[name]})")
        seen[name] = number
        rows.append((name, int(label), part))
    if not rows:
        raise SkeletonFileError(f"{path}: no clip listed; expected lines name,label,part")
    return rows


def jobs(args, entry, rules: dict, out: str) -> list[Job]:
    """One job per clip listed in --labels, its part in every folder of `rules`; the layout (--layout)
    travels in each job's options."""
    layout = dataset_table.resolve_layout(dataset_table.CUSTOM, args.layout)
    rows = read_labels(args.labels)
    prenormalize = None
    if not args.no_pre_normalize:
        if layout.zaxis is None or layout.xaxis is None:
            raise SkeletonFileError(f"layout {layout.name!r} names no pre-normalisation joints (zaxis, "
                                    f"xaxis): add them to its layout file, or pass --no-pre-normalize")
        prenormalize = (tuple(layout.zaxis), tuple(layout.xaxis))
    options = {"joints": layout.num_joints, "layout": layout.name, "prenormalize": prenormalize}
    if os.path.isdir(args.clips):
        found = []
        for name, label, part in rows:
            path = os.path.join(args.clips, f"{name}.npy")
            if not os.path.isfile(path):
                raise SkeletonFileError(f"{args.labels}: clip {name!r} has no file {path}")
            found.append(Job("arrays", path, [Sample(name, label, dict.fromkeys(rules, part))],
                             options={**options, "index": None}))
        return found
    array = _load(args.clips)
    if array.ndim not in (4, 5):
        raise SkeletonFileError(f"{args.clips}: shape {array.shape}, expected all clips (N, T, V, 3) or "
                                f"(N, T, M, V, 3) (or a folder of one .npy per clip)")
    if len(array) != len(rows):
        raise SkeletonFileError(f"{args.clips} holds {len(array)} clips but {args.labels} lists {len(rows)}")
    return [Job("arrays", args.clips, [Sample(name, label, dict.fromkeys(rules, part))],
                options={**options, "index": i}) for i, (name, label, part) in enumerate(rows)]


def _load(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SkeletonFileError(f"{path}: not a readable .npy array ({exc})") from None


def read(job: Job, notes) -> list:
    """The job's clip in the on-disk format, checked, pre-normalised; its frame count."""
    o = job.options
    array = _load(job.path)
    where = job.path if o["index"] is None else f"{job.path}[{o['index']}]"
    clip = np.asarray(array if o["index"] is None else array[o["index"]], dtype=np.float64)
    if clip.ndim == 3:
        clip = clip[:, None]
    if clip.ndim != 4 or clip.shape[-1] != 3 or not 1 <= clip.shape[1] <= dataset.NUM_PERSONS:
        shape = array.shape if o["index"] is None else array.shape[1:]
        raise SkeletonFileError(f"{where}: shape {shape}, expected (T, V, 3) or (T, M, V, 3) with M <= "
                                f"{dataset.NUM_PERSONS} persons")
    if clip.shape[2] != o["joints"]:
        raise SkeletonFileError(f"{where}: {clip.shape[2]} joints per frame, but layout {o['layout']!r} has "
                                f"{o['joints']}")
    if not np.isfinite(clip).all():
        raise SkeletonFileError(f"{where}: {int((~np.isfinite(clip)).sum())} non-finite values (NaN/inf)")
    nonzero = np.flatnonzero(np.abs(clip).reshape(len(clip), -1).sum(1) > 0)
    if not len(nonzero):
        raise SkeletonFileError(f"{where}: every frame is zero; expected at least one frame with a skeleton")
    length = min(int(nonzero[-1]) + 1, dataset.CLIP_FRAMES)
    laid_out = np.zeros((3, length, o["joints"], dataset.NUM_PERSONS))
    laid_out[..., :clip.shape[1]] = clip[:length].transpose(3, 0, 2, 1)
    fixed = to_fixed_length(laid_out)
    if o["prenormalize"] is not None:
        fixed = pre_normalize(fixed, *o["prenormalize"])
    return [(fixed, length)]


FORMAT = RawFormat(add_arguments, jobs, read)
