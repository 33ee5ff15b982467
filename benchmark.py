"""Speed benchmarks. One subcommand per benchmark (SUBCOMMANDS at the bottom maps name -> (add the
subcommand's arguments, run it)).

    python benchmark.py data      # raw-file parser and pre-normalisation: ours vs the released loops

`data` runs on the real NTU sample files in ../shared/data/ntu_samples when present (or --files-dir),
else on synthetic .skeleton files generated into a temporary folder, and reports files per second and
seconds per 1,000 samples for each stage, vectorised against a straightforward loop version (a
transcription of the released ntu_gendata.py / preprocess.py, kept here only for this comparison).
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import platform
import statistics
import tempfile
import time

import numpy as np

import prepare_data

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SAMPLES = os.path.join(REPO_ROOT, "..", "shared", "data", "ntu_samples")


# ----------------------------------------------------------------------------------------------------
# the released loop versions (reference for the speed comparison only)

def loop_read_skeleton(path):
    """Released read_skeleton_filter: a dict per frame, body and joint."""
    with open(path) as f:
        sequence = {"numFrame": int(f.readline()), "frameInfo": []}
        for _ in range(sequence["numFrame"]):
            frame = {"numBody": int(f.readline()), "bodyInfo": []}
            for _ in range(frame["numBody"]):
                keys = ["bodyID", "clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
                        "handRightState", "isResticted", "leanX", "leanY", "trackingState"]
                body = {k: float(v) for k, v in zip(keys, f.readline().split())}
                body["numJoint"] = int(f.readline())
                body["jointInfo"] = []
                for _ in range(body["numJoint"]):
                    keys = ["x", "y", "z", "depthX", "depthY", "colorX", "colorY", "orientationW",
                            "orientationX", "orientationY", "orientationZ", "trackingState"]
                    body["jointInfo"].append({k: float(v) for k, v in zip(keys, f.readline().split())})
                frame["bodyInfo"].append(body)
            sequence["frameInfo"].append(frame)
    return sequence


def loop_read_xyz(path, max_body=4, num_joint=25):
    """Released read_xyz: fill (4, T, 25, 3) joint by joint, keep the 2 bodies of largest energy."""
    seq = loop_read_skeleton(path)
    data = np.zeros((max_body, seq["numFrame"], num_joint, 3))
    for n, frame in enumerate(seq["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"]):
            for j, v in enumerate(body["jointInfo"]):
                if m < max_body and j < num_joint:
                    data[m, n, j, :] = [v["x"], v["y"], v["z"]]
    energy = np.array([prepare_data.body_energy(x) for x in data])
    index = energy.argsort()[::-1][0:2]
    return data[index].transpose(3, 1, 2, 0)


def _loop_rotation_matrix(axis, theta):
    if np.abs(axis).sum() < 1e-6 or np.abs(theta) < 1e-6:
        return np.eye(3)
    axis = np.asarray(axis)
    axis = axis / math.sqrt(np.dot(axis, axis))
    a = math.cos(theta / 2.0)
    b, c, d = -axis * math.sin(theta / 2.0)
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
    return np.array([[aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)],
                     [2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)],
                     [2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc]])


def _loop_angle_between(v1, v2):
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0
    v1_u, v2_u = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
    return np.arccos(np.clip(np.dot(v1_u, v2_u), -1.0, 1.0))


def loop_pre_normalization(data, zaxis=(0, 1), xaxis=(8, 4)):
    """Released pre_normalization on (N, C, T, V, M): loops over samples, persons, frames and joints."""
    N, C, T, V, M = data.shape
    s = np.transpose(data, [0, 4, 2, 3, 1]).copy()
    for i_s, skeleton in enumerate(s):
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            if person[0].sum() == 0:
                index = person.sum(-1).sum(-1) != 0
                tmp = person[index].copy()
                person *= 0
                person[:len(tmp)] = tmp
            for i_f, frame in enumerate(person):
                if frame.sum() == 0:
                    if person[i_f:].sum() == 0:
                        rest = len(person) - i_f
                        num = int(np.ceil(rest / i_f))
                        s[i_s, i_p, i_f:] = np.concatenate([person[0:i_f] for _ in range(num)], 0)[:rest]
                        break
    for i_s, skeleton in enumerate(s):
        if skeleton.sum() == 0:
            continue
        center = skeleton[0][:, 1:2, :].copy()
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            mask = (person.sum(-1) != 0).reshape(T, V, 1)
            s[i_s, i_p] = (s[i_s, i_p] - center) * mask
    for (first, second), target in ((zaxis, [0, 0, 1]), ((xaxis[1], xaxis[0]), [1, 0, 0])):
        for i_s, skeleton in enumerate(s):
            if skeleton.sum() == 0:
                continue
            vector = skeleton[0, 0, second] - skeleton[0, 0, first]
            matrix = _loop_rotation_matrix(np.cross(vector, target), _loop_angle_between(vector, target))
            for i_p, person in enumerate(skeleton):
                if person.sum() == 0:
                    continue
                for i_f, frame in enumerate(person):
                    if frame.sum() == 0:
                        continue
                    for i_j, joint in enumerate(frame):
                        s[i_s, i_p, i_f, i_j] = np.dot(matrix, joint)
    return np.transpose(s, [0, 4, 2, 3, 1])


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
        reference = loop_pre_normalization(prepare_data.to_fixed_length(loop_read_xyz(path))[None])[0]
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
