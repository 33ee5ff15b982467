"""Both evaluation CLIs on real recorded skeletons: the PKU-MMD (phase 1) sample videos of ../shared/data,
converted by prepare_data.py and found through the benchmark registry (pku_v1 cross_subject)."""
import json
import os

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

import action_classification
import knn_eval
import prepare_data
from helpers import one_torch_thread  # noqa: F401  (autouse fixture)


def _labels_of(label_file):
    with open(label_file) as f:
        return [int(line.split(",")[0]) - 1 for line in f if line.strip()]


@pytest.fixture
def pku_v1(shared_data, tmp_path):
    root = os.path.join(shared_data, "pku_mmd_v1_samples")
    prepare_data.main(["pku1", "--root", root, "--out", str(tmp_path / "pku_v1"), "--benchmarks", "xsub",
                       "--workers", "1"])
    return {"data_dir": str(tmp_path), "train": _labels_of(os.path.join(root, "label", "0005-L.txt")),
            "val": _labels_of(os.path.join(root, "label", "0299-L.txt"))}


def test_knn_and_linear_on_real_pku_mmd_samples(pku_v1, tmp_path):
    base = ["--finetune-dataset", "pku_v1", "--protocol", "cross_subject", "--data-dir", pku_v1["data_dir"],
            "--pretrained", "none", "--hidden-size", "8", "-j", "0", "--device", "cpu", "--seed", "0"]
    feats = tmp_path / "features"
    knn = knn_eval.main(base + ["--save-features", str(feats), "--output", str(tmp_path / "knn.json")])
    assert (knn["num_train"], knn["num_test"], knn["num_class"]) == (8, 8, 51)
    # labels follow the label files' rows (action - 1), training video 0005-L, validation video 0299-L
    assert np.load(feats / "train_labels.npy").tolist() == pku_v1["train"]
    assert np.load(feats / "test_labels.npy").tolist() == pku_v1["val"]
    train_x, test_x = np.load(feats / "train_features.npy"), np.load(feats / "test_features.npy")
    assert np.isfinite(train_x).all() and np.isfinite(test_x).all()
    clf = KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute")
    clf.fit(train_x, pku_v1["train"])
    expected = 100.0 * np.mean(clf.predict(test_x) == np.array(pku_v1["val"]))
    assert knn["metrics"]["top1_k1"] == pytest.approx(expected)

    out = tmp_path / "linear.json"
    action_classification.main(base + ["--epochs", "1", "--batch-size", "4", "--output", str(out)])
    record = json.loads(out.read_text())
    assert (record["benchmark"], record["protocol"], record["num_class"]) == ("pku_v1", "cross_subject", 51)
    assert record["num_train"] == 8 and record["metrics"]["last"]["epoch"] == 1
    top1 = record["metrics"]["last"]["top1"]
    assert top1 in [100.0 * k / 8 for k in range(9)]                  # a fraction of the 8 test clips
