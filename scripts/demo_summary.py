"""The demo's table: raw coordinates, random encoder and CMD side by side, from the evaluations' results JSON.

    python scripts/demo_summary.py RESULTS_DIR [--output summary.json]

Reads every *.json that action_classification.py or knn_eval.py wrote into RESULTS_DIR and sorts each
into (view, protocol, encoder) by what the record says: `evaluation` 'linear' or 'knn' (1-NN top-1
from `top1_k1`; linear: top-1 of the last epoch), `checkpoint` 'raw' (knn_eval.py --pretrained raw),
'none' (random encoder) or a checkpoint path (CMD). Prints one markdown table and writes summary.json
{view: {protocol: {"raw": x|null, "random": x, "cmd": x, "cmd_minus_random": x}}}.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

ENCODERS = ("raw", "random", "cmd")
PROTOCOL_NAMES = {"linear": "linear", "knn": "1-NN"}
VIEW_NAMES = {"joint": "joint", "motion": "motion", "bone": "bone", "all": "3-stream fusion"}


def encoder_of(record: dict) -> str:
    checkpoint = record.get("checkpoint")
    return {"raw": "raw", "none": "random"}.get(checkpoint, "cmd")


def top1_of(record: dict) -> float:
    metrics = record["metrics"]
    if record["evaluation"] == "knn":
        return float(metrics["top1_k1"])
    return float(metrics["last"]["top1"])


def summarise(paths) -> dict:
    """{view: {protocol: {raw, random, cmd, cmd_minus_random}}}; a missing entry is None."""
    summary: dict = {}
    for path in sorted(paths):
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record, dict) or record.get("evaluation") not in PROTOCOL_NAMES:
            continue                       # not an evaluation result (summary.json itself, for one)
        if record["evaluation"] == "knn" and "top1_k1" not in record["metrics"]:
            raise ValueError(f"{path}: a kNN result without k=1 (run knn_eval.py with --knn-neighbours 1)")
        cell = summary.setdefault(record["view"], {}).setdefault(
            record["evaluation"], {name: None for name in ENCODERS})
        encoder = encoder_of(record)
        if cell[encoder] is not None:
            raise ValueError(f"{path}: a second {record['evaluation']} result for the {encoder} encoder "
                             f"on view {record['view']}")
        cell[encoder] = top1_of(record)
    for protocols in summary.values():
        for cell in protocols.values():
            both = cell["cmd"] is not None and cell["random"] is not None
            cell["cmd_minus_random"] = cell["cmd"] - cell["random"] if both else None
    return summary


def table(summary: dict) -> str:
    def fmt(v, signed=False):
        return "-" if v is None else (f"{v:+.1f}" if signed else f"{v:.1f}")
    lines = ["| view | protocol | raw coordinates | random encoder | CMD | CMD - random |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for view in sorted(summary, key=lambda v: list(VIEW_NAMES).index(v) if v in VIEW_NAMES else 99):
        for protocol in ("linear", "knn"):
            cell = summary[view].get(protocol)
            if cell is None:
                continue
            lines.append(f"| {VIEW_NAMES.get(view, view)} | {PROTOCOL_NAMES[protocol]} top-1 "
                         f"| {fmt(cell['raw'])} "
                         f"| {fmt(cell['random'])} | {fmt(cell['cmd'])} "
                         f"| {fmt(cell['cmd_minus_random'], True)} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", help="folder holding the evaluations' results JSON files")
    parser.add_argument("--output", default=None, help="write the summary here (default: none)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.results_dir):
        raise SystemExit(f"{args.results_dir}: no such folder (expected the evaluations' results JSON)")
    paths = [p for p in glob.glob(os.path.join(args.results_dir, "*.json"))
             if os.path.abspath(p) != os.path.abspath(args.output or "")]
    summary = summarise(paths)
    if not summary:
        raise SystemExit(f"{args.results_dir}: no linear or kNN results JSON found")
    print(table(summary))
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.output)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
