"""Bring your own skeletons (docs/data.md, "Your own skeletons"): --layout NAME|FILE.json for custom
folders in every command that reads prepared data, layout files checked when read and recorded in
checkpoints, and `prepare_data.py arrays` for numpy arrays of any layout."""
import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

import cmd_model
import dataset
import graph
import knn_eval
import prepare_data
import pretrain_cmd
from cli import cli_errors
from readers.prenormalize import pre_normalize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCAP15 = os.path.join(REPO, "docs", "layouts", "mocap15.json")
# the 1-based (child, parent) pairs of SPEC.md section 1, written out again here
SPEC_NTU_PAIRS = ((1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                  (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                  (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12))
NW_UCLA_PARENTS = {"hip_centre": "spine", "spine": "shoulder_centre", "shoulder_centre": None,
                   "head": "shoulder_centre", "left_shoulder": "shoulder_centre",
                   "left_elbow": "left_shoulder",
                   "left_wrist": "left_elbow", "left_hand": "left_wrist", "right_shoulder": "shoulder_centre",
                   "right_elbow": "right_shoulder", "right_wrist": "right_elbow", "right_hand": "right_wrist",
                   "left_hip": "hip_centre", "left_knee": "left_hip", "left_ankle": "left_knee",
                   "left_foot": "left_ankle", "right_hip": "hip_centre", "right_knee": "right_hip",
                   "right_ankle": "right_knee", "right_foot": "right_ankle"}


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def write_folder(folder, joints: int, seed: int = 0, clips=(12, 6), classes: int = 3) -> str:
    """A prepared folder (the on-disk format) of random smooth clips with `joints` joints."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for part, n in zip(dataset.PARTS, clips):
        t = np.arange(dataset.CLIP_FRAMES)[None, None, :, None, None]
        speed = rng.uniform(1, 3, (n, 1, 1, 1, 1))
        data = rng.normal(size=(n, 3, 1, joints, 2)) + 0.2 * np.sin(0.05 * t * speed)
        data[..., 1] = 0
        np.save(os.path.join(folder, f"{part}_data_joint.npy"), data.astype(np.float32))
        with open(os.path.join(folder, f"{part}_label.pkl"), "wb") as f:
            pickle.dump(([f"{part}{i}" for i in range(n)], [i % classes for i in range(n)]), f)
        np.save(os.path.join(folder, f"{part}_num_frame.npy"), rng.integers(70, 300, n).astype(np.int64))
    return str(folder)


PRETRAIN = ["--hidden-size", "16", "--contrast-k", "12", "--topk", "4", "--batch-size", "4", "-j", "0",
            "--seed", "3", "--device", "cpu", "--max-steps", "2", "--monitor-every", "0"]


def pretrain(data_args, out, *extra) -> str:
    rc = pretrain_cmd.main([*data_args, "--checkpoint-path", str(out), *PRETRAIN, *extra])
    assert rc in (0, None)
    return str(out / "checkpoint_0000.pth.tar")


def knn_features(data_args, ckpt, out, *extra) -> dict:
    knn_eval.main([*data_args, "--pretrained", ckpt, "--view", "all", "-j", "0", "--device", "cpu",
                   "--batch-size", "4", "--save-features", str(out), "--output", str(out / "r.json"), *extra])
    return {n: np.load(out / f"{n}.npy") for n in ("train_features", "test_features")} | {
        "record": json.loads((out / "r.json").read_text())}


# ------------------------------------------------------------------------------------ a built-in by name
def test_custom_with_layout_nw_ucla_is_the_nw_ucla_entry(tmp_path, one_thread):
    """A 20-joint folder read as `custom --layout nw_ucla` trains the same model and gives the same
    features as through the `nw_ucla` entry; evaluation needs no --layout (the checkpoint records it)."""
    root = tmp_path / "data"
    folder = write_folder(root / "nw_ucla" / "xview", 20)
    entry = ["--pre-dataset", "nw_ucla", "--protocol", "cross_view", "--data-dir", str(root)]
    custom = ["--pre-dataset", "custom", "--data-dir", folder, "--layout", "nw_ucla"]
    flags = ["--encoder", "stgcn", "--stgcn-base-channels", "2"]
    a = torch.load(pretrain(entry, tmp_path / "a", *flags), weights_only=True)
    b = torch.load(pretrain(custom, tmp_path / "b", *flags), weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    assert a["layout"] == b["layout"] == graph.LAYOUTS["nw_ucla"].record()
    assert a["encoder_config"]["layout"] == "nw_ucla"          # a built-in is recorded by its name
    ckpt = str(tmp_path / "b" / "checkpoint_0000.pth.tar")
    via_entry = knn_features(["--finetune-dataset", "nw_ucla", "--protocol", "cross_view", "--data-dir",
                              str(root)], ckpt, tmp_path / "f1")
    via_custom = knn_features(["--finetune-dataset", "custom", "--data-dir", folder, "--layout", "nw_ucla"],
                              ckpt, tmp_path / "f2")
    via_record = knn_features(["--finetune-dataset", "custom", "--data-dir", folder], ckpt, tmp_path / "f3")
    for name in ("train_features", "test_features"):
        np.testing.assert_array_equal(via_entry[name], via_custom[name])
        np.testing.assert_array_equal(via_entry[name], via_record[name])
    assert via_record["record"]["layout"]["name"] == "nw_ucla"


# ------------------------------------------------------------------------------------ layout files
def write_json(path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("name", ["ntu", "nw_ucla"])
def test_a_layout_file_reproduces_a_built_in_layout(tmp_path, name):
    if name == "ntu":
        joints = list(graph.NTU_JOINT_NAMES)
        desc = {"name": "ntu", "joints": joints,
                "bones": [[joints[c - 1], joints[p - 1]] for c, p in SPEC_NTU_PAIRS],
                "center": "spine_shoulder", "zaxis": ["spine_base", "spine_mid"],
                "xaxis": ["right_shoulder", "left_shoulder"]}
    else:
        desc = {"name": "nw_ucla", "joints": list(NW_UCLA_PARENTS), "parents": list(NW_UCLA_PARENTS.values()),
                "center": 2, "zaxis": [0, 1], "xaxis": [8, 4]}
    built_in = graph.LAYOUTS[name]
    layout = graph.read_layout_file(write_json(tmp_path / "l.json", desc))
    assert layout == built_in
    assert graph.get_layout(layout.record()) == built_in
    np.testing.assert_array_equal(graph.Graph(layout).A, graph.Graph(name).A)
    x = torch.randn(2, 3, 5, layout.num_joints, 2)
    expected = torch.zeros_like(x)                   # bones by a loop over the layout file's own pairs
    for child, parent in layout.bone_pairs:
        expected[:, :, :, child] = x[:, :, :, child] - x[:, :, :, parent]
    for modality in cmd_model.MODALITIES:
        torch.testing.assert_close(cmd_model.to_modality(x, modality, layout),
                                   cmd_model.to_modality(x, modality, built_in), rtol=0, atol=0)
    torch.testing.assert_close(cmd_model.to_modality(x, "bone", layout), expected, rtol=0, atol=0)
    for encoder in cmd_model.ENCODERS:
        assert cmd_model.model_spec(encoder, layout) == cmd_model.model_spec(encoder, name)


def good_layout() -> dict:
    with open(MOCAP15) as f:
        return json.load(f)


def changed(**fields) -> dict:
    desc = good_layout()
    for key, value in fields.items():
        if value is None:
            desc.pop(key)
        else:
            desc[key] = value
    return desc


J = good_layout()["joints"]
BAD_LAYOUTS = {
    "not json": ("{ 'name': ", r":1: not valid JSON"),
    "not an object": ([1, 2], r"expected a JSON object, got list"),
    "missing key": (changed(center=None), r"missing key\(s\) \['center'\]"),
    "unknown key": (changed(centre="thorax"), r"unknown key\(s\) \['centre'\]"),
    "both bone forms": (changed(bones=[["thorax", "pelvis"]]), r"exactly one of 'bones'"),
    "index out of range": (changed(parents=[None] + [0] * 13 + [15]),
                           r"parents\[14\]: joint index 15 outside 0..14"),
    "unknown joint": (changed(center="neck"), r"'center': joint 'neck' is not one of the layout's joints"),
    "two trees": (changed(parents=[None, "pelvis", None] + good_layout()["parents"][3:]),
                  r"the bones form 2 trees, expected one \(joints without a parent: 'pelvis', 'head'\)"),
    "a cycle": (changed(parents=["thorax", "pelvis", None] + ["head"] * 12), r"the bones form a cycle: "),
    "two parents": (changed(parents=None, bones=[[j, "pelvis"] for j in J[1:]] + [["head", "thorax"]]),
                    r"joint 'head' has two parents, 'pelvis' and 'thorax'"),
    "parents count": (changed(parents=[None, "pelvis"]),
                      r"'parents' holds 2 entries, expected one per joint \(15\)"),
    "joint twice": (changed(joints=J[:-1] + ["pelvis"]),
                    r"joint name\(s\) \['pelvis'\] appear more than once"),
    "bad axis": (changed(xaxis=["right_shoulder"]), r"'xaxis': expected two joints"),
    "built-in name": (changed(name="ntu"), r"name 'ntu' is a built-in layout's, which differs"),
}


@pytest.mark.parametrize("case", list(BAD_LAYOUTS))
def test_each_malformed_layout_file_is_one_line_naming_the_file(tmp_path, capsys, case):
    content, expected = BAD_LAYOUTS[case]
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    rc = pretrain_cmd.main(["--pre-dataset", "custom", "--data-dir", str(tmp_path), "--layout", str(path),
                            "--checkpoint-path", str(tmp_path / "ck"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"layout file {path}" in err and re.search(expected, err), err
    assert not (tmp_path / "ck").exists()


def test_an_unknown_layout_name_and_a_contradicting_layout_are_refused(tmp_path, capsys):
    for layout, expected in (
            ("kinect", "--layout kinect: not a built-in layout (ntu, nw_ucla) nor a layout file"),
            ("ntu", "--layout ntu (layout 'ntu') contradicts dataset nw_ucla's own layout 'nw_ucla'")):
        rc = pretrain_cmd.main(["--pre-dataset", "nw_ucla", "--protocol", "cross_view", "--layout", layout,
                                "--data-dir", str(tmp_path), "--checkpoint-path", str(tmp_path / "ck")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and expected in err and len(err.splitlines()) == 1, err


# ------------------------------------------------------------------------------------ joint counts
@pytest.mark.parametrize("layout, count", [(None, 25), ("nw_ucla", 20), (MOCAP15, 15)])
def test_a_folder_of_another_joint_count_is_refused_at_load(tmp_path, capsys, layout, count):
    folder = write_folder(tmp_path / "d", 17)
    rc = pretrain_cmd.main(["--pre-dataset", "custom", "--data-dir", folder, "--checkpoint-path",
                            str(tmp_path / "ck"), *PRETRAIN, *(["--layout", layout] if layout else [])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    name = graph.read_layout_file(layout).name if layout == MOCAP15 else (layout or "ntu")
    assert f"{folder}: the clips have 17 joints, but layout {name!r} has {count}" in err
    rc = cli_errors.run_main(knn_eval.main, ["--finetune-dataset", "custom", "--data-dir", folder,
                                             "--pretrained", "none", "--device", "cpu",
                                             *(["--layout", layout] if layout else [])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"the clips have 17 joints, but layout {name!r} has {count}" in err


# ------------------------------------------------------------------------------------ prepare_data arrays
def write_arrays(root, layout_joints: int = 15, seed: int = 0):
    """Six clips of one person (T, V, 3), a folder of files and the same as one padded array."""
    rng = np.random.default_rng(seed)
    clips = [rng.normal(size=(int(rng.integers(20, 40)), layout_joints, 3)) for _ in range(6)]
    (root / "clips").mkdir(parents=True)
    rows = ["name,label,part"]
    for i, c in enumerate(clips):
        np.save(root / "clips" / f"c{i}.npy", c)
        rows.append(f"c{i},{i % 2},{'train' if i < 4 else 'val'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    padded = np.zeros((6, 40, layout_joints, 3))
    for i, c in enumerate(clips):
        padded[i, :len(c)] = c
    np.save(root / "all.npy", padded)
    return clips


def test_arrays_are_prepared_pre_normalised_with_the_layouts_joints(tmp_path):
    clips = write_arrays(tmp_path)
    common = ["--labels", str(tmp_path / "labels.csv"), "--layout", MOCAP15, "--workers", "1"]
    prepare_data.main(["arrays", "--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "a"), *common])
    prepare_data.main(["arrays", "--clips", str(tmp_path / "all.npy"), "--out", str(tmp_path / "b"), *common])
    layout = graph.read_layout_file(MOCAP15)
    split = dataset.load_split(str(tmp_path / "a"), "train", layout=layout)
    other = dataset.load_split(str(tmp_path / "b"), "train", layout=layout)
    np.testing.assert_array_equal(split.data, other.data)
    assert split.names == ["c0", "c1", "c2", "c3"] and split.labels.tolist() == [0, 1, 0, 1]
    assert split.num_frame.tolist() == [len(c) for c in clips[:4]]
    for i, c in enumerate(clips[:4]):          # the released pre-normalisation with mocap15's joints
        raw = np.zeros((3, dataset.CLIP_FRAMES, 15, 2), dtype=np.float32)
        raw[:, :len(c), :, 0] = c.transpose(2, 0, 1)
        np.testing.assert_array_equal(split.data[i], pre_normalize(raw, (0, 1), (6, 3)))
        first = split.data[i][:, 0, :, 0]           # centred on the thorax; left -> right shoulder along +x
        np.testing.assert_allclose(first[:, 1], 0, atol=1e-6)
        shoulders = first[:, 6] - first[:, 3]
        assert shoulders[0] > 0
        np.testing.assert_allclose(shoulders[1:], 0, atol=1e-5)
    assert dataset.load_split(str(tmp_path / "a"), "val", layout=layout).names == ["c4", "c5"]


@pytest.mark.parametrize("fault, expected", [
    ("joints", "c0.npy: 14 joints per frame, but layout 'mocap15' has 15"),
    ("label", "labels.csv:3: label 'x' is not a 0-based class index"),
    ("part", "labels.csv:2: part 'test', expected train or val"),
    ("missing", "labels.csv: clip 'c9' has no file"),
    ("count", "all.npy holds 6 clips but"),
])
def test_bad_arrays_are_one_line(tmp_path, capsys, fault, expected):
    write_arrays(tmp_path)
    labels = (tmp_path / "labels.csv").read_text().splitlines()
    source = str(tmp_path / "clips")
    if fault == "joints":
        np.save(tmp_path / "clips" / "c0.npy", np.ones((5, 14, 3)))
    elif fault == "label":
        labels[2] = "c1,x,train"
    elif fault == "part":
        labels[1] = "c0,0,test"
    elif fault == "missing":
        labels.append("c9,0,train")
    else:
        labels.append("c9,0,train")
        source = str(tmp_path / "all.npy")
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    rc = cli_errors.run_main(prepare_data.main, ["arrays", "--clips", source,
                                                 "--labels", str(tmp_path / "labels.csv"),
                                                 "--layout", MOCAP15, "--out", str(tmp_path / "out"),
                                                 "--workers", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and expected in err[-1], err
    assert not os.path.exists(tmp_path / "out" / "train_data_joint.npy")


# ------------------------------------------------------------------------------------ the record
def test_a_checkpoint_trained_with_a_layout_file_is_evaluated_without_it(tmp_path, capsys, one_thread):
    write_arrays(tmp_path, seed=1)
    layout_file = tmp_path / "mine.json"
    shutil.copy(MOCAP15, layout_file)
    prepare_data.main(["arrays", "--clips", str(tmp_path / "clips"), "--labels", str(tmp_path / "labels.csv"),
                       "--layout", str(layout_file), "--out", str(tmp_path / "data"), "--workers", "1"])
    data = ["--pre-dataset", "custom", "--data-dir", str(tmp_path / "data")]
    ckpt = pretrain([*data, "--layout", str(layout_file)], tmp_path / "ck", "--encoder", "stgcn",
                    "--stgcn-base-channels", "2")
    layout_file.unlink()                                          # evaluation needs the record only
    record = graph.read_layout_file(MOCAP15).record()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["layout"] == record and saved["encoder_config"]["layout"] == record
    with open(tmp_path / "ck" / "config.json") as f:
        assert json.load(f)["layout"] == record
    evaluated = ["--finetune-dataset", "custom", "--data-dir", str(tmp_path / "data")]
    result = knn_features(evaluated, ckpt, tmp_path / "f")
    assert result["record"]["layout"] == record and result["record"]["encoder_config"]["layout"] == record
    assert result["train_features"].shape == (4, 3 * 16)
    capsys.readouterr()
    rc = cli_errors.run_main(knn_eval.main, [*evaluated, "--pretrained", ckpt, "--layout", "nw_ucla",
                                             "--device", "cpu", "-j", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert ("was pretrained on layout 'mocap15' (15 joints), but --layout nw_ucla is layout 'nw_ucla' "
            "(20 joints)") in err
