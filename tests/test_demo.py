"""The demo's machinery: the raw-coordinate baseline of knn_eval.py, the summary table of
scripts/comparison_table.py, and scripts/demo.sh end to end at a tiny size (DEMO_QUICK=1; it checks the
plumbing and the outputs, not the method: the full demo's numbers are in the README)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

import cmd_model
import dataset
import knn_eval
from helpers import common_argv, one_torch_thread, write_benchmark  # noqa: F401  (autouse fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import comparison_table  # noqa: E402


# ---------------------------------------------------------------------------------------------- raw
def _raw_features(data_dir, part, view):
    """Written out by hand: centre crop, then joint / motion / bone flattened (concatenated for 'all')."""
    split = dataset.load_split(data_dir, part)
    clips = torch.from_numpy(np.stack([dataset.center_crop_resize(np.asarray(split.data[i]),
                                                                  int(split.num_frame[i]))
                                       for i in range(len(split))]))
    mods = cmd_model.MODALITIES if view == "all" else (view,)
    feats = np.concatenate([cmd_model.to_modality(clips, m).reshape(len(clips), -1).numpy() for m in mods], 1)
    return feats, split.labels


@pytest.mark.parametrize("view", ["joint", "all"])
def test_knn_raw_coordinates_baseline(tmp_path, view):
    data = write_benchmark(tmp_path / "data", seed=3)
    record = knn_eval.main(common_argv(data, "raw", "--view", view, "--output", str(tmp_path / "raw.json"),
                                       "--save-features", str(tmp_path / "f")))
    assert record["checkpoint"] == "raw" and record["encoder"] == "raw"
    assert record["checkpoint_sha256"] is None
    ref_train, train_y = _raw_features(data, "train", view)
    ref_test, test_y = _raw_features(data, "val", view)
    dims = 3 * 64 * 25 * 2 * (3 if view == "all" else 1)
    assert ref_test.shape == (12, dims)
    torch.testing.assert_close(np.load(tmp_path / "f" / "test_features.npy"), ref_test.astype(np.float32),
                               rtol=1e-5, atol=1e-6)
    clf = KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute").fit(ref_train, train_y)
    expected = 100.0 * np.mean(clf.predict(ref_test) == test_y)
    assert record["metrics"]["top1_k1"] == pytest.approx(expected)
    assert json.loads((tmp_path / "raw.json").read_text())["checkpoint"] == "raw"


# ---------------------------------------------------------------------------------------------- summary
def _record(evaluation, view, checkpoint, top1):
    metrics = ({"top1_k1": top1} if evaluation == "knn"
               else {"last": {"epoch": 20, "top1": top1, "top5": 99.0}, "best": {"top1": top1 + 1.0}})
    return {"evaluation": evaluation, "view": view, "checkpoint": checkpoint, "metrics": metrics}


def _write_results(folder, rows):
    os.makedirs(folder, exist_ok=True)
    for i, (evaluation, view, checkpoint, top1) in enumerate(rows):
        with open(os.path.join(folder, f"r{i}.json"), "w") as f:
            json.dump(_record(evaluation, view, checkpoint, top1), f)


def test_summary_keys_values_and_table(tmp_path, capsys):
    ckpt = "runs/demo-x/checkpoints/checkpoint_0029.pth.tar"
    rows = [("linear", "joint", "none", 40.0), ("linear", "joint", ckpt, 55.5),
            ("linear", "joint", "raw", 50.0), ("knn", "joint", "none", 35.25), ("knn", "joint", ckpt, 47.0), ("knn", "joint", "raw", 60.0),
            ("linear", "all", "none", 45.0), ("linear", "all", ckpt, 61.0),
            ("knn", "all", "none", 38.0), ("knn", "all", ckpt, 50.0), ("knn", "all", "raw", 62.5)]
    _write_results(tmp_path / "results", rows)
    (tmp_path / "results" / "other.json").write_text('{"not": "a result"}')      # ignored
    out = tmp_path / "summary.json"
    summary = comparison_table.main([str(tmp_path / "results"), "--output", str(out)])
    assert json.loads(out.read_text()) == summary
    assert set(summary) == {"joint", "all"}
    assert summary["joint"]["linear"] == {"raw": 50.0, "random": 40.0, "cmd": 55.5, "cmd_minus_random": 15.5,
                                          "cmd_minus_raw": 5.5}
    assert summary["joint"]["knn"] == {"raw": 60.0, "random": 35.25, "cmd": 47.0, "cmd_minus_random": 11.75,
                                       "cmd_minus_raw": -13.0}
    assert summary["all"]["linear"]["raw"] is None and summary["all"]["linear"]["cmd_minus_raw"] is None
    assert summary["all"]["knn"]["cmd_minus_random"] == pytest.approx(12.0)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == ("| view | protocol | raw coordinates | random encoder | CMD | CMD - random "
                          "| CMD - raw |")
    assert printed[2] == "| joint | linear top-1 | 50.0 | 40.0 | 55.5 | +15.5 | +5.5 |"
    assert printed[3] == "| joint | 1-NN top-1 | 60.0 | 35.2 | 47.0 | +11.8 | -13.0 |"
    assert printed[4] == "| 3-stream fusion | linear top-1 | - | 45.0 | 61.0 | +16.0 | - |"
    assert printed[5] == "| 3-stream fusion | 1-NN top-1 | 62.5 | 38.0 | 50.0 | +12.0 | -12.5 |"


def test_summary_rejects_duplicates_and_empty_folders(tmp_path):
    _write_results(tmp_path / "dup", [("knn", "joint", "none", 1.0), ("knn", "joint", "none", 2.0)])
    with pytest.raises(ValueError, match="second knn result for the random encoder"):
        comparison_table.main([str(tmp_path / "dup")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no linear or kNN results"):
        comparison_table.main([str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="no such folder"):
        comparison_table.main([str(tmp_path / "absent")])


def test_runs_aggregate_to_mean_and_sample_spread(tmp_path, capsys):
    """--runs: each cell's mean, sample standard deviation and range over the runs' summary.json files,
    checked against numbers worked out by hand."""
    paths = []
    for i, (cmd, random) in enumerate([(60.0, 50.0), (64.0, 51.0), (68.0, 55.0)]):
        linear = {"raw": None, "random": random, "cmd": cmd, "cmd_minus_random": cmd - random}
        summary = {"joint": {"linear": linear,
                             "knn": {"raw": 75.0, "random": 40.0, "cmd": 41.0, "cmd_minus_random": 1.0}}}
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps(summary))
    out = tmp_path / "seeds.json"
    result = comparison_table.main(["--runs", *map(str, paths), "--output", str(out)])
    assert json.loads(out.read_text()) == result
    cmd = result["joint"]["linear"]["cmd"]
    assert cmd["mean"] == pytest.approx(64.0) and cmd["std"] == pytest.approx(4.0)       # sqrt((16+0+16)/2)
    assert (cmd["min"], cmd["max"], cmd["values"]) == (60.0, 68.0, [60.0, 64.0, 68.0])
    assert result["joint"]["linear"]["cmd_minus_random"]["mean"] == pytest.approx(12.0)
    assert result["joint"]["linear"]["raw"] is None and result["joint"]["knn"]["raw"]["std"] == 0.0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "3 run(s); mean ± sample standard deviation"
    # differences 10, 13, 13: standard deviation sqrt((4 + 1 + 1) / 2) = 1.73; summaries written before
    # the CMD - raw column have none
    assert printed[3] == "| joint | linear top-1 | - | 52.0 ± 2.6 | 64.0 ± 4.0 | +12.0 ± 1.7 | - |"
    assert result["joint"]["knn"]["cmd_minus_raw"] is None
    with pytest.raises(SystemExit, match="not a run's summary.json"):
        (tmp_path / "bad.json").write_text("[1, 2]")
        comparison_table.main(["--runs", str(tmp_path / "bad.json")])


# ---------------------------------------------------------------------------------------------- demo.sh
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("encoder", ["bigru", "stgcn"])
def test_demo_script_end_to_end_tiny(tmp_path, encoder):
    run = tmp_path / "run"
    env = dict(os.environ, DEMO_QUICK="1", DEMO_RUN_DIR=str(run), PYTHON=sys.executable, OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", DEMO_ENCODER=encoder)
    if encoder == "stgcn":
        env["DEMO_STGCN_INIT"] = "pytorch"         # not the default: both CMD and the random ST-GCN get it
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"joint", "all"}
    for view in ("joint", "all"):
        assert set(summary[view]) == {"linear", "knn"}
        for protocol, cell in summary[view].items():
            assert set(cell) == {"raw", "random", "cmd", "cmd_minus_random", "cmd_minus_raw"}
            for name in ("raw", "random", "cmd"):          # raw coordinates: 1-NN and the linear probe
                assert 0.0 <= cell[name] <= 100.0
            assert cell["cmd_minus_random"] == pytest.approx(cell["cmd"] - cell["random"])
            assert cell["cmd_minus_raw"] == pytest.approx(cell["cmd"] - cell["raw"])
    assert len(list((run / "results").glob("*.json"))) == 12
    for path in ("checkpoints/checkpoint_0000.pth.tar", "checkpoints/log.jsonl", "checkpoints/config.json",
                 "tsne_joint_cmd.png", "tsne_joint_random.png", "training_curves.png", "logs/pretrain.log"):
        assert (run / path).is_file(), path
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # the first training clip drawn (draw_skeleton.py), and its path in the final listing
    (gif,) = (run / "skeleton").glob("train_0_*_joint.gif")
    assert gif.with_suffix(".png").is_file() and f"a training clip:    {gif} " in proc.stdout
    num_frame = int(dataset.load_split(str(run / "data" / "synthetic" / "xsub"), "train").num_frame[0])
    with Image.open(gif) as image:
        assert image.n_frames == min(64, num_frame) and image.size == (320, 320)
    assert "| joint | linear top-1 |" in proc.stdout and "--logdir" in proc.stdout
    # CMD and the random baseline are the chosen encoder, with the same sizes (quick mode: hidden 8;
    # ST-GCN base 2) and initialisation, and the titles say which
    expected = ({"encoder": "bigru", "hidden_size": 8} if encoder == "bigru"
                else {"encoder": "stgcn", "hidden_size": 8, "base_channels": 2, "init": "pytorch"})
    ckpt = torch.load(run / "checkpoints" / "checkpoint_0000.pth.tar", map_location="cpu", weights_only=False)
    assert ckpt["encoder"] == expected["encoder"]
    for path in (run / "results").glob("*.json"):
        record = json.loads(path.read_text())
        if record["checkpoint"] == "raw":
            continue
        assert record["encoder"] == expected["encoder"], path
        for key, value in expected.items():
            if key != "encoder":
                assert ckpt["encoder_config"][key] == value
                assert record["encoder_config"][key] == value, (path, key)
    title = "BiGRU H=8" if encoder == "bigru" else "ST-GCN base 2, last 8, pytorch init"
    assert f"pretraining CMD ({title}," in proc.stdout
    if encoder == "stgcn":
        assert f"top-1 accuracy (%); CMD and random encoder: {title}" in proc.stdout
    else:                                     # the BiGRU demo's output is as before
        assert "== synthetic cross-subject, test split; top-1 accuracy (%)\n" in proc.stdout
    # a run folder that exists is refused, before any work
    again = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh")], env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "exists already" in again.stderr
