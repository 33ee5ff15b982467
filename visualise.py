"""Pictures of the test features for the evaluation CLIs: a 2-D t-SNE coloured by class (--tsne, needs
matplotlib) and tensorboard's projector data (--tb-embedding)."""
from __future__ import annotations

import numpy as np
import torch

import runtime

MATPLOTLIB_MISSING = "--tsne needs matplotlib, an optional dependency: pip install matplotlib"


def check_dependencies(args) -> None:
    """Fail before any work when --tsne is asked for without matplotlib."""
    if getattr(args, "tsne", None):
        try:
            import matplotlib  # noqa: F401, PLC0415
        except ImportError as exc:
            raise SystemExit(MATPLOTLIB_MISSING) from exc


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
