"""Nothing lost, round two (issue 17): one test per case of its table, tried as a careful user would.

Each asserts the exit status, that the message names the value or the path, and that the files that
must not change keep their bytes and modification times (snapshot before and after). The real files of
../shared/data are copied into a temporary folder first, never touched in place. Disk faults are made
by monkeypatching the write that fails (OSError with errno ENOSPC), as a full disk raises it.
"""
import errno
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

import action_classification as ac
import knn_eval
import prepare_data
import pretrain_cmd
from readers import synthetic
from storage import checkpoints, run_folder, write_faults
from conftest import SHARED_DATA
from helpers import (cli, common_argv, one_torch_thread,  # noqa: F401  (autouse fixture)
                     released_state_dict, write_benchmark, write_released_checkpoint, write_split)
from test_bad_input import one_error_line, run_cli, snapshot

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def disk_full(*_, **__):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def no_temporaries(root) -> list:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
            if f.endswith(".tmp") or f == ".lock"]


def shared_copy(tmp_path, name):
    """A copy of ../shared/data/<name> in tmp_path (skips when the shared data are absent)."""
    source = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(source):
        pytest.skip(f"real sample files not found at {source} (only present on the project's machines)")
    return shutil.copytree(source, os.path.join(str(tmp_path), name))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {"root": root, "data": write_benchmark(root / "data", seed=1),
            "ckpt": write_released_checkpoint(root / "checkpoint_0450.pth.tar")}


# --------------------------------------------------------------------------------------- raw files of a user
def test_synthetic_out_with_real_raw_files_deletes_none_and_refuses_a_name_it_would_write(tmp_path, capsys):
    out = tmp_path / "syn"
    real = shared_copy(out, "ntu_samples")
    os.rename(real, out / "raw")
    argv = ["synthetic", "--out", str(out), "--num-clips", "8", "--workers", "1"]
    before = snapshot(out)
    rc, err = run_cli(prepare_data, argv, capsys)       # round three: real files there refuse the folder
    assert rc == 2 and "holds files that no synthetic generation wrote" in one_error_line(err)
    assert snapshot(out) == before
    # its own folder: a second, smaller generation removes its own earlier files
    real_file = out / "raw" / "S001C001P001R001A001.skeleton"
    keep = real_file.read_bytes()
    shutil.rmtree(out / "raw")
    assert run_cli(prepare_data, argv, capsys)[0] == 0
    rc, err = run_cli(prepare_data, argv[:3] + ["--num-clips", "4", "--workers", "1", "--overwrite"], capsys)
    assert rc == 0, err
    kept = snapshot(out / "raw")
    assert len([p for p in kept if p.endswith(".skeleton")]) == len(synthetic.clip_names(4))
    # a real file under a name the generation would write: refused before anything is written
    target = out / "raw" / f"{synthetic.clip_names(4)[0]}.skeleton"
    os.remove(target)
    target.write_bytes(keep)
    before = snapshot(out)
    rc, err = run_cli(prepare_data, argv[:3] + ["--num-clips", "4", "--workers", "1", "--overwrite"], capsys)
    line = one_error_line(err)
    assert rc == 2 and f"{target} exists and was changed since it was generated" in line
    assert snapshot(out) == before and not no_temporaries(out)


def test_synthetic_raw_dir_of_real_ntu_files_is_never_overwritten(tmp_path, capsys):
    raw = shared_copy(tmp_path, "ntu_samples")
    planned = synthetic.clip_names(8)[0]
    shutil.copy(os.path.join(raw, "S001C001P001R001A001.skeleton"), os.path.join(raw, f"{planned}.skeleton"))
    before = snapshot(raw)
    out = tmp_path / "out"
    rc, err = run_cli(prepare_data, ["synthetic", "--raw-dir", raw, "--out", str(out), "--num-clips", "8",
                                     "--workers", "1"], capsys)
    line = one_error_line(err)
    assert rc == 2 and os.path.join(raw, f"{planned}.skeleton") in line and "never overwritten" in line
    assert "not written by an earlier synthetic generation" in line
    assert snapshot(raw) == before and not out.exists()


# ------------------------------------------------------------------------------ outputs claimed when written
def test_an_output_that_appears_while_an_evaluation_runs_is_kept(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    real_features = knn_eval.evaluation.extract_features

    def another_run_finishes_meanwhile(*a, **kw):
        if not out.exists():
            out.write_text('{"the other run": 1}\n')
        return real_features(*a, **kw)
    monkeypatch.setattr(knn_eval.evaluation, "extract_features", another_run_finishes_meanwhile)
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"], "--output", str(out)), capsys)
    line = one_error_line(err)
    kept = tmp_path / "r-2.json"
    assert rc == 2 and f"--output {out} appeared while this evaluation ran" in line and str(kept) in line
    assert json.loads(out.read_text()) == {"the other run": 1}
    assert json.loads(kept.read_text())["evaluation"] == "knn" and not no_temporaries(tmp_path)
    # the same for the feature files: all of them or none are published
    feats = tmp_path / "f"
    monkeypatch.setattr(knn_eval.evaluation, "extract_features", real_features)
    real_publish = run_folder.publish_new

    def test_labels_appear(tmp, path):
        if path.endswith("test_labels.npy") and not os.path.exists(path):
            open(path, "w").write("another run's")
        return real_publish(tmp, path)
    monkeypatch.setattr(run_folder, "publish_new", test_labels_appear)
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"], "--output", str(tmp_path / "g.json"),
                                            "--save-features", str(feats)), capsys)
    assert rc == 2 and "--save-features" in one_error_line(err) and "test_labels.npy appeared" in err
    assert sorted(os.listdir(feats)) == ["test_labels.npy"] and not no_temporaries(feats)


def test_tsne_and_projector_outputs_are_not_replaced_without_overwrite(tiny, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png, tb = tmp_path / "tsne.png", tmp_path / "tb"
    png.write_bytes(b"an earlier picture")
    before = snapshot(tmp_path)
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"], "--tsne", str(png)), capsys)
    assert rc == 2 and f"--tsne {png} already exists" in one_error_line(err)
    assert snapshot(tmp_path) == before
    assert run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"], "--tsne", str(png), "--tb-embedding",
                                         str(tb), "--output", str(tmp_path / "a.json"), "--overwrite"),
                   capsys)[0] == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and (tb / "projector_config.pbtxt").exists()
    before = snapshot(tmp_path)
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"], "--tb-embedding", str(tb)), capsys)
    assert rc == 2 and f"--tb-embedding {tb} already holds projector data" in one_error_line(err)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- no non-finite weights written
@pytest.mark.parametrize("flag, value", [("--momentum", "nan"), ("--lr", "nan"), ("--lr", "inf"),
                                         ("--wd", "nan"), ("--contrast-m", "nan")])
def test_pretrain_non_finite_values_are_refused_at_parse_time(tmp_path, capsys, flag, value):
    rc, err = run_cli(pretrain_cmd, cli(str(tmp_path / "data"), str(tmp_path / "ck"), flag, value), capsys)
    line = one_error_line(err)
    assert rc == 2 and f"argument {flag}" in line and f"expected a finite number, got '{value}'" in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["--lr", "--wd"])
def test_pretrain_diverging_stops_naming_the_flag_before_any_checkpoint(tmp_path, capsys, flag):
    data, ck = write_split(str(tmp_path / "data")), str(tmp_path / "ck")
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "2", flag, "1e30"), capsys)
    line = one_error_line(err)
    # round three: the first update's finite but absurd weights stop it already (training.DivergenceCheck)
    assert rc == 1 and "diverging weights at epoch 0 after the update of step 0" in line
    assert f"{flag} 1e+30" in line
    assert "stopping before writing a checkpoint" in line
    assert not [f for f in os.listdir(ck) if f.endswith(".pth.tar")] and not no_temporaries(ck)


def test_pretrain_weights_made_non_finite_by_an_update_are_not_saved(tmp_path, capsys, monkeypatch):
    """A finite loss whose update leaves NaN weights (the loss read before the update cannot see it)."""
    data, ck = write_split(str(tmp_path / "data")), str(tmp_path / "ck")
    assert run_cli(pretrain_cmd, cli(data, ck, "--epochs", "1"), capsys)[0] == 0
    before = snapshot(ck)
    real_step = torch.optim.SGD.step

    def step_then_poison(self, *a, **kw):
        result = real_step(self, *a, **kw)
        with torch.no_grad():
            self.param_groups[0]["params"][-1].fill_(float("nan"))
        return result
    monkeypatch.setattr(torch.optim.SGD, "step", step_then_poison)
    rc, err = run_cli(pretrain_cmd, cli(data, ck, "--epochs", "2", "--resume", "auto", "--momentum", "0.5",
                                        "--resume-allow-changes", "epochs", "momentum"), capsys)
    line = one_error_line(err)
    assert rc == 1 and "non-finite weights at epoch 1 after the update of step 0 (encoder_" in line
    assert "stopping before writing a checkpoint" in line and "--momentum 0.5 (released 0.9)" in line
    assert {p: v for p, v in snapshot(ck).items() if p.endswith(".pth.tar")} == \
        {p: v for p, v in before.items() if p.endswith(".pth.tar")}
    assert not no_temporaries(ck)


def test_linear_evaluation_nan_lr_refused_and_diverging_weights_write_no_result(tiny, tmp_path, capsys,
                                                                                monkeypatch):
    out, run_dir = tmp_path / "r.json", tmp_path / "run"
    rc, err = run_cli(ac, common_argv(tiny["data"], tiny["ckpt"], "--lr", "nan", "--output", str(out)),
                      capsys)
    line = one_error_line(err)
    assert rc == 2 and "argument --lr/--learning-rate: expected a finite number, got 'nan'" in line
    real_step = torch.optim.SGD.step

    def step_then_poison(self, *a, **kw):
        result = real_step(self, *a, **kw)
        with torch.no_grad():
            self.param_groups[0]["params"][0][0, 0] = float("inf")
        return result
    monkeypatch.setattr(torch.optim.SGD, "step", step_then_poison)
    rc, err = run_cli(ac, common_argv(tiny["data"], tiny["ckpt"], "--epochs", "2", "--lr", "0.5", "--output",
                                      str(out), "--checkpoint-path", str(run_dir)), capsys)
    line = one_error_line(err)
    assert rc == 1 and "non-finite" in line and "epoch 1" in line and "--lr 0.5" in line
    assert not out.exists() and not [f for f in os.listdir(run_dir) if f.endswith(".pth.tar")]
    assert not no_temporaries(tmp_path)


# ---------------------------------------------------------------------------------- values that mean nothing
@pytest.mark.parametrize("flag, value, expected", [
    ("--contrast-t", "-1", "a number > 0"), ("--contrast-t", "0", "a number > 0"),
    ("--teacher-t", "-0.05", "a number > 0"), ("--student-t", "-0.1", "a number > 0"),
    ("--cmd-weight", "-1", "a number >= 0"), ("--contrast-m", "-1", "a number in [0, 1]"),
    ("--contrast-m", "1.5", "a number in [0, 1]"), ("--momentum", "2", "a number in [0, 1]"),
    ("--epochs", "-1", "an integer >= 1"), ("--contrast-k", "0", "an integer >= 1"),
    ("--seed", "-1", "an integer in [0, 2^32)"),
])
def test_pretrain_values_that_mean_nothing_are_refused_at_parse_time(tmp_path, capsys, flag, value, expected):
    rc, err = run_cli(pretrain_cmd, cli(str(tmp_path / "data"), str(tmp_path / "ck"), flag, value), capsys)
    line = one_error_line(err)
    assert rc == 2 and f"argument {flag}: expected {expected}, got '{value}'" in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("module, argv, shown", [
    (ac, ["--epochs", "-1"], "argument --epochs: expected an integer >= 1, got '-1'"),
    (ac, ["--wd", "-1"], "argument --wd/--weight-decay: expected a number >= 0, got '-1'"),
    (ac, ["--data-ratio", "0"], "argument --data-ratio: expected a number in (0, 1], got '0'"),
    (knn_eval, ["--knn-neighbours", "0"], "argument --knn-neighbours: expected an integer >= 1, got '0'"),
])
def test_evaluation_values_that_mean_nothing_are_refused_at_parse_time(tiny, tmp_path, capsys, module, argv,
                                                                       shown):
    rc, err = run_cli(module, common_argv(tiny["data"], tiny["ckpt"], *argv), capsys)
    assert rc == 2 and shown in one_error_line(err)


# --------------------------------------------------------------------------------- sizes against the machine
@pytest.mark.parametrize("module, flag", [(pretrain_cmd, "-j"), (knn_eval, "-j"), (ac, "-j"),
                                          (pretrain_cmd, "--threads"), (prepare_data, "--workers")])
def test_process_counts_beyond_the_machine_are_refused(tiny, tmp_path, capsys, module, flag):
    if module is pretrain_cmd:
        argv = cli(str(tmp_path / "data"), str(tmp_path / "ck"), flag, "1000000000")
    elif module is prepare_data:
        argv = ["synthetic", "--out", str(tmp_path / "out"), flag, "1000000000"]
    else:
        argv = common_argv(tiny["data"], tiny["ckpt"], flag, "1000000000")
    rc, err = run_cli(module, argv, capsys)
    line = one_error_line(err)
    assert rc == 2 and "got '1000000000'" in line and "usable cores" in line
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("flags", [["--gru-layers", "1000000000"], ["--hidden-size", "10000000"],
                                   ["--contrast-k", "100000000000"], ["--contrast-dim", "10000000000"]])
def test_pretrain_sizes_beyond_the_memory_are_refused_before_allocation(tmp_path, capsys, flags):
    data = write_split(str(tmp_path / "data"))
    before = snapshot(tmp_path)
    rc, err = run_cli(pretrain_cmd, cli(data, str(tmp_path / "ck"), *flags), capsys)
    line = one_error_line(err)
    assert rc == 2 and "CMD pretraining (six bigru encoders" in line and "GiB, this machine has" in line
    assert snapshot(tmp_path) == before and not os.path.exists(tmp_path / "ck")


def test_evaluation_classifier_beyond_the_memory_is_refused(tiny, capsys):
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], "none", "--hidden-size", "10000000"), capsys)
    line = one_error_line(err)
    assert rc == 2 and "the classifier (bigru encoders, 3 classes) needs at least" in line and "GiB" in line


def test_memory_estimates_count_what_the_models_hold():
    """tensor_count (formula or meta-device build) equals the values of the encoder as built."""
    import itertools
    import cmd_model
    for name, sizes in (("bigru", {"hidden_size": 6, "num_layers": 2}), ("stgcn", {"base_channels": 2})):
        config = cmd_model.make_encoder_config(name, **sizes)
        for mlp in (False, True):
            model = cmd_model.build_encoder(name, 7, mlp=mlp, config=config)
            held = sum(t.numel() for t in itertools.chain(model.parameters(), model.buffers()))
            assert cmd_model.ENCODERS[name].tensor_count(config, 7, mlp) == held
    model = cmd_model.CMD(hidden_size=6, dim=8, K=16, topk=4, mlp=True)
    weights = sum(t.numel() for t in itertools.chain(model.parameters(), model.buffers()))
    spec = cmd_model.model_spec("bigru", overrides={"hidden_size": 6})
    assert spec.config == model.spec.config
    estimate = cmd_model.pretraining_bytes(spec, 8, 16, True, batch=4)
    assert 4 * weights <= estimate                         # at least the weights and the queues


# ------------------------------------------------------------------------------------------------- full disk
def test_disk_full_while_saving_a_checkpoint(tmp_path, capsys, monkeypatch):
    data, ck = write_split(str(tmp_path / "data")), str(tmp_path / "ck")
    assert run_cli(pretrain_cmd, cli(data, ck, "--epochs", "1"), capsys)[0] == 0
    before = {p: v for p, v in snapshot(ck).items() if p.endswith(".pth.tar")}
    real_save = torch.save

    def save_half_then_full(obj, f, *a, **kw):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[:1000])
        disk_full()
    monkeypatch.setattr(torch, "save", save_half_then_full)
    resume = ["--epochs", "2", "--resume", "auto", "--resume-allow-changes", "epochs"]
    rc, err = run_cli(pretrain_cmd, cli(data, ck, *resume), capsys)
    line = one_error_line(err)
    last = os.path.join(ck, checkpoints.LAST_CHECKPOINT)
    assert rc == 2 and line.endswith(f"disk full while writing {last}; nothing was replaced")
    assert {p: v for p, v in snapshot(ck).items() if p.endswith(".pth.tar")} == before
    assert not no_temporaries(ck)                               # no temporary file, no lock


def test_disk_full_while_converting_data_leaves_the_earlier_files(tmp_path, capsys, monkeypatch):
    out = tmp_path / "syn"
    argv = ["synthetic", "--out", str(out), "--num-clips", "8", "--workers", "1", "--benchmarks", "xsub"]
    assert run_cli(prepare_data, argv, capsys)[0] == 0
    before = snapshot(out / "xsub")
    monkeypatch.setattr(os, "posix_fallocate", disk_full)      # reserving the memory-mapped file fails
    rc, err = run_cli(prepare_data, argv + ["--overwrite"], capsys)
    line = one_error_line(err)
    assert rc == 2 and f"disk full while writing {out / 'xsub' / 'train_data_joint.npy'}" in line
    assert snapshot(out / "xsub") == before and not no_temporaries(out)
    monkeypatch.undo()
    real_save = np.save                                          # the frame counts, after the data

    def frame_counts_fail(f, array, *a, **kw):
        if getattr(f, "name", "").endswith("val_num_frame.npy.tmp"):
            disk_full()
        return real_save(f, array, *a, **kw)
    monkeypatch.setattr(np, "save", frame_counts_fail)
    rc, err = run_cli(prepare_data, argv + ["--overwrite"], capsys)
    assert rc == 2 and f"disk full while writing {out / 'xsub' / 'val_num_frame.npy'}" in one_error_line(err)
    assert snapshot(out / "xsub") == before and not no_temporaries(out)    # train's files not replaced either


def test_disk_full_while_writing_an_evaluation_result(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text('{"an earlier": "result"}\n')
    before = snapshot(tmp_path)
    monkeypatch.setattr(os, "fsync", disk_full)
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], tiny["ckpt"], "--output", str(out), "--overwrite"),
                      capsys)
    assert rc == 2 and one_error_line(err).endswith(f"disk full while writing {out}; nothing was replaced")
    assert snapshot(tmp_path) == before


def test_disk_full_while_importing_a_download(tmp_path, capsys, monkeypatch):
    from test_download_pretrained import installed, released_checkpoint_bytes, run, write_manifest
    by_hand = tmp_path / "checkpoint_0450.pth.tar"
    by_hand.write_bytes(released_checkpoint_bytes())
    manifest = write_manifest(tmp_path, "https://drive.example/share", needs_browser=True)
    real_copy = shutil.copyfile

    def copy_half(src, dst, *a, **kw):
        with open(dst, "wb") as f:
            f.write(b"x" * 100)
        disk_full()
    monkeypatch.setattr(shutil, "copyfile", copy_half)
    before = snapshot(tmp_path)
    assert run(tmp_path, manifest, "ntu60_cross_subject", "--from", str(by_hand)) == 2
    err = capsys.readouterr().err
    assert f"disk full while writing {installed(tmp_path)}; nothing was replaced" in err
    assert not installed(tmp_path).exists() and not no_temporaries(tmp_path / "pm")
    assert os.listdir(installed(tmp_path).parent) == []
    assert {p: v for p, v in snapshot(tmp_path).items() if p in before} == before
    del real_copy


def test_disk_full_while_taking_a_lock_leaves_no_lock_and_an_empty_lock_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.setattr(json, "dump", disk_full)
    with pytest.raises(write_faults.WriteFailed, match="disk full while writing .*/run/.lock; no lock"):
        run_folder.FolderLock(str(folder)).acquire()
    assert os.listdir(folder) == []
    monkeypatch.undo()
    (folder / ".lock").write_text("")                       # what a full disk left before this fix
    with pytest.raises(run_folder.RunFolderError, match="unreadable lock .*empty or not JSON"):
        run_folder.check_folder(str(folder), resume=True, overwrite=False)


# ------------------------------------------------------------------------------------------- a second writer
def test_a_second_prepare_data_into_the_same_out_is_refused_with_the_first_ones_pid(tmp_path, capsys):
    out = tmp_path / "syn" / "xsub"
    out.mkdir(parents=True)
    (out / ".train_data_joint.npy.tmp").write_bytes(b"the first run's clips so far")
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "syn" / ".lock").write_text(json.dumps({   # as the first run's FolderLock wrote it
            "pid": first.pid, "host": socket.gethostname(), "started": run_folder.process_start(first.pid),
            "process_start": run_folder.process_start(first.pid)}))
        before = snapshot(tmp_path)
        rc, err = run_cli(prepare_data, ["synthetic", "--out", str(tmp_path / "syn"), "--num-clips", "8",
                                         "--workers", "1"], capsys)
        line = one_error_line(err)
        assert rc == 2 and f"process {first.pid}" in line and "in use" in line
        assert snapshot(tmp_path) == before
    finally:
        first.kill()
        first.wait()


# --------------------------------------------------------------------------------------- the remaining cases
def test_synthetic_num_clips_zero_is_refused(tmp_path, capsys):
    rc, err = run_cli(prepare_data, ["synthetic", "--out", str(tmp_path / "o"), "--num-clips", "0"], capsys)
    assert rc == 2 and "argument --num-clips: expected an integer >= 1, got '0'" in one_error_line(err)
    assert os.listdir(tmp_path) == []


def test_pku_label_past_the_class_count_is_refused_at_preparation(tmp_path, capsys):
    root = shared_copy(tmp_path, "pku_mmd_v1_samples")
    label = os.path.join(root, "label", "0005-L.txt")
    with open(label) as f:
        rows = f.read().splitlines()
    rows[2] = "52," + rows[2].split(",", 1)[1]
    with open(label, "w") as f:
        f.write("\n".join(rows) + "\n")
    before = snapshot(root)
    argv = ["pku1", "--root", root, "--out", str(tmp_path / "out"), "--workers", "1"]
    rc, err = run_cli(prepare_data, argv, capsys)
    line = one_error_line(err)
    assert rc == 2 and f"{label}:3: action 52, but the dataset has 51 classes" in line
    assert snapshot(root) == before and not (tmp_path / "out").exists()


def test_dangling_symlink_and_a_file_as_log_dir(tmp_path, capsys):
    data = write_split(str(tmp_path / "data"))
    link = tmp_path / "ck"
    os.symlink(tmp_path / "gone", link)
    rc, err = run_cli(pretrain_cmd, cli(data, str(link), "--epochs", "1"), capsys)
    line = one_error_line(err)
    assert rc == 2 and f"--checkpoint-path {link} is a symbolic link to {tmp_path / 'gone'}" in line
    assert os.path.islink(link) and not os.path.exists(link)          # left as it was
    os.remove(link)
    blocker = tmp_path / "logs"
    blocker.write_text("x")
    before = snapshot(tmp_path)
    argv = cli(data, str(tmp_path / "ck2"), "--epochs", "1", "--log-dir", str(blocker))
    rc, err = run_cli(pretrain_cmd, argv, capsys)
    assert rc == 2 and f"--log-dir {blocker} is a file" in one_error_line(err)
    assert snapshot(tmp_path) == before and not (tmp_path / "ck2").exists()


def test_binary_junk_in_the_log_stops_a_resume_naming_the_line(tmp_path, capsys):
    data, ck = write_split(str(tmp_path / "data")), str(tmp_path / "ck")
    assert run_cli(pretrain_cmd, cli(data, ck, "--epochs", "1"), capsys)[0] == 0
    log = os.path.join(ck, "log.jsonl")
    with open(log, "ab") as f:
        f.write(b"\x00\xff\xfe binary junk\n" + b'{"epoch": 0}\n')
    before = snapshot(ck)
    resume = ["--epochs", "2", "--resume", "auto", "--resume-allow-changes", "epochs"]
    rc, err = run_cli(pretrain_cmd, cli(data, ck, *resume), capsys)
    line = one_error_line(err)
    assert rc == 2 and f"{log}:2: not a record of this run's log" in line
    assert snapshot(ck) == before


def test_summarise_on_a_bad_json_is_one_line(tmp_path):
    bad, other = tmp_path / "bad.json", tmp_path / "other.json"
    bad.write_text('{"benchmark": "ntu60",')
    other.write_text('{"some": "thing"}')
    for path, shown in ((bad, "not a results JSON (Expecting"), (other, "not a results JSON of")):
        proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "evaluation.py"), "summarise",
                               str(path)], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert f"evaluation.py: error: {path}: {shown}" in proc.stderr


def test_an_uncompressed_tar_of_two_checkpoints_installs_both(tmp_path, capsys):
    from test_download_pretrained import installed, released_checkpoint_bytes, run
    entries = [{"benchmark": b, "url": "https://drive.example/share", "needs_browser": True,
                "file_name": "checkpoint_0450.pth.tar", "destination": b, "sha256": "unknown"}
               for b in ("ntu60_cross_view", "ntu120_cross_subject")]
    manifest = tmp_path / "two.json"
    manifest.write_text(json.dumps({"checkpoints": entries}))
    archive = tmp_path / "CMD.tar"
    with tarfile.open(archive, "w") as t:
        for name, seed in (("CMD/ntu60_xview/checkpoint_0450.pth.tar", 3),
                           ("CMD/ntu120_xsub/checkpoint_0450.pth.tar", 4)):
            body = released_checkpoint_bytes(seed=seed)
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    assert run(tmp_path, str(manifest), "--from", str(archive)) == 0, capsys.readouterr().err
    assert installed(tmp_path, "ntu60_cross_view").read_bytes() == released_checkpoint_bytes(seed=3)
    assert installed(tmp_path, "ntu120_cross_subject").read_bytes() == released_checkpoint_bytes(seed=4)


def test_a_label_of_ten_to_the_twelve_is_refused_naming_it(tmp_path, capsys, tiny):
    import pickle
    data = str(tmp_path / "data")
    shutil.copytree(tiny["data"], data)
    label = os.path.join(data, "train_label.pkl")
    with open(label, "rb") as f:
        names, labels = pickle.load(f)
    labels[3] = 10 ** 12
    with open(label, "wb") as f:
        pickle.dump((names, labels), f)
    for module, extra in ((knn_eval, []), (ac, ["--epochs", "1"]), (knn_eval, ["--pretrained", "raw"])):
        argv = common_argv(data, tiny["ckpt"], *extra)
        rc, err = run_cli(module, argv, capsys)
        line = one_error_line(err)
        assert rc == 2 and f"{label}: label 1000000000000 of clip 3 ({names[3]}) is not a class index" in line


@pytest.mark.parametrize("kind", ["a pickled class", "truncated", "text"])
def test_an_unloadable_checkpoint_says_what_it_is_not_and_never_suggests_weights_only_false(tiny, tmp_path,
                                                                                             capsys, kind):
    import argparse
    path = tmp_path / "checkpoint.pth.tar"
    if kind == "a pickled class":       # what a checkpoint saved with an argparse Namespace holds
        torch.save({"state_dict": released_state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    elif kind == "truncated":
        write_released_checkpoint(path)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_text("<html>a share page</html>")
    rc, err = run_cli(knn_eval, common_argv(tiny["data"], path), capsys)
    line = one_error_line(err)
    assert rc == 2 and f"cannot load checkpoint '{path}'" in line and "weights_only" not in line
    assert {"a pickled class": "holds a pickled argparse.Namespace object", "truncated": "truncated",
            "text": "not a PyTorch checkpoint"}[kind] in line
