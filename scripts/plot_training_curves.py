"""Loss and contrastive top-1 per epoch of a pretraining run, from its log.jsonl, as one PNG.

    python scripts/plot_training_curves.py CHECKPOINT_DIR/log.jsonl OUT.png [--title TEXT]

Left: the total loss and its parts (the three InfoNCE terms and the cross-modal distillation term).
Middle: the contrastive top-1 of each stream (how often the query's own key scores above all K queue
keys; chance is 100/(K+1) %). Right, when the log holds the training monitor's looks
(training_monitor.py): the mean pairwise cosine of a fixed batch's query features per stream (collapse:
near 1) and the validation 1-NN (%) on a second axis.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def read_log(path: str) -> list[dict]:
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise SystemExit(f"{path}: no epochs logged yet")
    return records


def plot(records: list[dict], out: str, title: str = "") -> None:
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    epochs = [r["epoch"] for r in records]
    looks = [r for r in records if "monitor_cos_joint" in r]
    fig, axes = plt.subplots(1, 3 if looks else 2, figsize=(16 if looks else 11, 4))
    left, right = axes[0], axes[1]
    for key, label in (("loss", "total"), ("loss_joint", "InfoNCE joint"), ("loss_motion", "InfoNCE motion"),
                       ("loss_bone", "InfoNCE bone"), ("loss_sim", "distillation (CMD)")):
        left.plot(epochs, [r[key] for r in records], marker=".", label=label)
    left.set_xlabel("epoch")
    left.set_ylabel("loss (epoch mean)")
    left.legend(fontsize="small")
    for key in ("top1_joint", "top1_motion", "top1_bone"):
        right.plot(epochs, [r[key] for r in records], marker=".", label=key.split("_")[1])
    right.set_xlabel("epoch")
    right.set_ylabel("contrastive top-1 (%)")
    right.legend(fontsize="small")
    if looks:
        monitor, at = axes[2], [r["epoch"] for r in looks]
        for m in ("joint", "motion", "bone"):
            monitor.plot(at, [r[f"monitor_cos_{m}"] for r in looks], marker=".", label=f"cosine {m}")
        monitor.set_ylim(-0.05, 1.05)
        monitor.set_xlabel("epoch")
        monitor.set_ylabel("mean pairwise cosine (fixed batch)")
        monitor.legend(fontsize="small", loc="upper left")
        if all("monitor_knn" in r for r in looks):
            knn = monitor.twinx()
            knn.plot(at, [r["monitor_knn"] for r in looks], color="black", marker="o", label="val 1-NN")
            knn.set_ylabel("validation 1-NN top-1 (%)")
            knn.legend(fontsize="small", loc="upper right")
    fig.suptitle(title or "CMD pretraining")
    fig.tight_layout()
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    os.replace(tmp, out)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="log.jsonl written by pretrain_cmd.py (in its --checkpoint-path)")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.log):
        raise SystemExit(f"{args.log}: no such file (expected pretrain_cmd.py's log.jsonl)")
    plot(read_log(args.log), args.out, args.title)
    print(f"training curves written to {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
