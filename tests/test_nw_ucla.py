"""NW-UCLA end to end: the 20-joint layout, the JSON reader and its checks, the whole real set from
../shared/data (skipped with a reason when absent), and prepare -> one pretraining step -> kNN with each
encoder on files the tests write."""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import dataset
import graph
import knn_eval
import prepare_data
import pretrain_cmd
from readers import dataset_table
from conftest import shared_path
from helpers import one_torch_thread  # noqa: F401  (autouse fixture)
import readers as R
from readers import nw_ucla
from reference.released_reference import loop_pre_normalization

ACTIONS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------- layout
def test_the_layout_is_a_tree_over_20_joints_rooted_at_the_shoulder_centre():
    layout = graph.get_layout("nw_ucla")
    assert layout.num_joints == 20 and len(layout.bone_pairs) == 20
    assert sorted(c for c, _ in layout.bone_pairs) == list(range(20))        # one parent per joint
    assert layout.center == layout.joint_names.index("shoulder_centre") == 2
    parent = dict(layout.bone_pairs)
    assert parent[layout.center] == layout.center                            # the root pairs with itself
    for joint in range(20):                                                  # every path reaches the root
        seen = set()
        while joint != layout.center:
            assert joint not in seen
            seen.add(joint)
            joint = parent[joint]
    names = layout.joint_names
    assert parent[names.index("left_hand")] == names.index("left_wrist")
    assert parent[names.index("right_foot")] == names.index("right_ankle")
    assert parent[names.index("left_hip")] == parent[names.index("right_hip")] == names.index("hip_centre")


def test_the_stgcn_adjacency_of_the_layout():
    a = graph.Graph("nw_ucla", "spatial").A
    assert a.shape == (3, 20, 20)
    np.testing.assert_array_equal(a[0], np.eye(20))
    for part in a[1:]:                                                       # column-normalised
        sums = part.sum(axis=0)
        assert np.allclose(sums[sums > 0], 1.0)
    assert int((a[1] > 0).sum()) == int((a[2] > 0).sum()) == 19              # the 19 real edges each way


def test_the_dataset_entry():
    entry = dataset_table.get("nw_ucla")
    assert (entry.layout, entry.num_class, entry.raw_format) == ("nw_ucla", 10, "nw_ucla")
    assert entry.protocols["cross_view"].folder == "xview" and len(entry.class_names) == 10
    assert entry.class_names[6] == "donning"                                 # action 8 is label 6


# ---------------------------------------------------------------------------------------------- reader
def loop_fixed_length(clip, max_frame=300):
    """The released padding to 300 frames, for any joint count."""
    out = np.zeros((3, max_frame) + clip.shape[2:], dtype=np.float32)
    out[:, :min(clip.shape[1], max_frame)] = clip[:, :max_frame]
    return out


def raw_clip(path):
    """A file's skeletons as a raw clip (3, T, 20, 2) float32, person 0 = the skeleton, person 1 zero: read
    here with json, independently of readers/nw_ucla.py."""
    with open(path) as f:
        xyz = np.array(json.load(f)["skeletons"])
    clip = np.zeros((3, len(xyz), 20, 2), np.float32)
    clip[..., 0] = xyz.transpose(2, 0, 1)
    return clip


def write_clip(folder, action=1, subject=1, episode=0, view=1, frames=None, rng=None, **override):
    """One clip file as the distributed set writes them; `override` replaces fields of the record."""
    rng = rng or np.random.default_rng(action * 100 + subject * 10 + view)
    stem = f"a{action:02d}_s{subject:02d}_e{episode:02d}_v{view:02d}"
    if frames is None:
        t = np.arange(int(rng.integers(20, 60)))[:, None, None]
        pose = rng.normal(size=(1, 20, 3)) * 0.3 + np.array([0.0, 0.0, 3.0])
        frames = (pose + 0.05 * np.sin(0.1 * action * t + rng.normal(size=(1, 20, 3)))).tolist()
    record = {"file_name": stem, "skeletons": frames, "label": ACTIONS.index(action) + 1, **override}
    path = os.path.join(folder, stem + ".json")
    with open(path, "w") as f:
        json.dump(record, f)
    return path


def test_a_clip_becomes_the_released_pipelines_output(tmp_path):
    """Against the released loops: person 0 = the skeleton, person 1 zero, 300 frames, pre-normalised."""
    path = write_clip(str(tmp_path), action=8, view=2)
    raw = raw_clip(path)
    clip, num_frame = nw_ucla.nw_ucla_sample(path)
    reference = loop_pre_normalization(loop_fixed_length(raw)[None])[0]
    assert num_frame == raw.shape[1] and clip.shape == (3, 300, 20, 2) and clip.dtype == np.float32
    np.testing.assert_allclose(clip, reference, rtol=1e-5, atol=1e-5)
    assert not clip[..., 1].any()
    # after pre-normalisation: centred on the spine, left -> right shoulder along +x in frame 0 (the second
    # rotation; it moves hip -> spine off +z when the shoulders are not square to the spine)
    np.testing.assert_allclose(clip[:, 0, 1, 0], 0.0, atol=1e-6)
    shoulders = clip[:, 0, 8, 0] - clip[:, 0, 4, 0]
    np.testing.assert_allclose(shoulders / np.linalg.norm(shoulders), [1, 0, 0], atol=1e-5)


def _rotation(axis, degrees):
    """Rodrigues' formula, written here independently of readers/prenormalize.py."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def test_align_frames_all_takes_the_rotations_from_the_whole_clip_not_a_tipped_first_frame():
    """--align-frames all: a clip standing upright whose frame 0 alone is tipped 80 degrees stays upright
    (the released frame-0 rule tips the whole clip); its mean shoulder vector ends on +x."""
    rng = np.random.default_rng(3)
    body = rng.normal(0, 0.05, (20, 3))
    body[0], body[1], body[4], body[8] = (0, 0, 0), (0, 0, 0.5), (-0.2, 0, 0.6), (0.2, 0, 0.6)
    frames = np.stack([body + rng.normal(0, 0.01, (20, 3)) for _ in range(40)]) + (0.3, -0.1, 2.5)
    tipped = _rotation((1, 0.3, 0), 80)
    frames[0] = (frames[0] - frames[0, 1]) @ tipped.T + frames[0, 1]
    clip = np.zeros((3, 300, 20, 2), np.float32)
    clip[:, :40, :, 0] = frames.transpose(2, 0, 1)

    def upright_degrees(out):            # the mean hip -> spine vector's angle from +z, frames 1..39
        spine = (out[:, 1:40, 1, 0] - out[:, 1:40, 0, 0]).mean(axis=1)
        return np.degrees(np.arccos(spine[2] / np.linalg.norm(spine)))

    first = R.pre_normalize(clip.copy())
    np.testing.assert_array_equal(first, R.pre_normalize(clip.copy(), align_frames="first"))   # the default
    every = R.pre_normalize(clip.copy(), align_frames="all")
    assert upright_degrees(first) > 60 and upright_degrees(every) < 5
    shoulders = (every[:, :40, 8, 0] - every[:, :40, 4, 0]).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(shoulders / np.linalg.norm(shoulders), [1, 0, 0], atol=1e-5)
    # centred as released, rotations only: every frame's joint distances are kept
    np.testing.assert_allclose(every[:, :, 1, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(every[:, :40, 8, 0] - every[:, :40, 4, 0], axis=0),
                               np.linalg.norm(clip[:, :40, 8, 0] - clip[:, :40, 4, 0], axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="align_frames 'middle': expected one of first, all"):
        R.pre_normalize(clip.copy(), align_frames="middle")


def test_prepare_data_align_frames_all_reaches_every_clip(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    paths = [write_clip(str(raw), action=a, view=v) for a in (1, 2) for v in (1, 3)]
    prepare_data.main(["nw_ucla", "--raw-dir", str(raw), "--out", str(tmp_path / "out"), "--workers", "1",
                       "--align-frames", "all"])
    for part in ("train", "val"):
        split = dataset.load_split(str(tmp_path / "out" / "xview"), part, 10, "nw_ucla")
        for name, clip in zip(split.names, split.data):
            raw = loop_fixed_length(raw_clip(next(p for p in paths if name in p)))
            np.testing.assert_array_equal(clip, R.pre_normalize(raw, align_frames="all"))
            assert not np.allclose(clip, R.pre_normalize(raw), atol=1e-3)


BAD_CASES = {
    "file_name": ({"file_name": "a01_s01_e00_v02"},
                  r"file_name is 'a01_s01_e00_v02', expected 'a01_s01_e00_v01'"),
    "label": ({"label": 3}, r"label is 3, expected 1 \(action a01 of the file name\)"),
    "joints": ({"skeletons": [[[0.0, 0.0, 1.0]] * 19]},
               r"frame 1 of skeletons is not 20 joints of 3 numbers"),
    "xyz": ({"skeletons": [[[0.0, 1.0]] * 20]}, r"frame 1 of skeletons is not 20 joints of 3 numbers"),
    "no frame": ({"skeletons": []}, r"skeletons holds no frame"),
    "nan": ({"skeletons": [[[0.1, 0.2, 3.0]] * 20, [[float("nan"), 0.2, 3.0]] * 20]},
            r"frame 2 of skeletons holds a value that is not finite"),
    "string": ({"skeletons": [[[0.1, "x", 3.0]] * 20]},
               r"frame 1 of skeletons holds a value that is not a number"),
    "null label": ({"label": None}, r"label is None, expected 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_clips_are_refused_naming_the_file_and_nothing_is_written(tmp_path, case, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    for action in (1, 2):
        for view in (1, 3):
            write_clip(str(raw), action=action, view=view)
    override, message = BAD_CASES[case]
    bad = write_clip(str(raw), action=1, view=1, **override)
    out = tmp_path / "out"
    rc = _run_prepare(["nw_ucla", "--raw-dir", str(raw), "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip() and "file/s" not in line]
    assert len(lines) == 1 and bad in lines[0], err
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


@pytest.mark.parametrize("name, text, message", [
    ("a07_s01_e00_v01.json", "{}", r"action a07 is not an NW-UCLA action"),
    ("a01_s01_e00_v04.json", "{}", r"view v04 is not an NW-UCLA view"),
    ("clip_01.json", "{}", r"expected a file name like a01_s01_e00_v01.json"),
    ("a01_s01_e00_v01.json", '{"file_name": "a01_s01_e00_v01", "skeletons": [', r":1: not valid JSON"),
    ("a01_s01_e00_v01.json", '[1, 2]', r"expected a JSON object with file_name, skeletons and label"),
])
def test_bad_names_and_bad_json_are_refused(tmp_path, capsys, name, text, message):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_clip(str(raw), action=2, view=1)
    write_clip(str(raw), action=2, view=3)
    (raw / name).write_text(text)
    rc = _run_prepare(["nw_ucla", "--raw-dir", str(raw), "--out", str(tmp_path / "out"), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and name in err and re.search(message, err), err
    assert not (tmp_path / "out").exists() or not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_a_missing_folder_names_it(tmp_path, capsys):
    rc = _run_prepare(["nw_ucla", "--raw-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "out")])
    assert rc == 2 and "absent: no such folder" in capsys.readouterr().err


def _run_prepare(argv):
    from cli import cli_errors
    return cli_errors.run_main(prepare_data.main, argv)


# ---------------------------------------------------------------------------------------------- real files
@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    raw = shared_path("nw_ucla", "all_sqe")
    if not os.path.isdir(raw):
        pytest.skip(f"{raw} not present (the NW-UCLA set is not part of the repository)")
    out = tmp_path_factory.mktemp("nw_ucla")
    report = prepare_data.main(["nw_ucla", "--raw-dir", raw, "--out", str(out), "--workers", "2"])
    return raw, str(out / "xview"), report


def test_the_real_set_prepares_into_the_cross_view_protocol(real_set):
    raw, folder, report = real_set
    assert report["written"] == {"xview/train": 1020, "xview/val": 464,           # the test protocol
                                 "xview_val/train": 516, "xview_val/val": 504}    # the validation protocol
    for part, views in (("train", {"v01", "v02"}), ("val", {"v03"})):
        split = dataset.load_split(folder, part, 10, "nw_ucla")
        assert {name[-3:] for name in split.names} == views
        actions = np.array([int(name[1:3]) for name in split.names])
        np.testing.assert_array_equal(split.labels, [ACTIONS.index(a) for a in actions])
        assert split.data.shape == (len(split), 3, 300, 20, 2)
        assert not np.asarray(split.data[..., 1]).any()                          # one person per clip
    val = dataset.load_split(folder, "val", 10, "nw_ucla")
    single = val.names.index("a02_s09_e04_v03")
    assert int(val.num_frame[single]) == 1                                      # the one-frame clip
    # frames past the clip repeat it (pre-normalisation), so the one-frame clip is constant in time
    clip = np.asarray(val.data[single])
    np.testing.assert_array_equal(clip, np.repeat(clip[:, :1], 300, axis=1))
    # the duplicated test clips of this distribution (view 3 = view 2 for actions 2 and 3) are reported
    pairs = report["duplicates"]["xview"]
    assert len(pairs) == 95 and {p[0][:3] for p in pairs} == {"a02", "a03"}
    assert all(v[:-3] == t[:-3] and (v[-3:], t[-3:]) == ("v03", "v02") for v, t in pairs)


def test_real_clips_against_the_released_loops(real_set):
    raw, folder, _ = real_set
    split = dataset.load_split(folder, "train", 10, "nw_ucla")
    for name in ("a01_s01_e00_v01", "a12_s10_e04_v02", split.names[500]):
        clip = raw_clip(os.path.join(raw, name + ".json"))
        reference = loop_pre_normalization(loop_fixed_length(clip)[None])[0]
        i = split.names.index(name)
        assert int(split.num_frame[i]) == clip.shape[1]
        np.testing.assert_allclose(split.data[i], reference, rtol=1e-5, atol=1e-5)
    with open(os.path.join(folder, "train_label.pkl"), "rb") as f:
        names, labels = pickle.load(f)
    assert names == sorted(names) and len(set(names)) == 1020


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture
def written_set(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for action in ACTIONS[:3]:
        for subject in (1, 2):
            for view in (1, 2, 3):
                write_clip(str(raw), action=action, subject=subject, view=view, rng=rng)
    data = tmp_path / "data"
    report = prepare_data.main(["nw_ucla", "--raw-dir", str(raw), "--out", str(data / "nw_ucla"),
                                "--workers", "1"])
    assert report["written"] == {"xview/train": 12, "xview/val": 6, "xview_val/train": 6, "xview_val/val": 6}
    assert report["duplicates"] == {}
    return str(data)


@pytest.mark.parametrize("encoder, flags, field, value", [
    ("bigru", ["--hidden-size", "8"], "num_joints", 20),
    ("stgcn", ["--stgcn-base-channels", "2", "--hidden-size", "8"], "layout", "nw_ucla")])
def test_prepare_pretrain_one_step_and_knn(written_set, tmp_path, encoder, flags, field, value):
    ckpt = tmp_path / "ck"
    pretrain_cmd.main(["--pre-dataset", "nw_ucla", "--protocol", "cross_view", "--data-dir", written_set,
                       "--checkpoint-path", str(ckpt), "--encoder", encoder, *flags, "--contrast-k", "8",
                       "--topk", "4", "--batch-size", "4", "-j", "0", "--seed", "1", "--device", "cpu",
                       "--max-steps", "1", "--mlp"])
    path = ckpt / "checkpoint_0000.pth.tar"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["encoder"] == encoder and state["encoder_config"][field] == value
    for pretrained in (str(path), "none"):
        result = knn_eval.main(["--finetune-dataset", "nw_ucla", "--protocol", "cross_view", "--data-dir",
                                written_set, "--pretrained", pretrained, "-j", "0", "--device", "cpu",
                                "--view", "all", "--output", str(tmp_path / f"knn_{len(pretrained)}.json"),
                                *(flags if pretrained == "none" else []), "--encoder", encoder])
        assert result["num_train"] == 12 and result["num_test"] == 6
        assert result["encoder_config"][field] == value
        assert 0.0 <= result["metrics"]["top1_k1"] <= 100.0


# ---------------------------------------------------------------------------------------------- nw_ucla.sh
def run_script(env_extra: dict, timeout: int):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **env_extra)
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "nw_ucla.sh")], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_without_the_data_says_where_to_get_it_and_creates_nothing(tmp_path):
    run = tmp_path / "run"
    proc = run_script({"NW_UCLA_DIR": str(tmp_path / "absent"), "NW_UCLA_RUN_DIR": str(run)}, 60)
    assert proc.returncode == 2
    assert "holds no NW-UCLA clips" in proc.stderr and "all_sqe.zip" in proc.stderr
    assert not run.exists()
    proc = run_script({"ENCODER": "resnet", "NW_UCLA_DIR": str(tmp_path)}, 60)
    assert proc.returncode == 2 and "ENCODER=resnet: expected bigru or stgcn" in proc.stderr


def prepared_with(data_folder, raw_folder):
    """Which --align-frames prepared `data_folder` (a benchmark folder): 'first' or 'all', from its first
    training clip compared with both pre-normalisations of the raw file."""
    split = dataset.load_split(str(data_folder), "train", 10, "nw_ucla")
    raw = loop_fixed_length(raw_clip(os.path.join(str(raw_folder), split.names[0] + ".json")))
    found = [align for align in ("first", "all")
             if np.array_equal(split.data[0], R.pre_normalize(raw, align_frames=align))]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_end_to_end_tiny_with_stgcn(written_set, tmp_path):
    """The whole script on the 18 written clips (3 steps of 4): the table, summary.json, and CMD and the
    random ST-GCN with the recipe's initialisation (pytorch) and the sizes asked for."""
    run = tmp_path / "run"
    proc = run_script({"NW_UCLA_DIR": str(tmp_path / "raw"), "NW_UCLA_RUN_DIR": str(run), "ENCODER": "stgcn",
                       "EPOCHS": "1", "HIDDEN": "8", "STGCN_BASE": "2", "QUEUE": "8", "TOPK": "4",
                       "BATCH": "4", "LINEAR_EPOCHS": "1"}, 900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NW-UCLA cross-view (view 3), test split" in proc.stdout
    assert "| joint | linear top-1 |" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"joint", "all"} and set(summary["joint"]) == {"linear", "knn"}
    results = sorted((run / "results").glob("*.json"))
    assert len(results) == 12                   # 1-NN and linear: CMD, random encoder, raw coordinates
    for path in results:
        record = json.loads(path.read_text())
        if path.name.startswith(("knn_", "linear_")):
            assert (record["num_train"], record["num_test"]) == (12, 6), path
        if record["checkpoint"] != "raw":
            assert record["encoder"] == "stgcn", path
            config = record["encoder_config"]
            assert (config["init"], config["base_channels"], config["hidden_size"]) == ("pytorch", 2, 8), path
    (gif,) = (run / "skeleton").glob("val_0_*_joint.gif")
    assert gif.with_suffix(".png").is_file()
    assert prepared_with(run / "data" / "nw_ucla" / "xview", tmp_path / "raw") == "first"    # ST-GCN's recipe


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_on_the_validation_split_never_reads_view_3(written_set, tmp_path):
    """SPLIT=val: every stage on view 1 (training) and view 2 (validation); the recipe's --window and
    --aug-* flags reach the pretraining and every evaluation."""
    run = tmp_path / "run"
    proc = run_script({"NW_UCLA_DIR": str(tmp_path / "raw"), "NW_UCLA_RUN_DIR": str(run), "SPLIT": "val",
                       "EPOCHS": "1", "HIDDEN": "8", "QUEUE": "4", "TOPK": "2", "BATCH": "2",
                       "LINEAR_EPOCHS": "1", "WINDOW": "16", "AUG_ROTATE": "20"}, 900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NW-UCLA validation (view 1 trains, view 2 validates)" in proc.stdout
    config = json.loads((run / "checkpoints" / "config.json").read_text())
    assert config["protocol"] == "cross_view_val" and config["train_clips"] == 6
    assert (config["window"], config["aug_rotate"]) == (16, 20.0)
    for path in sorted((run / "results").glob("*.json")):
        record = json.loads(path.read_text())
        assert record["protocol"] == "cross_view_val" and record["window"] == 16, path
        assert (record["num_train"], record["num_test"]) == (6, 6), path
    assert config["batch_size"] == 2                                 # BATCH given; the BiGRU's default is 32
    assert prepared_with(run / "data" / "nw_ucla" / "xview_val", tmp_path / "raw") == "all"  # BiGRU's recipe
    proc = run_script({"SPLIT": "view3", "NW_UCLA_DIR": str(tmp_path / "raw")}, 60)
    assert proc.returncode == 2 and "SPLIT=view3: expected test or val" in proc.stderr
