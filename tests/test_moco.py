import os

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import moco
from helpers import run_two_processes


class Owner(nn.Module):
    def __init__(self, dim=4, K=8):
        super().__init__()
        self.queues = moco.AlignedQueues(self, ["queue", "queue_b"], ["queue_ptr", "queue_ptr_b"], dim, K)


def _pair_of_nets(seed_q, seed_k):
    torch.manual_seed(seed_q)
    q = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    torch.manual_seed(seed_k)
    k = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    return q, k


def test_momentum_update_extremes_formula_and_buffers():
    q, k = _pair_of_nets(0, 1)
    q[1].running_mean.fill_(3.0)
    k_before = [p.detach().clone() for p in k.parameters()]

    moco.momentum_update(k, q, 1.0)  # m = 1 keeps
    for pk, pb in zip(k.parameters(), k_before):
        assert torch.equal(pk, pb)

    moco.momentum_update(k, q, 0.9)
    for pk, pb, pq in zip(k.parameters(), k_before, q.parameters()):
        # float64 reference; the float32 update rounds three times (two products, one sum): a few ulps
        # of the larger operand. A swapped m/1-m or a missed parameter is off by ~0.1 of the weights.
        scale = torch.maximum(pb.abs(), pq.abs()).max().item()
        torch.testing.assert_close(pk.double(), pb.double() * 0.9 + pq.double() * 0.1,
                                   rtol=0, atol=4 * torch.finfo(torch.float32).eps * scale)

    moco.momentum_update(k, q, 0.0)  # m = 0 copies
    for pk, pq in zip(k.parameters(), q.parameters()):
        assert torch.equal(pk, pq)
    # buffers are not parameters: never averaged
    assert torch.equal(k[1].running_mean, torch.zeros(5))
    assert int(k[1].num_batches_tracked) == 0


def test_copy_parameters_freezes_key_encoder():
    q, k = _pair_of_nets(0, 1)
    moco.copy_parameters(k, q)
    for pk, pq in zip(k.parameters(), q.parameters()):
        assert torch.equal(pk, pq) and not pk.requires_grad and pq.requires_grad


def test_queues_start_normalised_and_enqueue_aligned():
    torch.manual_seed(0)
    owner = Owner(dim=4, K=8)
    assert sorted(owner.state_dict()) == ["queue", "queue_b", "queue_ptr", "queue_ptr_b"]
    torch.testing.assert_close(owner.queue.norm(dim=0), torch.ones(8))
    before = {n: getattr(owner, n).clone() for n in ("queue", "queue_b")}
    keys = {"queue": torch.randn(2, 4), "queue_b": torch.randn(2, 4)}
    for step in range(5):  # wraps around after 4 steps
        ptr = int(owner.queue_ptr)
        assert owner.queues.enqueue(owner, keys) == 2
        for name in ("queue", "queue_b"):
            assert torch.equal(getattr(owner, name)[:, ptr:ptr + 2], keys[name].T)
        assert int(owner.queue_ptr) == int(owner.queue_ptr_b) == (ptr + 2) % 8
        if step == 0:  # untouched slots keep their old values
            for name in ("queue", "queue_b"):
                assert torch.equal(getattr(owner, name)[:, 2:], before[name][:, 2:])


def test_enqueue_rejects_bad_batch_and_misaligned_pointers():
    owner = Owner(dim=4, K=8)
    with pytest.raises(ValueError, match=r"K=8 is not a multiple of the global batch size 3"):
        owner.queues.enqueue(owner, {"queue": torch.randn(3, 4), "queue_b": torch.randn(3, 4)})
    with pytest.raises(ValueError, match="same number of keys"):
        owner.queues.enqueue(owner, {"queue": torch.randn(2, 4), "queue_b": torch.randn(4, 4)})
    owner.queue_ptr_b[0] = 2
    with pytest.raises(RuntimeError, match="queue_ptr=0, queue_ptr_b=2"):
        owner.queues.enqueue(owner, {"queue": torch.randn(2, 4), "queue_b": torch.randn(2, 4)})


def test_infonce_logits_against_direct_computation():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(5, 6), dim=1)
    k = F.normalize(torch.randn(5, 6), dim=1)
    queue = F.normalize(torch.randn(6, 10), dim=0)
    logits, targets = moco.infonce_logits(q, k, queue, 0.07)
    expected = torch.empty(5, 11)
    for i in range(5):
        expected[i, 0] = (q[i] * k[i]).sum()
        for j in range(10):
            expected[i, 1 + j] = (q[i] * queue[:, j]).sum()
    # dot products of unit vectors (|.| <= 1, float32 rounding < 1e-6 in any order) divided by 0.07
    torch.testing.assert_close(logits, expected / 0.07, rtol=1e-5, atol=1e-5)
    assert targets.dtype == torch.long and torch.equal(targets, torch.zeros(5, dtype=torch.long))


def test_concat_all_gather_is_identity_in_one_process():
    t = torch.randn(3, 2)
    assert moco.concat_all_gather(t) is t


# ----------------------------------------------------------------- two processes, gloo
def _rank_keys(rank, n, dim):
    base = torch.arange(n * dim, dtype=torch.float32).reshape(n, dim)
    return base + 100 * (rank + 1)


def _distributed_worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)  # two processes share the cores
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial queues on every rank, as with DDP
        owner = Owner(dim=4, K=8)
        owner.queues.enqueue(owner, {"queue": _rank_keys(rank, 2, 4), "queue_b": -_rank_keys(rank, 2, 4)})
        error = ""
        try:  # 3 per rank = 6 global, K=8: must fail on every rank, naming the global batch
            owner.queues.enqueue(owner, {"queue": torch.zeros(3, 4), "queue_b": torch.zeros(3, 4)})
        except ValueError as exc:
            error = str(exc)
        torch.save({"state": owner.state_dict(), "error": error}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_enqueue_gathers_keys_from_both_ranks(tmp_path):
    results = run_two_processes(_distributed_worker, tmp_path, timeout_s=120)
    s0, s1 = results[0]["state"], results[1]["state"]
    for name in s0:
        assert torch.equal(s0[name], s1[name]), f"{name} differs between ranks"
    expected = torch.cat([_rank_keys(0, 2, 4), _rank_keys(1, 2, 4)]).T  # rank order
    assert torch.equal(s0["queue"][:, :4], expected)
    assert torch.equal(s0["queue_b"][:, :4], -expected)
    assert int(s0["queue_ptr"]) == int(s0["queue_ptr_b"]) == 4
    for r in results:
        assert "K=8" in r["error"] and "global batch size 6" in r["error"]
