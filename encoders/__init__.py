"""The encoders: their contract (here), the fast BiGRU layers (bigru.py) and ST-GCN (stgcn.py).

The encoder contract: what every encoder of the CMD model is, and how its settings travel.

An encoder is one `Encoder` subclass with
- `Config`: a dataclass of its sizes and options, each default written there and nowhere else;
  fields marked `runtime_field` choose how the model is computed, not what it is, and are not recorded
  in checkpoints;
- `FLAGS`: the command-line flags that set `Config` fields (`EncoderFlag`);
- `__init__(num_class, config=None, mlp=False, **overrides)`, which calls `super().__init__(config,
  **overrides)`, builds its layers, sets `feature_dim` and ends with `self.add_head(num_class, mlp)`;
- `features(x)`: clips `(N, 3, T, V, M)` -> `(N, feature_dim)`, the pre-head features kNN uses;
- optionally `tensor_count(config, num_class, mlp)`, the formula for its parameter and buffer values
  (the default builds it on torch's meta device, which allocates nothing but takes time in proportion
  to its number of layers).
`forward(x)` is `fc(features(x))`; `--mlp` turns `fc` into Linear-ReLU-Linear (`add_mlp_head`).
The registry (`cmd_model.ENCODERS`) maps a name to the class; the functions below give the scripts the
union of every registered encoder's flags and turn parsed flags into one encoder's config.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
from dataclasses import dataclass

import torch
import torch.nn as nn


def runtime_field(default):
    """A config field that picks an implementation (same model, same weights): not recorded."""
    return dataclasses.field(default=default, metadata={"runtime": True})


@dataclass(frozen=True)
class EncoderFlag:
    """The flag `option` sets the config field `field`. Encoders may share an option (e.g. --hidden-size)
    if it sets a field of the same name and type in each; its help then lists each encoder's default."""
    field: str
    option: str
    help: str
    choices: tuple | None = None

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")


def make_config(config_cls, config=None, source: str = "encoder config", **overrides):
    """`config_cls` from a config, a dict (a checkpoint's record) or nothing, with `overrides` applied.

    Unknown field names are a ValueError naming them, `source` and the known fields.
    """
    if config is None:
        values = {}
    elif isinstance(config, dict):
        values = dict(config)
    elif isinstance(config, config_cls):
        values = dataclasses.asdict(config)
    else:
        raise TypeError(f"{source}: expected a {config_cls.__name__} or a dict, got {type(config).__name__}")
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {config_cls.__name__} field(s) {unknown}; "
                         f"known: {sorted(known)}")
    return config_cls(**values)


def config_record(config) -> dict:
    """The fields that define the model (runtime fields left out): what checkpoints record."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if not f.metadata.get("runtime")}


def check_positive(config, *names) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


def check_clip(x, in_channels: int, num_joints: int, num_person: int) -> None:
    """ValueError unless x is a clip batch (N, in_channels, T, num_joints, num_person)."""
    if x.dim() != 5 or (x.shape[1], x.shape[3], x.shape[4]) != (in_channels, num_joints, num_person):
        raise ValueError(f"expected a clip batch (N, {in_channels}, T, {num_joints}, {num_person}), "
                         f"got shape {tuple(x.shape)}")


def add_mlp_head(encoder: nn.Module) -> None:
    """The released `--mlp` replacement: `fc` becomes Sequential(Linear(D, D), ReLU, old fc).

    The new first Linear keeps PyTorch's default initialisation; the old fc keeps its weights.
    """
    old = encoder.fc
    if not isinstance(old, nn.Linear):
        raise TypeError(f"add_mlp_head expects encoder.fc to be nn.Linear, got {type(old).__name__}")
    encoder.fc = nn.Sequential(nn.Linear(old.in_features, old.in_features), nn.ReLU(), old)


class Encoder(nn.Module):
    """Base of every encoder: holds `config`, the `fc` head and `forward = fc(features(x))`."""

    Config: type = None
    FLAGS: tuple = ()

    def __init__(self, config=None, **overrides):
        super().__init__()
        self.config = make_config(self.Config, config, source=type(self).__name__, **overrides)

    def add_head(self, num_class: int, mlp: bool = False) -> None:
        """`fc = Linear(feature_dim, num_class)` (and the MLP head with `mlp`); call it last."""
        self.fc = nn.Linear(self.feature_dim, num_class)
        if mlp:
            add_mlp_head(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def tensor_count(cls, config, num_class: int, mlp: bool = False) -> int:
        """Values in this encoder's parameters and buffers, found without allocating them (the model is
        built on the meta device), so a size too large for the machine is refused before it is made."""
        with torch.device("meta"):
            model = cls(num_class, config, mlp=mlp)
        return sum(t.numel() for t in itertools.chain(model.parameters(), model.buffers()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# ----------------------------------------------------------------------------- flags of a registry
def _field(config_cls, name):
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return f
    raise ValueError(f"{config_cls.__name__} has no field {name!r} (named by an EncoderFlag)")


def _flag_table(registry: dict) -> dict:
    """option -> list of (encoder name, flag, dataclass field); checks that shared options agree."""
    table = {}
    for name, cls in registry.items():
        for flag in cls.FLAGS:
            f = _field(cls.Config, flag.field)
            for other_name, other_flag, other_f in table.get(flag.option, []):
                if (other_flag.field, type(other_f.default)) != (flag.field, type(f.default)):
                    raise ValueError(f"encoders {other_name!r} and {name!r} both use {flag.option} for "
                                     f"different fields or types")
            table.setdefault(flag.option, []).append((name, flag, f))
    return table


def add_encoder_arguments(parser, registry: dict, default_encoder: str) -> None:
    """--encoder and the union of every registered encoder's flags, all defaulting to None (the encoder's
    own default, or the checkpoint's record in evaluation)."""
    group = parser.add_argument_group("encoder (defaults are each encoder's own; see cmd_model.ENCODERS)")
    group.add_argument("--encoder", default=None, choices=sorted(registry),
                       help=f"encoder of every modality (default: the checkpoint's in evaluation, else "
                            f"{default_encoder})%(default).0s")
    for option, users in _flag_table(registry).items():
        _, flag, f = users[0]
        helps = "; ".join(f"{name}: {fl.help} (default {fld.default})" for name, fl, fld in users)
        # '%(default).0s' prints nothing; it keeps ArgumentDefaultsHelpFormatter from adding "(default: None)"
        kw = {"dest": flag.dest, "default": None, "help": helps + "%(default).0s"}
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = type(f.default)
            if flag.choices:
                kw["choices"] = flag.choices
        group.add_argument(option, **kw)


def overrides_from_args(registry: dict, name: str, args) -> dict:
    """The config fields of encoder `name` set on the command line. A flag given that `name` does not
    have is a ValueError naming the flag and the encoders that have it."""
    own = {flag.option: flag for flag in registry[name].FLAGS}
    overrides = {}
    for option, users in _flag_table(registry).items():
        value = getattr(args, users[0][1].dest, None)
        if value is None:
            continue
        if option not in own:
            owners = ", ".join(sorted({u[0] for u in users}))
            raise ValueError(f"{option} {value} is a flag of encoder {owners}, not of {name!r} "
                             f"(choose the encoder with --encoder)")
        overrides[own[option].field] = value
    return overrides
