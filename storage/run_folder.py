"""Run folders and result files are never overwritten by accident, and one run at a time writes a folder.

A folder that already holds a checkpoint belongs to an earlier run. A new run starts there only with
`--resume` (continue that run) or `--overwrite` (start again: the old run is first moved aside to
`<folder>.backup-<UTC time>`, nothing is deleted). An existing output file (`--output`, `--tsne`, ...)
is replaced only with `--overwrite`, and the check is made twice: before any work, and when the file is
published (`publish_new`: a hard link, which fails when the name appeared meanwhile), so a second run
that wrote the same name in between is never replaced.

While a run writes a folder it holds `<folder>/.lock` (pid, host, the time it was taken, and the
process's own start time as /proc gives it), created with O_EXCL so two runs cannot both take it. A lock
whose process no longer runs on this host is recognised as stale and replaced with a message, and so is
one whose process id now belongs to another process (its start time differs from the recorded one, or,
for a lock that records none, that process started after the lock was taken); one from another host
cannot be checked from here, so the message says how to clear it by hand. A lock held by the calling
process itself (an earlier run in the same Python process that raised) is taken over.

The files a run appends to or rewrites in its folder (log.jsonl, config.json, ...) are regular files
inside it: `check_run_file` refuses a symbolic link (or anything else) planted under such a name, so a
run never writes through it to a file elsewhere.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import errno
import glob
import json
import os
import socket
import time

from storage import write_faults

LOCK_NAME = ".lock"
# a process that started this much later than the lock it is said to hold is another process (seconds;
# the lock is taken after the process starts, so a genuine holder always started before it)
LOCK_START_SLACK_S = 2.0
# what marks a folder as holding a run: checkpoints of pretraining or of action_classification.py
RUN_MARKERS = ("checkpoint_*.pth.tar", "model_best.pth.tar")


class RunFolderError(ValueError):
    """A run folder or output file that this run must not touch (a user error: exit status 2)."""


def held_checkpoints(folder: str) -> list[str]:
    """Checkpoint files in `folder` (sorted names); empty when the folder is absent."""
    found = set()
    for pattern in RUN_MARKERS:
        found.update(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(folder), pattern)))
    return sorted(found)


def _describe(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_not_dangling(path: str, flag: str) -> None:
    """A symbolic link whose target does not exist is neither a file nor a folder to write to."""
    if os.path.islink(path) and not os.path.exists(path):
        raise RunFolderError(f"{flag} {path} is a symbolic link to {os.readlink(path)}, which does not "
                             f"exist; remove the link or give another path")


def check_folder(folder: str, resume: bool, overwrite: bool, flag: str = "--checkpoint-path") -> None:
    """Refuse, before any work, a run that would silently replace an earlier run's files.

    Read-only: nothing is moved or created here (see `claim`)."""
    check_not_dangling(folder, flag)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise RunFolderError(f"{flag} {folder} is a file, expected a folder for the run's checkpoints")
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: continue the run in "
                             f"{folder}, or move it aside and start again")
    _check_lock(folder)
    held = held_checkpoints(folder)
    if held and not resume and not overwrite:
        raise RunFolderError(f"{flag} {folder} already holds a run ({_describe(held)}); add --resume auto "
                             f"to continue it, or --overwrite to move it to a dated backup and start again")
    parent = _existing_ancestor(folder)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(f"{flag} {folder}: cannot write into {parent} (permission denied)")


def resumes_into(folder: str, resume: str) -> bool:
    """Whether `--resume` continues the run in `folder` ('auto', or a checkpoint file inside it). A
    checkpoint from elsewhere starts a new run there, which must not replace the folder's own."""
    if not resume:
        return False
    if resume == "auto":
        return True
    target = resume if os.path.isdir(resume) else os.path.dirname(os.path.abspath(resume))
    return os.path.realpath(target) == os.path.realpath(folder)


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def backup_path(folder: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = f"{os.path.normpath(folder)}.backup-{stamp}"
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


class FolderLock:
    """`<folder>/.lock` held by this process; `release()` is idempotent and also runs at exit."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_NAME)
        self.held = False

    def acquire(self) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                 "process_start": process_start(os.getpid())}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                _check_lock(os.path.dirname(self.path), remove_stale=True)
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(owner, f)
            except OSError as exc:      # e.g. a full disk: no empty lock may stay behind
                with contextlib.suppress(OSError):
                    os.remove(self.path)
                write_faults.raise_write_failure(exc, self.path, "no lock was taken")
            self.held = True
            atexit.register(self.release)
            return
        raise RunFolderError(f"cannot take the lock {self.path}: another run keeps creating it")

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                with open(self.path) as f:
                    mine = json.load(f).get("pid") == os.getpid()
            except (OSError, ValueError):
                mine = False
            if mine:
                os.remove(self.path)


def _read_lock(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}          # unreadable or half-written: treated as held by an unknown owner


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, from /proc/PID/stat and the boot time in
    /proc/stat); None where /proc cannot tell (another system, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])      # field 22, starttime, after the name
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return round(boot + ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _other_process(owner: dict, pid: int) -> str | None:
    """Why the live process `pid` is not the run that took the lock `owner` (None: it may well be)."""
    now = process_start(pid)
    if now is None:
        return None
    recorded = owner.get("process_start")
    if isinstance(recorded, (int, float)):
        if abs(now - recorded) > 0.5:
            return f"process {pid} now started at {_utc(now)}, the lock's at {_utc(recorded)}"
        return None
    taken = owner.get("started")
    if isinstance(taken, (int, float)) and now > taken + LOCK_START_SLACK_S:
        return f"process {pid} started at {_utc(now)}, after the lock was taken at {_utc(taken)}"
    return None


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


def _check_lock(folder: str, remove_stale: bool = False) -> None:
    """Raise if another live run holds `folder`; report (and with remove_stale, remove) a stale lock."""
    path = os.path.join(folder, LOCK_NAME)
    owner = _read_lock(path)
    if owner is None:
        return
    if not owner:
        raise RunFolderError(f"{folder} holds an unreadable lock {path} (empty or not JSON: left by a run "
                             f"that could not finish writing it, e.g. on a full disk); if no run is using "
                             f"this folder, delete {path} and start again")
    pid, host = owner.get("pid"), owner.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        if pid == os.getpid():       # left by an earlier run in this very process
            if remove_stale:
                os.remove(path)
            return
        if not _pid_alive(pid):
            if remove_stale:
                print(f"note: removing the stale lock {path} of process {pid} on {host}, which no longer "
                      f"runs (an interrupted run)")
                os.remove(path)
            return
        reused = _other_process(owner, pid)
        if reused is not None:
            if remove_stale:
                print(f"note: removing the stale lock {path}: its run (process {pid} on {host}) no longer "
                      f"runs, and the process id now belongs to another process ({reused})")
                os.remove(path)
            return
        since = owner.get("started")
        when = f", since {_utc(since)}" if isinstance(since, (int, float)) else ""
        raise RunFolderError(f"{folder} is in use by another run (process {pid} on this host{when}, lock "
                             f"{path}); wait for it to finish or stop it, or choose another folder")
    started = owner.get("started")
    when = _utc(started) if isinstance(started, (int, float)) else "an unknown time"
    raise RunFolderError(f"{folder} is locked by process {pid} on host {host!r} since {when} ({path}); if "
                         f"no run is using this folder any more, delete {path} and start again")


def claim(folder: str, resume: bool, overwrite: bool, flag: str = "--checkpoint-path") -> FolderLock:
    """Check as `check_folder`, move an earlier run aside when overwriting, create the folder, lock it."""
    check_folder(folder, resume, overwrite, flag)
    if overwrite and held_checkpoints(folder):
        backup = backup_path(folder)
        os.replace(folder, backup)
        print(f"=> --overwrite: moved the earlier run in {folder} to {backup}")
    os.makedirs(folder, exist_ok=True)
    lock = FolderLock(folder)
    lock.acquire()
    return lock


@contextlib.contextmanager
def locked_folder(folder: str):
    """Create `folder` when needed and hold its lock (FolderLock) while the block runs, so a second writer
    is refused with this one's pid. When the block fails, the folders this created are removed again if
    they are still empty."""
    created = None
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        created, probe = probe, os.path.dirname(probe)
    os.makedirs(folder, exist_ok=True)
    lock = FolderLock(folder)
    finished = False
    try:
        lock.acquire()
        yield lock
        finished = True
    finally:
        lock.release()
        if not finished and created is not None:
            path = os.path.abspath(folder)
            while len(path) >= len(created):
                try:
                    os.rmdir(path)
                except OSError:
                    break
                path = os.path.dirname(path)


def check_run_file(path: str, flag: str = "--checkpoint-path") -> None:
    """A file of a run folder that the run appends to or replaces must be absent or a regular file: a
    symbolic link planted under its name (to a file elsewhere) is refused, never followed."""
    if os.path.islink(path):
        raise RunFolderError(f"{flag}: {path} is a symbolic link (to {os.readlink(path)}), expected the "
                             f"run's own regular file; a run writes only inside its folder: replace the link "
                             f"by the file itself, or move it away")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise RunFolderError(f"{flag}: {path} is not a regular file; move it away")


def check_output_file(path: str | None, overwrite: bool, flag: str = "--output") -> None:
    """An output file must be writable and must not replace an earlier one without --overwrite."""
    if not path:
        return
    check_not_dangling(path, flag)
    if os.path.isdir(path):
        raise RunFolderError(f"{flag} {path} is a folder, expected a file name")
    if os.path.exists(path) and not overwrite:
        raise RunFolderError(f"{flag} {path} already exists (an earlier result); choose another name or "
                             f"add --overwrite to replace it")
    check_writable_folder(os.path.dirname(os.path.abspath(path)), flag, path)


def check_writable_folder(folder: str, flag: str, shown: str | None = None) -> None:
    """`folder` is, or can be created as, a folder we can write into."""
    check_not_dangling(folder, flag)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise RunFolderError(f"{flag} {folder} is a file, expected a folder" if shown in (None, folder) else
                             f"{flag} {shown}: {folder} is a file, expected a folder")
    shown = shown or folder
    parent = _existing_ancestor(folder)
    if not os.path.isdir(parent):
        raise RunFolderError(f"{flag} {shown}: {parent} is a file, expected a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(f"{flag} {shown}: cannot write into {parent} (permission denied)")


def publish_new(tmp: str, path: str) -> None:
    """Move the finished file `tmp` to `path`, which must not exist: a hard link fails when the name
    appeared meanwhile (FileExistsError, `tmp` left in place), where os.replace would silently replace
    it. On file systems without hard links the name is claimed with an exclusive create first."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))   # FileExistsError: taken
        os.replace(tmp, path)
        return
    os.remove(tmp)


def publish_files(pairs, overwrite: bool, flag: str) -> None:
    """Move finished temporary files to their names [(tmp, path)], all of them or none: without
    `overwrite` a name that appeared meanwhile stops the publication, the files already moved are
    removed again, and RunFolderError names it. The temporary files are the caller's to remove."""
    done = []
    for tmp, path in pairs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if overwrite:
            os.replace(tmp, path)
            continue
        try:
            publish_new(tmp, path)
        except FileExistsError:
            for published in done:
                with contextlib.suppress(OSError):
                    os.remove(published)
            raise RunFolderError(f"{flag}: {path} appeared while this run worked (written by another run?); "
                                 f"it was left as it is and none of this run's {flag} files were kept; "
                                 f"choose another name, or add --overwrite") from None
        done.append(path)
