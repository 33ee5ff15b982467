"""The run's parsed flags: frozen once made (`FrozenArgs`), and as plain values for JSON and
`weights_only` checkpoint loads (`plain_args`).
"""
from __future__ import annotations

import argparse


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


def plain_args(args) -> dict:
    """Parsed CLI arguments as a dict of plain values (tuples as lists), for JSON and weights_only loads."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
