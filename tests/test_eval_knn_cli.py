"""knn_eval.py end to end on a tiny benchmark, and the visual outputs shared with action_classification.py."""
import json
import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

import cmd_model
import dataset
import knn_eval
from augmentation import augment
from reporting import reports
from helpers import (HIDDEN, NUM_CLASS, common_argv, one_torch_thread,  # noqa: F401  (autouse fixture)
                     released_state_dict, write_benchmark, write_released_checkpoint)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("knn")
    return {"root": root, "data": write_benchmark(root / "data", seed=1),
            "ckpt": write_released_checkpoint(root / "checkpoint_0450.pth.tar", module_prefix=False)}


def _reference_features(data_dir, part, view_encoder="encoder_q"):
    """Features written out by hand: the released query weights, centre crop, model.features."""
    sd = released_state_dict()
    encoder = cmd_model.BiGRUEncoder(NUM_CLASS, hidden_size=HIDDEN)
    own = {k[len(view_encoder) + 1:]: v for k, v in sd.items()
           if k.startswith(view_encoder + ".") and ".fc." not in k}
    encoder.load_state_dict(own, strict=False)
    encoder.eval()
    split = dataset.load_split(data_dir, part)
    clips = np.stack([augment.center_crop_resize(np.asarray(split.data[i]), int(split.num_frame[i]))
                      for i in range(len(split))])
    with torch.no_grad():
        return encoder.features(torch.from_numpy(clips)).numpy(), split.labels


def _nearest_first_vote(neighbour_labels):
    counts = Counter(neighbour_labels)
    top = max(counts.values())
    return next(label for label in neighbour_labels if counts[label] == top)


def test_knn_run_end_to_end(tiny, tmp_path):
    out, feats_dir = tmp_path / "knn.json", tmp_path / "features"
    record = knn_eval.main(common_argv(tiny["data"], tiny["ckpt"], "--knn-neighbours", "1", "4",
                                      "--seed", "5",
                                      "--output", str(out), "--save-features", str(feats_dir),
                                      "--chunk-size", "5", "--train-chunk-size", "7"))
    saved = json.loads(out.read_text())
    for field in ("benchmark", "protocol", "view", "checkpoint", "checkpoint_sha256", "metrics", "epochs",
                  "seed", "time"):
        assert field in saved, field
    assert (saved["benchmark"], saved["view"], saved["evaluation"]) == ("custom", "joint", "knn")
    assert saved["seed"] == 5
    assert saved["checkpoint"] == tiny["ckpt"] and len(saved["checkpoint_sha256"]) == 64
    assert saved == json.loads(json.dumps(record, default=str))

    train_x, train_y = np.load(feats_dir / "train_features.npy"), np.load(feats_dir / "train_labels.npy")
    test_x, test_y = np.load(feats_dir / "test_features.npy"), np.load(feats_dir / "test_labels.npy")
    assert train_x.shape == (24, 2 * HIDDEN) and test_x.shape == (12, 2 * HIDDEN)
    # both sets use the 0.95 centre crop and the released query encoder's pre-head features
    ref_train, ref_train_y = _reference_features(tiny["data"], "train")
    ref_test, ref_test_y = _reference_features(tiny["data"], "val")
    # GRU features in (-1, 1), batched differently from the reference: a few ulps; 1e-5 is ~80 ulps of 1
    np.testing.assert_allclose(train_x, ref_train, atol=1e-5)
    np.testing.assert_allclose(test_x, ref_test, atol=1e-5)
    np.testing.assert_array_equal(train_y, ref_train_y)
    np.testing.assert_array_equal(test_y, ref_test_y)

    # accuracies recomputed with scikit-learn's cosine neighbours and a naive vote
    for k in (1, 4):
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        clf.fit(ref_train, ref_train_y)
        _, idx = clf.kneighbors(ref_test)
        preds = np.array([_nearest_first_vote(ref_train_y[row].tolist()) for row in idx])
        assert saved["metrics"][f"top1_k{k}"] == pytest.approx(100.0 * np.mean(preds == ref_test_y))


def test_knn_random_init_fused_view(tiny, tmp_path):
    feats_dir = tmp_path / "f"
    record = knn_eval.main(common_argv(tiny["data"], "none", "--hidden-size", "8", "--view", "all",
                                      "--save-features", str(feats_dir)))
    assert record["checkpoint"] == "none" and record["checkpoint_sha256"] is None
    assert np.load(feats_dir / "test_features.npy").shape == (12, 3 * 2 * 8)     # three streams concatenated
    assert 0.0 <= record["metrics"]["top1_k1"] <= 100.0
    # no --output: the results go to ./results for a random encoder (the test runs in a scratch folder)
    assert json.loads(open("results/knn_custom_cross_subject_all_random.json").read()) == json.loads(
        json.dumps(record, default=str))


def test_default_output_is_beside_the_checkpoint_and_never_overwrites(tmp_path):
    record = {"checkpoint": str(tmp_path / "run" / "checkpoint_0450.pth.tar"), "evaluation": "linear",
              "benchmark": "ntu60", "protocol": "cross_view", "view": "joint"}
    first = reports.default_output_path(record)
    assert first == str(tmp_path / "run" / "results" / "linear_ntu60_cross_view_joint_checkpoint_0450.json")
    os.makedirs(os.path.dirname(first))
    open(first, "w").close()
    assert reports.default_output_path(record) == first[:-len(".json")] + "-2.json"


def test_knn_missing_checkpoint_is_an_error(tiny):
    with pytest.raises(FileNotFoundError, match="--pretrained none"):
        knn_eval.main(common_argv(tiny["data"], os.path.join(str(tiny["root"]), "absent.pth.tar")))


def test_tensorboard_projector_and_tsne(tiny, tmp_path):
    tb_dir, png, feats_dir = tmp_path / "tb", tmp_path / "plots" / "tsne.png", tmp_path / "f"
    knn_eval.main(common_argv(tiny["data"], tiny["ckpt"], "--tb-embedding", str(tb_dir), "--tsne", str(png),
                              "--save-features", str(feats_dir)))
    test_x, test_y = np.load(feats_dir / "test_features.npy"), np.load(feats_dir / "test_labels.npy")
    folder = tb_dir / "00000" / "test_features"
    np.testing.assert_allclose(np.loadtxt(folder / "tensors.tsv", ndmin=2), test_x, rtol=1e-6, atol=1e-7)
    assert [int(v) for v in (folder / "metadata.tsv").read_text().split()] == test_y.tolist()
    assert "tensor_path" in (tb_dir / "projector_config.pbtxt").read_text()
    import matplotlib.image
    image = matplotlib.image.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not os.path.exists(str(png) + ".tmp")


def test_tsne_without_matplotlib_says_so(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # import matplotlib now raises ImportError
    with pytest.raises(SystemExit, match="pip install matplotlib"):
        knn_eval.main(common_argv(tiny["data"], tiny["ckpt"], "--tsne", "x.png"))
