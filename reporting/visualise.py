"""Pictures of the test features for the evaluation CLIs: a 2-D t-SNE coloured by class (--tsne, needs
matplotlib) and tensorboard's projector data (--tb-embedding). Neither replaces an earlier file without
--overwrite (run_folder: checked before any work and again when the files are published)."""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import torch

from storage import atomic_files, run_folder, write_faults

PROJECTOR_CONFIG = "projector_config.pbtxt"      # what marks a folder as holding projector data

MATPLOTLIB_MISSING = "--tsne needs matplotlib, an optional dependency: pip install matplotlib"


def check_dependencies(args) -> None:
    """Fail before any work when --tsne is asked for without matplotlib."""
    if getattr(args, "tsne", None):
        try:
            import matplotlib  # noqa: F401, PLC0415
        except ImportError as exc:
            raise SystemExit(MATPLOTLIB_MISSING) from exc


def check_tb_embedding(logdir: str, overwrite: bool) -> None:
    """--tb-embedding must be a folder we can write, not holding projector data unless --overwrite."""
    run_folder.check_writable_folder(logdir, "--tb-embedding")
    config = os.path.join(logdir, PROJECTOR_CONFIG)
    if os.path.exists(config) and not overwrite:
        raise run_folder.RunFolderError(f"--tb-embedding {logdir} already holds projector data ({config}); "
                                        f"choose another folder or add --overwrite to replace it")


def write_tb_embedding(logdir: str, features: np.ndarray, labels: np.ndarray, tag: str = "test_features",
                       overwrite: bool = False) -> None:
    """Features and labels in tensorboard's projector format (`tensorboard --logdir DIR`, Projector tab).

    Written into a temporary folder beside `logdir`, then moved file by file into it (all or none: a
    file of another run that appeared there meanwhile is never replaced without `overwrite`)."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415  (tensorboard is only needed here)
    parent = os.path.dirname(os.path.abspath(logdir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(logdir))}.", suffix=".tmp", dir=parent)
    try:
        writer = SummaryWriter(tmp)
        writer.add_embedding(torch.as_tensor(features), metadata=[int(v) for v in labels], tag=tag)
        writer.close()
        pairs = [(os.path.join(root, name), os.path.join(logdir, os.path.relpath(root, tmp), name))
                 for root, _, names in os.walk(tmp) for name in names]
        run_folder.publish_files(pairs, overwrite, "--tb-embedding")
    except OSError as exc:
        write_faults.raise_write_failure(exc, logdir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plot_tsne(path: str, features: np.ndarray, labels: np.ndarray, seed: int | None = None,
              title: str = "", overwrite: bool = True) -> np.ndarray:
    """2-D t-SNE of `features` saved as a PNG coloured by class; returns the embedding. Without
    `overwrite`, a file that appeared at `path` meanwhile is not replaced (RunFolderError)."""
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
    try:
        with atomic_files.atomic_open(path, "wb", exclusive=not overwrite) as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    except FileExistsError:
        raise run_folder.RunFolderError(f"--tsne {path} appeared while this run worked (written by another "
                                        f"run?); it was left as it is; choose another name, or add "
                                        f"--overwrite") from None
    finally:
        plt.close(fig)
    return embedding


def write_visualisations(args, features: np.ndarray, labels: np.ndarray) -> None:
    if args.tb_embedding:
        write_tb_embedding(args.tb_embedding, features, labels, overwrite=args.overwrite)
        print(f"tensorboard projector data written to {args.tb_embedding} "
              f"(tensorboard --logdir {args.tb_embedding})")
    if args.tsne:
        plot_tsne(args.tsne, features, labels, args.seed, overwrite=args.overwrite,
                  title=f"{args.finetune_dataset} {args.protocol}, {args.view} view")
        print(f"t-SNE written to {args.tsne}")
