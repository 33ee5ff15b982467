"""Skeleton layouts: joint names, bone pairs, centre joint, the pre-normalisation's reference joints, and
the ST-GCN spatial adjacency.

A layout is one `Layout` table: a built-in one registered in `LAYOUTS`, or one described in a small
JSON file (`read_layout_file`, format in docs/data.md, "Your own skeletons") or in a checkpoint's record
(`Layout.record`, `layout_from_description`), checked when it is read. Indices are 0-based throughout;
the NTU documentation numbers joints 1..25 (SPEC.md section 1).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """One skeleton: `bone_pairs[i] = (child, parent)`; the centre's pair may point to itself. `zaxis`
    (bottom, top of the spine) and `xaxis` (right, left shoulder) are the joints the released
    pre-normalisation aligns with +z and +x (None: the layout cannot be pre-normalised)."""
    name: str
    joint_names: tuple[str, ...]
    bone_pairs: tuple[tuple[int, int], ...]
    center: int
    zaxis: tuple[int, int] | None = None
    xaxis: tuple[int, int] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """The (child, parent) pairs that are real edges, i.e. without self pairs."""
        return tuple((c, p) for c, p in self.bone_pairs if c != p)

    def __post_init__(self):
        v = self.num_joints
        for c, p in self.bone_pairs:
            if not (0 <= c < v and 0 <= p < v):
                raise ValueError(f"layout {self.name!r}: bone pair ({c}, {p}) outside 0..{v - 1}")
        if not 0 <= self.center < v:
            raise ValueError(f"layout {self.name!r}: centre joint {self.center} outside 0..{v - 1}")
        for axis in (self.zaxis, self.xaxis):
            if axis is not None and not all(0 <= j < v for j in axis):
                raise ValueError(f"layout {self.name!r}: pre-normalisation joints {axis} outside 0..{v - 1}")

    def record(self) -> dict:
        """The layout as plain JSON values: what checkpoints and results files record of it."""
        return {"name": self.name, "joints": list(self.joint_names),
                "bones": [[c, p] for c, p in self.bone_pairs], "center": self.center,
                "zaxis": None if self.zaxis is None else list(self.zaxis),
                "xaxis": None if self.xaxis is None else list(self.xaxis)}


NTU_JOINT_NAMES = (
    "spine_base", "spine_mid", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
    "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
)

# SPEC.md section 1, 1-based (child, parent); joint 21 (spine_shoulder) pairs with itself.
_NTU_BONE_PAIRS_1BASED = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
    (22, 23), (23, 8), (24, 25), (25, 12),
)
NTU_BONE_PAIRS = tuple((a - 1, b - 1) for a, b in _NTU_BONE_PAIRS_1BASED)
NTU_CENTER = 20  # spine_shoulder (joint 21)

# NW-UCLA (Kinect v1, 20 joints): the first 20 NTU joints without NTU's spine_shoulder (its shoulder_centre
# sits where NTU's neck is); the bone tree of the field's NW-UCLA graph (CTR-GCN), rooted at the shoulder
# centre as NTU's is at spine_shoulder.
NW_UCLA_JOINT_NAMES = (
    "hip_centre", "spine", "shoulder_centre", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
)
_NW_UCLA_BONE_PAIRS_1BASED = (
    (1, 2), (2, 3), (3, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10), (12, 11),
    (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19),
)
NW_UCLA_BONE_PAIRS = tuple((a - 1, b - 1) for a, b in _NW_UCLA_BONE_PAIRS_1BASED)
NW_UCLA_CENTER = 2  # shoulder_centre (joint 3)

# the released pre-normalisation's joints (SPEC section 6): spine base -> spine mid along +z, right ->
# left shoulder along +x; NW-UCLA's first 20 joints are NTU's, so the same indices
KINECT_ZAXIS, KINECT_XAXIS = (0, 1), (8, 4)

LAYOUTS = {
    "ntu": Layout("ntu", NTU_JOINT_NAMES, NTU_BONE_PAIRS, NTU_CENTER, KINECT_ZAXIS, KINECT_XAXIS),
    "nw_ucla": Layout("nw_ucla", NW_UCLA_JOINT_NAMES, NW_UCLA_BONE_PAIRS, NW_UCLA_CENTER, KINECT_ZAXIS,
                      KINECT_XAXIS),
}


def get_layout(layout: str | Layout | dict = "ntu") -> Layout:
    """A built-in layout by name, a Layout itself, or a layout record / description (checked)."""
    if isinstance(layout, Layout):
        return layout
    if isinstance(layout, dict):
        return layout_from_description(layout, "layout record")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown skeleton layout {layout!r}; known layouts: {sorted(LAYOUTS)}")
    return LAYOUTS[layout]


def layout_key(layout: Layout) -> str | dict:
    """What an encoder config records of a layout: a built-in one's name, else its whole record."""
    return layout.name if LAYOUTS.get(layout.name) == layout else layout.record()


# ----------------------------------------------------------------------------- layouts from a description
class LayoutError(ValueError):
    """A malformed layout description; the message names its source and the fault."""


_KEYS = {"name", "joints", "bones", "parents", "center", "zaxis", "xaxis"}


def _joint(ref, names: tuple, where: str) -> int:
    """A joint given by its name or its 0-based index."""
    if isinstance(ref, str):
        if ref not in names:
            raise LayoutError(f"{where}: joint {ref!r} is not one of the layout's joints")
        return names.index(ref)
    if isinstance(ref, bool) or not isinstance(ref, int):
        raise LayoutError(f"{where}: expected a joint name or a 0-based joint index, got {ref!r}")
    if not 0 <= ref < len(names):
        raise LayoutError(f"{where}: joint index {ref} outside 0..{len(names) - 1}")
    return ref


def _pairs(desc: dict, names: tuple) -> tuple[tuple[int, int], ...]:
    """(child, parent) pairs from `bones` ([child, parent] each) or `parents` (one per joint, the root's
    itself or null)."""
    if ("bones" in desc) == ("parents" in desc):
        raise LayoutError("expected exactly one of 'bones' ([child, parent] pairs) and 'parents' (one per "
                          "joint)")
    if "parents" in desc:
        parents = desc["parents"]
        if not isinstance(parents, list) or len(parents) != len(names):
            count = len(parents) if isinstance(parents, list) else type(parents).__name__
            raise LayoutError(f"'parents' holds {count} entries, expected one per joint ({len(names)})")
        return tuple((j, j if p is None else _joint(p, names, f"parents[{j}]"))
                     for j, p in enumerate(parents))
    bones = desc["bones"]
    if not isinstance(bones, list) or not bones:
        raise LayoutError("'bones' must be a non-empty list of [child, parent] pairs")
    pairs = []
    for i, bone in enumerate(bones):
        if not isinstance(bone, (list, tuple)) or len(bone) != 2:
            raise LayoutError(f"bones[{i}]: expected [child, parent], got {bone!r}")
        pairs.append((_joint(bone[0], names, f"bones[{i}]"), _joint(bone[1], names, f"bones[{i}]")))
    return tuple(pairs)


def _check_tree(pairs, names: tuple) -> None:
    """The bones must form one tree over all joints: one parent per joint but the root, no cycle."""
    parent = {}
    for c, p in pairs:
        if c in parent and parent[c] != p:
            raise LayoutError(f"joint {names[c]!r} has two parents, {names[parent[c]]!r} and {names[p]!r}")
        parent[c] = p
    roots = [j for j in range(len(names)) if parent.get(j, j) == j]
    if len(roots) != 1:
        shown = ", ".join(repr(names[j]) for j in roots[:5]) + (" ..." if len(roots) > 5 else "")
        raise LayoutError(f"the bones form {len(roots)} trees, expected one (joints without a parent: "
                          f"{shown})")
    for start in range(len(names)):
        seen, j = [], start
        while parent.get(j, j) != j:
            if j in seen:
                cycle = " -> ".join(names[k] for k in seen[seen.index(j):] + [j])
                raise LayoutError(f"the bones form a cycle: {cycle}")
            seen.append(j)
            j = parent[j]


def _axis(desc: dict, key: str, names: tuple) -> tuple[int, int] | None:
    value = desc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise LayoutError(f"'{key}': expected two joints, got {value!r}")
    return tuple(_joint(v, names, f"'{key}'") for v in value)


def layout_from_description(desc, source: str) -> Layout:
    """A Layout from a description (a layout file's object, or `Layout.record()`), checked: the keys,
    unique joint names, joint references in range, the bones forming one tree over all joints, the
    centre and pre-normalisation joints existing. LayoutError naming `source` and the first fault."""
    try:
        if not isinstance(desc, dict):
            raise LayoutError(f"expected a JSON object, got {type(desc).__name__}")
        unknown = sorted(set(desc) - _KEYS)
        missing = sorted({"name", "joints", "center"} - set(desc))
        if unknown or missing:
            raise LayoutError(f"unknown key(s) {unknown}" if unknown else f"missing key(s) {missing}")
        name, joints = desc["name"], desc["joints"]
        if not isinstance(name, str) or not name.strip():
            raise LayoutError(f"'name' must be a non-empty string, got {name!r}")
        if not isinstance(joints, list) or not joints or not all(isinstance(j, str) and j for j in joints):
            raise LayoutError("'joints' must be a non-empty list of joint names")
        names = tuple(joints)
        twice = sorted({j for j in names if names.count(j) > 1})
        if twice:
            raise LayoutError(f"joint name(s) {twice} appear more than once")
        pairs = _pairs(desc, names)
        _check_tree(pairs, names)
        layout = Layout(name, names, pairs, _joint(desc["center"], names, "'center'"),
                        _axis(desc, "zaxis", names), _axis(desc, "xaxis", names))
    except LayoutError as exc:
        raise LayoutError(f"{source}: {exc}") from None
    builtin = LAYOUTS.get(name)
    if builtin is not None and builtin != layout:
        raise LayoutError(f"{source}: name {name!r} is a built-in layout's, which differs from this one "
                          f"(joints, bones, centre or pre-normalisation joints); choose another name")
    return layout


def read_layout_file(path: str) -> Layout:
    """The layout described in a JSON file (see layout_from_description); one-line LayoutError otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            desc = json.load(f)
    except OSError as exc:
        raise LayoutError(f"layout file {path}: cannot be read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise LayoutError(f"layout file {path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise LayoutError(f"layout file {path}: not a UTF-8 text file") from None
    return layout_from_description(desc, f"layout file {path}")


def edge_matrix(edges, num_joints: int) -> np.ndarray:
    """`A[j, i] = 1` for every edge (i, j): column i sends to row j."""
    a = np.zeros((num_joints, num_joints), dtype=np.float64)
    if edges:
        src, dst = np.asarray(edges, dtype=np.int64).T
        a[dst, src] = 1.0
    return a


def normalize_digraph(a: np.ndarray) -> np.ndarray:
    """Divide each column by its sum (columns summing to zero stay zero)."""
    col = a.sum(axis=0)
    inv = np.zeros_like(col)
    np.divide(1.0, col, out=inv, where=col > 0)
    return a * inv[None, :]


class Graph:
    """ST-GCN adjacency of a layout.

    strategy 'spatial' (the partition of ST-GCN as written in 2s-AGCN / CTR-GCN): three (V, V)
    matrices stacked, identity (self), inward edges (child -> parent, towards the centre) and outward
    edges (parent -> child), each column-normalised. strategy 'uniform': one matrix, the normalised
    sum of self links and both edge directions.
    """

    STRATEGIES = ("spatial", "uniform")

    def __init__(self, layout: str | Layout | dict = "ntu", strategy: str = "spatial"):
        if strategy not in self.STRATEGIES:
            raise ValueError(f"unknown graph strategy {strategy!r}; expected one of {self.STRATEGIES}")
        self.layout = get_layout(layout)
        self.strategy = strategy
        self.num_node = self.layout.num_joints
        self.center = self.layout.center
        self.inward = self.layout.edges
        self.outward = tuple((p, c) for c, p in self.inward)
        v = self.num_node
        identity = np.eye(v)
        inward = edge_matrix(self.inward, v)
        outward = edge_matrix(self.outward, v)
        if strategy == "spatial":
            a = np.stack([identity, normalize_digraph(inward), normalize_digraph(outward)])
        else:
            a = normalize_digraph(identity + inward + outward)[None]
        self.A = a.astype(np.float32)
