"""Loss and contrastive top-1 per epoch of a pretraining run, from its log.jsonl, as one PNG.

    python scripts/plot_training_curves.py CHECKPOINT_DIR/log.jsonl OUT.png [--title TEXT]

Left: the total loss and its parts (the three InfoNCE terms and the cross-modal distillation term).
Right: the contrastive top-1 of each stream (how often the query's own key scores above all K queue
keys; chance is 100/(K+1) %).
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
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
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
