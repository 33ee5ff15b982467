"""Prepared skeleton data: the on-disk format and its checks, and the feeders.

On disk, one folder per benchmark (`<data_dir>/<dataset>/<xsub|xview|xsetup>/`, dataset_table.py) holds, per
part (`train`, `val`), the three files written by `prepare_data.py` (SPEC section 6):
`{part}_data_joint.npy` float32 (N, 3, CLIP_FRAMES=300, V, NUM_PERSONS=2) with V the joints of the
dataset's layout (NTU: 25), `{part}_label.pkl` = (sample_names, labels) and `{part}_num_frame.npy`
(original frame count of each clip). The data file is memory-mapped. The augmentations the feeders
apply are in augment.py.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

import graph
from augmentation.augment import RELEASED_AUGMENT, WINDOW, PretrainAugment, augment_pretrain, \
    center_crop_resize, random_crop_resize

PARTS = ("train", "val")
MAX_CLASSES = 100_000  # a custom folder's labels are class indices below this (a larger one is a typo)
CLIP_FRAMES = 300      # frames stored per clip (longer clips are truncated, shorter ones zero-padded)
NUM_PERSONS = 2        # bodies stored per clip


def split_paths(folder: str, part: str) -> dict[str, str]:
    """The three file names of one part (the on-disk format)."""
    return {"data": os.path.join(folder, f"{part}_data_joint.npy"),
            "label": os.path.join(folder, f"{part}_label.pkl"),
            "num_frame": os.path.join(folder, f"{part}_num_frame.npy")}


@dataclass
class SkeletonSplit:
    data: np.ndarray        # memory-mapped float32 (N, 3, T, V, M)
    labels: np.ndarray      # int64 (N,)
    names: list[str]
    num_frame: np.ndarray   # int64 (N,), original frame counts
    num_class: int
    path: str = ""                  # the data file (for messages)
    nonfinite_to_zero: bool = False  # --allow-nonfinite: feeders map NaN/inf to 0
    nonfinite: tuple | None = None   # (count, first clip index) once scanned (see require_finite)

    def __len__(self) -> int:
        return len(self.labels)


# The only globals a label file of the released format needs: numpy arrays and scalars (protocols 2-5).
_ARRAY_RECONSTRUCT = np.ndarray((1,)).__reduce__()[0]
_ARRAY_FROMBUFFER = np.arange(1).__reduce_ex__(5)[0]
_SCALAR = np.int64(0).__reduce__()[0]
_SAFE_GLOBALS = {
    **{(mod, "_reconstruct"): _ARRAY_RECONSTRUCT for mod in ("numpy.core.multiarray",
                                                              "numpy._core.multiarray")},
    **{(mod, "scalar"): _SCALAR for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "_frombuffer"): _ARRAY_FROMBUFFER for mod in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,       # bytes inside protocol-2 pickles
}


class LabelFileRefused(ValueError):
    """A label file asking for a type the released format does not hold (it could run code)."""


class _LabelUnpickler(pickle.Unpickler):
    """Unpickles only lists/tuples of str and int and numpy arrays/scalars; any other global is refused
    before it is looked up, so a crafted file cannot run code."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise LabelFileRefused(f"{self.path}: refused to unpickle {module}.{name}; a label file may hold "
                                   f"only (sample_names, labels) as lists or tuples of str and int or numpy "
                                   f"integer arrays (a foreign pickle can run code when loaded)")
        return found


def read_label_pickle(path: str):
    """The object in a label pickle, read with the restricted unpickler."""
    with open(path, "rb") as f:
        return _LabelUnpickler(io.BytesIO(f.read()), path).load()


def _read_labels(path: str) -> tuple[list[str], np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path} (expected a pickle of (sample_names, labels); "
                                f"run prepare_data.py first)")
    try:
        obj = read_label_pickle(path)
    except LabelFileRefused:
        raise
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot unpickle ({e}); expected a pickle of "
                         f"(sample_names, labels)") from e
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled pair (sample_names, labels), got {type(obj).__name__}")
    if not all(isinstance(n, str) for n in obj[0]):
        bad = next(n for n in obj[0] if not isinstance(n, str))
        raise ValueError(f"{path}: sample names must be strings, got {type(bad).__name__}")
    names, labels = list(obj[0]), np.asarray(obj[1])
    if len(names) != len(labels):
        raise ValueError(f"{path}: {len(names)} sample names but {len(labels)} labels")
    if labels.ndim != 1 or (len(labels) and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path}: labels must be a 1-D sequence of integers, got dtype {labels.dtype} "
                         f"shape {labels.shape}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{path}: negative label {int(labels.min())} (labels are 0-based class indices)")
    return [str(n) for n in names], labels.astype(np.int64)


def load_split(folder: str, part: str, num_class: int | None = None, layout="ntu") -> SkeletonSplit:
    """Memory-map one part of a prepared benchmark and check that its three files agree with each other,
    with the joints of `layout` and (when given, dataset_table.DatasetEntry.num_class) with `num_class`.
    Without `num_class` (a custom folder) the split's num_class is its largest label + 1."""
    layout = graph.get_layout(layout)
    num_joints = layout.num_joints
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    paths = split_paths(folder, part)
    if not os.path.isfile(paths["data"]):
        raise FileNotFoundError(f"data file not found: {paths['data']} (prepare the benchmark with "
                                f"prepare_data.py, or pass --data-dir pointing at a folder holding "
                                f"{part}_data_joint.npy, {part}_label.pkl, {part}_num_frame.npy)")
    try:
        data = np.load(paths["data"], mmap_mode="r")
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{paths['data']}: not a readable .npy file ({e})") from e
    if data.dtype != np.float32:
        raise ValueError(f"{paths['data']}: dtype {data.dtype}, expected float32")
    wrong_joints = data.ndim == 5 and data.shape[1] == 3 and data.shape[3] != num_joints
    if wrong_joints and data.shape[4] == NUM_PERSONS:
        raise ValueError(f"{folder}: the clips have {data.shape[3]} joints, but layout {layout.name!r} has "
                         f"{num_joints}: {paths['data']} shape {data.shape}, expected "
                         f"(N, 3, T, {num_joints}, {NUM_PERSONS}) (layout {layout.name!r}); a custom folder "
                         f"names its layout with --layout NAME|FILE.json")
    if data.ndim != 5 or data.shape[1] != 3 or data.shape[3] != num_joints or data.shape[4] != NUM_PERSONS:
        raise ValueError(f"{paths['data']}: shape {data.shape}, expected "
                         f"(N, 3, T, {num_joints}, {NUM_PERSONS}) (layout {layout.name!r})")
    names, labels = _read_labels(paths["label"])
    if len(labels) != data.shape[0]:
        raise ValueError(f"{paths['label']} holds {len(labels)} labels but {paths['data']} holds "
                         f"{data.shape[0]} clips")
    if not os.path.isfile(paths["num_frame"]):
        raise FileNotFoundError(f"frame-count file not found: {paths['num_frame']} (expected the original "
                                f"frame count of each clip, written by prepare_data.py)")
    try:
        num_frame = np.load(paths["num_frame"])
    except Exception as e:  # noqa: BLE001  (object arrays, truncated or foreign files: name the file)
        raise ValueError(f"{paths['num_frame']}: not a readable .npy file of frame counts ({e})") from e
    if num_frame.shape != (data.shape[0],) or not np.issubdtype(num_frame.dtype, np.integer):
        raise ValueError(f"{paths['num_frame']}: shape {num_frame.shape} dtype {num_frame.dtype}, expected "
                         f"integers of shape ({data.shape[0]},)")
    if len(num_frame) and num_frame.min() < 1:
        bad = int(np.argmin(num_frame))
        raise ValueError(f"{paths['num_frame']}: clip {bad} ({names[bad]}) has {int(num_frame[bad])} frames, "
                         f"expected at least 1")
    max_label = int(labels.max()) if len(labels) else -1
    if num_class is not None and max_label >= num_class:
        raise ValueError(f"{paths['label']}: label {max_label} found, but the dataset has {num_class} "
                         f"classes (0-based labels 0..{num_class - 1} expected)")
    if num_class is None and max_label >= MAX_CLASSES:
        bad = int(np.argmax(labels))
        raise ValueError(f"{paths['label']}: label {max_label} of clip {bad} ({names[bad]}) is not a class "
                         f"index: labels are 0-based class indices, at most {MAX_CLASSES - 1}")
    return SkeletonSplit(data=data, labels=labels, names=names, num_frame=num_frame.astype(np.int64),
                         num_class=max_label + 1 if num_class is None else num_class, path=paths["data"])


def count_nonfinite(data: np.ndarray, chunk: int = 64) -> tuple[int, int | None]:
    """(number of NaN/inf values, index of the first clip holding one) of a (memory-mapped) array,
    read `chunk` clips at a time so memory stays small."""
    count, first = 0, None
    for start in range(0, len(data), chunk):
        block = np.asarray(data[start:start + chunk])
        finite = np.isfinite(block)
        if not finite.all():
            bad = block.size - int(np.count_nonzero(finite))
            count += bad
            if first is None:
                first = start + int(np.flatnonzero(~finite.reshape(len(block), -1).all(axis=1))[0])
    return count, first


def require_finite(split: SkeletonSplit, allow: bool = False) -> None:
    """Refuse a split with NaN/inf values, naming the count and the first clip; with `allow`, the feeders
    map them to 0 and a warning counts them. Scans once per split (the result is kept on it)."""
    if split.nonfinite is None:
        split.nonfinite = count_nonfinite(split.data)
    count, first = split.nonfinite
    if not count:
        return
    where = (f"{count} non-finite values (NaN/inf) in {split.path or 'the data'}, first in clip {first} "
             f"({split.names[first]})")
    if not allow:
        raise ValueError(f"{where}; fix the data, or pass --allow-nonfinite to read them as 0")
    if not split.nonfinite_to_zero:
        print(f"warning: {where}; --allow-nonfinite: reading them as 0", file=sys.stderr)
    split.nonfinite_to_zero = True


# ----------------------------------------------------------------------------------------------------
# feeders


class _ClipRNG:
    """Where a feeder's augmentation randomness comes from.

    With a seed, clip `index` in epoch `e` draws from its own Generator seeded by (seed, e, index):
    results then depend neither on the number of loader workers nor on the process count, and a run
    resumed at an epoch boundary continues exactly as an uninterrupted one. Without a seed (the
    released behaviour), one Generator per process, seeded from torch's seed for that process
    (DataLoader workers get distinct torch seeds each epoch)."""

    def __init__(self, seed: int | None = None):
        self.seed = None if seed is None else int(seed)
        self.epoch = 0
        self._pid = None
        self._rng = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def get(self, index: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng([self.seed % (2 ** 32), self.epoch, int(index)])
        pid = os.getpid()
        if self._rng is None or self._pid != pid:
            self._rng = np.random.default_rng(torch.initial_seed() % (2 ** 63))
            self._pid = pid
        return self._rng


def _clip(split: SkeletonSplit, index: int) -> np.ndarray:
    clip = np.asarray(split.data[index], dtype=np.float32)
    if split.nonfinite_to_zero:
        clip = np.nan_to_num(clip, nan=0.0, posinf=0.0, neginf=0.0)
    return clip


class PretrainFeeder(Dataset):
    """Self-supervised pretraining: each item is two independently augmented views (x_q, x_k).

    augment='none' returns the raw clip (3, T, V, M) and its frame count instead, for
    `augment_pretrain_batch` on the model's device. `seed` (optional) makes the views a function of
    (seed, epoch, index); call `set_epoch` every epoch then. `options`: the augmentations' settings
    (default: the released ones)."""

    def __init__(self, split: SkeletonSplit, window: int = WINDOW, augment: str = "numpy",
                 seed: int | None = None, options: PretrainAugment = RELEASED_AUGMENT):
        if augment not in ("numpy", "none"):
            raise ValueError(f"augment must be 'numpy' or 'none', got {augment!r}")
        self.split, self.window, self.augment, self.options = split, window, augment, options
        require_finite(split, allow=split.nonfinite_to_zero)
        self._rng = _ClipRNG(seed)

    def set_epoch(self, epoch: int) -> None:
        self._rng.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        clip = _clip(self.split, index)
        num_frame = int(self.split.num_frame[index])
        if self.augment == "none":
            return torch.from_numpy(np.array(clip)), num_frame
        rng = self._rng.get(index)
        x_q = augment_pretrain(clip, num_frame, rng, self.window, self.options)
        x_k = augment_pretrain(clip, num_frame, rng, self.window, self.options)
        return torch.from_numpy(x_q), torch.from_numpy(x_k)


class DownstreamFeeder(Dataset):
    """Labelled clips: random crop (scale U(0.5, 1)) for training, 0.95 centre crop otherwise."""

    def __init__(self, split: SkeletonSplit, train: bool, window: int = WINDOW, indices=None,
                 seed: int | None = None):
        self.split, self.train, self.window = split, train, window
        require_finite(split, allow=split.nonfinite_to_zero)
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(split)):
            raise IndexError(f"indices must lie in [0, {len(split)}), got min {self.indices.min()} "
                             f"max {self.indices.max()}")
        self._rng = _ClipRNG(seed)

    def set_epoch(self, epoch: int) -> None:
        self._rng.set_epoch(epoch)

    @property
    def labels(self) -> np.ndarray:
        return self.split.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        i = int(self.indices[index])
        clip = _clip(self.split, i)
        num_frame = int(self.split.num_frame[i])
        if self.train:
            x = random_crop_resize(clip, num_frame, self._rng.get(i), (0.5, 1.0), self.window)
        else:
            x = center_crop_resize(clip, num_frame, 0.95, self.window)
        return torch.from_numpy(x), int(self.split.labels[i])


def labelled_subset(labels, ratio: float, seed: int, class_balanced: bool = False) -> np.ndarray:
    """Indices of a random `ratio` of the labelled clips (semi-supervised runs), sorted.

    class_balanced=True draws round(ratio * n_c) (at least 1) from every class c instead of
    round(ratio * N) from the whole set."""
    labels = np.asarray(labels)
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    rng = np.random.default_rng(seed)
    if not class_balanced:
        count = max(1, int(round(ratio * len(labels))))
        return np.sort(rng.choice(len(labels), count, replace=False))
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = max(1, int(round(ratio * len(members))))
        picked.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(picked))
