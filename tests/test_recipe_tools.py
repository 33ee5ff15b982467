"""The instruments of the recipe search (issue 24): the opt-in augmentations and --window, NW-UCLA's
validation protocol, the raw coordinates' linear probe and the training monitor."""
import json
import os

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

import action_classification
import cmd_model
import dataset
import evaluation
import graph
import knn_eval
import pretrain_cmd
from augmentation import augment
from conftest import shared_path
from engine import training_monitor
from helpers import common_argv, write_benchmark

NW_UCLA = shared_path("nw_ucla", "all_sqe")


# ---------------------------------------------------------------------------------------------- views
def _released_view(clip, num_frame, rng, window=augment.WINDOW):
    """The released view written out step by step (SPEC section 4), for comparison."""
    out = augment.random_crop_resize(clip, num_frame, rng, (0.1, 1.0), window)
    if rng.random() < 0.5:
        out = augment.corrupt_joints(out, rng)
    if rng.random() < 0.5:
        out = augment.shear(out, rng)
    return out


def _clip(seed=0, frames=80, joints=25):
    rng = np.random.default_rng(seed)
    clip = rng.normal(size=(3, frames, joints, 2)).astype(np.float32)
    clip[..., 1] = 0                                      # an absent second person
    return clip


def test_default_options_draw_the_released_views():
    clip = _clip()
    for seed in range(20):
        expected = _released_view(clip, 70, np.random.default_rng(seed))
        got = augment.augment_pretrain(clip, 70, np.random.default_rng(seed),
                                       options=augment.PretrainAugment())
        np.testing.assert_array_equal(got, expected)


def test_rotation_keeps_lengths_and_noise_keeps_zeros():
    clip = _clip(1)
    rng = np.random.default_rng(0)
    rotated = augment.rotate(clip, rng, 60.0)
    # a rotation keeps every joint's distance from the origin and every bone's length
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=0), np.linalg.norm(clip, axis=0), rtol=1e-5,
                               atol=1e-5)
    assert not np.allclose(rotated, clip)
    np.testing.assert_array_equal(augment.rotate(clip, rng, 0.0), clip)
    matrix = augment.rotation_xyz(np.deg2rad([10.0, -20.0, 30.0]))
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    noisy = augment.joint_noise(clip, np.random.default_rng(1), 0.05)
    assert np.all(noisy[..., 1] == 0)                     # the absent person stays absent
    moved = noisy[..., 0] - clip[..., 0]
    assert 0.04 < moved.std() < 0.06 and abs(moved.mean()) < 0.01


def test_options_change_the_views_only_when_set():
    clip = _clip(2)
    options = augment.PretrainAugment(corrupt_prob=0.0, shear_prob=0.0, rotate=30.0)
    for seed in range(5):
        view = augment.augment_pretrain(clip, 80, np.random.default_rng(seed), window=32, options=options)
        assert view.shape == (3, 32, 25, 2)
        # no corruption, no shear: a crop of the clip turned by one rotation, lengths kept
        crop = augment.random_crop_resize(clip, 80, np.random.default_rng(seed), (0.1, 1.0), 32)
        np.testing.assert_allclose(np.linalg.norm(view, axis=0), np.linalg.norm(crop, axis=0), rtol=1e-4,
                                   atol=1e-4)


def test_batch_augment_refuses_views_it_cannot_draw(tmp_path, capsys):
    data = write_benchmark(tmp_path / "data")
    argv = ["--pre-dataset", "custom", "--data-dir", data, "--device", "cpu", "--hidden-size", "8",
            "--contrast-k", "16", "--topk", "4", "--batch-size", "8", "--epochs", "1", "--batch-augment",
            "--aug-rotate", "20", "--checkpoint-path", str(tmp_path / "ck")]
    assert pretrain_cmd.main(argv) == 2
    assert "--batch-augment draws the released views only" in capsys.readouterr().err
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------------------------------------- --window
def _pretrain(tmp_path, data, *extra):
    ckpt = tmp_path / "ck"
    assert 0 == pretrain_cmd.main(["--pre-dataset", "custom", "--data-dir", data, "--device", "cpu", "-j", "0",
                       "--hidden-size", "8", "--contrast-k", "16", "--topk", "4", "--batch-size", "8",
                       "--epochs", "1", "--seed", "0", "--checkpoint-path", str(ckpt), *extra])
    return str(ckpt / "checkpoint_0000.pth.tar")


def test_window_is_recorded_and_used_by_the_evaluations(tmp_path):
    data = write_benchmark(tmp_path / "data")
    ckpt = _pretrain(tmp_path, data, "--window", "16", "--aug-rotate", "15", "--monitor-every", "0")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["args"]["window"] == 16 and saved["args"]["aug_rotate"] == 15.0
    record = knn_eval.main(common_argv(data, ckpt, "--output", str(tmp_path / "knn.json"),
                                       "--save-features", str(tmp_path / "f")))
    assert record["checkpoint"] == ckpt
    # the features are those of 16-frame clips: recompute them with the encoder by hand
    model, _ = evaluation.build_classifier(knn_eval.build_parser().parse_args(common_argv(data, ckpt)), 3,
                                           evaluation.load_pretrained_source(ckpt), torch.device("cpu"))
    split = dataset.load_split(data, "val")
    clips = torch.from_numpy(np.stack([augment.center_crop_resize(np.asarray(split.data[i]),
                                                                  int(split.num_frame[i]), 0.95, 16)
                                       for i in range(len(split))]))
    with torch.no_grad():
        expected = model.eval().features(clips).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "f" / "test_features.npy"), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="pretrained with --window 16, but --window 32"):
        knn_eval.main(common_argv(data, ckpt, "--window", "32", "--output", str(tmp_path / "k2.json")))
    assert not (tmp_path / "k2.json").exists()


# ---------------------------------------------------------------------------------------------- NW-UCLA
@pytest.mark.skipif(not os.path.isdir(NW_UCLA), reason="needs ../shared/data/nw_ucla (not on a user's machine)")
def test_nw_ucla_validation_protocol_never_holds_view_3(tmp_path):
    import prepare_data
    prepare_data.main(["nw_ucla", "--raw-dir", NW_UCLA, "--out", str(tmp_path / "nw_ucla"), "--workers", "1"])
    train = dataset.load_split(str(tmp_path / "nw_ucla" / "xview_val"), "train", 10, "nw_ucla")
    val = dataset.load_split(str(tmp_path / "nw_ucla" / "xview_val"), "val", 10, "nw_ucla")
    files = sorted(os.listdir(NW_UCLA))
    assert sorted(train.names) == sorted(f[:-5] for f in files if f.endswith("_v01.json"))
    assert sorted(val.names) == sorted(f[:-5] for f in files if f.endswith("_v02.json"))
    assert (len(train), len(val)) == (516, 504)
    # the test protocol is unchanged: views 1 and 2 train, view 3 tests
    test_train = dataset.load_split(str(tmp_path / "nw_ucla" / "xview"), "train", 10, "nw_ucla")
    assert sorted(test_train.names) == sorted(train.names + val.names)


# ---------------------------------------------------------------------------------------------- raw probe
@pytest.mark.parametrize("view", ["joint", "all"])
def test_raw_linear_probe_standardises_then_classifies(tmp_path, view):
    data = write_benchmark(tmp_path / "data", seed=4)
    out = tmp_path / "raw.json"
    record = action_classification.main(common_argv(data, "raw", "--view", view, "--epochs", "3",
                                                    "--window", "16", "--output", str(out)))
    assert record["checkpoint"] == "raw" and record["encoder"] == "raw"
    assert json.loads(out.read_text())["metrics"]["last"]["top1"] == record["metrics"]["last"]["top1"]
    # the standardisation equals the training features' mean and (biased) variance, computed by hand
    args = action_classification.build_parser().parse_args(common_argv(data, "raw", "--view", view,
                                                                      "--window", "16"))
    train = dataset.load_split(data, "train")
    model, config = evaluation.raw_probe(args, 3, torch.device("cpu"), train)
    assert config["window"] == 16
    clips = torch.from_numpy(np.stack([augment.center_crop_resize(np.asarray(train.data[i]),
                                                                  int(train.num_frame[i]), 0.95, 16)
                                       for i in range(len(train))]))
    for mod in (cmd_model.MODALITIES if view == "all" else (view,)):
        flat = cmd_model.to_modality(clips, mod, graph.get_layout("ntu")).flatten(1).double()
        torch.testing.assert_close(model.norm[mod].running_mean.double(), flat.mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.norm[mod].running_var.double(), flat.var(0, unbiased=True),
                                   rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="no encoder to fine-tune"):
        action_classification.main(common_argv(data, "raw", "--finetune", "--output", str(tmp_path / "x.json")))


# ---------------------------------------------------------------------------------------------- monitor
def test_feature_spread_of_known_features():
    same = torch.nn.functional.normalize(torch.ones(8, 4), dim=1)
    spread = training_monitor.feature_spread(same, "joint")
    assert spread["monitor_cos_joint"] == pytest.approx(1.0) and spread["monitor_std_joint"] == pytest.approx(0)
    eye = torch.eye(4)
    spread = training_monitor.feature_spread(eye, "bone")
    assert spread["monitor_cos_bone"] == pytest.approx(0.0)
    assert spread["monitor_std_bone"] == pytest.approx(float(eye.std(dim=0).mean()) * 2)
    assert training_monitor.collapse_warning({"monitor_cos_joint": 0.999, "monitor_cos_bone": 0.2}, 3) \
        .startswith("warning: epoch 3: the query features have collapsed (mean pairwise cosine of a fixed "
                    "batch joint 0.999")
    # a healthy run's values (NW-UCLA BiGRU: 0.82-0.94 in eval mode) do not warn
    assert training_monitor.collapse_warning({"monitor_cos_joint": 0.94, "monitor_cos_motion": 0.5}, 3) is None


def test_monitor_changes_nothing_and_its_1nn_matches_scikit_learn(tmp_path):
    data = write_benchmark(tmp_path / "data", n_train=40, n_val=20)
    train, val = dataset.load_split(data, "train"), dataset.load_split(data, "val")
    torch.manual_seed(0)
    model = cmd_model.CMD(encoder_config={"hidden_size": 8}, K=16, topk=4)
    model.train()
    with torch.no_grad():        # BatchNorm statistics other than the initial ones
        model.encoder_q.input_norm.running_mean.normal_()
    monitor = training_monitor.TrainingMonitor(train, val, 32, torch.device("cpu"), held=16, knn_clips=15)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    result = monitor.measure(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())
    assert set(result) >= {f"monitor_{s}_{m}" for s in ("cos", "std") for m in cmd_model.MODALITIES}
    # the 1-NN by scikit-learn on the same clips and features
    ref_idx = training_monitor.spread_indices(len(train), 15)
    val_idx = training_monitor.spread_indices(len(val), 15)
    model.eval()
    with torch.no_grad():
        ref = model.encoder_q.features(training_monitor.centre_clips(train, ref_idx, 32)).numpy()
        queries = model.encoder_q.features(training_monitor.centre_clips(val, val_idx, 32)).numpy()
    clf = KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute")
    clf.fit(ref, train.labels[ref_idx])
    expected = 100.0 * np.mean(clf.predict(queries) == val.labels[val_idx])
    assert result["monitor_knn"] == pytest.approx(expected)


def test_monitor_in_the_log_and_the_same_training_without_it(tmp_path):
    data = write_benchmark(tmp_path / "data", n_train=32, n_val=16)
    with_monitor = _pretrain(tmp_path / "a", data, "--monitor-every", "1", "--epochs", "2")
    without = _pretrain(tmp_path / "b", data, "--monitor-every", "0", "--epochs", "2")
    records = [json.loads(line) for line in open(tmp_path / "a" / "ck" / "log.jsonl")]
    assert all(0 <= r["monitor_knn"] <= 100 and -1 <= r["monitor_cos_joint"] <= 1 for r in records)
    assert not any("monitor_knn" in json.loads(line) for line in open(tmp_path / "b" / "ck" / "log.jsonl"))
    a = torch.load(with_monitor.replace("0000", "0001"), map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(without.replace("0000", "0001"), map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_curves_show_the_monitor_when_logged(tmp_path):
    import sys
    from PIL import Image
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    import plot_training_curves
    base = {"loss": 20.0, "loss_joint": 5.0, "loss_motion": 4.0, "loss_bone": 5.0, "loss_sim": 6.0,
            "top1_joint": 10.0, "top1_motion": 20.0, "top1_bone": 15.0}
    plain = [dict(base, epoch=e) for e in range(3)]
    looks = [dict(r, monitor_cos_joint=0.5, monitor_cos_motion=0.4, monitor_cos_bone=0.6, monitor_knn=40.0)
             for r in plain]
    plot_training_curves.plot(plain, str(tmp_path / "plain.png"))
    plot_training_curves.plot(looks, str(tmp_path / "monitor.png"))
    with Image.open(tmp_path / "plain.png") as a, Image.open(tmp_path / "monitor.png") as b:
        assert a.size == (1210, 440) and b.size == (1760, 440)       # two panels, three panels


def test_a_collapse_is_said_once_and_not_at_the_first_look(tmp_path, monkeypatch, capsys):
    data = write_benchmark(tmp_path / "data", n_train=32, n_val=16)
    collapsed = {f"monitor_{s}_{m}": v for m in cmd_model.MODALITIES for s, v in (("cos", 0.999), ("std", 0.01))}
    monkeypatch.setattr(training_monitor.TrainingMonitor, "measure",
                        lambda self, model: dict(collapsed, monitor_s=0.0))
    _pretrain(tmp_path, data, "--monitor-every", "1", "--epochs", "4")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("warning:")]
    assert lines == [training_monitor.collapse_warning(collapsed, 1)]     # epoch 0 is the first look
    records = [json.loads(line) for line in open(tmp_path / "ck" / "log.jsonl")]
    assert [r["monitor_cos_joint"] for r in records] == [0.999] * 4
