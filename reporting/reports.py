"""What the evaluation CLIs write and print: the results JSON record, its default file name, the
one-row markdown table, and the summary over several runs (`python evaluation.py summarise FILES`:
mean and standard deviation per group, as scripts/semi_supervised.sh reports five seeds)."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time

import numpy as np
import torch

import cmd_model
from cli import frozen_flags
from storage import atomic_files, run_folder


def results_record(args, benchmark, source, model_config: dict, protocol_name: str,
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
        **(cmd_model.encoder_record(model_config["encoder"], model_config["encoder_config"])
           if model_config["encoder_config"] is not None else {"encoder": model_config["encoder"]}),
        "model_config_origin": model_config["origin"],
        **({"layout": model_config["layout"]} if model_config.get("layout") is not None else {}),
        "window": model_config.get("window"),
        **({"batchnorm_statistics": model_config["batchnorm_statistics"]}
           if "batchnorm_statistics" in model_config else {}),
        "metrics": metrics,
        "epochs": epochs,
        "seed": args.seed,
        "time": {"started": _iso(started), "finished": _iso(finished),
                 "seconds": round(finished - started, 3)},
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "args": frozen_flags.plain_args(args),
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


def default_output_path(record: dict) -> str:
    """Where the results JSON goes without --output: a results/ folder beside the checkpoint (./results
    for --pretrained none), named after what was evaluated; an earlier file is never overwritten (the
    name gets -2, -3, ... instead; `write_results_file` claims the name when it writes)."""
    return next(path for path in _numbered(_default_stem(record)) if not os.path.exists(path))


def _default_stem(record: dict) -> str:
    checkpoint = record["checkpoint"]
    if checkpoint in ("none", "raw"):   # a random encoder; raw coordinates (knn_eval.py --pretrained raw)
        folder, tag = "results", "random" if checkpoint == "none" else "raw"
    else:
        folder = os.path.join(os.path.dirname(checkpoint), "results")
        tag = os.path.basename(checkpoint).split(".")[0]
    return os.path.join(folder, "_".join([record["evaluation"], record["benchmark"], record["protocol"],
                                          record["view"], tag]))


def _numbered(stem: str, start: int = 1):
    """`stem.json`, `stem-2.json`, `stem-3.json`, ... from the `start`-th."""
    n = start
    while True:
        yield f"{stem}.json" if n == 1 else f"{stem}-{n}.json"
        n += 1


def _write_new(stem: str, record: dict, start: int = 1) -> str:
    """Write `record` under the first free name of `_numbered(stem, start)`, claimed when published (two
    runs that picked the same name both keep their results); returns the name written."""
    for path in _numbered(stem, start):
        if os.path.exists(path):
            continue
        try:
            atomic_files.atomic_write_json(path, record, exclusive=True)
            return path
        except FileExistsError:
            continue


def write_results_file(output: str | None, record: dict, overwrite: bool = False) -> str:
    """Write the record to `output` (default: default_output_path); returns where. An existing `output` is
    replaced only with `overwrite`; one that appeared while the evaluation ran (another run's result) is
    left as it is, these results go to the next free name beside it, and RunFolderError says so."""
    if output is None:
        return _write_new(_default_stem(record), record)
    if overwrite:
        atomic_files.atomic_write_json(output, record)
        return output
    try:
        atomic_files.atomic_write_json(output, record, exclusive=True)
        return output
    except FileExistsError:
        stem = output[:-len(".json")] if output.endswith(".json") else output
        kept = _write_new(stem, record, start=2)
    raise run_folder.RunFolderError(f"--output {output} appeared while this evaluation ran (written by "
                                    f"another run?); it was left as it is and these results were written "
                                    f"to {kept}")


def report(output: str | None, record: dict, columns, overwrite: bool = False) -> str:
    """Print the one-row table and write the record (write_results_file)."""
    table = markdown_table(record, columns)
    print(table)
    output = write_results_file(output, record, overwrite)
    print(f"results written to {output}")
    return table


def _metric(record: dict, name: str):
    """top-1 of a results record: 'last' / 'best' for training runs, 'k1', 'k5', ... for kNN."""
    metrics = record["metrics"]
    if name in ("last", "best"):
        return metrics.get(name, {}).get("top1")
    return metrics.get(f"top1_{name}")


def summarise_results(paths, metric_names=("last", "best")) -> list[dict]:
    """Group results JSONs by benchmark, protocol, evaluation, view, checkpoint and labelled fraction;
    mean and sample standard deviation (ddof=1; 0 for one run) of each top-1 over the group's runs."""
    groups: dict = {}
    for path in paths:
        record = read_results_file(path)
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


RECORD_KEYS = ("benchmark", "protocol", "evaluation", "view", "checkpoint", "metrics")


def read_results_file(path: str) -> dict:
    """A results JSON written by the evaluation CLIs; ValueError naming the file and what it lacks."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such results file")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a results JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a results JSON ({exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise ValueError(f"{path}: not a results JSON of action_classification.py or knn_eval.py (expected "
                         f"an object with {', '.join(RECORD_KEYS)})")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: not a results JSON of action_classification.py or knn_eval.py (no "
                         f"{', '.join(missing)})")
    return record


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


def summarise_command(argv) -> int:
    """`summarise RESULTS.json [...]`: print the summary table of those results files."""
    if len(argv) < 2 or argv[0] != "summarise":
        raise SystemExit("usage: python evaluation.py summarise RESULTS.json [RESULTS.json ...]")
    print(summary_table(summarise_results(argv[1:])))
    return 0
