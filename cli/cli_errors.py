"""How the command-line scripts report errors: a user error (bad flag, missing or malformed file, a run
folder that must not be touched, a full disk) is one line `prog: error: ...` and exit status 2; a run
that stopped itself (a diverging loss, `RunStopped`) is one line and exit status 1; anything else is a
bug and keeps its traceback. `--debug`, accepted by every script, shows the traceback of both too.
"""
from __future__ import annotations

import argparse
import os
import sys

from storage import write_faults

# what set-up code raises for bad input (messages name the value or file and what was expected), and
# write_faults.WriteFailed: a disk or device fault while writing (the message says what was kept)
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError, write_faults.WriteFailed)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line, `prog: error: argument --flag: ...` and exit status 2 (the
    usage, dozens of lines for some scripts, stays in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class RunStopped(Exception):
    """A run that stopped itself for the reason its message gives (e.g. a non-finite loss or weights),
    before writing anything of the bad state: one line, exit status 1."""


def write_fault_message(exc: OSError) -> str | None:
    """The one line for a disk or device fault that reached the top without a WriteFailed (None for any
    other error)."""
    failure = write_faults.write_failure(exc, exc.filename or "a file", "files written before are kept")
    return None if failure is None else message(failure)


def pop_debug(argv) -> tuple[list, bool]:
    """argv without `--debug`, and whether it was there."""
    argv = list(argv)
    debug = "--debug" in argv
    return [a for a in argv if a != "--debug"], debug


def message(exc: BaseException) -> str:
    """The error's text on one line (a KeyError's without the quotes repr adds)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


def run_main(main, argv=None, prog: str | None = None) -> int:
    """Call `main(argv)`; a user error becomes one line on stderr and exit status 2."""
    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0])
    try:
        main(argv)
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"{prog}: error: {message(exc)}", file=sys.stderr)
        return 2
    except RunStopped as exc:
        if debug:
            raise
        print(f"{prog}: error: {message(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        if debug or write_fault_message(exc) is None:
            raise
        print(f"{prog}: error: {write_fault_message(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:        # argparse (already printed, status 2) or SystemExit("message")
        if isinstance(exc.code, str):
            print(f"{prog}: error: {exc.code}", file=sys.stderr)
            return 2
        return 0 if exc.code is None else exc.code
    return 0
