"""pretrain_cmd.py end to end on tiny synthetic data written here in the prepared on-disk format.

Acceptance points of the pretraining issue: outputs, kill-and-resume equality, atomic checkpoints,
non-finite loss, torchrun with two processes (gloo), and the five benchmark scripts.
"""
import glob
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import cmd_model
import pretrain_cmd
from engine import training
from helpers import N_CLIPS, TINY, cli, load, read_jsonl, sha256, write_split
from storage import checkpoints

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def one_thread():
    """The test machines are shared: one intra-op thread avoids oversubscription stalls."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def data_dir(tmp_path):
    return write_split(str(tmp_path / "data"))


class SimulatedKill(Exception):
    pass


# ---------------------------------------------------------------------------------------- parsing
def test_learning_rate_schedule_matches_released_rule():
    def lr(epoch, args):        # the schedule pretrain_cmd.start_epoch applies
        return training.learning_rate(args.lr, epoch, args.schedule, args.epochs if args.cos else None)

    args = pretrain_cmd.build_parser().parse_args(["--lr", "0.01", "--schedule", "351", "--epochs", "451"])
    for epoch, expected in [(0, 0.01), (350, 0.01), (351, 0.001), (450, 0.001)]:
        assert lr(epoch, args) == pytest.approx(expected)
    args = pretrain_cmd.build_parser().parse_args(["--schedule", "2", "4"])
    assert [lr(e, args) for e in range(6)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])
    args = pretrain_cmd.build_parser().parse_args(["--cos", "--epochs", "4", "--lr", "0.2"])
    assert [lr(e, args) for e in range(4)] == pytest.approx(
        [0.2, 0.1707107, 0.1, 0.0292893])


def test_released_flags_and_defaults():
    a = pretrain_cmd.build_parser().parse_args([])
    assert (a.lr, a.batch_size, a.momentum, a.weight_decay) == (0.01, 64, 0.9, 1e-4)
    assert (a.contrast_t, a.contrast_k, a.contrast_m, a.contrast_dim) == (0.07, 16384, 0.999, 128)
    assert (a.teacher_t, a.student_t, a.cmd_weight, a.save_freq) == (0.05, 0.1, 1.0, 10)
    assert a.encoder is None and a.hidden_size is None and a.skeleton_representation == "graph-based"
    overrides = cmd_model.encoder_overrides("bigru", a)
    assert overrides == {} and cmd_model.make_encoder_config("bigru", **overrides).hidden_size == 1024
    assert not a.mlp and not a.cos and a.resume == "" and a.start_epoch == 0
    a = pretrain_cmd.build_parser().parse_args(["--learning-rate", "0.5", "--weight-decay", "0.1", "-b", "8",
                                                "-p", "3", "-j", "2", "--skeleton-representation",
                                                "graph-based"])
    assert (a.lr, a.weight_decay, a.batch_size, a.print_freq, a.workers) == (0.5, 0.1, 8, 3, 2)


def test_unknown_benchmark_lists_valid_ones(tmp_path, capsys):
    rc = pretrain_cmd.main(["--pre-dataset", "ntu61", "--protocol", "cross_subject", "--data-dir",
                            str(tmp_path), "--checkpoint-path", str(tmp_path / "ck"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    for valid in ("ntu60 cross_subject", "ntu120 cross_setup", "pku_v2 cross_subject", "custom"):
        assert valid in err
    assert not os.path.exists(tmp_path / "ck")


def test_missing_data_file_named_at_startup(data_dir, tmp_path, capsys):
    os.remove(os.path.join(data_dir, "train_num_frame.npy"))
    rc = pretrain_cmd.main(cli(data_dir, str(tmp_path / "ck")))
    err = capsys.readouterr().err
    assert rc == 2 and os.path.join(data_dir, "train_num_frame.npy") in err and "frame count" in err
    # and a folder of the right benchmark name but no files
    rc = pretrain_cmd.main(["--pre-dataset", "ntu60", "--protocol", "cross_view", "--data-dir",
                            str(tmp_path / "none"), "--checkpoint-path", str(tmp_path / "ck"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and os.path.join(str(tmp_path / "none"), "ntu60", "xview", "train_data_joint.npy") in err


def test_malformed_data_file_reported(data_dir, tmp_path, capsys):
    np.save(os.path.join(data_dir, "train_data_joint.npy"), np.zeros((N_CLIPS, 3, 300, 25), np.float32))
    rc = pretrain_cmd.main(cli(data_dir, str(tmp_path / "ck")))
    err = capsys.readouterr().err
    assert rc == 2 and "train_data_joint.npy" in err and "expected (N, 3, T, 25, 2)" in err


def test_queue_size_must_be_a_multiple_of_the_batch(data_dir, tmp_path, capsys):
    rc = pretrain_cmd.main(cli(data_dir, str(tmp_path / "ck"), "--contrast-k", "10"))
    err = capsys.readouterr().err
    assert rc == 2 and "--contrast-k 10" in err and "--batch-size 4" in err


# ---------------------------------------------------------------------------------------- 1. outputs
def test_run_writes_checkpoints_logs_config_and_events(data_dir, tmp_path):
    ck = str(tmp_path / "ck")
    assert pretrain_cmd.main(cli(data_dir, ck, "--epochs", "2", "--log-dir", str(tmp_path / "tb"))) == 0
    names = sorted(os.listdir(ck))
    assert names == ["checkpoint_0000.pth.tar", "checkpoint_0001.pth.tar", "checkpoint_last.pth.tar",
                     "config.json", "log.jsonl"]
    steps_per_epoch = N_CLIPS // 4

    ckpt = load(os.path.join(ck, "checkpoint_0001.pth.tar"))        # weights_only=True
    assert ckpt["epoch"] == 2 and load(os.path.join(ck, "checkpoint_0000.pth.tar"))["epoch"] == 1
    assert isinstance(ckpt["args"], dict)
    assert ckpt["args"]["hidden_size"] == 16 and ckpt["args"]["encoder"] == "bigru"
    assert ckpt["encoder"] == "bigru" and ckpt["encoder_config"] == {  # what evaluation rebuilds from
        "hidden_size": 16, "num_layers": 3, "in_channels": 3, "num_joints": 25, "num_person": 2,
        "bidirectional": False}
    assert {"state_dict", "optimizer", "rng"} <= set(ckpt)
    model = cmd_model.CMD(hidden_size=16, K=24, topk=8, mlp=True)
    checkpoints.load_pretraining_weights(model, ckpt["state_dict"])          # strict, released key names
    sd = ckpt["state_dict"]
    for name in ("queue", "queue_motion", "queue_bone"):
        assert sd[name].shape == (128, 24)
        assert torch.allclose(sd[name].norm(dim=0), torch.ones(24), atol=1e-5)   # unit keys in every slot
    for name in ("queue_ptr", "queue_ptr_motion", "queue_ptr_bone"):
        assert int(sd[name]) == (2 * steps_per_epoch * 4) % 24
    last = load(os.path.join(ck, "checkpoint_last.pth.tar"))["state_dict"]
    assert all(torch.equal(last[k], sd[k]) for k in sd)
    # training moved the query encoder away from a fresh model with the same seed
    torch.manual_seed(3)
    fresh = cmd_model.CMD(hidden_size=16, K=24, topk=8, mlp=True).state_dict()
    assert not torch.allclose(fresh["encoder_q.fc.2.weight"], sd["encoder_q.fc.2.weight"])

    records = read_jsonl(os.path.join(ck, "log.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1] and all(r["steps"] == steps_per_epoch for r in records)
    for r in records:
        parts = r["loss_joint"] + r["loss_motion"] + r["loss_bone"] + r["loss_sim"]
        assert r["loss"] == pytest.approx(parts, rel=1e-5) and r["lr"] == pytest.approx(0.01)
        assert 0 <= r["top1_joint"] <= 100 and r["samples"] == steps_per_epoch * 4

    with open(os.path.join(ck, "config.json")) as f:
        config = json.load(f)
    assert config["hidden_size"] == 16 and config["seed"] == 3 and config["world_size"] == 1
    assert config["steps_per_epoch"] == steps_per_epoch and config["train_clips"] == N_CLIPS

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(events[0])
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss_joint", "loss_motion", "loss_bone", "loss_sim", "top1_joint", "top1_motion", "top1_bone",
            "lr"} <= tags
    logged = [e.value for e in acc.Scalars("loss_sim")]
    assert logged == pytest.approx([r["loss_sim"] for r in records], rel=1e-5)


# ---------------------------------------------------------------------------------------- 2. resume
@pytest.mark.parametrize("augment", ["numpy-in-loader", "batch-on-device"])
def test_kill_and_resume_equals_uninterrupted_run(data_dir, tmp_path, monkeypatch, capsys, augment):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    args = ("--epochs", "3", "--cos") + (("--batch-augment",) if augment == "batch-on-device" else ())
    assert pretrain_cmd.main(cli(data_dir, straight, *args)) == 0

    real_save = checkpoints.atomic_save
    saved = []

    def save_then_die(obj, path):          # the process dies right after epoch index 1 is on disk
        real_save(obj, path)
        saved.append(obj["epoch"])
        if obj["epoch"] == 2:
            raise SimulatedKill

    monkeypatch.setattr(checkpoints, "atomic_save", save_then_die)
    with pytest.raises(SimulatedKill):
        pretrain_cmd.main(cli(data_dir, resumed, *args))
    monkeypatch.setattr(checkpoints, "atomic_save", real_save)
    assert load(os.path.join(resumed, "checkpoint_last.pth.tar"))["epoch"] == 2
    capsys.readouterr()
    # resume with a loader worker: augmentations depend on (seed, epoch, clip), not on who computes them
    assert pretrain_cmd.main(cli(data_dir, resumed, *args, "--resume", "auto", "-j", "1")) == 0
    out = capsys.readouterr()
    assert "resumed from" in out.out + out.err and "optimizer" in out.out + out.err

    a = load(os.path.join(straight, "checkpoint_last.pth.tar"))
    b = load(os.path.join(resumed, "checkpoint_last.pth.tar"))
    assert a["epoch"] == b["epoch"] == 3
    assert set(a["state_dict"]) == set(b["state_dict"])
    # The resumed run repeats the same float32 operations in the same order, so on one machine the results
    # are bit-identical. rtol=1e-5 (atol=1e-6 for values near 0) only admits BLAS kernels whose rounding
    # depends on memory alignment (a few ulps, grown over the remaining steps); a resume that loses any
    # state (RNG, queues, momentum, learning rate) moves losses and weights by orders of magnitude more.
    tol = dict(rtol=1e-5, atol=1e-6)
    for key in a["state_dict"]:       # every weight, BatchNorm statistic, queue and pointer
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], **tol, msg=key)
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(momentum_a) == len(momentum_b) > 0
    for ma, mb in zip(momentum_a, momentum_b):
        torch.testing.assert_close(mb, ma, **tol)
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(b["optimizer"]["param_groups"][0]["lr"])
    log_a = read_jsonl(os.path.join(straight, "log.jsonl"))
    log_b = read_jsonl(os.path.join(resumed, "log.jsonl"))
    assert [r["epoch"] for r in log_b] == [0, 1, 2]
    assert [r["loss"] for r in log_b] == pytest.approx([r["loss"] for r in log_a], rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------------------- 3. atomic writes
def test_truncated_checkpoint_write_never_replaces_the_good_one(data_dir, tmp_path, monkeypatch):
    ck = str(tmp_path / "ck")
    real_torch_save = torch.save
    calls = []

    def crash_mid_write(obj, f, *a, **kw):   # the second checkpoint write dies halfway through the file
        calls.append(1)
        if len(calls) < 2:
            return real_torch_save(obj, f, *a, **kw)
        import io
        buffer = io.BytesIO()
        real_torch_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        raise SimulatedKill

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(SimulatedKill):
        pretrain_cmd.main(cli(data_dir, ck, "--epochs", "3"))
    monkeypatch.setattr(torch, "save", real_torch_save)

    last = os.path.join(ck, "checkpoint_last.pth.tar")
    assert os.path.exists(last + ".tmp")                      # the half-written file is there ...
    with pytest.raises(Exception):
        load(last + ".tmp")
    assert load(last)["epoch"] == 1                            # ... and the previous one is intact
    assert sha256(last) == sha256(os.path.join(ck, "checkpoint_0000.pth.tar"))
    assert checkpoints.find_latest_checkpoint(ck) == last
    assert pretrain_cmd.main(cli(data_dir, ck, "--epochs", "3", "--resume", "auto")) == 0
    assert load(last)["epoch"] == 3 and not os.path.exists(last + ".tmp")
    assert [r["epoch"] for r in read_jsonl(os.path.join(ck, "log.jsonl"))] == [0, 1, 2]


# ---------------------------------------------------------------------------------------- 4. NaN
def test_nan_in_data_is_refused_at_load_and_keeps_checkpoint(tmp_path, capsys):
    data, ck = str(tmp_path / "data"), str(tmp_path / "ck")
    write_split(data)
    assert pretrain_cmd.main(cli(data, ck, "--epochs", "1")) == 0
    last = os.path.join(ck, "checkpoint_last.pth.tar")
    good = sha256(last)
    write_split(data, nan=True)
    capsys.readouterr()
    rc = pretrain_cmd.main(cli(data, ck, "--epochs", "2", "--resume", "auto",
                               "--resume-allow-changes", "epochs"))
    err = capsys.readouterr().err
    assert rc == 2
    assert "non-finite values" in err and "first in clip 0 (clip000)" in err and "--allow-nonfinite" in err
    assert sha256(last) == good and load(last)["epoch"] == 1
    assert len(read_jsonl(os.path.join(ck, "log.jsonl"))) == 1


def test_nonfinite_loss_stops_naming_step_and_clips_and_keeps_checkpoint(tmp_path, capsys, monkeypatch):
    data, ck = write_split(str(tmp_path / "data")), str(tmp_path / "ck")
    assert pretrain_cmd.main(cli(data, ck, "--epochs", "1")) == 0
    last = os.path.join(ck, "checkpoint_last.pth.tar")
    good = sha256(last)
    real_views = pretrain_cmd.batch_views
    calls = []

    def poisoned_second_batch(cfg, batch, generator):      # the model sees NaN at step 1 of epoch 1
        views = real_views(cfg, batch, generator)
        calls.append(1)
        return tuple(torch.full_like(v, float("nan")) for v in views) if len(calls) == 2 else views

    monkeypatch.setattr(pretrain_cmd, "batch_views", poisoned_second_batch)
    capsys.readouterr()
    rc = pretrain_cmd.main(cli(data, ck, "--epochs", "2", "--resume", "auto",
                               "--resume-allow-changes", "epochs"))
    err = capsys.readouterr().err
    assert rc == 1
    assert "non-finite loss at epoch 1, step 1" in err and last in err
    from torch.utils.data import DistributedSampler         # the clips of that batch, recomputed here
    sampler = DistributedSampler(range(N_CLIPS), num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler.set_epoch(1)
    order = list(sampler)[4:8]
    assert "batch clips " + ", ".join(f"{i} (clip{i:03d})" for i in order) in err
    assert sha256(last) == good and load(last)["epoch"] == 1
    records = read_jsonl(os.path.join(ck, "log.jsonl"))        # the allowed change is recorded
    assert [r.get("event") for r in records] == [None, "resume_allowed_changes"]
    assert records[1]["changes"] == [{"field": "epochs", "checkpoint": 1, "now": 2}]


# ---------------------------------------------------------------------------------------- 5. torchrun
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_keep_equal_queues(data_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {REPO_ROOT!r})
        import torch
        torch.set_num_threads(1)
        import pretrain_cmd
        from cli import distributed
        result = pretrain_cmd.run(pretrain_cmd.build_parser().parse_args(sys.argv[1:]))
        queues = {{k: v for k, v in result.model.state_dict().items() if k.startswith("queue")}}
        torch.save(queues, os.path.join({str(out)!r}, "queues_rank%s.pt" % os.environ["RANK"]))
        distributed.cleanup_distributed()
    """))
    ck = str(tmp_path / "ck")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(worker),
           *cli(data_dir, ck, "--epochs", "3", "--max-steps", "2")]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    q0, q1 = load(out / "queues_rank0.pt"), load(out / "queues_rank1.pt")
    assert set(q0) == {"queue", "queue_motion", "queue_bone",
                       "queue_ptr", "queue_ptr_motion", "queue_ptr_bone"}
    for key in q0:
        assert torch.equal(q0[key], q1[key]), key
    assert int(q0["queue_ptr"]) == 2 * 4 % 24                    # 2 steps of the global batch 4 = 2 ranks x 2
    torch.manual_seed(3)                                          # the queues as initialised with --seed 3
    initial = cmd_model.CMD(hidden_size=16, K=24, topk=8, mlp=True).state_dict()
    assert not torch.allclose(q0["queue"][:, :8], initial["queue"][:, :8])      # 8 new keys written ...
    assert torch.equal(q0["queue"][:, 8:], initial["queue"][:, 8:])             # ... and nothing else
    records = read_jsonl(os.path.join(ck, "log.jsonl"))          # only rank 0 writes
    assert len(records) == 1 and records[0]["steps"] == 2
    with open(os.path.join(ck, "config.json")) as f:
        config = json.load(f)
    assert config["world_size"] == 2 and config["per_process_batch"] == 2


# ---------------------------------------------------------------------------------------- 6. scripts
SCRIPTS = {
    "pretrain_ntu60_xsub.sh": ("ntu60", "cross_subject", "ntu60/xsub", 451, [351]),
    "pretrain_ntu60_xview.sh": ("ntu60", "cross_view", "ntu60/xview", 451, [351]),
    "pretrain_ntu120_xsub.sh": ("ntu120", "cross_subject", "ntu120/xsub", 451, [351]),
    "pretrain_ntu120_xset.sh": ("ntu120", "cross_setup", "ntu120/xsetup", 451, [351]),
    "pretrain_pku2_xsub.sh": ("pku_v2", "cross_subject", "pku_v2/xsub", 1001, [801]),
}


def recorded_argv(tmp_path, script, extra=(), nproc=1):
    """The command a script would run, recorded by a stand-in for the Python interpreter."""
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGV_OUT"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), ARGV_OUT=str(tmp_path / "argv.txt"), NPROC=str(nproc))
    subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", script), *extra], env=env, check=True,
                   timeout=30)
    return (tmp_path / "argv.txt").read_text().splitlines()


def test_benchmark_scripts_pass_the_released_recipe(tmp_path):
    for script, (name, protocol, sub, epochs, schedule) in SCRIPTS.items():
        argv = recorded_argv(tmp_path, script, ["--resume", "auto"])
        assert os.path.samefile(argv[0], os.path.join(REPO_ROOT, "pretrain_cmd.py"))
        a = pretrain_cmd.build_parser().parse_args(argv[1:])
        assert (a.pre_dataset, a.protocol, a.epochs, a.schedule) == (name, protocol, epochs, schedule)
        assert (a.lr, a.batch_size, a.teacher_t, a.student_t, a.topk, a.mlp, a.contrast_t, a.contrast_k) == \
            (0.01, 64, 0.05, 0.1, 8192, True, 0.07, 16384)
        assert a.contrast_m == 0.999 and a.cmd_weight == 1.0 and not a.cos
        assert a.skeleton_representation == "graph-based" and a.encoder is None   # the released value: BiGRU
        assert a.checkpoint_path == f"./checkpoints/{name}_{protocol}"
        assert a.resume == "auto"   # "$@" forwarded
        assert dataset_folder(a) == os.path.join(".", "data", sub)
    argv = recorded_argv(tmp_path, "pretrain_ntu60_xsub.sh", nproc=2)
    assert argv[:4] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def dataset_folder(args):
    from readers import dataset_table
    return dataset_table.resolve_benchmark(args.pre_dataset, args.protocol, args.data_dir).folder


def test_benchmark_script_runs_on_a_tiny_prepared_dataset(tmp_path):
    write_split(str(tmp_path / "data" / "ntu60" / "xsub"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", os.path.join(REPO_ROOT, "scripts", "pretrain_ntu60_xsub.sh"), "--device", "cpu",
         "--max-steps", "1", "--hidden-size", "16", "--batch-size", "4", "--contrast-k", "16", "--topk", "8",
         "-j", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "checkpoints" / "ntu60_cross_subject"       # from the cwd: ./checkpoints, ./data
    with open(folder / "config.json") as f:
        config = json.load(f)
    assert config["data_folder"] == os.path.join(".", "data", "ntu60", "xsub")
    assert (config["epochs"], config["schedule"], config["lr"], config["mlp"]) == (451, [351], 0.01, True)
    assert config["steps_per_epoch"] == N_CLIPS // 4
    records = read_jsonl(folder / "log.jsonl")
    assert len(records) == 1 and records[0]["steps"] == 1 and records[0]["truncated"]
    ckpt = load(folder / "checkpoint_0000.pth.tar")
    assert ckpt["epoch"] == 1 and int(ckpt["state_dict"]["queue_ptr"]) == 4


# ---------------------------------------------------------------------------------------- real files
XSUB_TRAIN_PERFORMERS = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46,
                         47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86,
                         89, 91, 92, 93, 94, 95, 97, 98, 100, 103}   # SPEC s.6


def test_pretrains_on_real_ntu_files(shared_data, tmp_path):
    """Raw NTU .skeleton files -> prepare_data.py -> one pretraining epoch on the cross-subject train part."""
    import prepare_data
    raw = os.path.join(shared_data, "ntu_samples")
    prepare_data.main(["ntu60", "--raw-dir", raw, "--out", str(tmp_path / "data" / "ntu60"), "--workers", "1",
                       "--benchmarks", "xsub"])
    train = [f for f in os.listdir(raw) if int(f[9:12]) in XSUB_TRAIN_PERFORMERS]   # SsssCcccPppp...
    ck = str(tmp_path / "ck")
    args = ["--pre-dataset", "ntu60", "--protocol", "cross_subject", "--data-dir", str(tmp_path / "data"),
            "--checkpoint-path", ck, "--epochs", "1", *TINY, "--contrast-k", "12"]
    assert pretrain_cmd.main(args) == 0
    with open(os.path.join(ck, "config.json")) as f:
        config = json.load(f)
    assert config["train_clips"] == len(train) and config["steps_per_epoch"] == len(train) // 4
    record = read_jsonl(os.path.join(ck, "log.jsonl"))[0]
    assert record["steps"] == len(train) // 4 and np.isfinite(record["loss"])
    ckpt = load(os.path.join(ck, "checkpoint_0000.pth.tar"))
    assert int(ckpt["state_dict"]["queue_ptr"]) == (len(train) // 4) * 4 % 12


# ---------------------------------------------------------------------------------------- speed issue
def one_epoch(run):
    """Epoch 0 of a prepared run, as pretrain_cmd.train runs it."""
    pretrain_cmd.start_epoch(run, 0)
    return pretrain_cmd.train_one_epoch(run.cfg, run.data, run.train_model, run.optimizer, run.scaler, 0,
                                        None)


HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")


def test_no_host_read_per_step_only_at_the_print_interval(tmp_path, monkeypatch):
    """Statistics stay on the device: tensor values reach Python only in `_read_statistics` (with the
    check of the weights), which runs at step 0, every --print-freq steps and at the epoch's last step
    (here: twice in 6 steps)."""
    data = write_split(str(tmp_path / "data"), n=24)
    args = pretrain_cmd.build_parser().parse_args(cli(data, str(tmp_path / "ck"), "--epochs", "1",
                                                      "--print-freq", "100", "--threads", "1"))
    run = pretrain_cmd.prepare(args)
    assert len(run.data.loader) == 6
    reads, inside, read_calls = [], [False], []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, _name=name, **kw):
            if started[0] and not inside[0]:
                reads.append(_name)
            return _original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counting)
    original_read = pretrain_cmd.read_statistics
    original_views = pretrain_cmd.batch_views
    started = [False]  # reads when the loader starts an epoch (sampler order, worker seeds) are per epoch

    def views(*a, **kw):
        started[0] = True
        return original_views(*a, **kw)
    monkeypatch.setattr(pretrain_cmd, "batch_views", views)

    def read(cfg, data, meters, epoch, step, *rest):      # rest: last checkpoint, model, divergence check
        inside[0] = True
        read_calls.append(step)
        try:
            return original_read(cfg, data, meters, epoch, step, *rest)
        finally:
            inside[0] = False
    monkeypatch.setattr(pretrain_cmd, "read_statistics", read)
    record, steps = one_epoch(run)
    assert steps == 6 and read_calls == [0, 5]
    assert reads == [], f"host reads during training steps: {reads}"
    assert all(np.isfinite(record[name]) for name in pretrain_cmd.STAT_NAMES)


def test_progress_means_cover_all_steps_so_far(tmp_path, monkeypatch):
    """The epoch record is the mean over every step (not the last interval's or a stale value)."""
    data = write_split(str(tmp_path / "data"), n=16)
    args = pretrain_cmd.build_parser().parse_args(cli(data, str(tmp_path / "ck"), "--epochs", "1",
                                                      "--print-freq", "3", "--threads", "1"))
    run = pretrain_cmd.prepare(args)
    losses = []
    original = cmd_model.CMDOutput.contrastive_losses

    def recording(self):
        ce = original(self)
        losses.append(float(sum(ce.values()).detach() + self.loss_cmd.detach()))
        return ce
    monkeypatch.setattr(cmd_model.CMDOutput, "contrastive_losses", recording)
    record, steps = one_epoch(run)
    assert steps == 4 == len(losses)
    assert record["loss"] == pytest.approx(sum(losses) / 4, rel=1e-5)


def test_amp_bfloat16_close_to_float32_for_a_few_steps(data_dir, tmp_path, monkeypatch):
    """--amp with bfloat16 autocast (forced on this CPU) against float32 from the same seed: bfloat16 keeps
    8 significant bits (relative rounding 2^-8 = 0.4%), so after 2 SGD steps the per-epoch loss statistics
    agree to 3% of their size and the weights stay float32."""
    from cli import devices
    records = {}
    for amp in (False, True):
        monkeypatch.setattr(devices, "amp_dtype", lambda device: torch.bfloat16)
        ck = str(tmp_path / f"ck{amp}")
        args = pretrain_cmd.build_parser().parse_args(cli(data_dir, ck, "--epochs", "1", "--threads", "1",
                                                          *(["--amp"] if amp else [])))
        run = pretrain_cmd.prepare(args)
        assert (run.cfg.amp_dtype is not None) == amp and not run.scaler.is_enabled()
        record, steps = one_epoch(run)
        assert steps == 2
        records[amp] = record
        assert all(p.dtype == torch.float32 for p in run.model.parameters())
    for name in ("loss", "loss_joint", "loss_motion", "loss_bone", "loss_sim"):
        assert records[True][name] == pytest.approx(records[False][name], rel=3e-2), name


def test_training_sgd_is_the_released_sgd_update():
    """training.sgd (fused where the device has the kernel) against torch.optim.SGD's default loop, with
    momentum, weight decay, a frozen parameter and a changing learning rate."""
    torch.manual_seed(0)
    params = [torch.randn(33, 17), torch.randn(17), torch.randn(5, 3)]
    runs = []
    for make in (training.sgd, lambda p, lr, **kw: torch.optim.SGD(p, lr, foreach=False, **kw)):
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        ps[2].requires_grad_(False)
        opt = make(ps, 0.1, momentum=0.9, weight_decay=1e-4)
        for step in range(4):
            for i, p in enumerate(ps[:2]):
                p.grad = torch.sin(p.detach() * (step + 1) + i)
            training.set_learning_rate(opt, 0.1 / (step + 1))
            opt.step()
        runs.append(ps)
    for a, b in zip(*runs):
        # float32 steps; the fused kernel may round once where the loop rounds twice
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    assert torch.equal(runs[0][2], params[2])
