"""Generic MoCo machinery: momentum update, index-aligned feature queues, key gathering, InfoNCE.

Nothing here knows about skeletons. The queues are buffers of the module that owns them, registered
under names the owner chooses (CMD uses the released names `queue`, `queue_motion`, `queue_bone`,
`queue_ptr`, `queue_ptr_motion`, `queue_ptr_bone`), so they appear at the top level of its state_dict.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


@torch.no_grad()
def momentum_update(key_encoder: nn.Module, query_encoder: nn.Module, m: float) -> None:
    """In place, parameters only: `theta_k = theta_k * m + theta_q * (1 - m)` (buffers untouched)."""
    key_params = [p.data for p in key_encoder.parameters()]
    query_params = [p.data for p in query_encoder.parameters()]
    if len(key_params) != len(query_params):
        raise ValueError(f"key encoder has {len(key_params)} parameters, query encoder {len(query_params)}")
    for pk, pq in zip(key_params, query_params):
        if pk.shape != pq.shape:
            raise ValueError(f"momentum update: key parameter {tuple(pk.shape)} vs query {tuple(pq.shape)}")
    # The released arithmetic (`p_k * m + p_q * (1 - m)`), in place: no temporary copy of the parameters
    # (150 M floats at the paper's size).
    torch._foreach_mul_(key_params, m)
    torch._foreach_add_(key_params, query_params, alpha=1.0 - m)


@torch.no_grad()
def copy_parameters(key_encoder: nn.Module, query_encoder: nn.Module) -> None:
    """Start a key encoder as an exact copy of its query encoder; it receives no gradient."""
    for pk, pq in zip(key_encoder.parameters(), query_encoder.parameters()):
        pk.data.copy_(pq.data)
        pk.requires_grad = False


def distributed_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0 (rank order); identity in a single process.

    No gradient flows through the gather. Every rank must pass the same shape.
    """
    world = distributed_world_size()
    if world == 1:
        return tensor
    tensor = tensor.contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(gathered, tensor)
    return torch.cat(gathered, dim=0)


class AlignedQueues:
    """Several `(dim, K)` feature queues in which slot i of every queue holds the same sample.

    One write pointer is shared; each queue still has its own pointer buffer (the released
    checkpoints hold one per queue) and all of them are kept equal. Buffers live on `owner`, so
    `.to(device)` and state_dict handling are the owner's; this object only remembers names.
    """

    def __init__(self, owner: nn.Module, queue_names: Sequence[str], pointer_names: Sequence[str],
                 dim: int, K: int):
        if len(queue_names) != len(pointer_names) or not queue_names:
            raise ValueError(f"need one pointer per queue: queues {list(queue_names)}, "
                             f"pointers {list(pointer_names)}")
        if dim < 1 or K < 1:
            raise ValueError(f"queue dim and K must be positive, got dim={dim}, K={K}")
        self.queue_names = tuple(queue_names)
        self.pointer_names = tuple(pointer_names)
        self.dim, self.K = int(dim), int(K)
        for name in self.queue_names:
            owner.register_buffer(name, F.normalize(torch.randn(dim, K), dim=0))
        for name in self.pointer_names:
            owner.register_buffer(name, torch.zeros(1, dtype=torch.long))

    def queues(self, owner: nn.Module) -> dict[str, torch.Tensor]:
        return {name: getattr(owner, name) for name in self.queue_names}

    def pointer(self, owner: nn.Module) -> int:
        """The shared write position; raises if the pointer buffers disagree (queues not aligned)."""
        values = [int(getattr(owner, name)) for name in self.pointer_names]
        if len(set(values)) != 1:
            raise RuntimeError("queue pointers disagree, the queues are no longer index-aligned: "
                               + ", ".join(f"{n}={v}" for n, v in zip(self.pointer_names, values)))
        return values[0]

    @torch.no_grad()
    def enqueue(self, owner: nn.Module, keys: Mapping[str, torch.Tensor]) -> int:
        """Write each queue's keys `(N, dim)` at the shared pointer and advance it; returns the global batch.

        Keys are first gathered from every rank (rank order), so all ranks hold the same queues.
        Raises ValueError when K is not a multiple of the global batch (the released code assumes it).
        """
        if set(keys) != set(self.queue_names):
            raise ValueError(f"enqueue expects keys for {list(self.queue_names)}, got {sorted(keys)}")
        gathered = {name: concat_all_gather(keys[name].detach()) for name in self.queue_names}
        batch = {name: int(k.shape[0]) for name, k in gathered.items()}
        if len(set(batch.values())) != 1:
            raise ValueError(f"index-aligned queues need the same number of keys for each queue, got {batch}")
        global_batch = next(iter(batch.values()))
        if global_batch == 0 or self.K % global_batch != 0:
            raise ValueError(f"queue size K={self.K} is not a multiple of the global batch size "
                             f"{global_batch} (per-rank batch x world size {distributed_world_size()}); "
                             f"choose K and the batch so that K % batch == 0 and drop the last "
                             f"incomplete batch")
        for name in self.queue_names:
            k = gathered[name]
            if k.dim() != 2 or k.shape[1] != self.dim:
                raise ValueError(f"keys for {name!r} must be (N, {self.dim}), got {tuple(k.shape)}")
        # All on the device, no host read of the pointer (no synchronisation per step): slots
        # ptr..ptr+batch-1 (K % batch == 0, so they never wrap) and the new pointer.
        pointers = [getattr(owner, name) for name in self.pointer_names]
        self._check_aligned(owner, pointers)
        ptr = pointers[0]
        slots = ptr + torch.arange(global_batch, device=ptr.device)
        for name in self.queue_names:
            queue = getattr(owner, name)
            queue.index_copy_(1, slots, gathered[name].T.to(queue.dtype))
        new_ptr = (ptr + global_batch) % self.K
        for pointer in pointers:
            pointer.copy_(new_ptr)
        return global_batch

    def _check_aligned(self, owner: nn.Module, pointers: list) -> None:
        """Raise when the pointer buffers disagree; on CUDA an asynchronous device-side assert."""
        if len(pointers) == 1:
            return
        same = torch.stack([p == pointers[0] for p in pointers[1:]]).all()
        try:
            torch._assert_async(same, "queue pointers disagree, the queues are no longer index-aligned")
        except RuntimeError:  # raised at once on the CPU: name the values
            self.pointer(owner)
            raise


def negative_similarities(q: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """`q @ queue` (N, K) against a detached copy of the queue (the queue is rewritten before backward)."""
    return torch.einsum("nc,ck->nk", q, queue.clone().detach())


def infonce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, T: float,
                   l_neg: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo logits `[q.k, q.queue] / T` (N, 1+K) and targets (all zeros: the positive is class 0).

    Pass `l_neg` when `negative_similarities(q, queue)` is already computed, to avoid a second product.
    """
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    if l_neg is None:
        l_neg = negative_similarities(q, queue)
    logits = torch.cat([l_pos, l_neg], dim=1) / T
    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits, targets
