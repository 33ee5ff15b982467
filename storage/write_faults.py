"""Write failures that are no fault of the program (disk full, I/O error, read-only file system) as one
`WriteFailed` whose message names the file and what was kept (a user error: one line, exit status 2).
"""
from __future__ import annotations

import errno


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
