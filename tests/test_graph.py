import numpy as np
import pytest

import graph

# SPEC.md section 1, 1-based, written out again here as the reference.
SPEC_PAIRS_1BASED = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                     (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                     (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12)]


def test_ntu_tables_match_spec():
    assert len(graph.NTU_JOINT_NAMES) == 25 and len(set(graph.NTU_JOINT_NAMES)) == 25
    assert list(graph.NTU_BONE_PAIRS) == [(a - 1, b - 1) for a, b in SPEC_PAIRS_1BASED]
    assert graph.NTU_CENTER == 20 and graph.NTU_JOINT_NAMES[20] == "spine_shoulder"
    layout = graph.get_layout("ntu")
    assert layout.num_joints == 25 and layout.center == graph.NTU_CENTER
    assert len(layout.edges) == 24  # the self pair of joint 21 is not an edge


def test_ntu_bones_form_a_tree_rooted_at_the_centre():
    parent = dict(graph.NTU_BONE_PAIRS)
    assert sorted(parent) == list(range(25))  # every joint is the child of exactly one pair
    for joint in range(25):
        seen, j = set(), joint
        while j != graph.NTU_CENTER:
            assert j not in seen, f"cycle through joint {j}"
            seen.add(j)
            j = parent[j]


def _naive_spatial(num_joints, edges):
    """Loop reference: self, inward (A[parent, child]) and outward, each column divided by its sum."""
    def normalised(pairs):
        a = np.zeros((num_joints, num_joints))
        for src, dst in pairs:
            a[dst][src] = 1.0
        out = np.zeros_like(a)
        for col in range(num_joints):
            s = sum(a[row][col] for row in range(num_joints))
            for row in range(num_joints):
                out[row][col] = a[row][col] / s if s > 0 else 0.0
        return out
    eye = np.eye(num_joints)
    return np.stack([eye, normalised(edges), normalised([(p, c) for c, p in edges])])


def test_spatial_adjacency_against_loop_reference():
    g = graph.Graph("ntu", "spatial")
    assert g.A.shape == (3, 25, 25) and g.A.dtype == np.float32
    edges = [(c, p) for c, p in graph.NTU_BONE_PAIRS if c != p]
    # float64 built, stored float32: entries in [0, 1] round by at most 2**-24 relative (6e-8)
    np.testing.assert_allclose(g.A, _naive_spatial(25, edges), rtol=2 ** -23, atol=0)
    # properties: inward columns sum to 1 except at the centre (no parent), outward at leaves is zero
    inward_cols = g.A[1].sum(axis=0)
    assert inward_cols[graph.NTU_CENTER] == 0
    # a float32 sum of at most 5 rounded entries: a few ulps of 1 (1.2e-7 each); 1e-6 is ~8 ulps
    np.testing.assert_allclose(np.delete(inward_cols, graph.NTU_CENTER), 1.0, rtol=1e-6)
    # the spine_shoulder (centre) receives from spine_mid, neck, both shoulders: four children
    assert np.count_nonzero(g.A[1][graph.NTU_CENTER]) == 4
    assert np.array_equal(g.A[1] > 0, (g.A[2] > 0).T)


def test_uniform_adjacency_is_column_normalised_and_symmetric_in_support():
    a = graph.Graph("ntu", "uniform").A
    assert a.shape == (1, 25, 25)
    np.testing.assert_allclose(a[0].sum(axis=0), 1.0, rtol=1e-6)      # as above: ~8 float32 ulps of 1
    assert np.array_equal(a[0] > 0, (a[0] > 0).T)


def test_another_layout_is_one_table(monkeypatch):
    chain = graph.Layout("chain3", ("a", "b", "c"), ((0, 1), (1, 1), (2, 1)), center=1)
    monkeypatch.setitem(graph.LAYOUTS, "chain3", chain)
    g = graph.Graph("chain3")
    np.testing.assert_allclose(g.A, _naive_spatial(3, [(0, 1), (2, 1)]), rtol=2 ** -23, atol=0)


def test_bad_names_and_tables_fail_clearly():
    with pytest.raises(ValueError, match="unknown skeleton layout 'kinect'"):
        graph.get_layout("kinect")
    with pytest.raises(ValueError, match="unknown graph strategy 'distance'"):
        graph.Graph("ntu", "distance")
    with pytest.raises(ValueError, match=r"bone pair \(0, 5\) outside 0..1"):
        graph.Layout("bad", ("a", "b"), ((0, 5),), center=0)
