"""The table of scripts/demo.sh and scripts/nw_ucla.sh: raw coordinates, random encoder and CMD side by side,
from the evaluations' results JSON of one run, or the mean and spread of several runs' summaries.

    python scripts/comparison_table.py RESULTS_DIR [--output summary.json]
    python scripts/comparison_table.py --runs RUN1/summary.json RUN2/summary.json ... [--output seeds.json]

--output never replaces an existing file without --overwrite, and never one of the files it reads.

Reads every *.json that action_classification.py or knn_eval.py wrote into RESULTS_DIR and sorts each
into (view, protocol, encoder) by what the record says: `evaluation` 'linear' or 'knn' (1-NN top-1
from `top1_k1`; linear: top-1 of the last epoch), `checkpoint` 'raw' (knn_eval.py --pretrained raw),
'none' (random encoder) or a checkpoint path (CMD); the raw coordinates are evaluated by both
(action_classification.py --pretrained raw is their linear probe). Prints one markdown table and writes summary.json
{view: {protocol: {"raw": x|null, "random": x, "cmd": x, "cmd_minus_random": x,
"cmd_minus_raw": x}}}. With --runs, each cell
is the mean over the runs with the sample standard deviation and the range, {"mean", "std", "min", "max",
"values"}, and the table prints mean ± std.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
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
        record = read_json(path, "an evaluation's results JSON")
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
            for base in ("random", "raw"):
                both = cell["cmd"] is not None and cell[base] is not None
                cell[f"cmd_minus_{base}"] = cell["cmd"] - cell[base] if both else None
    return summary


COLUMNS = ("raw", "random", "cmd", "cmd_minus_random", "cmd_minus_raw")


def aggregate(summaries: list[dict]) -> dict:
    """Mean, sample standard deviation (0 for one run) and range of every cell over several summaries;
    a cell missing in any run is None."""
    first = summaries[0]
    out: dict = {}
    for view, protocols in first.items():
        for protocol in protocols:
            cell = out.setdefault(view, {}).setdefault(protocol, {})
            for column in COLUMNS:
                values = [s.get(view, {}).get(protocol, {}).get(column) for s in summaries]
                if any(v is None for v in values):
                    cell[column] = None
                    continue
                cell[column] = {"mean": statistics.fmean(values),
                                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                "min": min(values), "max": max(values), "values": values}
    return out


def table(summary: dict) -> str:
    def fmt(v, signed=False):
        if v is None:
            return "-"
        if isinstance(v, dict):
            return f"{v['mean']:+.1f} ± {v['std']:.1f}" if signed else f"{v['mean']:.1f} ± {v['std']:.1f}"
        return f"{v:+.1f}" if signed else f"{v:.1f}"
    lines = ["| view | protocol | raw coordinates | random encoder | CMD | CMD - random | CMD - raw |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for view in sorted(summary, key=lambda v: list(VIEW_NAMES).index(v) if v in VIEW_NAMES else 99):
        for protocol in ("linear", "knn"):
            cell = summary[view].get(protocol)
            if cell is None:
                continue
            lines.append(f"| {VIEW_NAMES.get(view, view)} | {PROTOCOL_NAMES[protocol]} top-1 "
                         f"| {fmt(cell['raw'])} "
                         f"| {fmt(cell['random'])} | {fmt(cell['cmd'])} "
                         f"| {fmt(cell['cmd_minus_random'], True)} "
                         f"| {fmt(cell.get('cmd_minus_raw'), True)} |")
    return "\n".join(lines)


def read_json(path: str, what: str):
    """The JSON in `path`; SystemExit naming the file for one that cannot be read (binary, not JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:          # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SystemExit(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from None


def read_summaries(paths: list[str]) -> list[dict]:
    summaries = []
    for path in paths:
        summary = read_json(path, "a run's summary.json")
        if not isinstance(summary, dict) or not all(isinstance(v, dict) for v in summary.values()):
            raise SystemExit(f"{path}: not a run's summary.json (expected {{view: {{protocol: cells}}}})")
        summaries.append(summary)
    return summaries


def check_output(output: str | None, inputs: list[str], overwrite: bool) -> None:
    """--output: never one of the inputs, never an existing file without --overwrite (checked before any
    work)."""
    if not output:
        return
    for path in inputs:
        if os.path.exists(path) and os.path.exists(output) and os.path.samefile(path, output) \
                or os.path.abspath(path) == os.path.abspath(output):
            raise SystemExit(f"--output {output} is one of the files read ({path}); it is never replaced by "
                             f"the table made from it: choose another --output")
    if os.path.isdir(output):
        raise SystemExit(f"--output {output} is a folder, expected a file name")
    if os.path.lexists(output) and not overwrite:
        raise SystemExit(f"--output {output} already exists (an earlier summary); choose another name or add "
                         f"--overwrite to replace it")


def write_json(path: str, data: dict, overwrite: bool = False) -> None:
    """Written to a temporary name and renamed when complete; without `overwrite` a file that appeared
    under `path` meanwhile is kept (a hard link refuses an existing name)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise SystemExit(f"--output {path} appeared while the table was made; it was left as it is, the "
                         f"summary is in {tmp}") from None
    os.remove(tmp)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", help="folder holding one run's evaluation results JSON")
    parser.add_argument("--runs", nargs="+", metavar="SUMMARY_JSON",
                        help="several runs' summary.json: mean ± standard deviation over them")
    parser.add_argument("--output", default=None, help="write the summary here (default: none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = parser.parse_args(argv)
    if (args.results_dir is None) == (args.runs is None):
        parser.error("give either RESULTS_DIR or --runs")
    check_output(args.output, args.runs or [], args.overwrite)
    if args.runs:
        summary = aggregate(read_summaries(args.runs))
        print(f"{len(args.runs)} run(s); mean ± sample standard deviation")
    else:
        if not os.path.isdir(args.results_dir):
            raise SystemExit(f"{args.results_dir}: no such folder (expected the evaluations' results JSON)")
        paths = [p for p in glob.glob(os.path.join(args.results_dir, "*.json"))
                 if os.path.abspath(p) != os.path.abspath(args.output or "")]
        summary = summarise(paths)
        if not summary:
            raise SystemExit(f"{args.results_dir}: no linear or kNN results JSON found")
    print(table(summary))
    if args.output:
        write_json(args.output, summary, args.overwrite)
    return summary


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (SystemExit, ValueError) as exc:    # one line naming the file; argparse's own exits pass through
        if isinstance(exc, SystemExit) and not isinstance(exc.code, str):
            raise
        print(f"comparison_table.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
