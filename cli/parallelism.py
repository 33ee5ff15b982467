"""How many intra-op threads and loader workers a command uses: the `--threads` flag, the defaults when
`--threads` or `-j` are not given, and the loader workers' own thread count.
"""
from __future__ import annotations

import os

import torch

from cli import flag_values, machine


def _omp_threads() -> int:
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() else 0


def default_threads(workers: int = 0) -> int:
    """Intra-op threads for the main process: the usable cores minus one per loader worker and minus the
    cores other processes keep busy (1-minute load average), at least 1.

    Why: torch's OpenMP threads wait for each other at every operation, so one thread that shares its
    core with a busy process stalls all of them (measured on 2 cores with one competing process: the
    encoder pass of linear evaluation went from 0.14 s with 1 thread to 5-6 s with 2)."""
    cores = machine.process_cores()
    try:
        others = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        others = 0
    return max(1, min(cores - workers, cores - others))


# at most this many cores: load in the main process and give every core to its threads. Measured on 2 cores
# (quiet, docs/performance.md): pretraining at the demo's sizes 104-109 samples/s with 1 thread and 1
# loader worker, 149-158 with 2 threads and no worker; two epochs of linear evaluation 5.0-5.2 s against
# 4.5-4.7 s
MAIN_PROCESS_LOADING_CORES = 2


def default_workers(cap: int, threads: int | None = 0) -> int:
    """Loader workers when -j is not given: the cores left once the main process has its threads (the
    --threads given, else OMP_NUM_THREADS, else one core), at most `cap` (the released default); 0, loading
    in the main process, on at most MAIN_PROCESS_LOADING_CORES cores (the augmentations are cheap beside a
    second intra-op thread). So a small machine never gets more workers than cores (torch warns then), and
    a large one keeps the released count."""
    if machine.process_cores() <= MAIN_PROCESS_LOADING_CORES:
        return 0
    taken = threads or _omp_threads() or 1
    return max(0, min(cap, machine.process_cores() - taken))


def loader_workers(requested: int | None, threads: int | None, cap: int) -> int:
    """-j as given, or `default_workers(cap, threads)` when it was not."""
    return default_workers(cap, threads) if requested is None else requested


def set_threads(threads: int | None, workers: int = 0, log=None) -> int:
    """Apply `--threads` (None or 0: OMP_NUM_THREADS when set, else `default_threads(workers)`); returns
    the count set."""
    if threads is not None and threads < 0:
        raise ValueError(f"--threads must be 0 (automatic) or positive, got {threads}")
    source = "--threads"
    if not threads:
        threads, source = (_omp_threads(), "OMP_NUM_THREADS") if _omp_threads() else \
            (default_threads(workers), "automatic")
    torch.set_num_threads(threads)
    if log is not None:
        log(f"=> {threads} intra-op thread{'s' if threads > 1 else ''} ({source}; {machine.usable_cores()} usable "
            f"cores, {workers} loader workers)")
    return threads


def worker_init(worker_id: int) -> None:
    """DataLoader worker_init_fn: one intra-op thread per worker (the workers run beside the main process)."""
    torch.set_num_threads(1)


def add_threads_argument(parser) -> None:
    parser.add_argument("--threads", default=0, type=flag_values.processes, metavar="N",
                        help="intra-op CPU threads of the main process; 0 = OMP_NUM_THREADS when set, else "
                             "automatic (usable cores minus loader workers and minus cores busy with other "
                             "processes, at least 1)")
