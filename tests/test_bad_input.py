"""Bad input and interrupted runs, as the toughest user would try them (issue 10).

Every case asserts the exit status, that the message names the value or file, and that nothing that
existed before was changed (bytes and modification times of every file, compared before and after).
"""
import hashlib
import os
import pickle
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import action_classification as ac
import dataset
import knn_eval
import prepare_data
import pretrain_cmd
import readers
from cli import cli_errors
from storage import checkpoints, run_folder
from helpers import (cli, common_argv, one_torch_thread,  # noqa: F401  (autouse fixture)
                     write_benchmark, write_released_checkpoint, write_split)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snapshot(*roots) -> dict:
    """path -> (sha256 of the bytes, mtime in ns) of every file under the roots (or the files themselves)."""
    found = {}
    for root in map(str, roots):
        paths = [root] if os.path.isfile(root) else \
            [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        for path in paths:
            with open(path, "rb") as f:
                found[path] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return found


def run_cli(module, argv, capsys):
    """(exit status, stderr) of a CLI's main as its `__main__` block runs it."""
    capsys.readouterr()
    if module is pretrain_cmd:
        rc = pretrain_cmd.main(argv)
    else:
        rc = cli_errors.run_main(module.main, argv, prog=module.__name__ + ".py")
    return rc, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A finished 2-epoch pretraining run (data and run folder), copied by the tests that change it."""
    root = tmp_path_factory.mktemp("pretrained")
    data = write_split(str(root / "data"))
    ck = str(root / "ck")
    assert pretrain_cmd.main(cli(data, ck, "--epochs", "2")) == 0
    return {"data": data, "ck": ck}


@pytest.fixture
def run_copy(pretrained_run, tmp_path):
    ck = str(tmp_path / "ck")
    shutil.copytree(pretrained_run["ck"], ck)
    return pretrained_run["data"], ck


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {"root": root, "data": write_benchmark(root / "data", seed=1),
            "ckpt": write_released_checkpoint(root / "checkpoint_0450.pth.tar")}


# ---------------------------------------------------------------------------------------- data loss
def test_rerun_without_resume_refuses_and_changes_nothing(run_copy, capsys):
    data, ck = run_copy
    before = snapshot(ck)
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "1"), capsys)
    line = one_error_line(err)
    assert rc == 2 and ck in line and "--resume auto" in line and "--overwrite" in line
    assert snapshot(ck) == before


def test_overwrite_moves_the_old_run_to_a_backup(run_copy, capsys):
    data, ck = run_copy
    before = snapshot(ck)
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "1", "--overwrite"), capsys)
    assert rc == 0
    backups = [p for p in os.listdir(os.path.dirname(ck)) if p.startswith("ck.backup-")]
    assert len(backups) == 1
    backup = os.path.join(os.path.dirname(ck), backups[0])
    assert snapshot(backup) == {p.replace(ck, backup, 1): v for p, v in before.items()}
    assert checkpoints.load_checkpoint(os.path.join(ck, checkpoints.LAST_CHECKPOINT))["epoch"] == 1
    assert not os.path.exists(os.path.join(ck, run_folder.LOCK_NAME))            # released at the end
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "1", "--overwrite", "--resume", "auto"), capsys)
    assert rc == 2 and "exclude each other" in one_error_line(err)


def test_resume_from_another_folder_does_not_replace_this_folders_run(run_copy, tmp_path, capsys):
    data, ck = run_copy
    other = str(tmp_path / "other")
    shutil.copytree(ck, other)
    before = snapshot(ck)
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "2", "--resume",
                                        os.path.join(other, "checkpoint_0000.pth.tar")), capsys)
    assert rc == 2 and f"--checkpoint-path {ck} already holds a run" in one_error_line(err)
    assert snapshot(ck) == before


def test_action_classification_folder_and_existing_output_are_protected(tiny, tmp_path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "linear.json"
    argv = common_argv(tiny["data"], tiny["ckpt"], "--epochs", "1", "--checkpoint-path", str(run_dir),
                       "--output", str(out))
    assert run_cli(ac, argv, capsys)[0] == 0
    before = snapshot(tmp_path)
    rc, err = run_cli(ac, common_argv(tiny["data"], tiny["ckpt"], "--epochs", "1", "--checkpoint-path",
                                      str(run_dir)), capsys)
    assert rc == 2 and str(run_dir) in one_error_line(err)
    rc, err = run_cli(ac, common_argv(tiny["data"], tiny["ckpt"], "--epochs", "1", "--output", str(out)),
                      capsys)
    assert rc == 2 and f"--output {out} already exists" in one_error_line(err)
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"], "--output", str(out)), capsys)
    assert rc == 2 and str(out) in one_error_line(err)
    assert snapshot(tmp_path) == before
    assert run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"], "--output", str(out), "--overwrite"),
                   capsys)[0] == 0


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_lock_keeps_a_second_run_out_and_stale_locks_are_recognised(run_copy, capsys):
    data, ck = run_copy
    lock = os.path.join(ck, run_folder.LOCK_NAME)
    other = _sleeper()
    try:          # a live run on this host
        with open(lock, "w") as f:        # as that run's FolderLock writes it (pid, its start time)
            started = run_folder.process_start(other.pid)
            f.write(f'{{"pid": {other.pid}, "host": "{socket.gethostname()}", "started": {started}, '
                    f'"process_start": {started}}}')
        before = snapshot(ck)
        rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "3", "--resume", "auto",
                                            "--resume-allow-changes", "epochs"), capsys)
        line = one_error_line(err)
        assert rc == 2 and f"process {other.pid}" in line and "in use" in line
        assert snapshot(ck) == before
    finally:
        other.kill()
        other.wait()
    # the same lock, its process gone: recognised as stale, replaced, the run goes on
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "3", "--resume", "auto",
                                        "--resume-allow-changes", "epochs"), capsys)
    assert rc == 0
    out = capsys.readouterr()
    assert not os.path.exists(lock)
    # a lock from another host cannot be checked: refused with how to clear it
    with open(lock, "w") as f:
        f.write('{"pid": 1, "host": "elsewhere", "started": 0}')
    before = snapshot(ck)
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "3", "--resume", "auto"), capsys)
    line = one_error_line(err)
    assert rc == 2 and "'elsewhere'" in line and f"delete {lock}" in line
    assert snapshot(ck) == before
    del out


# ---------------------------------------------------------------------------------------- resume identity
@pytest.mark.parametrize("flag, value, field, old, new", [
    ("--protocol", "cross_view", "protocol", "'cross_subject'", "'cross_view'"),
    ("--lr", "0.02", "lr", "0.01", "0.02"),
    ("--seed", "4", "seed", "3", "4"),
    ("--batch-size", "8", "batch_size", "4", "8"),
    ("--epochs", "3", "epochs", "2", "3"),
])
def test_resume_refuses_another_run_naming_each_field(run_copy, capsys, flag, value, field, old, new):
    data, ck = run_copy
    before = snapshot(ck)
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "2", "--resume", "auto", flag, value), capsys)
    line = one_error_line(err)
    assert rc == 2 and f"{field}: {old} in the checkpoint, {new} now" in line
    assert f"--resume-allow-changes {field}" in line
    assert snapshot(ck) == before


def test_resume_refuses_another_data_folder(run_copy, tmp_path, capsys):
    data, ck = run_copy
    other = str(tmp_path / "other")
    shutil.copytree(data, other)
    rc, err = run_cli(pretrain_cmd, cli(other, ck, "--epochs", "2", "--resume", "auto"), capsys)
    assert rc == 2 and "data_folder" in one_error_line(err) and other in err


# ---------------------------------------------------------------------------------------- label pickles
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_label_pickle_runs_no_code(tiny, tmp_path, capsys):
    data = str(tmp_path / "data")
    shutil.copytree(tiny["data"], data)
    marker = tmp_path / "code_ran"
    label = os.path.join(data, "train_label.pkl")
    with open(label, "rb") as f:
        names, labels = pickle.load(f)
    with open(label, "wb") as f:
        pickle.dump((names, labels, _RunsCode(marker)), f)
    before = snapshot(tmp_path)
    rc, err = run_cli(knn_eval, common_argv(data, tiny["ckpt"]), capsys)
    line = one_error_line(err)
    assert rc == 2 and label in line and "system" in line and "refused" in line
    assert not marker.exists()
    assert snapshot(tmp_path) == before
    with pytest.raises(dataset.LabelFileRefused):
        dataset.load_split(data, "train")
    assert not marker.exists()


def test_label_pickles_of_the_released_format_still_load(tmp_path):
    """Lists of str and int, numpy integer arrays and numpy scalars, under every pickle protocol."""
    write_benchmark(tmp_path, n_train=6, n_val=3)
    for protocol in (2, 4, 5):
        for labels in ([0, 1, 2, 0, 1, 2], np.array([0, 1, 2, 0, 1, 2]), [np.int64(v) for v in range(6)]):
            with open(tmp_path / "train_label.pkl", "wb") as f:
                pickle.dump(([f"S{i}" for i in range(6)], labels), f, protocol=protocol)
            split = dataset.load_split(str(tmp_path), "train")
            assert split.labels.tolist() == np.asarray(labels).tolist() and split.names[0] == "S0"


# ---------------------------------------------------------------------------------------- non-finite data
def _poison(data_dir, part="train", clip=5):
    path = os.path.join(data_dir, f"{part}_data_joint.npy")
    data = np.load(path)
    data[clip, 0, 3, 4, 0] = np.nan
    data[clip, 1, 3, 4, 0] = np.inf
    np.save(path, data)


@pytest.mark.parametrize("module", [knn_eval, ac])
def test_nonfinite_data_refused_in_evaluation_unless_allowed(tiny, tmp_path, capsys, module):
    data = str(tmp_path / "data")
    shutil.copytree(tiny["data"], data)
    _poison(data)
    out = tmp_path / "r.json"
    argv = common_argv(data, tiny["ckpt"], "--output", str(out), *(["--epochs", "1"] if module is ac else []))
    before = snapshot(tmp_path)
    rc, err = run_cli(module, argv, capsys)
    line = one_error_line(err)
    assert rc == 2 and "2 non-finite values" in line and "first in clip 5 (S001C001P001R001A005)" in line
    assert os.path.join(data, "train_data_joint.npy") in line
    assert snapshot(tmp_path) == before
    rc, err = run_cli(module, argv + ["--allow-nonfinite"], capsys)
    assert rc == 0 and "warning: 2 non-finite values" in err and out.exists()


# ---------------------------------------------------------------------------------------- checkpoints
def _flip_a_weight_byte(path):
    """Flip one bit inside the bytes of the largest tensor of the checkpoint's state_dict."""
    sd = torch.load(path, weights_only=True)["state_dict"]
    key = max(sd, key=lambda k: sd[k].numel())
    pattern = sd[key].reshape(-1)[:16].numpy().tobytes()
    raw = bytearray(open(path, "rb").read())
    at = raw.find(pattern)
    assert at > 0 and raw.find(pattern, at + 1) == -1
    raw[at + 9] ^= 0x10
    with open(path, "wb") as f:
        f.write(raw)


def test_corrupted_checkpoint_refused_and_auto_resume_falls_back(run_copy, tiny, tmp_path, capsys):
    data, ck = run_copy
    last = os.path.join(ck, checkpoints.LAST_CHECKPOINT)
    os.remove(last)                                    # a copy of checkpoint_0001, not a link to it
    shutil.copy(os.path.join(ck, "checkpoint_0001.pth.tar"), last)
    _flip_a_weight_byte(last)
    before = snapshot(ck)
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "2", "--resume", last), capsys)
    line = one_error_line(err)
    assert rc == 2 and last in line and "corrupted" in line
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], last), capsys)
    assert rc == 2 and last in one_error_line(err) and "corrupted" in err
    assert snapshot(ck) == before
    # --resume auto says what it skipped and continues from the newest one that verifies
    capsys.readouterr()
    assert pretrain_cmd.main(cli(data, ck, "--epochs", "2", "--resume", "auto")) == 0
    out = capsys.readouterr().out
    assert f"skipping checkpoint {last} is corrupted" in out
    assert "resumed from " + os.path.join(ck, "checkpoint_0001.pth.tar") in out
    assert "nothing to do" in out


def test_checkpoint_with_nonfinite_weights_is_refused_with_that_reason(run_copy, capsys, tmp_path):
    data, ck = run_copy
    state = checkpoints.load_checkpoint(os.path.join(ck, "checkpoint_0001.pth.tar"))
    state["state_dict"]["encoder_q.fc.0.weight"][0, 0] = float("nan")
    bad = os.path.join(ck, "checkpoint_0009.pth.tar")
    checkpoints.atomic_save(state, bad)                 # a valid digest: only the weights are wrong
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "2", "--resume", bad), capsys)
    line = one_error_line(err)
    assert rc == 2 and bad in line and "non-finite weights" in line and "encoder_q.fc.0.weight" in line


@pytest.mark.parametrize("content", ["folder", b"\x13\x37random bytes" * 50, b"just some text\n"])
def test_checkpoint_that_is_not_one_gives_one_line(tiny, tmp_path, capsys, content):
    path = tmp_path / "checkpoint.pth.tar"
    if content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], path), capsys)
    line = one_error_line(err)
    assert rc == 2 and str(path) in line
    assert ("is a folder" in line) if content == "folder" else ("cannot load checkpoint" in line)


# ---------------------------------------------------------------------------------------- fail early
def test_output_paths_checked_before_any_work(tiny, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setattr(dataset, "load_split", None)            # any work would now crash
    for module, extra, shown in (
            (knn_eval, ["--output", str(blocker / "r.json")], str(blocker)),
            (knn_eval, ["--save-features", str(blocker)], str(blocker)),
            (knn_eval, ["--output", str(tmp_path)], str(tmp_path)),
            (ac, ["--checkpoint-path", str(blocker)], str(blocker)),
            (knn_eval, ["-j", "-1"], "argument -j/--workers: expected an integer in [0,"),
            (ac, ["-j", "-1"], "argument -j/--workers: expected an integer in [0,"),
            (knn_eval, ["--device", "tpu:7"], "--device 'tpu:7'")):
        before = snapshot(tmp_path)
        rc, err = run_cli(module, common_argv(tiny["data"], tiny["ckpt"], *extra), capsys)
        assert rc == 2 and shown in one_error_line(err), (extra, err)
        assert snapshot(tmp_path) == before


def test_pretrain_flags_checked_before_any_work(tmp_path, capsys):
    data = write_split(str(tmp_path / "data"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for extra, ck, shown in ((["-j", "-1"], str(tmp_path / "ck"), "argument -j/--workers: expected an"),
                             ([], str(blocker), f"--checkpoint-path {blocker} is a file"),
                             (["--device", "nonsense"], str(tmp_path / "ck"), "--device 'nonsense'")):
        before = snapshot(tmp_path)
        rc, err = run_cli(pretrain_cmd, cli(data, ck, *extra), capsys)
        assert rc == 2 and shown in one_error_line(err), err
        assert snapshot(tmp_path) == before and not os.path.exists(tmp_path / "ck")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line(tiny, tmp_path, capsys):
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"]) + ["--device", "cuda"], capsys)
    assert rc == 2 and "--device 'cuda'" in one_error_line(err)
    data = write_split(str(tmp_path / "data"))
    rc, err = run_cli(pretrain_cmd, cli(data, str(tmp_path / "ck"), "--device", "cuda"), capsys)
    assert rc == 2 and "--device 'cuda'" in one_error_line(err)


def test_k_larger_than_the_training_set_is_refused_before_features(tiny, capsys, monkeypatch):
    monkeypatch.setattr("evaluation.extract_features", None)
    argv = common_argv(tiny["data"], tiny["ckpt"], "--knn-neighbours", "1", "25")
    rc, err = run_cli(knn_eval, argv, capsys)
    line = one_error_line(err)
    assert rc == 2 and "--knn-neighbours 25" in line and "24 clips" in line


def _relabel(folder, part, labels):
    with open(os.path.join(folder, f"{part}_label.pkl"), "wb") as f:
        pickle.dump(([f"S{i}" for i in range(len(labels))], [int(v) for v in labels]), f)


def test_empty_split_and_class_overlap(tmp_path, tiny, capsys):
    data = str(tmp_path / "data")
    write_benchmark(data, n_train=24, n_val=12)
    _relabel(data, "val", [2] * 12)
    _relabel(data, "train", [0, 1] * 12)
    rc, err = run_cli(knn_eval, common_argv(data, tiny["ckpt"]), capsys)
    line = one_error_line(err)
    assert rc == 2 and "share none" in line and "{2}" in line and "{0, 1}" in line
    _relabel(data, "val", [0, 1, 2] * 4)                       # class 2 unseen in training: a warning
    rc, err = run_cli(knn_eval, common_argv(data, tiny["ckpt"]), capsys)
    assert rc == 0 and "warning: 4 of 12 test clips belong to classes the training set lacks: {2}" in err
    empty = str(tmp_path / "empty")
    write_benchmark(empty, n_train=24, n_val=0)
    rc, err = run_cli(knn_eval, common_argv(empty, tiny["ckpt"]), capsys)
    assert rc == 2 and os.path.join(empty, "val_data_joint.npy") in one_error_line(err) and "no clips" in err


# ---------------------------------------------------------------------------------------- every CLI, for real
@pytest.mark.parametrize("argv, shown", [
    (["pretrain_cmd.py", "-j", "-1", "--device", "cpu"], "argument -j/--workers: expected an integer"),
    (["knn_eval.py", "--pretrained", "none", "-j", "-1"], "argument -j/--workers: expected an integer"),
    (["action_classification.py", "--pretrained", "none", "-j", "-1"],
     "argument -j/--workers: expected an integer"),
    (["prepare_data.py", "synthetic", "--workers", "0", "--out", "unused"],
     "argument --workers: expected an integer in [1,"),
    (["pretrain_cmd.py", "--device", "nonsense"], "--device 'nonsense'"),
])
def test_every_cli_reports_a_user_error_in_one_line_with_status_2(argv, shown, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, argv[0]), *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and shown in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_debug_shows_the_traceback_of_a_user_error(tiny):
    with pytest.raises(ValueError, match="--device 'tpu:7'"):
        cli_errors.run_main(knn_eval.main, common_argv(tiny["data"], "none", "--device", "tpu:7", "--debug"))
    with pytest.raises(pretrain_cmd.UsageError, match="--contrast-k 10 must be a multiple"):
        pretrain_cmd.main(["--contrast-k", "10", "--batch-size", "4", "--device", "cpu", "--debug"])


# ---------------------------------------------------------------------------------------- data preparation
def _pku_root(root, video_frames=40, rows=("1,0,20,1", "2,20,55,1")):
    """A PKU-MMD-shaped folder: two videos of 150 numbers per frame, labels, a cross-subject split."""
    rng = np.random.default_rng(0)
    for sub in ("skeleton", "label"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for video in ("0001-L", "0002-L"):
        frames = rng.normal(size=(video_frames, 150))
        np.savetxt(os.path.join(root, "skeleton", video + ".txt"), frames, fmt="%.5f")
        with open(os.path.join(root, "label", video + ".txt"), "w") as f:
            f.write("\n".join(rows) + "\n")
    with open(os.path.join(root, "cross_subject_v2.txt"), "w") as f:
        f.write("Training videos:\n0001-L\nValidataion videos:\n0002-L\n")
    return str(root)


def test_pku_row_past_the_video_is_clipped_with_a_count(tmp_path, capsys):
    root = _pku_root(tmp_path / "pku")
    rc, err = run_cli(prepare_data, ["pku2", "--root", root, "--out", str(tmp_path / "out"), "--workers", "1",
                                     "--benchmarks", "xsub"], capsys)
    assert rc == 0
    assert "warning: 2 PKU-MMD label row(s) end past their video" in err
    assert os.path.join(root, "skeleton", "0001-L.txt") + ": label row 2 (2,20,55)" in err
    split = dataset.load_split(str(tmp_path / "out" / "xsub"), "train")
    assert split.num_frame.tolist() == [20, 20]                  # frames kept: 20..40, not 35


def _ntu_text(joints_of_body=(25,), frames=2):
    joint = "0.1 0.2 3.0 250 190 1030 510 0.1 0.2 0.3 0.4 2"
    bodies = "".join(f"7205759403793110{b} 0 1 1 1 1 0 0.01 0.02 2\n{n}\n" + "\n".join([joint] * n) + "\n"
                     for b, n in enumerate(joints_of_body))
    return f"{frames}\n" + "".join(f"{len(joints_of_body)}\n{bodies}" for _ in range(frames))


def test_body_with_24_joints_is_an_error_naming_the_line_or_skipped(tmp_path, capsys):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(_ntu_text((24,)))
    with pytest.raises(readers.SkeletonFileError,
                       match=r"\.skeleton:4: body 1 of frame 1 has 24 joints"):
        readers.ntu.read_ntu_skeleton(str(path))
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "S001C001P001R001A001.skeleton").write_text(_ntu_text((24,)))
    for name in ("S001C001P002R001A001", "S001C002P001R001A002", "S001C002P003R001A001"):
        (raw / f"{name}.skeleton").write_text(_ntu_text((25,)))
    argv = ["ntu60", "--raw-dir", str(raw), "--out", str(tmp_path / "out"), "--workers", "1",
            "--missing-list", "none", "--benchmarks", "xview"]
    rc, err = run_cli(prepare_data, argv, capsys)
    line = one_error_line(err)
    assert rc == 2 and "S001C001P001R001A001.skeleton:4" in line and "24 joints" in line
    assert not os.path.exists(tmp_path / "out" / "xview" / "train_data_joint.npy")
    rc, err = run_cli(prepare_data, argv + ["--skip-bad"], capsys)
    assert rc == 0 and "skipped 1 malformed file(s)" in err
    names = dataset.load_split(str(tmp_path / "out" / "xview"), "val").names
    assert "S001C001P001R001A001.skeleton" not in names and len(names) == 1


def test_prepare_data_user_errors(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    raw = tmp_path / "raw"
    raw.mkdir()
    before = snapshot(tmp_path)
    for argv, shown in ((["synthetic", "--out", str(blocker), "--num-clips", "4"], f"--out {blocker}"),
                        (["ntu60", "--raw-dir", str(raw), "--out", str(tmp_path / "o"), "--missing-list",
                          str(tmp_path / "nope.txt")],
                         f"--missing-list {tmp_path / 'nope.txt'}: no such file"),
                        (["ntu60", "--raw-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "o"),
                          "--missing-list", "none"], str(tmp_path / "absent"))):
        rc, err = run_cli(prepare_data, argv, capsys)
        assert rc == 2 and shown in one_error_line(err), err
    assert snapshot(tmp_path) == before and not os.path.exists(tmp_path / "o")


def test_synthetic_rerun_with_fewer_clips_keeps_only_its_own_raw_files(tmp_path, capsys):
    out = str(tmp_path / "syn")
    def synthetic(folder, clips):
        argv = ["synthetic", "--out", folder, "--num-clips", str(clips), "--workers", "1", "--overwrite"]
        return run_cli(prepare_data, argv, capsys)[0]
    assert synthetic(out, 24) == 0
    many = sorted(os.listdir(os.path.join(out, "raw")))
    assert synthetic(out, 8) == 0
    few = sorted(os.listdir(os.path.join(out, "raw")))
    assert len(few) < len(many)
    fresh = str(tmp_path / "fresh")
    assert synthetic(fresh, 8) == 0
    assert few == sorted(os.listdir(os.path.join(fresh, "raw")))
    for part in ("train", "val"):
        assert dataset.load_split(os.path.join(out, "xsub"), part).names == \
            dataset.load_split(os.path.join(fresh, "xsub"), part).names


# ---------------------------------------------------------------------------------------- kill -9
KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads(1)
import {module} as target
owner = {owner}
real = owner.{attr}
calls = []
def die_after(*a, **kw):
    result = real(*a, **kw)
    calls.append(1)
    if len(calls) == {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, {attr!r}, die_after)
target.main({argv!r})
"""


def run_killed(tmp_path, module, patched, after, argv):
    """Run `module.main(argv)` in a child that SIGKILLs itself right after the `after`-th call of
    `patched` ('owner.attribute', the owner reachable from `module`'s imports); returns the child's
    return code (-9)."""
    owner, _, attr = patched.rpartition(".")
    script = tmp_path / "killed.py"
    script.write_text(KILLER.format(repo=REPO_ROOT, module=module, owner=owner, attr=attr, after=after,
                                    argv=list(argv)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    return proc.returncode


def test_kill_9_during_pretraining_then_resume_auto_equals_an_uninterrupted_run(tmp_path):
    data = write_split(str(tmp_path / "data"))
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    assert pretrain_cmd.main(cli(data, straight, "--epochs", "3")) == 0
    # killed in epoch 1, in the middle of its training steps (after the 3rd optimizer step overall)
    rc = run_killed(tmp_path, "pretrain_cmd", "torch.optim.SGD.step", 3, cli(data, killed, "--epochs", "3"))
    assert rc == -9
    assert checkpoints.load_checkpoint(os.path.join(killed, checkpoints.LAST_CHECKPOINT))["epoch"] == 1
    assert os.path.exists(os.path.join(killed, run_folder.LOCK_NAME))          # left by the dead process
    assert pretrain_cmd.main(cli(data, killed, "--epochs", "3", "--resume", "auto")) == 0
    a = checkpoints.load_checkpoint(os.path.join(straight, checkpoints.LAST_CHECKPOINT))
    b = checkpoints.load_checkpoint(os.path.join(killed, checkpoints.LAST_CHECKPOINT))
    for key in a["state_dict"]:  # bit-identical on one machine; rtol admits alignment-dependent BLAS rounding
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=1e-5, atol=1e-6, msg=key)
    def outputs(folder):
        return sorted(f for f in os.listdir(folder) if not f.startswith("events.out.tfevents"))
    assert outputs(killed) == outputs(straight)


def test_kill_9_during_linear_evaluation_then_resume_equals_an_uninterrupted_run(tiny, tmp_path, capsys):
    base = common_argv(tiny["data"], tiny["ckpt"], "--epochs", "3", "--eval-freq", "1", "--seed", "0")
    straight = ac.main(base + ["--checkpoint-path", str(tmp_path / "a"),
                               "--output", str(tmp_path / "a.json")])
    killed_dir, out = tmp_path / "b", tmp_path / "b.json"
    argv = base + ["--checkpoint-path", str(killed_dir), "--output", str(out)]
    # killed in the middle of epoch 2's training (after the 5th of 3 x 3 optimizer steps)
    assert run_killed(tmp_path, "action_classification", "torch.optim.SGD.step", 5, argv) == -9
    assert not out.exists()
    resumed = ac.main(argv + ["--resume", str(killed_dir)])
    assert resumed["metrics"] == straight["metrics"]
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in straight["history"]],
                                                                     abs=1e-6)


def test_kill_9_during_data_conversion_then_rerun_equals_an_uninterrupted_run(tmp_path, capsys):
    fresh, killed = str(tmp_path / "fresh"), str(tmp_path / "killed")
    assert run_cli(prepare_data, ["synthetic", "--out", fresh, "--num-clips", "12", "--workers", "1"],
                   capsys)[0] == 0
    argv = ["synthetic", "--out", killed, "--num-clips", "12", "--workers", "1"]
    assert run_killed(tmp_path, "prepare_data", "target._PartWriter.add", 7, argv) == -9
    leftovers = [f for _, _, fs in os.walk(killed) for f in fs if f.endswith(".tmp")]
    assert leftovers                                                   # the killed run's temporaries
    rc, err = run_cli(prepare_data, argv, capsys)
    assert rc == 0 and "left by an interrupted conversion" in err
    for bench in ("xsub", "xview"):
        names = sorted(os.listdir(os.path.join(fresh, bench)))
        assert sorted(os.listdir(os.path.join(killed, bench))) == names
        for name in os.listdir(os.path.join(fresh, bench)):
            with open(os.path.join(fresh, bench, name), "rb") as f, \
                    open(os.path.join(killed, bench, name), "rb") as g:
                assert f.read() == g.read(), name
