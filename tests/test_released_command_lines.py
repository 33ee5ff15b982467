"""The released scripts' command lines, with our script names, parse and run what the released commands run.

Each RELEASED_* list is a command line of the released CMD scripts (pretraining; linear evaluation;
semi-supervised with `--protocol cross_subject_semi` / `cross_view_semi` and `--data-ratio`; transfer with
`pku_v2 cross_subject_semi --data-ratio 1.0`; retrieval with `--lr` and `--knn-neighbours`) written out
flag by flag. `small()` then swaps in small sizes flag by flag (it fails if the flag is not in the line)
and appends what a test machine needs (--data-dir, --device cpu, -j 0, --seed, an encoder size).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import action_classification as ac
import cmd_model
import knn_eval
import pretrain_cmd
from helpers import one_torch_thread, write_benchmark  # noqa: F401  (autouse fixture)
from storage import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = "./checkpoints/ntu60_xsub/checkpoint_0450.pth.tar"
RELEASED_PRETRAIN = ["--lr", "0.01", "--batch-size", "64", "--teacher-t", "0.05", "--student-t", "0.1",
                     "--topk", "8192", "--mlp", "--contrast-t", "0.07", "--contrast-k", "16384",
                     "--checkpoint-path", "./checkpoints/ntu60_xsub", "--schedule", "351", "--epochs", "451",
                     "--pre-dataset", "ntu60", "--skeleton-representation", "graph-based",
                     "--protocol", "cross_subject"]
RELEASED_LINEAR = ["--lr", "0.1", "--batch-size", "64", "--pretrained", CKPT, "--finetune-dataset", "ntu60",
                   "--protocol", "cross_subject", "--finetune-skeleton-representation", "graph-based"]
RELEASED_SEMI = ["--lr", "0.01", "--batch-size", "64", "--pretrained", CKPT, "--finetune-dataset", "ntu60",
                 "--protocol", "cross_subject_semi", "--data-ratio", "0.01",
                 "--finetune-skeleton-representation", "graph-based"]
RELEASED_TRANSFER = ["--lr", "0.01", "--batch-size", "64", "--pretrained", CKPT,
                     "--finetune-dataset", "pku_v2",
                     "--protocol", "cross_subject_semi", "--data-ratio", "1.0",
                     "--finetune-skeleton-representation", "graph-based"]
RELEASED_RETRIEVAL = ["--lr", "0.1", "--batch-size", "64", "--knn-neighbours", "1", "--pretrained", CKPT,
                      "--finetune-dataset", "ntu60", "--protocol", "cross_subject",
                      "--finetune-skeleton-representation", "graph-based"]
ENCODER_SIZES = {"bigru": ["--hidden-size", "16"],
                 "stgcn": ["--encoder", "stgcn", "--stgcn-base-channels", "4", "--hidden-size", "16"]}


def small(argv, replace, *extra):
    """`argv` with the value after each flag of `replace` swapped, then `extra` appended."""
    argv = list(argv)
    for flag, value in replace.items():
        assert flag in argv, f"{flag} is not in the released command line"
        argv[argv.index(flag) + 1] = str(value)
    return argv + list(extra)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """ntu60 xsub / xview and pku_v2 xsub benchmarks in the prepared format, as --data-dir sees them."""
    root = tmp_path_factory.mktemp("released")
    for folder in ("ntu60/xsub", "ntu60/xview", "pku_v2/xsub"):
        write_benchmark(root / "data" / folder, n_train=24, n_val=8)
    return root


@pytest.fixture(scope="module")
def pretrained(root):
    """The released pretraining line, small, run once per encoder: {encoder: checkpoint path}."""
    paths = {}
    for encoder, sizes in ENCODER_SIZES.items():
        ck = root / f"ck_{encoder}"
        argv = small(RELEASED_PRETRAIN, {"--batch-size": 4, "--topk": 8, "--contrast-k": 16, "--epochs": 1,
                                         "--checkpoint-path": ck},
                     *sizes, "--data-dir", str(root / "data"), "--device", "cpu", "-j", "0", "--seed", "0",
                     "--max-steps", "2")
        assert pretrain_cmd.main(argv) == 0
        paths[encoder] = str(ck / "checkpoint_0000.pth.tar")
    return paths


def data_flags(root, output):
    return ["--data-dir", str(root / "data"), "--device", "cpu", "-j", "0", "--seed", "0",
            "--output", str(output)]


# ------------------------------------------------------------------------------------------- pretraining
def test_released_pretraining_line_is_the_bigru_run():
    args = pretrain_cmd.build_parser().parse_args(RELEASED_PRETRAIN)
    spec = pretrain_cmd.encoder_from_args(args)
    name, config = spec.encoder, spec.config
    assert name == "bigru" and spec.layout.name == "ntu"
    assert (config.hidden_size, config.num_layers, config.gru_mode) == (1024, 3, "stepwise")
    assert (args.lr, args.batch_size, args.topk, args.contrast_k, args.epochs, args.schedule, args.mlp) == \
        (0.01, 64, 8192, 16384, 451, [351], True)
    args = pretrain_cmd.build_parser().parse_args(RELEASED_PRETRAIN + ["--encoder", "stgcn"])
    assert pretrain_cmd.encoder_from_args(args).encoder == "stgcn"


@pytest.mark.parametrize("encoder", sorted(ENCODER_SIZES))
def test_pretraining_records_the_encoder(pretrained, encoder):
    ckpt = checkpoints.load_checkpoint(pretrained[encoder])
    assert ckpt["encoder"] == encoder and ckpt["encoder_config"]["hidden_size"] == 16
    if encoder == "stgcn":
        assert ckpt["encoder_config"]["base_channels"] == 4
        assert "encoder_q.st_gcn_networks.9.gcn.conv.weight" in ckpt["state_dict"]


def test_seq_based_is_refused_with_one_line(root, capsys):
    argv = small(RELEASED_PRETRAIN, {"--skeleton-representation": "seq-based"},
                 "--data-dir", str(root / "data"))
    assert pretrain_cmd.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seq-based is not supported" in err and "graph-based" in err
    line = small(RELEASED_LINEAR, {"--finetune-skeleton-representation": "seq-based", "--pretrained": "none"},
                 "--data-dir", str(root / "data"))
    with pytest.raises(ValueError, match="seq-based is not supported"):
        ac.main(line)


# ------------------------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("encoder", sorted(ENCODER_SIZES))
def test_released_linear_and_retrieval_lines_rebuild_the_encoder(root, pretrained, encoder, tmp_path, capsys):
    record = {k: checkpoints.load_checkpoint(pretrained[encoder])[k] for k in ("encoder", "encoder_config")}
    linear = ac.main(small(RELEASED_LINEAR, {"--batch-size": 8, "--pretrained": pretrained[encoder]},
                           "--epochs", "1", *data_flags(root, tmp_path / "linear.json")))
    assert linear["mode"] == "linear" and linear["model_config_origin"] == "checkpoint record"
    assert {k: linear[k] for k in record} == record
    assert (linear["benchmark"], linear["protocol"], linear["num_class"]) == ("ntu60", "cross_subject", 60)

    knn = knn_eval.main(small(RELEASED_RETRIEVAL, {"--batch-size": 8, "--pretrained": pretrained[encoder]},
                              *data_flags(root, tmp_path / "knn.json")))
    assert "--lr 0.1 is ignored" in capsys.readouterr().out
    assert {k: knn[k] for k in record} == record and set(knn["metrics"]) == {"top1_k1"}
    assert json.loads((tmp_path / "knn.json").read_text())["encoder"] == encoder


@pytest.mark.parametrize("protocol", ["cross_subject_semi", "cross_view_semi"])
def test_released_semi_supervised_line_fine_tunes_that_split(root, pretrained, protocol, tmp_path):
    out = tmp_path / "semi"
    record = ac.main(small(RELEASED_SEMI, {"--batch-size": 8, "--pretrained": pretrained["bigru"],
                                           "--protocol": protocol, "--data-ratio": 0.25},
                           "--epochs", "1", "--checkpoint-path", str(out),
                           *data_flags(root, tmp_path / "s.json")))
    assert record["protocol"] == protocol[:-len("_semi")] and record["mode"] == "semi-supervised"
    assert record["subset"]["ratio"] == 0.25 and record["num_train"] == 6
    assert record["args"]["finetune"] and record["args"]["lr"] == 0.01
    assert record["args"]["released_protocol"] == protocol
    _assert_whole_encoder_trained(pretrained["bigru"], out)


@pytest.mark.parametrize("encoder", sorted(ENCODER_SIZES))
def test_released_transfer_line_fine_tunes_on_pku_v2(root, pretrained, encoder, tmp_path):
    out = tmp_path / "transfer"
    record = ac.main(small(RELEASED_TRANSFER, {"--batch-size": 8, "--pretrained": pretrained[encoder]},
                           "--epochs", "1", "--checkpoint-path", str(out),
                           *data_flags(root, tmp_path / "t.json")))
    assert (record["benchmark"], record["protocol"], record["num_class"]) == ("pku_v2", "cross_subject", 41)
    assert record["mode"] == "finetune" and record["subset"] is None and record["num_train"] == 24
    assert record["encoder"] == encoder
    _assert_whole_encoder_trained(pretrained[encoder], out)


def _assert_whole_encoder_trained(pretrained_path, out):
    """Every query-encoder tensor of the joint stream moved (weights and BatchNorm statistics: train mode)."""
    before = checkpoints.load_checkpoint(pretrained_path)["state_dict"]
    after = checkpoints.load_checkpoint(os.path.join(out, checkpoints.LAST_CHECKPOINT))
    assert after["encoder"] == checkpoints.load_checkpoint(pretrained_path)["encoder"]
    after = after["state_dict"]
    kept = [k for k in after if k.startswith("encoder_q.") and ".fc." not in k and k in before
            and after[k].is_floating_point() and not k.endswith(".A")]
    assert kept and all(not torch.equal(after[k], before[k]) for k in kept), \
        [k for k in kept if torch.equal(after[k], before[k])]


# ------------------------------------------------------------------------------------------- our scripts
def _dry_run(script, *args):
    env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1"}
    out = subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [line[2:].split() for line in out.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("script", ["linear_eval.sh", "knn_eval.sh", "semi_supervised.sh",
                                    "transfer_pku2.sh"])
def test_our_evaluation_scripts_pass_graph_based(script):
    commands = _dry_run(script)
    assert commands
    for cmd in commands:
        assert cmd[cmd.index("--finetune-skeleton-representation") + 1] == "graph-based"
        assert "--encoder" not in cmd and "--hidden-size" not in cmd     # the checkpoint decides


def test_stgcn_recipe_script(tmp_path):
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGV_OUT"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), ARGV_OUT=str(tmp_path / "argv.txt"), NPROC="1")
    script = os.path.join(REPO, "scripts", "pretrain_ntu60_xsub_stgcn.sh")
    subprocess.run(["bash", script, "--resume", "auto"], env=env, check=True, timeout=30)
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    args = pretrain_cmd.build_parser().parse_args(argv[1:])
    spec = pretrain_cmd.encoder_from_args(args)
    name, config = spec.encoder, spec.config
    assert name == "stgcn" and (config.base_channels, config.hidden_size) == (16, 256)
    assert (args.lr, args.batch_size, args.contrast_k, args.epochs, args.schedule) == \
        (0.1, 128, 32768, 300, [250])
    assert (args.topk, args.mlp, args.teacher_t, args.student_t, args.contrast_t) == \
        (8192, True, 0.05, 0.1, 0.07)
    assert args.skeleton_representation == "graph-based" and args.resume == "auto"
    assert args.checkpoint_path == "./checkpoints_stgcn/ntu60_cross_subject" and args.pre_dataset == "ntu60"
    assert args.contrast_k % args.batch_size == 0
    assert cmd_model.ENCODERS[name].Config is type(config)
