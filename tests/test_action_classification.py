"""Linear evaluation / fine-tuning (action_classification.py) on a tiny benchmark written by the test."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch

import action_classification as ac
import cmd_model
import dataset
import evaluation
from engine import training
from storage import checkpoints
from helpers import (HIDDEN, NUM_CLASS, common_argv, one_torch_thread,  # noqa: F401  (autouse fixture)
                     released_state_dict, write_benchmark, write_released_checkpoint)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data_dir = write_benchmark(root / "data")
    ckpt = write_released_checkpoint(root / "checkpoint_0450.pth.tar", module_prefix=True)
    return {"root": root, "data": data_dir, "ckpt": ckpt}


def _args(data_dir, pretrained, *extra):
    return ac.build_parser().parse_args(common_argv(data_dir, pretrained, *extra))


def _build(tiny, *extra, view="joint"):
    args = _args(tiny["data"], tiny["ckpt"], "--view", view, *extra)
    source = evaluation.load_pretrained_source(args.pretrained)
    model, config = evaluation.build_classifier(args, NUM_CLASS, source, torch.device("cpu"))
    return args, model, config


# ---------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("module_prefix", [False, True])
def test_released_checkpoint_loads_query_encoders(tmp_path, tiny, module_prefix):
    path = write_released_checkpoint(tmp_path / "ck.pth.tar", module_prefix=module_prefix)
    args = _args(tiny["data"], path)
    source = evaluation.load_pretrained_source(path)
    model, config = evaluation.build_classifier(args, NUM_CLASS, source, torch.device("cpu"))
    # no encoder record in a released file: the BiGRU sizes come from the weight shapes
    assert config["encoder"] == "bigru" and config["origin"] == "checkpoint weights"
    assert (config["encoder_config"].hidden_size, config["encoder_config"].num_layers) == (HIDDEN, 3)
    reference = released_state_dict()
    loaded = model.state_dict()
    compared = 0
    for key, value in loaded.items():
        if key.split(".")[1] == "fc":
            assert value.shape[0] == NUM_CLASS            # new classification heads
            continue
        assert key.split(".")[0] in ("encoder_q", "encoder_q_motion", "encoder_q_bone")
        assert torch.equal(value, reference[key]), key
        compared += 1
    # 3 query encoders x (5 input_norm tensors + 3 layers x 2 directions x 4 GRU tensors)
    assert compared == 3 * (5 + 24)


def test_missing_key_is_named(tmp_path, tiny):
    path = write_released_checkpoint(tmp_path / "ck.pth.tar", module_prefix=True,
                                     drop_key="module.encoder_q_bone.encoder.gru.bias_hh_l2_reverse")
    with pytest.raises(KeyError, match=r"encoder_q_bone\.encoder\.gru\.bias_hh_l2_reverse"):
        ac.main(common_argv(tiny["data"], path, "--epochs", "1"))


def test_missing_file_fails_and_names_it(tiny):
    missing = os.path.join(str(tiny["root"]), "nowhere", "checkpoint_0450.pth.tar")
    with pytest.raises(FileNotFoundError, match="nowhere/checkpoint_0450.pth.tar.*--pretrained none"):
        ac.main(common_argv(tiny["data"], missing, "--epochs", "1"))


def test_hidden_size_disagreeing_with_weights_fails(tiny):
    with pytest.raises(ValueError, match="hidden_size = 16.*32"):
        _build(tiny, "--hidden-size", "32")


def test_our_checkpoint_record_gives_the_model(tmp_path, tiny):
    sd = released_state_dict(module_prefix=False)
    path = tmp_path / "ours.pth.tar"
    record = {"encoder": "bigru", "encoder_config": {"hidden_size": HIDDEN, "num_layers": 3, "in_channels": 3,
                                                     "num_joints": 25, "num_person": 2}}
    torch.save({"epoch": 3, "state_dict": sd, "args": {"mlp": True}, **record}, path)
    args = _args(tiny["data"], path)
    source = evaluation.load_pretrained_source(str(path))
    _, config = evaluation.build_classifier(args, NUM_CLASS, source, torch.device("cpu"))
    assert config["encoder_config"].hidden_size == HIDDEN and config["origin"] == "checkpoint record"
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and source.epoch == 3
    # a command line that contradicts the record is refused, naming both values
    with pytest.raises(ValueError, match="hidden_size = 16 .*--hidden-size 32 was given"):
        evaluation.resolve_model_config(_args(tiny["data"], path, "--hidden-size", "32"), source)
    with pytest.raises(ValueError, match="holds encoder 'bigru'.*--encoder stgcn"):
        evaluation.resolve_model_config(_args(tiny["data"], path, "--encoder", "stgcn"), source)
    with pytest.raises(ValueError, match="--stgcn-base-channels 8 is a flag of encoder stgcn, not of 'bigru"):
        evaluation.resolve_model_config(_args(tiny["data"], path, "--stgcn-base-channels", "8"), source)
    # repeating the record, and run-time options, are fine
    same = _args(tiny["data"], path, "--hidden-size", "16", "--gru-mode", "loop")
    spec = evaluation.resolve_model_config(same, source)
    assert spec.config.gru_mode == "loop" and spec.origin == "checkpoint record"
    with pytest.raises(ValueError, match="seq-based is not supported.*motion and bone"):
        evaluation.resolve_model_config(_args(tiny["data"], path, "--finetune-skeleton-representation",
                                              "seq-based"), source)


# ---------------------------------------------------------------------------------------------- modes


def _one_epoch(tiny, linear, view="joint"):
    args, model, _ = _build(tiny, view=view)
    params = ac.prepare_heads(model, linear)
    heads_before = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[1] == "fc"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    split = dataset.load_split(tiny["data"], "train")
    loader = evaluation.make_loader(split, train=True, batch_size=8, workers=0, device=torch.device("cpu"),
                                    shuffle=True)
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    ac.train_one_epoch(model, loader, optimizer, torch.device("cpu"), linear, epoch=0)
    return model, before, heads_before


def test_linear_mode_trains_only_the_heads(tiny):
    model, before, _ = _one_epoch(tiny, linear=True)
    after = model.state_dict()
    trained = {k for k in after if not torch.equal(after[k], before[k])}
    assert trained == {"encoder_q.fc.weight", "encoder_q.fc.bias"}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["encoder_q.fc.weight", "encoder_q.fc.bias"]
    # every encoder tensor, BatchNorm statistics included, is bit-identical
    assert all(torch.equal(after[k], before[k]) for k in before if ".fc." not in k)
    assert int(after["encoder_q.input_norm.num_batches_tracked"]) == 1234


def test_heads_reinitialised_small_normal(tiny):
    _, model, _ = _build(tiny)
    ac.prepare_heads(model, linear=True)
    w, b = model.encoder_q.fc.weight, model.encoder_q.fc.bias
    assert torch.count_nonzero(b) == 0
    assert 0.005 < w.std().item() < 0.015 and abs(w.mean().item()) < 0.005


def test_finetune_mode_changes_the_encoder(tiny):
    model, before, _ = _one_epoch(tiny, linear=False)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert {"encoder_q.encoder.gru.weight_ih_l0", "encoder_q.encoder.gru.weight_hh_l2_reverse"} <= changed
    assert "encoder_q.input_norm.running_mean" in changed          # train mode: BatchNorm statistics move
    assert not any(k.startswith(("encoder_q_motion.", "encoder_q_bone.")) for k in changed)   # unused streams


def test_sanity_check_catches_a_moved_statistic(tiny):
    _, model, _ = _build(tiny)
    ac.prepare_heads(model, linear=True)
    snapshot = ac.frozen_snapshot(model)
    # everything but the view's own head: the other streams' heads do not train either
    assert not any(k.startswith("encoder_q.fc.") for k in snapshot)
    assert {"encoder_q.input_norm.running_mean", "encoder_q_motion.fc.weight"} <= set(snapshot)
    ac.sanity_check(model, snapshot)
    model.encoder_q.input_norm.running_mean.add_(1e-3)
    with pytest.raises(RuntimeError, match="encoder_q.input_norm.running_mean"):
        ac.sanity_check(model, snapshot)


def test_fused_view_is_the_mean_of_the_stream_logits(tiny):
    _, model, _ = _build(tiny, view="all")
    model.eval()
    x = torch.randn(4, 3, 16, 25, 2)
    streams = model.stream_logits(x)
    assert list(streams) == list(cmd_model.MODALITIES)
    torch.testing.assert_close(torch.stack(list(streams.values())).mean(0), model(x))
    assert len(ac.prepare_heads(model, linear=True)) == 6           # three heads, weight and bias each


def test_learning_rate_schedule():
    assert [training.learning_rate(0.1, e, [50, 70]) for e in (0, 49, 50, 69, 70, 79)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


# ---------------------------------------------------------------------------------------------- subsets


def test_subset_seed_reproducible_and_class_balanced():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    np.random.default_rng(0).shuffle(labels)
    a, seed_a = ac.select_training_subset(labels, 0.1, 3, class_balanced=False)
    b, _ = ac.select_training_subset(labels, 0.1, 3, class_balanced=False)
    c, _ = ac.select_training_subset(labels, 0.1, 4, class_balanced=False)
    assert seed_a == 3 and len(a) == 10 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == len(a) and a.max() < len(labels)
    balanced, _ = ac.select_training_subset(labels, 0.1, 3, class_balanced=True)
    counts = np.bincount(labels[balanced], minlength=3)
    assert counts.tolist() == [5, 3, 2]                               # round(0.1 * n_c) of each class
    tiny_share, _ = ac.select_training_subset(labels, 0.01, 3, class_balanced=True)
    assert np.bincount(labels[tiny_share], minlength=3).tolist() == [1, 1, 1]   # at least one each
    full, seed = ac.select_training_subset(labels, 1.0, 3, class_balanced=False)
    assert full is None and seed is None
    _, drawn = ac.select_training_subset(labels, 0.1, None, class_balanced=False)
    assert isinstance(drawn, int)                                     # unseeded: a fresh seed, recorded


def test_subset_through_the_cli(tiny, tmp_path):
    def run(seed, name):
        out = tmp_path / f"{name}.json"
        ac.main(common_argv(tiny["data"], "none", "--hidden-size", "8", "--epochs", "1",
                            "--data-ratio", "0.25", "--subset-seed", str(seed), "--output", str(out)))
        return json.loads(out.read_text())["subset"]

    first, again, other = run(3, "a"), run(3, "b"), run(4, "c")
    assert first["size"] == 6 and first["seed"] == 3 and first["seed_given"]
    assert first["indices_sha256"] == again["indices_sha256"] != other["indices_sha256"]
    labels = dataset.load_split(tiny["data"], "train").labels
    expected = dataset.labelled_subset(labels, 0.25, 3)
    assert first["indices_sha256"] == ac.indices_digest(expected)


# ---------------------------------------------------------------------------------------------- end to end


def test_linear_run_end_to_end(tiny, tmp_path):
    out, run_dir = tmp_path / "linear.json", tmp_path / "run"
    record = ac.main(common_argv(tiny["data"], tiny["ckpt"], "--epochs", "2", "--eval-freq", "1",
                                 "--seed", "0", "--output", str(out), "--checkpoint-path", str(run_dir)))
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(record, default=str))
    for field in ("benchmark", "protocol", "view", "checkpoint", "checkpoint_sha256", "metrics", "epochs",
                  "seed", "time"):
        assert field in saved, field
    assert (saved["benchmark"], saved["protocol"], saved["view"], saved["evaluation"]) == \
        ("custom", "cross_subject", "joint", "linear")
    assert saved["checkpoint"] == tiny["ckpt"] and saved["epochs"] == 2 and saved["seed"] == 0
    with open(tiny["ckpt"], "rb") as f:
        assert saved["checkpoint_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert saved["metrics"]["last"]["epoch"] == 2 and saved["time"]["seconds"] >= 0
    assert saved["metrics"]["best"]["top1"] == max(h["test_top1"] for h in saved["history"])

    # the frozen encoders at the end are exactly the released file's query encoders
    final = checkpoints.load_checkpoint(str(run_dir / checkpoints.LAST_CHECKPOINT))
    assert final["epoch"] == 2
    reference = released_state_dict()
    for key, value in final["state_dict"].items():
        if ".fc." not in key:
            assert torch.equal(value, reference[key]), key

    # the reported last-epoch accuracy, recomputed here from the saved model with a plain loop
    model = cmd_model.CMDClassifier(NUM_CLASS, hidden_size=HIDDEN)
    model.load_state_dict(final["state_dict"])
    model.eval()
    split = dataset.load_split(tiny["data"], "val")
    feeder = dataset.DownstreamFeeder(split, train=False)
    with torch.no_grad():
        preds = [int(model(feeder[i][0][None]).argmax()) for i in range(len(feeder))]
    top1 = 100.0 * np.mean(np.array(preds) == split.labels)
    assert saved["metrics"]["last"]["top1"] == pytest.approx(top1)


def test_resume_continues_and_refuses_another_view(tiny, tmp_path):
    run_dir = tmp_path / "run"
    base = common_argv(tiny["data"], tiny["ckpt"], "--eval-freq", "1", "--seed", "0",
                       "--checkpoint-path", str(run_dir))
    ac.main(base + ["--epochs", "1"])
    first = checkpoints.load_checkpoint(str(run_dir / checkpoints.LAST_CHECKPOINT))
    with pytest.raises(ValueError, match="epochs: 1 in the checkpoint, 2 now.*--resume-allow-changes epochs"):
        ac.main(base + ["--epochs", "2", "--resume", str(run_dir)])
    record = ac.main(base + ["--epochs", "2", "--resume", str(run_dir), "--resume-allow-changes", "epochs"])
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["history"][0] == first["history"][0]
    assert record["resume_allowed_changes"] == [{"field": "epochs", "checkpoint": 1, "now": 2}]
    with pytest.raises(ValueError, match="view: 'joint' in the checkpoint, 'motion' now"):
        ac.main(base + ["--epochs", "2", "--view", "motion", "--resume", str(run_dir)])
