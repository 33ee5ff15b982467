"""Skeleton layouts: joint names, bone pairs, centre joint, and the ST-GCN spatial adjacency.

A layout is one `Layout` table; adding another skeleton (another sensor, another dataset) means
writing one more table and registering it in `LAYOUTS`. Indices are 0-based throughout; the NTU
documentation numbers joints 1..25 (SPEC.md section 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """One skeleton: `bone_pairs[i] = (child, parent)`; the centre's pair may point to itself."""
    name: str
    joint_names: tuple[str, ...]
    bone_pairs: tuple[tuple[int, int], ...]
    center: int

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

LAYOUTS = {
    "ntu": Layout("ntu", NTU_JOINT_NAMES, NTU_BONE_PAIRS, NTU_CENTER),
    "nw_ucla": Layout("nw_ucla", NW_UCLA_JOINT_NAMES, NW_UCLA_BONE_PAIRS, NW_UCLA_CENTER),
}


def get_layout(name: str = "ntu") -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown skeleton layout {name!r}; known layouts: {sorted(LAYOUTS)}")
    return LAYOUTS[name]


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

    def __init__(self, layout: str = "ntu", strategy: str = "spatial"):
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
