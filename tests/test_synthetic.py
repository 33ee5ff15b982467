"""synthetic.py: valid NTU files, deterministic for a seed, performers/cameras/classes as promised, the
kinematics keep bone lengths, and the prepared set is learnable but not trivial."""
import glob
import hashlib
import os
import re

import numpy as np

import prepare_data as P
import readers
from dataset import load_split
from readers import dataset_table
from readers import synthetic as S

NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})\.skeleton$")


def _digest(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.skeleton"))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_classes_and_grid():
    assert S.NUM_CLASSES == len(S.CLASS_NAMES) >= 12
    assert len(S.INTERACTIONS) >= 2 and all(0 <= c < S.NUM_CLASSES for c in S.INTERACTIONS)
    events = S._event_grid(S.DEFAULT_NUM_CLIPS)
    assert len({perf for _, perf, _, _ in events}) >= 10
    assert len(events) * S.NUM_CAMERAS >= S.DEFAULT_NUM_CLIPS
    picked = S._select_clips(S.DEFAULT_NUM_CLIPS, seed=0)
    assert sum(len(cams) for _, cams in picked) == S.DEFAULT_NUM_CLIPS


def test_generation_is_deterministic_and_valid(tmp_path):
    names = S.generate(str(tmp_path / "a"), num_clips=24, seed=3, workers=1)
    again = S.generate(str(tmp_path / "b"), num_clips=24, seed=3, workers=2)
    S.generate(str(tmp_path / "c"), num_clips=24, seed=4, workers=1)
    assert len(names) == 24 and sorted(names) == sorted(again)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    for path in glob.glob(str(tmp_path / "a" / "*.skeleton")):
        match = NAME.match(os.path.basename(path))
        assert match
        camera, action = int(match.group(2)), int(match.group(5))
        assert 1 <= camera <= S.NUM_CAMERAS and 1 <= action <= S.NUM_CLASSES
        xyz, bodies = readers.ntu.read_ntu_skeleton(path)
        assert S.MIN_ACTION_FRAMES - 24 <= xyz.shape[1] <= S.MAX_ACTION_FRAMES
        expected = 2 if action - 1 in S.INTERACTIONS else 1
        assert expected in bodies                      # frames may lack bodies (dropped) or hold
        assert set(bodies[bodies > 0].tolist()) <= {expected, expected + 1}   # one spurious body


def test_forward_kinematics_keeps_bone_lengths():
    rng = np.random.default_rng(0)
    body = S.performer(0, 3)
    p = np.linspace(0, 1, 60)
    for label in range(S.NUM_CLASSES):
        joints = S.forward_kinematics(S.action_angles(label, p, body, rng), body)
        assert joints.shape == (60, 25, 3)
        for a, b, length in ((4, 5, body["upper_arm"]), (9, 10, body["forearm"]), (12, 13, body["thigh"]),
                             (17, 18, body["shin"]), (0, 1, body["spine"])):
            distance = np.linalg.norm(joints[:, a] - joints[:, b], axis=-1)
            np.testing.assert_allclose(distance, length, rtol=1e-9)
        # the performer's right side is +x when facing the camera (-z), as Kinect sees a person
    rest = S.forward_kinematics({k: np.zeros(1) for k in S.ANGLES}, body)[0]
    assert rest[8, 0] > rest[4, 0] and rest[16, 0] > rest[12, 0] and rest[3, 1] > rest[0, 1]


def test_prepared_synthetic_set(tmp_path):
    report = P.main(["synthetic", "--out", str(tmp_path), "--num-clips", "360", "--workers", "2",
                     "--seed", "1"])
    assert sum(report["written"][f"xsub/{part}"] for part in ("train", "val")) == 360
    split_rules = {spec.folder: spec.split for spec in dataset_table.get("synthetic").protocols.values()}
    for bench in ("xsub", "xview"):
        train, val = load_split(str(tmp_path / bench), "train"), load_split(str(tmp_path / bench), "val")
        for split, part in ((train, "train"), (val, "val")):
            assert split.labels.min() >= 0 and split.labels.max() < S.NUM_CLASSES
            for name, label in zip(split.names, split.labels):
                assert int(name[17:20]) - 1 == label
                assert readers.ntu.ntu_part(name[:20], split_rules[bench]) == part
            assert np.all((split.num_frame >= S.MIN_ACTION_FRAMES - 24)
                          & (split.num_frame <= S.MAX_ACTION_FRAMES))
        # a nearest neighbour on raw coordinates: clearly better than chance, clearly short of 100%
        a = np.asarray(train.data).reshape(len(train), -1)
        b = np.asarray(val.data).reshape(len(val), -1)
        distance = (b ** 2).sum(1)[:, None] + (a ** 2).sum(1)[None] - 2 * b @ a.T
        accuracy = (train.labels[distance.argmin(1)] == val.labels).mean()
        assert 3 / S.NUM_CLASSES < accuracy < 0.9, accuracy


def test_regenerating_a_smaller_set_ignores_older_files(tmp_path):
    P.main(["synthetic", "--out", str(tmp_path), "--num-clips", "60", "--workers", "1"])
    report = P.main(["synthetic", "--out", str(tmp_path), "--num-clips", "40", "--workers", "1",
                     "--seed", "2", "--overwrite"])
    assert sum(report["written"][f"xview/{part}"] for part in ("train", "val")) == 40
