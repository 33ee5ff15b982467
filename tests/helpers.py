"""What several test files share: tiny prepared-format data and the command lines of tiny pretraining
and evaluation runs, released-format checkpoints, and a runner for two-process (gloo) workers.

The checkpoint keys are spelled out here from SPEC.md sections 2-3 (not taken from cmd_model), so a
test that loads them checks the classifier against the released format itself.
"""
import hashlib
import json
import os
import pickle
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

HIDDEN = 16
NUM_CLASS = 3
ENCODERS = ("encoder_q", "encoder_k", "encoder_q_motion", "encoder_k_motion", "encoder_q_bone",
            "encoder_k_bone")
QUEUES = {"queue": "queue_ptr", "queue_motion": "queue_ptr_motion", "queue_bone": "queue_ptr_bone"}


def write_benchmark(folder, n_train=24, n_val=12, num_class=NUM_CLASS, frames=40, seed=0):
    """A prepared-format benchmark: {part}_data_joint.npy, {part}_label.pkl, {part}_num_frame.npy."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for part, n in (("train", n_train), ("val", n_val)):
        labels = np.arange(n) % num_class
        rng.shuffle(labels)
        data = rng.normal(scale=0.3, size=(n, 3, frames, 25, 2)).astype(np.float32)
        data[:, 0] += labels[:, None, None, None].astype(np.float32)     # classes differ in x
        np.save(os.path.join(folder, f"{part}_data_joint.npy"), data)
        np.save(os.path.join(folder, f"{part}_num_frame.npy"), rng.integers(frames // 2, frames + 1, size=n))
        with open(os.path.join(folder, f"{part}_label.pkl"), "wb") as f:
            pickle.dump(([f"S001C001P001R001A{i:03d}" for i in range(n)], [int(v) for v in labels]), f)
    return str(folder)


def released_state_dict(hidden=HIDDEN, K=32, dim=128, mlp=True, module_prefix=False, seed=0):
    """Random weights under the released pretraining key names and shapes (SPEC sections 2-3)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for enc in ENCODERS:
        sd[f"{enc}.input_norm.weight"] = torch.rand(150, generator=g) + 0.5
        sd[f"{enc}.input_norm.bias"] = torch.randn(150, generator=g)
        sd[f"{enc}.input_norm.running_mean"] = torch.randn(150, generator=g)
        sd[f"{enc}.input_norm.running_var"] = torch.rand(150, generator=g) + 0.5
        sd[f"{enc}.input_norm.num_batches_tracked"] = torch.tensor(1234)
        for layer in range(3):
            in_size = 150 if layer == 0 else 2 * hidden
            for suffix in ("", "_reverse"):
                gru = f"{enc}.encoder.gru"
                sd[f"{gru}.weight_ih_l{layer}{suffix}"] = 0.2 * torch.randn(3 * hidden, in_size, generator=g)
                sd[f"{gru}.weight_hh_l{layer}{suffix}"] = 0.2 * torch.randn(3 * hidden, hidden, generator=g)
                sd[f"{enc}.encoder.gru.bias_ih_l{layer}{suffix}"] = 0.1 * torch.randn(3 * hidden, generator=g)
                sd[f"{enc}.encoder.gru.bias_hh_l{layer}{suffix}"] = 0.1 * torch.randn(3 * hidden, generator=g)
        if mlp:
            sd[f"{enc}.fc.0.weight"] = torch.randn(2 * hidden, 2 * hidden, generator=g)
            sd[f"{enc}.fc.0.bias"] = torch.randn(2 * hidden, generator=g)
            sd[f"{enc}.fc.2.weight"] = torch.randn(dim, 2 * hidden, generator=g)
            sd[f"{enc}.fc.2.bias"] = torch.randn(dim, generator=g)
        else:
            sd[f"{enc}.fc.weight"] = torch.randn(dim, 2 * hidden, generator=g)
            sd[f"{enc}.fc.bias"] = torch.randn(dim, generator=g)
    for queue, ptr in QUEUES.items():
        sd[queue] = torch.nn.functional.normalize(torch.randn(dim, K, generator=g), dim=0)
        sd[ptr] = torch.zeros(1, dtype=torch.long)
    if module_prefix:
        sd = {f"module.{k}": v for k, v in sd.items()}
    return sd


def write_released_checkpoint(path, module_prefix=False, drop_key=None, **kw):
    """{'epoch', 'state_dict', 'optimizer'} as the released pretraining saves it."""
    sd = released_state_dict(module_prefix=module_prefix, **kw)
    if drop_key is not None:
        del sd[drop_key]
    optimizer = {"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9, "params": [0, 1]}]}
    torch.save({"epoch": 451, "state_dict": sd, "optimizer": optimizer}, path)
    return str(path)


def common_argv(data_dir, pretrained, *extra):
    return ["--finetune-dataset", "custom", "--protocol", "cross_subject", "--data-dir", str(data_dir),
            "--pretrained", str(pretrained), "-j", "0", "--device", "cpu", "--batch-size", "8", *extra]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads spin against each
    other (a 16-wide BiGRU forward measured 2.8 s with 2 threads, 0.03 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------- pretraining runs
N_CLIPS = 8
TINY = ["--hidden-size", "16", "--contrast-k", "24", "--topk", "8", "--batch-size", "4", "-j", "0",
        "--mlp", "--seed", "3", "--device", "cpu"]


def write_split(folder, n=N_CLIPS, seed=0, part="train", nan=False):
    """Smooth random skeleton motion in the prepared format (SPEC s.6): data, labels, frame counts."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    data = np.zeros((n, 3, 300, 25, 2), np.float32)
    num_frame = rng.integers(40, 300, n)
    for i in range(n):
        t = np.arange(num_frame[i])[None, :, None]
        pose = rng.normal(size=(3, 1, 25))
        phase = rng.normal(size=(3, 1, 25))
        data[i, :, :num_frame[i], :, 0] = pose + 0.3 * np.sin(0.05 * (i % 4 + 1) * t + phase)
    if nan:
        data[:] = np.nan
    np.save(os.path.join(folder, f"{part}_data_joint.npy"), data)
    with open(os.path.join(folder, f"{part}_label.pkl"), "wb") as f:
        pickle.dump(([f"clip{i:03d}" for i in range(n)], [int(v) for v in rng.integers(0, 4, n)]), f)
    np.save(os.path.join(folder, f"{part}_num_frame.npy"), num_frame.astype(np.int64))
    return folder


def cli(data, ckpt, *extra):
    return ["--pre-dataset", "custom", "--data-dir", data, "--checkpoint-path", ckpt, *TINY, *extra]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------------------------------- two processes
def run_two_processes(worker, tmp_path, timeout_s: float) -> list:
    ctx = mp.start_processes(worker, args=(2, str(tmp_path / "pg_init"), str(tmp_path)),
                             nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"two-process test did not finish within {timeout_s:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(os.path.join(tmp_path, f"rank{r}.pt"), weights_only=True) for r in range(2)]
