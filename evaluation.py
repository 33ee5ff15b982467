"""What action_classification.py and knn_eval.py share: the classifier built from a checkpoint, features,
and the results they write.

A checkpoint is ours (`pretrain_cmd.py`, with an `args` dict) or a released CMD file
(`checkpoint_0450.pth.tar`, keys of SPEC.md sections 2-3, maybe with `module.`); both are read with
`torch.load(weights_only=True)`. `--pretrained none` is the explicit random-initialisation baseline;
a path that does not exist is an error (the released code silently trains from random weights then).
The encoder type and hidden size come from, in order: the command line, the checkpoint's `args`, the
shapes of its weights, the defaults (bigru, 1024).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import checkpoints
import cmd_model
import dataset
import runtime

DEFAULT_ENCODER = "bigru"
DEFAULT_HIDDEN_SIZE = 1024
MATPLOTLIB_MISSING = "--tsne needs matplotlib, an optional dependency: pip install matplotlib"


def add_common_arguments(parser) -> None:
    """Flags shared by both evaluation scripts (the released names where the released code has them)."""
    parser.add_argument("--pretrained", required=True, metavar="PATH|none",
                        help="pretraining checkpoint (ours or a released checkpoint_0450.pth.tar); "
                             "'none' evaluates a randomly initialised encoder")
    parser.add_argument("--finetune-dataset", default="ntu60", choices=dataset.DATASETS,
                        help="benchmark to evaluate on; 'custom' reads --data-dir itself")
    parser.add_argument("--protocol", default="cross_subject", choices=dataset.PROTOCOLS)
    parser.add_argument("--data-dir", default="./data",
                        help="root of the prepared data (see prepare_data.py)")
    parser.add_argument("--view", default="joint", choices=cmd_model.CMDClassifier.VIEWS,
                        help="stream to evaluate; 'all' is the 3-stream fusion (mean of the heads' logits)")
    parser.add_argument("--finetune-skeleton-representation", default=None,
                        choices=sorted(cmd_model.SKELETON_REPRESENTATIONS),
                        help="released name of the encoder type (seq-based = bigru, graph-based = stgcn)")
    parser.add_argument("--encoder", default=None, choices=sorted(cmd_model.ENCODERS),
                        help="encoder type (default: the checkpoint's, else bigru)")
    parser.add_argument("--hidden-size", type=int, default=None,
                        help="GRU hidden size H (default: the checkpoint's args, else its weight shapes, "
                             "else 1024)")
    parser.add_argument("-j", "--workers", type=int, default=4, help="data loading workers")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of every RNG (unseeded by default, as released)")
    parser.add_argument("--output", default=None, metavar="JSON", help="write the results to this JSON file")
    parser.add_argument("--tb-embedding", default=None, metavar="DIR",
                        help="write the test features and labels for tensorboard's projector to DIR")
    parser.add_argument("--tsne", default=None, metavar="PATH.png",
                        help="draw a 2-D t-SNE of the test features coloured by class (needs matplotlib)")


def seed_from_args(args) -> None:
    runtime.seed_everything(args.seed)


def device_from_args(args) -> torch.device:
    return runtime.resolve_device(args.device)


def check_visualisation_dependencies(args) -> None:
    """Fail before any work when --tsne is asked for without matplotlib."""
    if getattr(args, "tsne", None):
        try:
            import matplotlib  # noqa: F401, PLC0415
        except ImportError as exc:
            raise SystemExit(MATPLOTLIB_MISSING) from exc


# ----------------------------------------------------------------------------------------------------
# data


def load_benchmark(args) -> tuple[dataset.Benchmark, dataset.SkeletonSplit, dataset.SkeletonSplit]:
    """The benchmark, its training split and its test split ('val' on disk); num_class filled in."""
    benchmark = dataset.resolve_benchmark(args.finetune_dataset, args.protocol, args.data_dir)
    train_split = dataset.load_split(benchmark.folder, "train")
    test_split = dataset.load_split(benchmark.folder, "val")
    num_class = benchmark.num_class or max(train_split.num_class, test_split.num_class)
    too_large = max(train_split.num_class, test_split.num_class)
    if too_large > num_class:
        raise ValueError(f"{benchmark.folder}: labels reach {too_large - 1}, but {benchmark.dataset} has "
                         f"{num_class} classes (0-based labels expected)")
    return dataclasses.replace(benchmark, num_class=num_class), train_split, test_split


def make_loader(split, train: bool, batch_size: int, workers: int, device: torch.device, shuffle: bool,
                indices=None) -> DataLoader:
    feeder = dataset.DownstreamFeeder(split, train=train, indices=indices)
    return DataLoader(feeder, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=False)


# ----------------------------------------------------------------------------------------------------
# checkpoints and the classifier


@dataclasses.dataclass
class PretrainedSource:
    path: str | None                 # None for --pretrained none
    state_dict: dict | None
    args: dict
    sha256: str | None
    epoch: int | None


def load_pretrained_source(path: str) -> PretrainedSource:
    if path is None or path == "":
        raise ValueError("--pretrained is empty: give a checkpoint path, or 'none' for a randomly "
                         "initialised encoder")
    if path.lower() == "none":
        return PretrainedSource(None, None, {}, None, None)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--pretrained {path!r} does not exist (use --pretrained none to evaluate a "
                                f"randomly initialised encoder on purpose)")
    ckpt = checkpoints.load_checkpoint(path)
    state_dict = checkpoints.extract_state_dict(ckpt)
    ckpt_args = ckpt.get("args") if isinstance(ckpt, dict) and isinstance(ckpt.get("args"), dict) else {}
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    return PretrainedSource(path, state_dict, dict(ckpt_args), runtime.sha256_file(path),
                            int(epoch) if isinstance(epoch, (int, float)) else None)


def weights_config(state_dict: dict) -> dict:
    """Encoder type and hidden size read from the joint query encoder's weight shapes (bigru only)."""
    found = {}
    for key in ("encoder_q.encoder.gru.weight_hh_l0", "encoder_q_motion.encoder.gru.weight_hh_l0",
                "encoder_q_bone.encoder.gru.weight_hh_l0"):
        if key in state_dict:
            found = {"encoder": "bigru", "hidden_size": int(state_dict[key].shape[1])}
            break
    return found


def resolve_model_config(args, source: PretrainedSource) -> dict:
    """encoder, hidden_size, extra encoder kwargs and where each came from."""
    representation = getattr(args, "finetune_skeleton_representation", None)
    cli_encoder = args.encoder
    if representation is not None:
        mapped = cmd_model.SKELETON_REPRESENTATIONS[representation]
        if cli_encoder is not None and cli_encoder != mapped:
            raise ValueError(f"--finetune-skeleton-representation {representation} means encoder {mapped!r}, "
                             f"but --encoder {cli_encoder!r} was given")
        cli_encoder = mapped
    from_weights = weights_config(source.state_dict) if source.state_dict is not None else {}
    config, origin = {}, {}
    for name, cli_value, default in (("encoder", cli_encoder, DEFAULT_ENCODER),
                                     ("hidden_size", args.hidden_size, DEFAULT_HIDDEN_SIZE)):
        for where, value in (("command line", cli_value), ("checkpoint args", source.args.get(name)),
                             ("checkpoint weights", from_weights.get(name)), ("default", default)):
            if value is not None:
                config[name], origin[name] = value, where
                break
        recorded = source.args.get(name)
        if recorded is not None and recorded != config[name]:
            raise ValueError(f"{source.path} was pretrained with {name} = {recorded!r} (its args), but "
                             f"{config[name]!r} came from the {origin[name]}")
        if name in from_weights and from_weights[name] != config[name]:
            raise ValueError(f"{source.path}: its weights have {name} = {from_weights[name]!r}, but "
                             f"{config[name]!r} came from the {origin[name]}")
    if config["encoder"] not in cmd_model.ENCODERS:
        raise ValueError(f"encoder {config['encoder']!r} (from the {origin['encoder']}) is not available; "
                         f"valid names: {sorted(cmd_model.ENCODERS)}")
    kwargs = {}
    if config["encoder"] == "bigru" and source.args.get("gru_mode"):
        kwargs["gru_mode"] = source.args["gru_mode"]       # a model pretrained as a true BiGRU stays one
    return {"encoder": config["encoder"], "hidden_size": int(config["hidden_size"]), "encoder_kwargs": kwargs,
            "origin": origin}


def build_classifier(args, num_class: int, source: PretrainedSource, device: torch.device):
    """CMDClassifier for args.view with the checkpoint's query encoders loaded (heads stay new)."""
    config = resolve_model_config(args, source)
    model = cmd_model.CMDClassifier(num_class, encoder=config["encoder"], hidden_size=config["hidden_size"],
                                    view=args.view, **config["encoder_kwargs"])
    if source.state_dict is not None:
        model.load_pretrained(source.state_dict, source=source.path)
    return model.to(device), config


class RawCoordinates(torch.nn.Module):
    """`knn_eval.py --pretrained raw`: the baseline without an encoder. Features are the centre-cropped
    clips themselves, flattened (for view 'all', the joint, motion and bone clips concatenated)."""

    def __init__(self, view: str):
        super().__init__()
        self.view = view

    def features(self, x: torch.Tensor) -> torch.Tensor:
        mods = cmd_model.MODALITIES if self.view == "all" else (self.view,)
        return torch.cat([cmd_model.to_modality(x, mod).flatten(1) for mod in mods], dim=1)


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


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> dict:
    """Number of samples whose label is among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred == target[:, None]
    return {k: int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks}


# ----------------------------------------------------------------------------------------------------
# outputs


def save_npy(path: str, array: np.ndarray) -> None:
    with runtime.atomic_open(path, "wb") as f:
        np.save(f, array)


def write_tb_embedding(logdir: str, features: np.ndarray, labels: np.ndarray,
                       tag: str = "test_features") -> None:
    """Features and labels in tensorboard's projector format (`tensorboard --logdir DIR`, Projector tab)."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415  (tensorboard is only needed here)
    writer = SummaryWriter(logdir)
    writer.add_embedding(torch.as_tensor(features), metadata=[int(v) for v in labels], tag=tag)
    writer.close()


def plot_tsne(path: str, features: np.ndarray, labels: np.ndarray, seed: int | None = None,
              title: str = "") -> np.ndarray:
    """2-D t-SNE of `features` saved as a PNG coloured by class; returns the embedding."""
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise SystemExit(MATPLOTLIB_MISSING) from exc
    from sklearn.manifold import TSNE  # noqa: PLC0415

    n = len(features)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 test samples, got {n}")
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed or 0).fit_transform(
        np.asarray(features, dtype=np.float64))
    fig, ax = plt.subplots(figsize=(7, 7))
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab20" if len(classes) <= 20 else "nipy_spectral", max(len(classes), 1))
    for i, c in enumerate(classes):
        sel = labels == c
        ax.scatter(embedding[sel, 0], embedding[sel, 1], s=6, color=cmap(i), label=str(int(c)))
    if len(classes) <= 20:
        ax.legend(title="class", markerscale=2, fontsize="small", loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {n} test features, {len(classes)} classes")
    with runtime.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return embedding


def write_visualisations(args, features: np.ndarray, labels: np.ndarray) -> None:
    if args.tb_embedding:
        write_tb_embedding(args.tb_embedding, features, labels)
        print(f"tensorboard projector data written to {args.tb_embedding} "
              f"(tensorboard --logdir {args.tb_embedding})")
    if args.tsne:
        plot_tsne(args.tsne, features, labels, args.seed,
                  title=f"{args.finetune_dataset} {args.protocol}, {args.view} view")
        print(f"t-SNE written to {args.tsne}")


def results_record(args, benchmark, source: PretrainedSource, model_config: dict, protocol_name: str,
                   metrics: dict, epochs: int, started: float, extra: dict | None = None) -> dict:
    """The results JSON: what was evaluated, how, on which checkpoint, with what outcome."""
    finished = time.time()
    record = {
        "benchmark": benchmark.dataset,
        "protocol": benchmark.protocol,
        "data_folder": benchmark.folder,
        "num_class": benchmark.num_class,
        "evaluation": protocol_name,
        "view": args.view,
        "checkpoint": source.path or "none",
        "checkpoint_sha256": source.sha256,
        "checkpoint_epoch": source.epoch,
        "encoder": model_config["encoder"],
        "hidden_size": model_config["hidden_size"],
        "model_config_origin": model_config["origin"],
        "metrics": metrics,
        "epochs": epochs,
        "seed": args.seed,
        "time": {"started": _iso(started), "finished": _iso(finished),
                 "seconds": round(finished - started, 3)},
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "args": runtime.plain_args(args),
    }
    record.update(extra or {})
    return record


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def markdown_table(record: dict, columns) -> str:
    """A one-row markdown table: what was evaluated, then `columns` [(header, value)]."""
    checkpoint = os.path.basename(record["checkpoint"]) if record["checkpoint"] != "none" else "none"
    head = [("benchmark", record["benchmark"]), ("protocol", record["protocol"]),
            ("evaluation", record["evaluation"]), ("view", record["view"]), ("checkpoint", checkpoint)]
    cells = head + list(columns)

    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)
    return "\n".join(["| " + " | ".join(h for h, _ in cells) + " |",
                      "|" + "|".join("---" for _ in cells) + "|",
                      "| " + " | ".join(fmt(v) for _, v in cells) + " |"])


def report(output: str | None, record: dict, columns) -> str:
    table = markdown_table(record, columns)
    print(table)
    if output:
        runtime.atomic_write_json(output, record)
        print(f"results written to {output}")
    return table


# ----------------------------------------------------------------------------------------------------
# summaries over several runs (scripts/semi_supervised.sh: 5 seeds per labelled fraction)


def _metric(record: dict, name: str):
    """top-1 of a results record: 'last' / 'best' for training runs, 'k1', 'k5', ... for kNN."""
    metrics = record["metrics"]
    if name in ("last", "best"):
        return metrics.get(name, {}).get("top1")
    return metrics.get(f"top1_{name}")


def summarise_results(paths, metric_names=("last", "best")) -> list[dict]:
    """Group results JSONs by benchmark, protocol, evaluation, view, checkpoint and labelled fraction;
    mean and sample standard deviation (ddof=1; 0 for one run) of each top-1 over the group's runs."""
    import json  # noqa: PLC0415

    groups: dict = {}
    for path in paths:
        with open(path) as f:
            record = json.load(f)
        subset = record.get("subset") or {}
        key = (record["benchmark"], record["protocol"], record["evaluation"], record["view"],
               os.path.basename(record["checkpoint"]), subset.get("ratio", 1.0))
        groups.setdefault(key, []).append(record)
    rows = []
    for key, records in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        row = dict(zip(("benchmark", "protocol", "evaluation", "view", "checkpoint", "data_ratio"), key))
        row["runs"] = len(records)
        for name in metric_names:
            values = [_metric(r, name) for r in records]
            values = np.array([v for v in values if v is not None], dtype=np.float64)
            if len(values):
                row[f"{name}_mean"] = float(values.mean())
                row[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def summary_table(rows, metric_names=("last", "best")) -> str:
    headers = ["benchmark", "protocol", "evaluation", "view", "checkpoint", "labels", "runs"] + \
        [f"top-1 {n} (mean ± std)" for n in metric_names]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        cells = [r["benchmark"], r["protocol"], r["evaluation"], r["view"], r["checkpoint"],
                 f"{100 * r['data_ratio']:g}%", str(r["runs"])]
        cells += [f"{r[n + '_mean']:.2f} ± {r[n + '_std']:.2f}" if n + "_mean" in r else "-"
                  for n in metric_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    # python evaluation.py summarise RESULTS.json ... : mean and std per group of runs
    import sys  # noqa: PLC0415

    if len(sys.argv) < 3 or sys.argv[1] != "summarise":
        raise SystemExit("usage: python evaluation.py summarise RESULTS.json [RESULTS.json ...]")
    print(summary_table(summarise_results(sys.argv[2:])))
