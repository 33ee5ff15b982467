"""dataset_table.py's table; dataset.py: loading and validating the on-disk format, feeders, labelled
subsets."""
import os
import pickle

import numpy as np
import pytest
import torch

import dataset as D
from augmentation import augment
from readers import dataset_table as B


def write_split(folder, part, n=6, num_t=300, labels=None, dtype=np.float32, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, 3, num_t, 25, 2)).astype(dtype)
    np.save(os.path.join(folder, f"{part}_data_joint.npy"), data)
    labels = list(range(n)) if labels is None else labels
    with open(os.path.join(folder, f"{part}_label.pkl"), "wb") as f:
        pickle.dump(([f"S001C001P001R001A{i + 1:03d}.skeleton" for i in range(n)], labels), f)
    np.save(os.path.join(folder, f"{part}_num_frame.npy"), rng.integers(30, 300, size=n))
    return data


def test_registry_maps_every_pair_to_its_folder():
    expected = {("ntu60", "cross_subject"): ("ntu60/xsub", 60), ("ntu60", "cross_view"): ("ntu60/xview", 60),
                ("ntu120", "cross_subject"): ("ntu120/xsub", 120),
                ("ntu120", "cross_setup"): ("ntu120/xsetup", 120),
                ("pku_v1", "cross_subject"): ("pku_v1/xsub", 51),
                ("pku_v1", "cross_view"): ("pku_v1/xview", 51),
                ("pku_v2", "cross_subject"): ("pku_v2/xsub", 41),
                ("pku_v2", "cross_view"): ("pku_v2/xview", 41),
                ("synthetic", "cross_subject"): ("synthetic/xsub", None),
                ("synthetic", "cross_view"): ("synthetic/xview", None)}
    from readers import synthetic
    for (dataset, protocol), (folder, num_class) in expected.items():
        bench = B.resolve_benchmark(dataset, protocol, "/data")
        assert bench.folder == os.path.join("/data", folder)
        assert bench.num_class == (num_class or synthetic.NUM_CLASSES)
        assert bench.layout == "ntu"
        assert dataset in B.dataset_names() and protocol in B.protocol_names()
    assert B.get("pku1") is B.get("pku_v1") and B.get("pku2").name == "pku_v2"
    custom = B.resolve_benchmark("custom", "cross_subject", "/somewhere/else")
    assert custom.folder == "/somewhere/else" and custom.num_class is None
    with pytest.raises(ValueError,
                       match="unknown benchmark 'ntu60' 'cross_setup'; valid pairs: ntu60 cross_subject"):
        B.resolve_benchmark("ntu60", "cross_setup")


def test_load_split_memory_maps_and_reads_everything(tmp_path):
    data = write_split(str(tmp_path), "train", labels=[0, 1, 2, 0, 1, 2])
    write_split(str(tmp_path), "val", n=2, labels=[4, 1])
    split = D.load_split(str(tmp_path), "train")
    assert isinstance(split.data, np.memmap)
    np.testing.assert_array_equal(split.data, data)
    assert split.labels.dtype == np.int64 and split.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert split.num_frame.dtype == np.int64 and len(split) == 6
    assert split.names[0] == "S001C001P001R001A001.skeleton"
    assert split.num_class == 3          # a custom folder: from its own labels, the other part unread
    assert D.load_split(str(tmp_path), "train", num_class=60).num_class == 60    # the table's count
    with pytest.raises(ValueError, match="label 4 found, but the dataset has 4 classes"):
        D.load_split(str(tmp_path), "val", num_class=4)


@pytest.mark.parametrize("breakage, message", [
    ("dtype", "dtype float64, expected float32"),
    ("shape", r"shape \(6, 3, 300, 24, 2\), expected \(N, 3, T, 25, 2\)"),
    ("labels", "holds 5 labels but .* holds 6 clips"),
    ("num_frame_missing", "frame-count file not found"),
    ("num_frame_shape", r"shape \(5,\) dtype int64, expected integers of shape \(6,\)"),
    ("num_frame_zero", "clip 0 .* has 0 frames, expected at least 1"),
    ("label_pickle", "expected a pickled pair"),
    ("data_missing", "data file not found"),
])
def test_load_split_errors_name_the_file_and_the_expectation(tmp_path, breakage, message):
    folder = str(tmp_path)
    write_split(folder, "train")
    paths = D.split_paths(folder, "train")
    if breakage == "dtype":
        np.save(paths["data"], np.zeros((6, 3, 300, 25, 2)))
    elif breakage == "shape":
        np.save(paths["data"], np.zeros((6, 3, 300, 24, 2), dtype=np.float32))
    elif breakage == "labels":
        with open(paths["label"], "wb") as f:
            pickle.dump((["a"] * 5, [0] * 5), f)
    elif breakage == "num_frame_missing":
        os.remove(paths["num_frame"])
    elif breakage == "num_frame_shape":
        np.save(paths["num_frame"], np.ones(5, dtype=np.int64))
    elif breakage == "num_frame_zero":
        np.save(paths["num_frame"], np.zeros(6, dtype=np.int64))
    elif breakage == "label_pickle":
        with open(paths["label"], "wb") as f:
            pickle.dump({"names": []}, f)
    elif breakage == "data_missing":
        os.remove(paths["data"])
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        D.load_split(folder, "train")
    assert folder in str(info.value)
    with pytest.raises(ValueError, match="part must be one of"):
        D.load_split(folder, "test")


def test_pretrain_feeder_views(tmp_path):
    write_split(str(tmp_path), "train")
    split = D.load_split(str(tmp_path), "train")
    torch.manual_seed(0)
    feeder = D.PretrainFeeder(split)
    x_q, x_k = feeder[2]
    assert x_q.shape == x_k.shape == (3, 64, 25, 2) and x_q.dtype == torch.float32
    assert not torch.equal(x_q, x_k)
    raw = D.PretrainFeeder(split, augment="none")
    clip, num_frame = raw[2]
    assert clip.dtype == torch.float32 and clip.shape == (3, 300, 25, 2)
    np.testing.assert_array_equal(clip.numpy(), split.data[2])
    assert num_frame == split.num_frame[2]
    loader = torch.utils.data.DataLoader(raw, batch_size=3)
    clips, frames = next(iter(loader))
    views = augment.augment_pretrain_batch(clips, frames)
    assert views.shape == (3, 3, 64, 25, 2)
    with pytest.raises(ValueError, match="augment must be"):
        D.PretrainFeeder(split, augment="torch")


def test_pretrain_feeder_is_reproducible_for_a_torch_seed(tmp_path):
    write_split(str(tmp_path), "train")
    split = D.load_split(str(tmp_path), "train")
    views = []
    for _ in range(2):
        torch.manual_seed(5)
        feeder = D.PretrainFeeder(split)
        views.append(torch.stack([feeder[i][0] for i in range(6)]))
    assert torch.equal(views[0], views[1])


def test_seeded_feeders_depend_only_on_seed_epoch_and_index(tmp_path):
    """With a seed, a clip's views are a function of (seed, epoch, index): not of the order in which
    clips are read (loader workers) nor of torch's global seed."""
    write_split(str(tmp_path), "train")
    split = D.load_split(str(tmp_path), "train")
    torch.manual_seed(1)
    forward = D.PretrainFeeder(split, seed=7)
    forward.set_epoch(3)
    ahead = [forward[i][0] for i in range(6)]
    torch.manual_seed(2)
    backward = D.PretrainFeeder(split, seed=7)
    backward.set_epoch(3)
    behind = [backward[i][0] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(ahead, behind))
    backward.set_epoch(4)
    assert not torch.equal(backward[0][0], ahead[0])
    assert not torch.equal(D.PretrainFeeder(split, seed=8)[0][0], D.PretrainFeeder(split, seed=7)[0][0])
    crops = D.DownstreamFeeder(split, train=True, seed=7)
    first = crops[1][0]
    crops[0], crops[2]  # reading other clips in between changes nothing
    assert torch.equal(crops[1][0], first)


def test_downstream_feeder(tmp_path):
    write_split(str(tmp_path), "val", labels=[3, 1, 4, 1, 5, 9])
    split = D.load_split(str(tmp_path), "val")
    test_feeder = D.DownstreamFeeder(split, train=False)
    for i in range(6):
        x, label = test_feeder[i]
        n = int(split.num_frame[i])
        start = int(0.05 * n / 2)
        # independent linear interpolation (align_corners=False), frame by frame
        frames = np.asarray(split.data[i])[:, start:n - start]
        length = frames.shape[1]
        expected = np.empty((3, 64, 25, 2), dtype=np.float32)
        for j in range(64):
            src = max((j + 0.5) * length / 64 - 0.5, 0)
            lo = int(src)
            hi = min(lo + 1, length - 1)
            expected[:, j] = (1 - (src - lo)) * frames[:, lo] + (src - lo) * frames[:, hi]
        np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)   # N(0, 1) values: ~20 ulps of |x| < 5
        assert label == [3, 1, 4, 1, 5, 9][i]
    subset = D.DownstreamFeeder(split, train=True, indices=[4, 1])
    assert len(subset) == 2 and subset[0][1] == 5 and subset.labels.tolist() == [5, 1]
    assert subset[0][0].shape == (3, 64, 25, 2)
    with pytest.raises(IndexError):
        D.DownstreamFeeder(split, train=True, indices=[6])


def test_labelled_subset():
    labels = np.repeat(np.arange(5), [40, 30, 20, 8, 2])
    subset = D.labelled_subset(labels, 0.1, seed=0)
    assert len(subset) == 10 and np.all(np.diff(subset) > 0)
    assert np.array_equal(subset, D.labelled_subset(labels, 0.1, seed=0))
    assert not np.array_equal(subset, D.labelled_subset(labels, 0.1, seed=1))
    balanced = D.labelled_subset(labels, 0.1, seed=0, class_balanced=True)
    counts = np.bincount(labels[balanced], minlength=5)
    assert counts.tolist() == [4, 3, 2, 1, 1]
    assert len(np.unique(balanced)) == len(balanced)
    assert len(D.labelled_subset(labels, 1.0, seed=0)) == len(labels)
    with pytest.raises(ValueError, match="ratio must be in"):
        D.labelled_subset(labels, 0.0, seed=0)
