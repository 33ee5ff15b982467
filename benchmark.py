"""Speed benchmarks. One subcommand per benchmark (SUBCOMMANDS at the bottom maps name -> (add the
subcommand's arguments, run it)).

    python benchmark.py data      # raw-file parser and pre-normalisation: ours vs the released loops
    python benchmark.py train     # one CMD training step (stepwise BiGRU vs the released per-frame loop)
                                  # and the pretraining augmentations (per clip in numpy vs batched)

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


# ----------------------------------------------------------------------------------------------------
# train


def _train_arguments(parser):
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--hidden-size", type=int, default=256, help="GRU hidden size H (paper: 1024)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per step (paper: 64)")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip after the crop-resize")
    parser.add_argument("--contrast-k", type=int, default=1024, help="queue size K (paper: 16384)")
    parser.add_argument("--topk", type=int, default=512, help="CMD neighbours (paper: 8192)")
    parser.add_argument("--modes", nargs="+", default=["stepwise", "loop"],
                        help="BiGRU computations to time (cmd_model.StepwiseGRU.MODES)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def _sync(device):
    if device.type == "cuda":
        import torch  # noqa: PLC0415
        torch.cuda.synchronize(device)


def run_train(args) -> dict:
    """Seconds per CMD training step (forward, backward, SGD update, enqueue) for each BiGRU mode,
    then clips per second of the SPEC s.4 pretraining augmentations, per clip (numpy, as in the
    loader) and batched (torch, on the device)."""
    import torch  # noqa: PLC0415

    import cmd_model  # noqa: PLC0415
    import dataset  # noqa: PLC0415
    import runtime  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    device = runtime.resolve_device(args.device)
    torch.manual_seed(0)
    n, t = args.batch_size, args.frames
    x_q = torch.randn(n, 3, t, 25, 2, device=device)
    x_k = torch.randn(n, 3, t, 25, 2, device=device)
    result = {"device": str(device), "threads": torch.get_num_threads(), "hidden_size": args.hidden_size,
              "batch_size": n, "frames": t, "contrast_k": args.contrast_k, "topk": args.topk, "step": {}}
    print(f"CMD training step on {device} ({torch.get_num_threads()} threads): H={args.hidden_size}, "
          f"batch {n}, {t} frames, K={args.contrast_k}, top-k {args.topk}, MLP head; median of {args.steps}")
    print(f"{'BiGRU mode':<14}{'s / step':>10}{'clips/s':>10}{'speed-up':>10}")
    for mode in args.modes:
        model = cmd_model.CMD(hidden_size=args.hidden_size, K=args.contrast_k, topk=args.topk, mlp=True,
                              gru_mode=mode).to(device)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                                    momentum=0.9, weight_decay=1e-4)
        times = []
        for step in range(args.steps + 2):
            _sync(device)
            start = time.perf_counter()
            loss = model(x_q, x_k).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)
            if step >= 2:
                times.append(time.perf_counter() - start)
        result["step"][mode] = statistics.median(times)
        del model, optimizer
    base = result["step"].get("loop")
    for mode, seconds in result["step"].items():
        speedup = f"{base / seconds:>9.2f}x" if base else f"{'-':>10}"
        print(f"{mode:<14}{seconds:>10.3f}{n / seconds:>10.1f}{speedup}")

    clips = np.random.default_rng(0).normal(size=(n, 3, 300, 25, 2)).astype(np.float32)
    num_frame = np.full(n, 150)
    rng = np.random.default_rng(0)
    per_clip = _timed(lambda _: [dataset.augment_pretrain(c, 150, rng) for c in clips], [None], args.steps)
    clips_t = torch.from_numpy(clips).to(device)
    frames_t = torch.from_numpy(num_frame).to(device)

    def batched(_):
        dataset.augment_pretrain_batch(clips_t, frames_t)
        _sync(device)
    batched_s = _timed(batched, [None], args.steps)
    result["augment_clips_per_s"] = {"numpy_per_clip": n / per_clip, "torch_batched": n / batched_s}
    print(f"pretraining augmentation (one view): numpy per clip {n / per_clip:.0f} clips/s, "
          f"batched torch on {device} {n / batched_s:.0f} clips/s")
    if args.json:
        from runtime import atomic_write_json  # noqa: PLC0415
        atomic_write_json(args.json, result)
    return result


SUBCOMMANDS = {
    "data": (_data_arguments, run_data),
    "train": (_train_arguments, run_train),
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
