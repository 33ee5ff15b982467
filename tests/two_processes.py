"""Run a worker in two gloo processes (spawned) and collect what each rank saved.

The worker is called as `worker(rank, world, init_file, out_dir)`, sets up the process group with
`file://{init_file}` and saves its results to `out_dir/rank{rank}.pt`."""
import os
import time

import pytest
import torch
import torch.multiprocessing as mp


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
