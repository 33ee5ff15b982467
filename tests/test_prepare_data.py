"""prepare_data.py: the NTU/PKU-MMD parsers on real files, the vectorised pre-normalisation against a
straightforward loop version written here (the released algorithm, frame by frame and joint by joint),
crafted edge cases, malformed files and the conversion driver."""
import os
import pickle

import numpy as np
import pytest

import prepare_data as P
import readers as R
from dataset import load_split
from readers import ntu as N, pku as K
from reference.released_reference import loop_fixed_length, loop_pipeline, loop_pre_normalization, loop_read_xyz

NTU_SAMPLES = ["S001C001P001R001A001", "S001C001P001R001A002", "S001C001P001R001A003", "S001C001P001R001A004",
               "S001C001P001R001A005", "S001C001P001R001A011", "S001C003P008R002A058", "S002C001P003R001A003",
               "S003C001P015R001A034", "S004C002P003R001A017"]


# ---------------------------------------------------------------------------------------------------
# helpers writing raw files


def write_ntu(path, bodies_per_frame, rng=None):
    """bodies_per_frame: list over frames of lists of (25, 3) arrays (joint xyz)."""
    lines = [str(len(bodies_per_frame))]
    for bodies in bodies_per_frame:
        lines.append(str(len(bodies)))
        for b, xyz in enumerate(bodies):
            lines.append(f"{72057594037931100 + b} 0 1 1 1 1 0 0.01 0.02 2")
            lines.append(str(len(xyz)))
            for x, y, z in xyz:
                lines.append(f"{x:.7g} {y:.7g} {z:.7g} 250.1 190.2 1030.3 510.4 0.1 0.2 0.3 0.4 2")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def random_body(rng, num_t, scale=1.0, center=(0, 0, 3)):
    base = rng.normal(0, 0.3, size=(25, 3)) + np.asarray(center)
    return [base + rng.normal(0, 0.05 * scale, size=(25, 3)) for _ in range(num_t)]


# ---------------------------------------------------------------------------------------------------
# the NTU parser on the real files


@pytest.mark.parametrize("name", NTU_SAMPLES)
def test_ntu_parser_on_real_files(shared_data, name):
    path = os.path.join(shared_data, "ntu_samples", name + ".skeleton")
    xyz, body_counts = N.read_ntu_skeleton(path)
    reference, reference_counts = loop_read_xyz(path)
    with open(path) as f:
        header = int(f.readline())
        f.readline()
        f.readline()
        f.readline()
        first_joint = [float(v) for v in f.readline().split()[:3]]
    assert xyz.shape == (4, header, 25, 3) and len(body_counts) == header
    assert 54 <= header <= 158
    assert np.array_equal(body_counts, reference_counts)
    expected_bodies = 2 if name == "S001C003P008R002A058" else 1
    assert set(body_counts.tolist()) == {expected_bodies}
    assert np.array_equal(N.select_bodies(xyz), reference)
    assert np.array_equal(xyz[0, 0, 0], first_joint)
    assert not xyz[expected_bodies:].any()


@pytest.mark.parametrize("name", NTU_SAMPLES)
def test_vectorised_pipeline_equals_loop_version_on_real_files(shared_data, name):
    path = os.path.join(shared_data, "ntu_samples", name + ".skeleton")
    clip, num_frame = N.ntu_sample(path)
    reference = loop_pipeline(path)
    assert clip.dtype == np.float32 and clip.shape == (3, 300, 25, 2)
    np.testing.assert_array_equal(clip, reference)
    with open(path) as f:
        assert num_frame == int(f.readline())
    # properties of the result: person 0's joint 2 (index 1) at the origin, spine of frame 0 along +z
    assert np.abs(clip[:, :num_frame, 1, 0]).max() < 1e-6
    spine = clip[:, 0, 1, 0] - clip[:, 0, 0, 0]
    shoulders = clip[:, 0, 8, 0] - clip[:, 0, 4, 0]
    assert abs(shoulders[1]) < 1e-5 and abs(shoulders[2]) < 1e-5 and shoulders[0] > 0
    assert spine[2] > 0


def test_two_body_file_keeps_both_bodies(shared_data):
    clip, _ = N.ntu_sample(os.path.join(shared_data, "ntu_samples", "S001C003P008R002A058.skeleton"))
    assert np.abs(clip[..., 0]).sum() > 0 and np.abs(clip[..., 1]).sum() > 0
    single, _ = N.ntu_sample(os.path.join(shared_data, "ntu_samples", "S001C001P001R001A001.skeleton"))
    assert not single[..., 1].any()


# ---------------------------------------------------------------------------------------------------
# crafted raw files: body selection by energy


def test_energy_selection_keeps_the_two_most_moving_bodies_of_four(tmp_path):
    rng = np.random.default_rng(0)
    num_t = 20
    scales = [0.2, 3.0, 0.0, 1.0, 5.0]                     # the 5th body is past the 4 kept in file order
    tracks = [random_body(rng, num_t, s, center=(i, 0, 3)) for i, s in enumerate(scales)]
    tracks[2] = [np.zeros((25, 3)) + (0.0, 0.0, 3.0) for _ in range(num_t)]
    frames = [[track[t] for track in tracks] for t in range(num_t)]
    path = str(tmp_path / "S001C001P001R001A001.skeleton")
    write_ntu(path, frames)
    xyz, counts = N.read_ntu_skeleton(path)
    assert np.all(counts == 5)
    selected = N.select_bodies(xyz)
    reference, _ = loop_read_xyz(path)
    assert np.array_equal(selected, reference)
    # energy is dominated by the spatial spread, equal for all bodies here except the static one;
    # the two largest-energy bodies among the first four are kept, in decreasing energy
    energies = [N.body_energy(b) for b in xyz]
    order = np.argsort(energies)[::-1][:2]
    np.testing.assert_array_equal(selected, xyz[order].transpose(3, 1, 2, 0))
    assert 4 not in order and 2 not in order


def test_empty_body_has_zero_energy_and_ties_follow_argsort():
    empty = np.zeros((10, 25, 3))
    assert N.body_energy(empty) == 0
    xyz = np.zeros((4, 10, 25, 3))
    xyz[0] = 1.0 + np.arange(25)[None, :, None]
    selected = N.select_bodies(xyz)
    expected = np.argsort([N.body_energy(b) for b in xyz])[::-1][:2]
    np.testing.assert_array_equal(selected, xyz[expected].transpose(3, 1, 2, 0))
    assert expected[0] == 0


# ---------------------------------------------------------------------------------------------------
# pre-normalisation: crafted edge cases against the loop version


def _random_clip(rng, num_t=120, persons=2):
    clip = np.zeros((3, 300, 25, 2), dtype=np.float32)
    for p in range(persons):
        base = rng.normal(0, 0.3, size=(3, 1, 25)) + np.array([0, 0, 3.0])[:, None, None]
        clip[:, :num_t, :, p] = base + rng.normal(0, 0.05, size=(3, num_t, 25))
    return clip


def _edge_cases():
    rng = np.random.default_rng(1)
    cases = {}
    c = _random_clip(rng)
    c[:, :7] = 0                                          # empty first frames (both persons)
    cases["empty_first_frames"] = c
    c = _random_clip(rng)
    c[:, :3, :, 1] = 0                                    # only person 1 starts late: different periods
    cases["person1_starts_late"] = c
    c = _random_clip(rng, persons=1)
    cases["empty_second_person"] = c
    c = _random_clip(rng)
    c[:, 40:45] = 0                                       # middle gap, then trailing empty frames
    cases["middle_gap"] = c
    c = _random_clip(rng)
    c[:, 100:] = 0
    c[:, 100:, :, 1] = 0
    c[:, 90:, :, 1] = 0                                   # person 1 ends earlier
    cases["person1_ends_early"] = c
    c = _random_clip(rng)
    mask = rng.random((300, 25, 2)) < 0.05                # zero joints scattered everywhere
    c[:, mask] = 0
    cases["zero_joints"] = c
    c = _random_clip(rng, num_t=300)                     # no empty frame at all
    cases["full_length"] = c
    c = _random_clip(rng, num_t=1)                       # a single frame repeated 300 times
    cases["one_frame"] = c
    c = _random_clip(rng)
    c[:, 0, 1, 0] = c[:, 0, 0, 0]                         # hip == spine in frame 0: no z rotation
    cases["degenerate_spine"] = c
    cases["all_zero"] = np.zeros((3, 300, 25, 2), dtype=np.float32)
    c = _random_clip(rng, persons=1)
    c[..., 1] = c[..., 0]
    c[..., 0] = 0                                         # only person 1 present, person 0 empty
    cases["only_second_person"] = c
    for i in range(8):                                   # random mixtures
        c = _random_clip(rng, num_t=int(rng.integers(1, 300)))
        c[:, :int(rng.integers(0, 5)), :, int(rng.integers(0, 2))] = 0
        c[:, rng.random(300) < 0.03] = 0
        cases[f"random_{i}"] = c
    return cases


@pytest.mark.parametrize("case", sorted(_edge_cases()))
def test_pre_normalize_equals_loop_version_on_edge_cases(case):
    clip = _edge_cases()[case]
    out = R.pre_normalize(clip.copy())
    reference = loop_pre_normalization(clip[None].copy())[0]
    # Both rotate in float64 and store float32 (values up to ~2): the second rotation's matrix comes from
    # the first's float32 result, so a 1-ulp difference there (1.2e-7 at 1) moves the output by about as
    # much. rtol=1e-6 plus atol=1e-6 for the values near 0 is about ten times that; a wrong frame, joint
    # or rotation is off by > 1e-2.
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6)
    assert out.shape == clip.shape and out.dtype == np.float32


def test_fill_rule_repeats_the_clip_cyclically():
    clip = _edge_cases()["empty_first_frames"]
    out = R.pre_normalize(clip.copy())
    n = 120 - 7                                           # valid frames after moving them to the front
    np.testing.assert_array_equal(out[:, n:2 * n], out[:, :n])
    np.testing.assert_array_equal(out[:, 2 * n:300], out[:, :300 - 2 * n])


# ---------------------------------------------------------------------------------------------------
# malformed files


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _valid_text(num_frames=2):
    joint = "0.1 0.2 3.0 250 190 1030 510 0.1 0.2 0.3 0.4 2"
    body = "72057594037931101 0 1 1 1 1 0 0.01 0.02 2\n25\n" + "\n".join([joint] * 25)
    return f"{num_frames}\n" + "\n".join(f"1\n{body}" for _ in range(num_frames)) + "\n"


@pytest.mark.parametrize("mutate, line, expected", [
    (lambda t: t.replace("0.2 3.0", "0.2 abc", 1), 5, "expected a number, got 'abc'"),
    (lambda t: t.replace("250 190 1030", "250 1030", 1), 5, "expected a joint line of 12 numbers, got 11"),
    (lambda t: "x\n" + t.split("\n", 1)[1], 1, "expected the frame count (an integer), got 'x'"),
    (lambda t: t.replace("\n1\n", "\nz\n", 1), 2, "expected the body count of frame 1"),
    (lambda t: "\n".join(t.split("\n")[:40]), 40, "file ends early"),
    (lambda t: "3" + t[1:], 57, "file ends early, expected the body count of frame 3"),
    (lambda t: t + "1\n", 58, "expected the end of the file after 2 frames"),
    (lambda t: t.replace(" 0.01 0.02 2\n", " 0.01 2\n", 1), 3, "expected a body info line of 10 fields"),
])
def test_malformed_ntu_files_name_file_line_and_expectation(tmp_path, mutate, line, expected):
    path = _write(tmp_path / "S001C001P001R001A001.skeleton", mutate(_valid_text()))
    with pytest.raises(R.SkeletonFileError) as info:
        N.read_ntu_skeleton(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert expected in message
    if "ends early" not in expected:
        assert message.startswith(f"{path}:{line}:")


def test_valid_crafted_file_parses(tmp_path):
    path = _write(tmp_path / "S001C001P001R001A001.skeleton", _valid_text())
    xyz, counts = N.read_ntu_skeleton(path)
    assert xyz.shape == (4, 2, 25, 3) and counts.tolist() == [1, 1]
    np.testing.assert_array_equal(xyz[0, :, :, :], np.broadcast_to([0.1, 0.2, 3.0], (2, 25, 3)))


def test_malformed_pku_file(tmp_path):
    good = " ".join(["0.5"] * 150)
    path = _write(tmp_path / "0001-L.txt", f"{good}\n{good}\n" + " ".join(["0.5"] * 149) + "\n")
    with pytest.raises(R.SkeletonFileError, match=r"0001-L.txt:3: expected 150 numbers .* got 149"):
        K.read_pku_skeleton(path)
    path = _write(tmp_path / "0001-L.txt", f"{good}\n" + good.replace("0.5", "nope", 1) + "\n")
    with pytest.raises(R.SkeletonFileError, match=r"0001-L.txt:2: expected a number, got 'nope'"):
        K.read_pku_skeleton(path)
    labels = _write(tmp_path / "labels.txt", "1,10,20,1\n3,x,40,1\n")
    with pytest.raises(R.SkeletonFileError, match=r"labels.txt:2: expected 'action,start,end,confidence'"):
        K.read_pku_labels(labels)


# ---------------------------------------------------------------------------------------------------
# the conversion driver


def _link_samples(shared_data, folder, names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        os.symlink(os.path.join(shared_data, "ntu_samples", name + ".skeleton"),
                   os.path.join(folder, name + ".skeleton"))


def test_ntu60_conversion_of_real_files(shared_data, tmp_path):
    raw = os.path.join(shared_data, "ntu_samples")
    report = P.main(["ntu60", "--raw-dir", raw, "--out", str(tmp_path), "--workers", "2"])
    assert report["skipped"] == 0
    seen = {}
    for bench in ("xsub", "xview"):
        for part in ("train", "val"):
            split = load_split(str(tmp_path / bench), part)
            for i, name in enumerate(split.names):
                stem = name[:-len(".skeleton")]
                subject, camera = int(stem[9:12]), int(stem[5:8])
                if bench == "xsub":
                    assert (part == "train") == (subject in N.TRAIN_SUBJECTS)
                else:
                    assert (part == "train") == (camera in (2, 3))
                assert split.labels[i] == int(stem[-3:]) - 1
                reference = loop_pipeline(os.path.join(raw, name))
                np.testing.assert_array_equal(split.data[i], reference)
                with open(os.path.join(raw, name)) as f:
                    assert split.num_frame[i] == int(f.readline())
                seen.setdefault(bench, set()).add(stem)
            with open(tmp_path / bench / f"{part}_label.pkl", "rb") as f:
                names, labels = pickle.load(f)
            assert names == split.names and list(labels) == split.labels.tolist()
    assert seen["xsub"] == seen["xview"] == set(NTU_SAMPLES)
    assert not [f for f in os.listdir(tmp_path / "xsub") if "tmp" in f]


def test_missing_list_with_or_without_header(shared_data, tmp_path):
    official = os.path.join(shared_data, "ntu_missing_lists", "NTU_RGBD_samples_with_missing_skeletons.txt")
    with_header = N.read_missing_list(official)
    assert len(with_header) == 302
    bare = tmp_path / "bare.txt"
    with open(official) as f:
        bare.write_text("".join(f.readlines()[3:]))
    assert N.read_missing_list(str(bare)) == with_header
    shipped = N.read_missing_list(N.MISSING_LISTS["ntu60"])
    assert shipped == with_header
    assert len(N.read_missing_list(N.MISSING_LISTS["ntu120"])) == 535
    bad = tmp_path / "bad.txt"
    bad.write_text("S001C002P005R002A008\nnot a name\n")
    with pytest.raises(R.SkeletonFileError, match=r"bad.txt:2: expected a sample name"):
        N.read_missing_list(str(bad))


def test_missing_samples_are_skipped(shared_data, tmp_path):
    raw = tmp_path / "raw"
    _link_samples(shared_data, raw, NTU_SAMPLES)
    missing = tmp_path / "missing.txt"
    missing.write_text("header line\n\nS001C001P001R001A002\nS002C001P003R001A003\n")
    P.main(["ntu60", "--raw-dir", str(raw), "--out", str(tmp_path / "out"), "--workers", "1",
            "--missing-list", str(missing), "--benchmarks", "xsub"])
    names = load_split(str(tmp_path / "out" / "xsub"), "train").names + \
        load_split(str(tmp_path / "out" / "xsub"), "val").names
    assert len(names) == 8
    assert "S001C001P001R001A002.skeleton" not in names and "S002C001P003R001A003.skeleton" not in names


def test_skip_bad_reports_and_skips(shared_data, tmp_path):
    raw = tmp_path / "raw"
    _link_samples(shared_data, raw, NTU_SAMPLES)
    bad = _write(raw / "S001C001P002R001A001.skeleton", _valid_text().replace("0.2 3.0", "0.2 zz", 1))
    with pytest.raises(R.SkeletonFileError, match=r"S001C001P002R001A001.skeleton:5: expected a number"):
        P.main(["ntu60", "--raw-dir", str(raw), "--out", str(tmp_path / "a"), "--workers", "1"])
    report = P.main(["ntu60", "--raw-dir", str(raw), "--out", str(tmp_path / "b"), "--workers", "2",
                     "--skip-bad"])
    assert report["skipped"] == 1
    train = load_split(str(tmp_path / "b" / "xsub"), "train")
    assert os.path.basename(bad) not in train.names and len(train) == 8
    # the shortened file is still a whole, loadable .npy
    assert train.data.shape == (8, 3, 300, 25, 2)
    np.testing.assert_array_equal(train.data[-1], loop_pipeline(os.path.join(str(raw), train.names[-1])))


def test_empty_inputs_are_errors(shared_data, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no NTU .skeleton files"):
        P.main(["ntu60", "--raw-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    raw = tmp_path / "one"
    _link_samples(shared_data, raw, ["S001C001P001R001A001"])
    with pytest.raises(ValueError, match="the val split would have no samples"):
        P.main(["ntu60", "--raw-dir", str(raw), "--out", str(tmp_path / "o"), "--benchmarks", "xsub"])
    assert not os.path.exists(tmp_path / "o" / "xsub" / "train_data_joint.npy")


# ---------------------------------------------------------------------------------------------------
# PKU-MMD


def test_pku_files_labels_and_splits(shared_data):
    root = os.path.join(shared_data, "pku_mmd_v1_samples")
    video = K.read_pku_skeleton(os.path.join(root, "skeleton", "0005-L.txt"))
    with open(os.path.join(root, "skeleton", "0005-L.txt")) as f:
        lines = [line for line in f if line.strip()]
    first = np.array(lines[0].split(), dtype=np.float64).reshape(2, 25, 3)
    assert video.shape == (3, len(lines), 25, 2)
    np.testing.assert_array_equal(video[:, 0], first.transpose(2, 1, 0))
    rows = K.read_pku_labels(os.path.join(root, "label", "0299-L.txt"))
    assert len(rows) == 8 and rows[0] == (15, 302, 434)
    train, val = K.read_pku_split(os.path.join(root, "cross-subject.txt"))
    assert "0005-L" in train and "0299-L" in val and "0299-L" not in train
    train_v, val_v = K.read_pku_split(os.path.join(root, "cross-view.txt"))
    assert "0005-L" in train_v and "0005-M" in val_v


def test_pku1_conversion_equals_loop_version(shared_data, tmp_path):
    root = os.path.join(shared_data, "pku_mmd_v1_samples")
    P.main(["pku1", "--root", root, "--out", str(tmp_path), "--benchmarks", "xsub", "--workers", "1"])
    for part, video in (("train", "0005-L"), ("val", "0299-L")):
        split = load_split(str(tmp_path / "xsub"), part)
        rows = K.read_pku_labels(os.path.join(root, "label", video + ".txt"))
        raw = np.loadtxt(os.path.join(root, "skeleton", video + ".txt"))
        assert split.names == [f"{video}_{i}" for i in range(len(rows))]
        assert split.labels.tolist() == [r[0] for r in rows]
        assert split.num_frame.tolist() == [r[2] - r[1] for r in rows]
        for i, (_, start, end) in enumerate(rows):
            segment = raw[start:end].reshape(-1, 2, 25, 3).transpose(3, 0, 2, 1)
            reference = loop_pre_normalization(loop_fixed_length(segment)[None])[0]
            np.testing.assert_array_equal(split.data[i], reference)


def test_pku_long_segment_is_truncated_to_300_frames(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "pku"
    (root / "skeleton").mkdir(parents=True)
    (root / "label").mkdir()
    for video, start, end in (("0002-L", 10, 360), ("0003-M", 0, 50)):
        frames = rng.normal(0, 0.3, size=(400, 150)) + np.tile([0, 0, 3.0], 50)
        np.savetxt(root / "skeleton" / f"{video}.txt", frames, fmt="%.6f")
        (root / "label" / f"{video}.txt").write_text(f"5,{start},{end},1\n")
    (root / "cross_subject_v2.txt").write_text("Training videos:\n0002-L\nValidation videos:\n0003-M\n")
    P.main(["pku2", "--root", str(root), "--out", str(tmp_path / "out"), "--benchmarks", "xsub",
            "--workers", "1"])
    train = load_split(str(tmp_path / "out" / "xsub"), "train")
    assert train.num_frame.tolist() == [350] and train.labels.tolist() == [4]
    raw = np.loadtxt(root / "skeleton" / "0002-L.txt")[10:360].reshape(-1, 2, 25, 3).transpose(3, 0, 2, 1)
    reference = loop_pre_normalization(loop_fixed_length(raw)[None])[0]
    np.testing.assert_array_equal(train.data[0], reference)


# ---------------------------------------------------------------------------------------------------
# the vectorised reader and the line-by-line reader agree; odd layouts fall back


def test_fast_and_line_readers_agree_on_real_files(shared_data):
    for name in NTU_SAMPLES:
        path = os.path.join(shared_data, "ntu_samples", name + ".skeleton")
        with open(path, "rb") as f:
            raw = f.read()
        fast = N._read_ntu_fast(raw)
        assert fast is not None, name
        lines = N._read_ntu_lines(path, raw.decode())
        np.testing.assert_array_equal(fast[0], lines[0])
        np.testing.assert_array_equal(fast[1], lines[1])


def test_readers_agree_on_crafted_layouts(tmp_path):
    rng = np.random.default_rng(11)
    frames = []
    for t in range(12):
        count = [0, 1, 2, 5][t % 4]                        # empty frames and more than 4 bodies
        frames.append([rng.normal(size=(25 if b != 1 else 27, 3)) for b in range(count)])  # 27 joints
    path = str(tmp_path / "S001C001P001R001A001.skeleton")
    write_ntu(path, frames)
    with open(path, "rb") as f:
        raw = f.read()
    fast = N._read_ntu_fast(raw)              # the released acceptance of other joint counts (not strict)
    assert fast is not None
    lines = N._read_ntu_lines(path, raw.decode())
    np.testing.assert_array_equal(fast[0], lines[0])
    assert fast[1].tolist() == [0, 1, 2, 5] * 3
    # with Windows line ends, tabs and double spaces the numbers are the same
    for variant in (raw.replace(b"\n", b"\r\n"), raw.replace(b" ", b"\t"), raw.replace(b" ", b"  ")):
        with open(path, "wb") as f:
            f.write(variant)
        xyz, counts = N.read_ntu_skeleton(path, strict_joints=False)
        np.testing.assert_array_equal(xyz, fast[0])
        np.testing.assert_array_equal(counts, fast[1])
    # loop reference
    clip, counts = loop_read_xyz(path)
    np.testing.assert_array_equal(N.select_bodies(fast[0]), clip)


def test_failed_conversion_leaves_no_temporary_files(shared_data, tmp_path):
    raw = tmp_path / "raw"
    _link_samples(shared_data, raw, NTU_SAMPLES)
    _write(raw / "S001C001P002R001A001.skeleton", _valid_text().replace("0.2 3.0", "0.2 zz", 1))
    out = tmp_path / "out"
    with pytest.raises(R.SkeletonFileError):
        P.main(["ntu60", "--raw-dir", str(raw), "--out", str(out), "--workers", "1"])
    assert [f for _, _, files in os.walk(out) for f in files] == []
