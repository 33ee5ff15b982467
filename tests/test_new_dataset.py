"""A dataset with another skeleton is one table entry plus its reader (docs/data.md, "Adding a dataset").

Registers a made-up 5-joint layout, a dataset using it and a raw reader for a made-up file format;
prepares it with prepare_data.py and pretrains one step on it with each registered encoder."""
import os

import numpy as np
import pytest
import torch

import cmd_model
import dataset
import graph
import knn_eval
import prepare_data
import pretrain_cmd
import readers
from readers import dataset_table
from storage import checkpoints

# a 5-joint stick figure: hip (centre), chest, head, left hand, right hand
TOY_LAYOUT = graph.Layout("toy5", ("hip", "chest", "head", "left_hand", "right_hand"),
                          ((0, 0), (1, 0), (2, 1), (3, 1), (4, 1)), center=0)


def toy_jobs(args, entry, rules, out):
    """Raw files `s<subject>_a<action>.npy` holding (T, 5, 3) positions of one person; odd subjects
    train (the split rule 'odd_subjects')."""
    jobs = []
    for filename in sorted(os.listdir(args.raw_dir)):
        subject, action = (int(field[1:]) for field in filename[:-len(".npy")].split("_"))
        parts = {folder: "train" if subject % 2 else "val" for folder in rules}
        jobs.append(readers.Job("toy_npy", os.path.join(args.raw_dir, filename),
                                [readers.Sample(filename, action - 1, parts)]))
    return jobs


def read_toy(job, notes):
    xyz = np.load(job.path)                                           # (T, V, 3)
    clip = np.zeros((3, len(xyz), xyz.shape[1], dataset.NUM_PERSONS))
    clip[..., 0] = xyz.transpose(2, 0, 1)
    return [(readers.to_fixed_length(clip), len(xyz))]


def toy_arguments(parser, entry):
    parser.add_argument("--raw-dir", required=True)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(graph.LAYOUTS, "toy5", TOY_LAYOUT)
    toy = dataset_table.DatasetEntry("toy", "toy5", num_class=3, raw_format="toy_npy",
                                  protocols={"cross_subject": dataset_table.Protocol("xsub", "odd_subjects")})
    monkeypatch.setitem(dataset_table.ENTRIES, "toy", toy)
    monkeypatch.setitem(readers.RAW_FORMATS, "toy_npy",
                        readers.RawFormat(toy_arguments, toy_jobs, read_toy))


@pytest.fixture
def toy_data(tmp_path, toy_registered):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for subject in range(1, 5):
        for action in range(1, 4):
            t = np.arange(int(rng.integers(70, 120)))[:, None, None]
            pose = rng.normal(size=(1, 5, 3))
            motion = 0.3 * np.sin(0.05 * action * t + rng.normal(size=(1, 5, 3)))
            np.save(raw / f"s{subject}_a{action}.npy", pose + motion)
    report = prepare_data.main(["toy", "--raw-dir", str(raw), "--out", str(tmp_path / "data" / "toy"),
                                "--workers", "1"])
    assert report["written"] == {"xsub/train": 6, "xsub/val": 6}
    return str(tmp_path / "data")


def test_the_table_gives_folder_class_count_and_layout(toy_data):
    bench = dataset_table.resolve_benchmark("toy", "cross_subject", toy_data)
    assert (bench.folder, bench.num_class, bench.layout) == (os.path.join(toy_data, "toy", "xsub"), 3, "toy5")
    split = dataset.load_split(bench.folder, "train", bench.num_class, bench.layout)
    assert split.data.shape == (6, 3, dataset.CLIP_FRAMES, 5, dataset.NUM_PERSONS)
    assert split.num_class == 3 and sorted(split.names)[0] == "s1_a1.npy"
    with pytest.raises(ValueError, match=r"expected \(N, 3, T, 25, 2\) \(layout 'ntu'\)"):
        dataset.load_split(bench.folder, "train")                       # read as NTU: refused


def test_bones_follow_the_layout(toy_registered):
    x = torch.randn(2, 3, 8, 5, 2)
    bone = cmd_model.to_modality(x, "bone", TOY_LAYOUT)
    expected = torch.zeros_like(x)
    for child, parent in ((1, 0), (2, 1), (3, 1), (4, 1)):
        expected[:, :, :, child] = x[:, :, :, child] - x[:, :, :, parent]
    torch.testing.assert_close(bone, expected, rtol=0, atol=0)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one intra-op thread on the shared test machines."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("encoder, recorded", [("bigru", {"num_joints": 5}), ("stgcn", {"layout": "toy5"})])
def test_one_pretraining_step_on_the_new_layout(toy_data, tmp_path, one_thread, encoder, recorded):
    rc = pretrain_cmd.main(["--pre-dataset", "toy", "--protocol", "cross_subject", "--data-dir", toy_data,
                            "--checkpoint-path", str(tmp_path / "ck"), "--encoder", encoder,
                            "--hidden-size", "16", "--contrast-k", "12", "--topk", "4", "--batch-size", "3",
                            "-j", "0", "--seed", "1", "--device", "cpu", "--max-steps", "1",
                            *(["--stgcn-base-channels", "4"] if encoder == "stgcn" else [])])
    assert rc in (0, None)
    path = tmp_path / "ck" / "checkpoint_0000.pth.tar"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    record = checkpoints.encoder_record(ckpt, str(path))
    assert record["encoder"] == encoder
    assert {k: record["encoder_config"][k] for k in recorded} == recorded
    assert int(ckpt["state_dict"]["queue_ptr"]) == 3
    # the evaluation CLIs rebuild the encoders from the record and read the same table entry
    result = knn_eval.main(["--finetune-dataset", "toy", "--protocol", "cross_subject",
                            "--data-dir", toy_data, "--pretrained", str(path), "--view", "all", "-j", "0",
                            "--device", "cpu",
                            "--batch-size", "4", "--knn-neighbours", "1"])
    assert 0.0 <= result["metrics"]["top1_k1"] <= 100.0


@pytest.mark.parametrize("encoder, flags", [("bigru", []), ("stgcn", ["--stgcn-base-channels", "4"])])
def test_a_random_encoder_is_built_for_the_benchmarks_layout(toy_data, tmp_path, one_thread, encoder, flags):
    """--pretrained none: the encoder's defaults for the benchmark's skeleton (5 joints here), not NTU's."""
    result = knn_eval.main(["--finetune-dataset", "toy", "--protocol", "cross_subject",
                            "--data-dir", toy_data, "--pretrained", "none", "--encoder", encoder,
                            "--hidden-size", "8", *flags,
                            "--view", "joint", "-j", "0", "--device", "cpu", "--batch-size", "4",
                            "--knn-neighbours", "1", "--output", str(tmp_path / "knn.json")])
    field, value = {"bigru": ("num_joints", 5), "stgcn": ("layout", "toy5")}[encoder]
    assert result["encoder"] == encoder and result["encoder_config"][field] == value
    assert 0.0 <= result["metrics"]["top1_k1"] <= 100.0
