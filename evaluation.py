"""What action_classification.py and knn_eval.py share on the way in: their common flags, the benchmark's
data, the classifier built from a checkpoint, and its features. What they write out is in reports.py
(results files and tables) and visualise.py (t-SNE, tensorboard projector).

A checkpoint is ours (`pretrain_cmd.py`, with an `args` dict) or a released CMD file
(`checkpoint_0450.pth.tar`, keys of SPEC.md sections 2-3, maybe with `module.`); both are read with
`torch.load(weights_only=True)`. `--pretrained none` is the explicit random-initialisation baseline;
a path that does not exist is an error (the released code silently trains from random weights then).
The encoders are rebuilt from the checkpoint alone: ours records `{"encoder": name, "encoder_config": {...}}`;
a released file has no record and is read as the BiGRU whose sizes its weight shapes give. Our pretraining
checkpoints also record the skeleton layout (`resolve_layout`), which a custom folder then uses without
--layout. All of it is resolved once into a `cmd_model.ModelSpec` (`resolve_model_config`). Encoder flags
on the command line may only repeat the record (or choose run-time options such as --gru-mode); with
`--pretrained none` they and the encoder's defaults decide.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import cmd_model
import dataset
import graph
from cli import devices, flag_values, machine, parallelism
from readers import dataset_table
from reporting import visualise
from storage import atomic_files, checkpoints, run_folder

RELEASED_WORKERS = 4     # the released evaluation's -j default: the most loader workers chosen without -j


def add_common_arguments(parser, protocols=None) -> None:
    """Flags shared by both evaluation scripts (the released names where the released code has them)."""
    parser.add_argument("--pretrained", required=True, metavar="PATH|none",
                        help="pretraining checkpoint (ours or a released checkpoint_0450.pth.tar); "
                             "'none' evaluates a randomly initialised encoder")
    parser.add_argument("--finetune-dataset", default="ntu60", choices=dataset_table.dataset_names(),
                        help="benchmark to evaluate on; 'custom' reads --data-dir itself")
    parser.add_argument("--protocol", default="cross_subject",
                        choices=protocols or dataset_table.protocol_names())
    parser.add_argument("--data-dir", default="./data",
                        help="root of the prepared data (see prepare_data.py)")
    dataset_table.add_layout_argument(parser)
    parser.add_argument("--view", default="joint", choices=cmd_model.CMDClassifier.VIEWS,
                        help="stream to evaluate; 'all' is the 3-stream fusion (mean of the heads' logits)")
    parser.add_argument("--finetune-skeleton-representation", default="graph-based",
                        choices=cmd_model.SKELETON_REPRESENTATIONS,
                        help="the released flag: graph-based (the released scripts' value) is the clip "
                             "layout every encoder takes; seq-based is refused (SPEC section 7)")
    cmd_model.add_encoder_arguments(parser)
    parser.add_argument("-j", "--workers", type=flag_values.processes, default=None,
                        help=f"data loading workers (default: as released, {RELEASED_WORKERS}, but no more "
                             f"than the usable cores left beside the main process's threads; 0 on one core)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parallelism.add_threads_argument(parser)
    parser.add_argument("--seed", type=flag_values.seed, default=None,
                        help="seed of every RNG (unseeded by default, as released)")
    parser.add_argument("--output", default=None, metavar="JSON",
                        help="write the results to this JSON file (default: a new file in results/ beside "
                             "the checkpoint, ./results for --pretrained none)")
    parser.add_argument("--tb-embedding", default=None, metavar="DIR",
                        help="write the test features and labels for tensorboard's projector to DIR")
    parser.add_argument("--tsne", default=None, metavar="PATH.png",
                        help="draw a 2-D t-SNE of the test features coloured by class (needs matplotlib)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing --output, --tsne, --tb-embedding or --save-features files "
                             "(and start again in a --checkpoint-path that holds a run, after moving it to "
                             "<folder>.backup-<time>)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="read NaN/inf values in the data as 0 (with a warning counting them) instead of "
                             "refusing the data")
    parser.add_argument("--window", type=flag_values.positive_count, default=None, metavar="T",
                        help="frames the clips are resized to (default: the pretraining checkpoint's "
                             "--window, else 64 as released)")


def check_common_arguments(args) -> None:
    """Everything about the flags that can be checked before any work: outputs and --device (the values
    of -j, --seed and the like are checked by argparse, flag_values)."""
    run_folder.check_output_file(args.output, args.overwrite, "--output")
    run_folder.check_output_file(args.tsne, args.overwrite, "--tsne")
    if args.tb_embedding:
        visualise.check_tb_embedding(args.tb_embedding, args.overwrite)
    devices.resolve_device(args.device, set_device=False)


def loader_workers(args) -> int:
    """-j as given, else the default for this machine (parallelism.default_workers, at most the released
    4)."""
    return parallelism.loader_workers(args.workers, getattr(args, "threads", 0), RELEASED_WORKERS)


def device_from_args(args) -> torch.device:
    """The device; also sets the intra-op threads (--threads, parallelism.set_threads)."""
    parallelism.set_threads(getattr(args, "threads", 0), args.workers)
    return devices.resolve_device(args.device)


# ----------------------------------------------------------------------------------------------------
# data


def load_benchmark(args, layout: graph.Layout | None = None
                   ) -> tuple[dataset_table.Benchmark, dataset.SkeletonSplit, dataset.SkeletonSplit]:
    """The benchmark, its training split and its test split ('val' on disk); num_class filled in. `layout`
    (resolve_layout): the skeleton of a custom folder (default: --layout, else NTU's)."""
    layout = layout or dataset_table.resolve_layout(args.finetune_dataset, getattr(args, "layout", None))
    benchmark = dataset_table.resolve_benchmark(args.finetune_dataset, args.protocol, args.data_dir, layout)
    train_split, test_split = (dataset.load_split(benchmark.folder, part, benchmark.num_class,
                                                  benchmark.skeleton) for part in ("train", "val"))
    for split in (train_split, test_split):
        if len(split) == 0:
            raise ValueError(f"{split.path}: the split holds no clips")
        dataset.require_finite(split, allow=getattr(args, "allow_nonfinite", False))
    check_class_overlap(train_split, test_split)
    num_class = benchmark.num_class or max(train_split.num_class, test_split.num_class)
    return dataclasses.replace(benchmark, num_class=num_class), train_split, test_split


def check_class_overlap(train_split, test_split) -> None:
    """Error when the test set shares no class with the training set (the accuracy would be 0 by
    construction); a warning naming the test classes the training set lacks."""
    train, test = set(np.unique(train_split.labels).tolist()), set(np.unique(test_split.labels).tolist())
    if not train & test:
        raise ValueError(f"{test_split.path}: the test set's classes {_classes(test)} and the training set's "
                         f"{_classes(train)} ({train_split.path}) share none")
    unseen = test - train
    if unseen:
        count = int(np.isin(test_split.labels, sorted(unseen)).sum())
        print(f"warning: {count} of {len(test_split)} test clips belong to classes the training set lacks: "
              f"{_classes(unseen)} (they cannot be classified correctly)", file=sys.stderr)


def _classes(labels: set, limit: int = 10) -> str:
    ordered = sorted(labels)
    return "{" + ", ".join(map(str, ordered[:limit])) + (", ..." if len(ordered) > limit else "") + "}"


def make_loader(split, train: bool, batch_size: int, workers: int, device: torch.device, shuffle: bool,
                indices=None, seed: int | None = None, window: int = dataset.WINDOW) -> DataLoader:
    """With a seed, the training crops are a function of (seed, epoch, clip): call the feeder's set_epoch
    every epoch, and a resumed run continues exactly as an uninterrupted one."""
    feeder = dataset.DownstreamFeeder(split, train=train, window=window, indices=indices, seed=seed)
    return DataLoader(feeder, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=False,
                      worker_init_fn=parallelism.worker_init)


# ----------------------------------------------------------------------------------------------------
# checkpoints and the classifier


@dataclasses.dataclass
class PretrainedSource:
    path: str | None                 # None for --pretrained none
    state_dict: dict | None
    args: dict
    sha256: str | None
    epoch: int | None
    record: dict | None = None       # {"encoder", "encoder_config"} of ours; None in released files
    layout: dict | None = None       # the recorded skeleton layout (graph.Layout.record); None: none


def clip_window(args, source: PretrainedSource) -> int:
    """Frames per clip: --window, else the pretraining run's recorded --window, else 64 (released). A
    --window other than the recorded one is refused: the encoder was trained on clips of that length."""
    recorded = source.args.get("window")
    given = getattr(args, "window", None)
    if given is not None and recorded is not None and given != recorded:
        raise ValueError(f"{source.path} was pretrained with --window {recorded}, but --window {given} was "
                         f"given")
    return given or recorded or dataset.WINDOW


def load_pretrained_source(path: str) -> PretrainedSource:
    if path is None or path == "":
        raise ValueError("--pretrained is empty: give a checkpoint path, or 'none' for a randomly "
                         "initialised encoder")
    if path.lower() == "none":
        return PretrainedSource(None, None, {}, None, None)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--pretrained {path!r} does not exist (use --pretrained none to evaluate a "
                                f"randomly initialised encoder on purpose)")
    ckpt = checkpoints.load_checkpoint(path)
    state_dict = checkpoints.extract_state_dict(ckpt)
    ckpt_args = ckpt.get("args") if isinstance(ckpt, dict) and isinstance(ckpt.get("args"), dict) else {}
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    return PretrainedSource(path, state_dict, dict(ckpt_args), atomic_files.sha256_file(path),
                            int(epoch) if isinstance(epoch, (int, float)) else None,
                            checkpoints.encoder_record(ckpt, path), checkpoints.layout_record(ckpt, path))


def released_weights_config(state_dict: dict) -> dict | None:
    """BiGRU sizes read from the weight shapes of a released file (which records no encoder); None when
    the weights are not a BiGRU's."""
    for prefix in ("encoder_q", "encoder_q_motion", "encoder_q_bone"):
        key = f"{prefix}.encoder.gru.weight_hh_l0"
        if key in state_dict:
            layers = 0
            while f"{prefix}.encoder.gru.weight_hh_l{layers}" in state_dict:
                layers += 1
            return {"hidden_size": int(state_dict[key].shape[1]), "num_layers": layers}
    return None


def resolve_layout(args, source: PretrainedSource) -> graph.Layout:
    """The skeleton layout of the evaluation: --layout, else the checkpoint's record (for a custom folder),
    else the dataset's. A --layout, or a dataset's layout, that contradicts the record is a ValueError
    naming both."""
    given = getattr(args, "layout", None)
    recorded = (graph.layout_from_description(source.layout, f"{source.path}: the recorded layout")
                if source.layout is not None else None)
    layout = dataset_table.resolve_layout(args.finetune_dataset, given, fallback=recorded)
    if recorded is not None and layout != recorded:
        told = f"--layout {given}" if given is not None else f"dataset {args.finetune_dataset}'s layout"
        raise ValueError(f"{source.path} was pretrained on layout {recorded.name!r} ({recorded.num_joints} "
                         f"joints), but {told} is layout {layout.name!r} ({layout.num_joints} joints)")
    return layout


def resolve_model_config(args, source: PretrainedSource, layout: graph.Layout | None = None
                         ) -> cmd_model.ModelSpec:
    """The model to build (cmd_model.ModelSpec): the encoder name and config, the skeleton `layout`
    (default: resolve_layout) and where the config came from ('checkpoint record', 'checkpoint weights'
    for released files, 'command line and defaults' for --pretrained none).

    Flags that contradict the checkpoint are a ValueError naming both values.
    """
    layout = layout or resolve_layout(args, source)
    cmd_model.check_skeleton_representation(getattr(args, "finetune_skeleton_representation", None),
                                            "--finetune-skeleton-representation")
    cli_encoder = args.encoder
    if source.record is not None:
        name, recorded = source.record["encoder"], source.record["encoder_config"]
        origin = "checkpoint record"
    elif source.state_dict is not None:
        recorded, origin = released_weights_config(source.state_dict), "checkpoint weights"
        if recorded is None:
            raise ValueError(f"{source.path} records no encoder and its weights are not those of a released "
                             f"BiGRU checkpoint (no encoder_q.encoder.gru.weight_hh_l0)")
        name = cmd_model.DEFAULT_ENCODER
    else:       # the defaults for the benchmark's skeleton (joint count, graph), then the flags
        name, origin = cli_encoder or cmd_model.DEFAULT_ENCODER, "command line and defaults"
        recorded = cmd_model.layout_overrides(name, layout)
    if cli_encoder is not None and cli_encoder != name:
        raise ValueError(f"{source.path} holds encoder {name!r} ({origin}), but --encoder {cli_encoder} "
                         f"was given")
    if name not in cmd_model.ENCODERS:
        raise ValueError(f"{source.path}: encoder {name!r} ({origin}) is not available; valid names: "
                         f"{sorted(cmd_model.ENCODERS)}")
    overrides = cmd_model.encoder_overrides(name, args)
    config = cmd_model.make_encoder_config(name, recorded, source=f"{source.path} ({origin})")
    for field, value in overrides.items():
        if field in recorded and recorded[field] != value:
            flag = next(f.option for f in cmd_model.ENCODERS[name].FLAGS if f.field == field)
            raise ValueError(f"{source.path} was pretrained with {name} {field} = {recorded[field]!r} "
                             f"({origin}), but {flag} {value} was given")
    return cmd_model.model_spec(name, layout, config, overrides, origin)


def build_classifier(args, num_class: int, source: PretrainedSource, device: torch.device,
                     train_split: dataset.SkeletonSplit | None = None, layout: graph.Layout | None = None):
    """CMDClassifier for args.view with the checkpoint's query encoders loaded (heads stay new).

    A random encoder (--pretrained none) gets BatchNorm statistics estimated on `train_split`: with the
    statistics it was initialised with (mean 0, variance 1), an ST-GCN's eval-mode features are nearly
    constant (std ~1e-8), which puts its linear probe at chance and makes the baseline unfair."""
    layout = layout or resolve_layout(args, source)
    if source.path == "raw":
        return raw_probe(args, num_class, device, train_split, layout)
    spec = resolve_model_config(args, source, layout)
    config = model_info(spec, clip_window(args, source))
    trained = 0 if not getattr(args, "finetune", False) else (3 if args.view == "all" else 1)
    machine.check_memory(cmd_model.classifier_bytes(spec, num_class, trained), device,
                         f"the classifier ({spec.encoder} encoders, {num_class} classes)",
                         "lower the encoder's sizes (--hidden-size, ...) or check the labels' range")
    model = cmd_model.CMDClassifier(num_class, view=args.view, spec=spec)
    if source.state_dict is not None:
        model.load_pretrained(source.state_dict, source=source.path)
    model = model.to(device)
    if source.state_dict is None and train_split is not None:
        loader = make_loader(train_split, train=False, batch_size=args.batch_size, workers=args.workers,
                             device=device, shuffle=False, window=config["window"])
        count = estimate_batchnorm_statistics(model, loader, device)
        if count:
            note = f"estimated on {count} training clips (random encoder)"
            config = {**config, "batchnorm_statistics": note}
            print(f"=> random encoder: BatchNorm statistics estimated on {count} training clips")
    return model, config


def model_info(spec: cmd_model.ModelSpec | None, window: int, layout: graph.Layout | None = None) -> dict:
    """What the results files record of the model (reports.results_record): encoder, its config, where
    that came from, the clips' window and the layout's record; `spec` None: the raw coordinates."""
    if spec is None:
        return {"encoder": RAW, "encoder_config": None, "origin": {}, "window": window,
                "layout": layout.record()}
    return {"encoder": spec.encoder, "encoder_config": spec.config, "origin": spec.origin, "window": window,
            "layout": spec.layout.record()}


def batchnorm_layers(model: torch.nn.Module) -> list:
    """The BatchNorm layers `model.features` uses: those of the view's encoders for a CMDClassifier."""
    parts = model.view_encoders() if hasattr(model, "view_encoders") else [model]
    return [m for part in parts for m in part.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def estimate_batchnorm_statistics(model, loader, device: torch.device) -> int:
    """Replace the running statistics of the BatchNorm layers the view uses by their average over
    `loader`'s batches (each batch normalised with its own statistics, as in training); returns the clip
    count, 0 when there is no BatchNorm. Everything else stays in eval mode."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [bn.momentum for bn in layers]
    was_training = model.training
    model.eval()
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None                  # cumulative average over all batches
        bn.train()
    count = 0
    try:
        for x, _ in tqdm(loader, desc="BatchNorm statistics", leave=False, dynamic_ncols=True):
            model(x.to(device, non_blocking=True))     # the view's streams, as classified
            count += len(x)
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
        model.train(was_training)
    return count


RAW = "raw"           # --pretrained raw: no encoder, the coordinates themselves


class RawCoordinates(torch.nn.Module):
    """`--pretrained raw`: the baseline without an encoder. Features are the centre-cropped clips
    themselves, flattened (for view 'all', the joint, motion and bone clips concatenated).

    With `num_class`, a linear probe for action_classification.py, built as the encoders' is: per stream,
    the flattened clip standardised per dimension (a BatchNorm without affine parameters whose statistics
    are estimated on the training clips, as for a random encoder's) and one Linear head; view 'all' fuses
    the streams' logits by their mean, as CMDClassifier does."""

    def __init__(self, view: str, layout="ntu", num_class: int | None = None,
                 window: int = dataset.WINDOW):
        super().__init__()
        self.view, self.layout = view, graph.get_layout(layout)
        if num_class is not None:
            dim = 3 * window * self.layout.num_joints * dataset.NUM_PERSONS
            self.norm = torch.nn.ModuleDict({m: torch.nn.BatchNorm1d(dim, affine=False)
                                             for m in self._modalities()})
            self.fc = torch.nn.ModuleDict({m: torch.nn.Linear(dim, num_class) for m in self._modalities()})

    def _modalities(self) -> tuple[str, ...]:
        return cmd_model.MODALITIES if self.view == "all" else (self.view,)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([cmd_model.to_modality(x, mod, self.layout).flatten(1)
                          for mod in self._modalities()], dim=1)

    def view_encoders(self) -> list:
        return list(self.norm.values())

    def heads(self) -> list:
        return list(self.fc.values())

    def encoder_record(self) -> dict:
        return {"encoder": RAW, "encoder_config": None}

    def stream_logits(self, x: torch.Tensor) -> dict:
        return {m: self.fc[m](self.norm[m](cmd_model.to_modality(x, m, self.layout).flatten(1)))
                for m in self._modalities()}

    fuse_logits = staticmethod(cmd_model.CMDClassifier.fuse_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse_logits(self.stream_logits(x))


def raw_probe(args, num_class: int, device: torch.device, train_split,
              layout: graph.Layout | None = None) -> tuple:
    """The raw coordinates' linear probe (RawCoordinates with a head), standardised by the mean and the
    (unbiased) variance of the training clips' features, per dimension. `layout`: default the dataset's
    (--layout for a custom folder)."""
    layout = layout or dataset_table.resolve_layout(args.finetune_dataset, getattr(args, "layout", None))
    if getattr(args, "finetune", False):
        raise ValueError("--pretrained raw has no encoder to fine-tune: use it with linear evaluation")
    window = getattr(args, "window", None) or dataset.WINDOW
    model = RawCoordinates(args.view, layout, num_class, window).to(device)
    loader = make_loader(train_split, train=False, batch_size=args.batch_size, workers=args.workers,
                         device=device, shuffle=False, window=window)
    sums = {m: 0.0 for m in model.norm}
    squares = {m: 0.0 for m in model.norm}
    count = 0
    with torch.no_grad():
        for x, _ in tqdm(loader, desc="standardisation", leave=False, dynamic_ncols=True):
            x = x.to(device, non_blocking=True)
            for m in model.norm:
                flat = cmd_model.to_modality(x, m, model.layout).flatten(1).double()
                sums[m] = sums[m] + flat.sum(0)
                squares[m] = squares[m] + (flat * flat).sum(0)
            count += len(x)
        for m, norm in model.norm.items():
            mean = sums[m] / count
            var = (squares[m] - count * mean * mean).clamp(min=0) / max(count - 1, 1)
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
    return model, {**model_info(None, window, model.layout),
                   "batchnorm_statistics": f"standardisation by the mean and variance of {count} training "
                                           f"clips"}


@torch.no_grad()
def extract_features(model, loader, device: torch.device, desc: str = "features"):
    """Pre-head features of the model's view (eval mode) and labels, both on `device`."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        feats.append(model.features(x.to(device, non_blocking=True)).float())
        labels.append(y.to(device))
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels).long()


if __name__ == "__main__":
    # python evaluation.py summarise RESULTS.json ... (the released workflow's command; see reports.py)
    from cli import cli_errors  # noqa: PLC0415
    from reporting import reports  # noqa: PLC0415

    sys.exit(cli_errors.run_main(reports.summarise_command, prog="evaluation.py"))
