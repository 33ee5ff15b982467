"""Process plumbing shared by the command-line scripts.

Device choice, seeding and RNG snapshots, frozen flags, torch.distributed set-up from torchrun's
environment and the few collectives the training loops need, running meters (on the host and on the
device), and the JSON/JSONL writers. Nothing here knows about skeletons or CMD.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

import run_folder


def resolve_device(name: str = "auto", local_rank: int = 0, set_device: bool = True) -> torch.device:
    """`auto` picks CUDA (this process's local GPU) when present, else CPU. A device that is not there
    is a ValueError naming it."""
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name!r} asked for CUDA, but torch.cuda.is_available() is False "
                             f"(use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s)")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        if set_device:
            torch.cuda.set_device(device)
    return device


def seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def derived_seed(*values: int) -> int:
    """A 63-bit seed that is a fixed function of the given integers (e.g. seed, epoch, rank, stream)."""
    return int(np.random.SeedSequence([int(v) % (2 ** 32) for v in values]).generate_state(2, np.uint64)[0]
               % (2 ** 63))


def rng_state() -> dict:
    """Snapshot of every RNG we use, in types that `torch.load(weights_only=True)` accepts."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_arg: str = "auto") -> tuple[DistInfo, torch.device]:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; single process when they are absent.

    NCCL on CUDA, gloo on CPU. Returns the process's rank information and its device.
    """
    info = DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    device = resolve_device(device_arg, info.local_rank)
    if info.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info, device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device(device: torch.device) -> torch.device:
    """Where a collective's tensor must live: the GPU for NCCL, the CPU for gloo."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_int(value: int, device: torch.device) -> int:
    """Rank 0's `value` on every process (itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_collective_device(device))
    dist.broadcast(t, src=0)
    return int(t.item())


def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """'mean' or 'min' of `tensor` over the processes (a new tensor; `tensor` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    t = tensor.to(_collective_device(tensor.device), copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return t / dist.get_world_size() if op == "mean" else t


def main_process_log(is_main: bool):
    """A print for messages that rank 0 alone writes (tqdm.write keeps progress bars intact)."""
    from tqdm import tqdm  # noqa: PLC0415

    def log(msg: str) -> None:
        if is_main:
            tqdm.write(msg)
    return log


class FrozenArgs(argparse.Namespace):
    """Parsed flags made once (with resolved values given as `changes`) and never changed afterwards:
    setting an attribute is an error. Lists become tuples."""

    def __init__(self, args, **changes):
        for key, value in dict(vars(args), **changes).items():
            object.__setattr__(self, key, tuple(value) if isinstance(value, list) else value)

    def __setattr__(self, name, value):
        raise AttributeError(f"the run's settings are frozen once made: cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"the run's settings are frozen once made: cannot delete {name!r}")


class AverageMeter:
    """Running average of a scalar, weighted by the number of samples each update stands for."""

    def __init__(self, name: str):
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.val = self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(self.count, 1)


@dataclass
class MeterReading:
    means: dict              # name -> mean over the updates so far (over every process)
    first_bad: int | None    # the first update step with a non-finite value (None: all finite)
    bad_values: dict         # name -> value at that step


class DeviceMeters:
    """Sums of named per-step statistics kept on the device: `update` never reads a value on the host
    (no synchronisation per step); `read` is one host read of the means so far, all-reduced over the
    processes, and of the first step whose values were not all finite."""

    def __init__(self, names, device: torch.device, no_step: int):
        self.names, self.no_step, self.count = tuple(names), no_step, 0
        dtype = torch.float64 if device.type != "mps" else torch.float32
        self.sums = torch.zeros(len(self.names), dtype=dtype, device=device)
        self.first_bad = torch.full((1,), no_step, dtype=torch.long, device=device)
        self.bad_values = torch.zeros_like(self.sums)

    @torch.no_grad()
    def update(self, step: int, values: dict) -> None:
        stats = torch.stack([values[n].detach().float() for n in self.names]).to(self.sums.dtype)
        self.sums += stats
        is_first_bad = (~torch.isfinite(stats).all()) & (self.first_bad == self.no_step)
        self.first_bad.copy_(torch.where(is_first_bad, step, self.first_bad))
        self.bad_values.copy_(torch.where(is_first_bad, stats, self.bad_values))
        self.count += 1

    def read(self) -> MeterReading:
        sums, first_bad = all_reduce(self.sums, "mean"), all_reduce(self.first_bad, "min")
        values = torch.cat([sums.double().cpu(), first_bad.double().cpu(), self.bad_values.double().cpu()])
        values = values.tolist()
        n = len(self.names)
        means, bad = {k: v / max(self.count, 1) for k, v in zip(self.names, values[:n])}, int(values[n])
        finite = bad >= self.no_step and all(np.isfinite(v) for v in means.values())
        return MeterReading(means, None if finite else bad, dict(zip(self.names, values[n + 1:])))


# what a write can fail with through no fault of the program, and how the one-line message names it
WRITE_FAULTS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EIO: "I/O error",
                errno.EFBIG: "file too large for the file system", errno.EROFS: "read-only file system"}


class WriteFailed(OSError):
    """A write that failed for a reason outside the program (disk full, I/O error); the message says what
    was kept. A user-facing error: one line, exit status 2 (cli_errors)."""


def write_failure(exc: BaseException, path: str, kept: str = "nothing was replaced") -> WriteFailed | None:
    """The WriteFailed for `exc` when it is a disk or device fault (WRITE_FAULTS), else None."""
    if isinstance(exc, WriteFailed):
        return exc
    reason = WRITE_FAULTS.get(getattr(exc, "errno", None))
    return None if reason is None else WriteFailed(f"{reason} while writing {path}; {kept}")


def raise_write_failure(exc: BaseException, path: str, kept: str = "nothing was replaced"):
    """Inside `except OSError as exc:`: raise the one-line WriteFailed for a disk or device fault, else
    `exc` itself."""
    failure = write_failure(exc, path, kept)
    if failure is None:
        raise exc
    raise failure from exc


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", exclusive: bool = False):
    """Open a temporary file beside `path` for writing; on a clean exit flush, fsync and move it to `path`.

    A reader never sees half a file, and a crash mid-write leaves the previous `path` intact. With
    `exclusive`, `path` must not exist when the file is published (FileExistsError otherwise: a second
    writer's file is never replaced), and the temporary name is this process's own. A disk or device fault
    (WRITE_FAULTS) removes the temporary file and raises WriteFailed naming `path`.
    """
    tmp = f"{path}.{os.getpid()}.tmp" if exclusive else f"{path}.tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            run_folder.publish_new(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise_write_failure(exc, path)


def atomic_write_text(path: str, text: str, exclusive: bool = False) -> None:
    with atomic_open(path, "w", exclusive=exclusive) as f:
        f.write(text)


def plain_args(args) -> dict:
    """Parsed CLI arguments as a dict of plain values (tuples as lists), for JSON and weights_only loads."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}


def atomic_write_json(path: str, obj, exclusive: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", exclusive)


class JsonlLogger:
    """Appends one JSON object per line; each line is flushed so a crash loses at most one record. The
    file is a regular file of its own: a symbolic link under its name is refused (run_folder.RunFolderError),
    never followed, even one planted between two records."""

    def __init__(self, path: str, flag: str = "--checkpoint-path"):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path, self.flag = path, flag
        run_folder.check_run_file(path, flag)

    def write(self, record: dict) -> None:
        """Append one record; a failed write is cut off again, so the file keeps only whole records."""
        run_folder.check_run_file(self.path, self.flag)
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:            # a link planted since the check above
                run_folder.check_run_file(self.path, self.flag)
            raise
        try:
            with os.fdopen(fd, "a") as f:
                f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                f.flush()
        except OSError as exc:
            failure = write_failure(exc, self.path, "the earlier records are kept")
            if failure is None:
                raise
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)
            raise failure from exc


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- memory
def _container_limit() -> int | None:
    """The cgroup's memory limit (v2, else v1) when one is set."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def device_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are) that a model on `device` can use: the GPU's memory, else the machine's
    physical memory (the container's limit when that is lower)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"{device}'s memory"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 62, "memory (unknown)"
    limit = _container_limit()
    if limit is not None and limit < total:
        return limit, "memory (its container's limit)"
    return total, "memory"


def gib(size: int) -> str:
    value = size / 2 ** 30
    return f"{value:.3g}" if value < 1e6 else f"{value:.2e}"


def check_memory(needed: int, device: torch.device, what: str, advice: str) -> None:
    """ValueError `WHAT needs at least X GiB, this machine has Y GiB of memory; ADVICE` when `needed`
    bytes exceed what `device` has (device_memory): refused before anything is allocated."""
    have, kind = device_memory(device)
    if needed > have:
        raise ValueError(f"{what} needs at least {gib(needed)} GiB, this machine has {gib(have)} GiB of "
                         f"{kind}; {advice}")


# ----------------------------------------------------------------------------- precision and threads
def cpu_has_bfloat16() -> bool:
    """True when oneDNN finds bfloat16 matrix units (AVX512-BF16 / AMX) on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """What `--amp` autocasts to on `device`: bfloat16 where the device computes it natively, float16
    (with a GradScaler) on other CUDA GPUs, None (stay in float32) elsewhere."""
    if device.type == "cuda":
        try:
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            bf16 = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float16
    if device.type == "cpu" and cpu_has_bfloat16():
        return torch.bfloat16
    return None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _process_cores() -> int:
    """Usable cores of this process: torchrun's processes on one machine share them out."""
    return max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def _omp_threads() -> int:
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() else 0


def default_threads(workers: int = 0) -> int:
    """Intra-op threads for the main process: the usable cores minus one per loader worker and minus the
    cores other processes keep busy (1-minute load average), at least 1.

    Why: torch's OpenMP threads wait for each other at every operation, so one thread that shares its
    core with a busy process stalls all of them (measured on 2 cores with one competing process: the
    encoder pass of linear evaluation went from 0.14 s with 1 thread to 5-6 s with 2)."""
    cores = _process_cores()
    try:
        others = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        others = 0
    return max(1, min(cores - workers, cores - others))


def default_workers(cap: int, threads: int | None = 0) -> int:
    """Loader workers when -j is not given: the cores left once the main process has its threads (the
    --threads given, else OMP_NUM_THREADS, else one core), at most `cap` (the released default); 0, loading
    in the main process, on a single core. So a small machine never gets more workers than cores (torch
    warns then), and a large one keeps the released count."""
    taken = threads or _omp_threads() or 1
    return max(0, min(cap, _process_cores() - taken))


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
        log(f"=> {threads} intra-op thread{'s' if threads > 1 else ''} ({source}; {usable_cores()} usable "
            f"cores, {workers} loader workers)")
    return threads


def worker_init(worker_id: int) -> None:
    """DataLoader worker_init_fn: one intra-op thread per worker (the workers run beside the main process)."""
    torch.set_num_threads(1)


def add_threads_argument(parser) -> None:
    import flag_values  # noqa: PLC0415  (flag_values imports this module)
    parser.add_argument("--threads", default=0, type=flag_values.processes, metavar="N",
                        help="intra-op CPU threads of the main process; 0 = OMP_NUM_THREADS when set, else "
                             "automatic (usable cores minus loader workers and minus cores busy with other "
                             "processes, at least 1)")
