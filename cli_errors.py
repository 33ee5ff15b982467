"""How the command-line scripts report errors: a user error (bad flag, missing or malformed file, a run
folder that must not be touched) is one line `prog: error: ...` and exit status 2; anything else is a
bug and keeps its traceback. `--debug`, accepted by every script, shows the traceback of user errors too.
"""
from __future__ import annotations

import os
import sys

# what set-up code raises for bad input (messages name the value or file and what was expected)
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


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
    except SystemExit as exc:        # argparse (already printed, status 2) or SystemExit("message")
        if isinstance(exc.code, str):
            print(f"{prog}: error: {exc.code}", file=sys.stderr)
            return 2
        return 0 if exc.code is None else exc.code
    return 0
