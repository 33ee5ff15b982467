"""Speed benchmarks. One subcommand per benchmark (SUBCOMMANDS at the bottom maps name -> (add the
subcommand's arguments, run it)).

    python benchmark.py data      # raw-file parser and pre-normalisation: ours vs the released loops

`data` runs on the real NTU sample files in ../shared/data/ntu_samples when present (or --files-dir),
else on synthetic .skeleton files generated into a temporary folder, and reports files per second and
seconds per 1,000 samples for each stage, vectorised against a straightforward loop version (the
transcription of the released ntu_gendata.py / preprocess.py that the tests check against,
tests/released_reference.py).
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import statistics
import tempfile
import time

import numpy as np

import prepare_data
from tests.released_reference import loop_pre_normalization, loop_read_xyz

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SAMPLES = os.path.join(REPO_ROOT, "..", "shared", "data", "ntu_samples")


# ----------------------------------------------------------------------------------------------------
# data


def _timed(fn, items, repeats):
    """Median over `repeats` of the total time of fn over all items (seconds)."""
    totals = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        totals.append(time.perf_counter() - start)
    return statistics.median(totals)


def _data_arguments(parser):
    parser.add_argument("--files-dir", default=None, help="folder of NTU .skeleton files (default: "
                        "../shared/data/ntu_samples, else generated synthetic files)")
    parser.add_argument("--repeats", type=int, default=5, help="timings are the median over repeats")
    parser.add_argument("--synthetic-clips", type=int, default=30,
                        help="number of synthetic files when no real files are found")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def run_data(args) -> dict:
    files_dir = args.files_dir or DEFAULT_SAMPLES
    files = sorted(glob.glob(os.path.join(files_dir, "*.skeleton")))
    source = files_dir
    tmp = None
    if not files:
        import synthetic  # noqa: PLC0415
        tmp = tempfile.TemporaryDirectory()
        synthetic.generate(tmp.name, num_clips=args.synthetic_clips, seed=0)
        files = sorted(glob.glob(os.path.join(tmp.name, "*.skeleton")))
        source = f"synthetic ({len(files)} generated files)"
    clips = [prepare_data.to_fixed_length(prepare_data.select_bodies(prepare_data.read_ntu_skeleton(f)[0]))
             for f in files]
    # the two versions agree before we compare their speed
    for clip, path in zip(clips, files):
        reference = loop_pre_normalization(prepare_data.to_fixed_length(loop_read_xyz(path)[0])[None])[0]
        if not np.allclose(prepare_data.pre_normalize(clip), reference, atol=1e-5):
            raise AssertionError(f"vectorised and loop preprocessing disagree on {path}")
    timings = {
        "parser": {"loop": _timed(loop_read_xyz, files, args.repeats),
                   "vectorised": _timed(lambda f: prepare_data.select_bodies(
                       prepare_data.read_ntu_skeleton(f)[0]), files, args.repeats)},
        "preprocessing": {"loop": _timed(lambda c: loop_pre_normalization(c[None]), clips, args.repeats),
                          "vectorised": _timed(prepare_data.pre_normalize, clips, args.repeats)},
    }
    result = {"source": source, "files": len(files), "repeats": args.repeats, "machine": platform.processor()
              or platform.machine(), "cpu_count": os.cpu_count(), "stages": {}}
    print(f"data pipeline on {len(files)} files from {source} "
          f"(single process, median of {args.repeats} runs)")
    print(f"{'stage':<15}{'version':<12}{'files/s':>10}{'s / 1000 samples':>19}{'speed-up':>10}")
    for stage, by_version in timings.items():
        result["stages"][stage] = {}
        for version, seconds in by_version.items():
            per_file = seconds / len(files)
            speedup = by_version["loop"] / seconds
            result["stages"][stage][version] = {"files_per_s": 1 / per_file, "s_per_1000": 1000 * per_file,
                                                "speedup_vs_loop": speedup}
            print(f"{stage:<15}{version:<12}{1 / per_file:>10.1f}{1000 * per_file:>19.2f}{speedup:>9.1f}x")
    if args.json:
        from runtime import atomic_write_json  # noqa: PLC0415
        atomic_write_json(args.json, result)
    if tmp is not None:
        tmp.cleanup()
    return result


SUBCOMMANDS = {
    "data": (_data_arguments, run_data),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(sub.add_parser(name))
    args = parser.parse_args(argv)
    return SUBCOMMANDS[args.command][1](args)


if __name__ == "__main__":
    main()
