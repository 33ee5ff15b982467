"""Files written whole or not at all: atomic writes (text, JSON, any file object), the JSONL log that
keeps only whole records, quiet removal and sha256 of a file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os

from storage import run_folder
from storage.write_faults import raise_write_failure, write_failure


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
