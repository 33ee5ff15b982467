"""Speed benchmarks. One subcommand per benchmark (SUBCOMMANDS at the bottom maps name -> (add the
subcommand's arguments, run it)).

    python benchmark.py data      # raw-file parser and pre-normalisation: ours vs the released loops
    python benchmark.py train     # one CMD training step per BiGRU mode (default vs the released per-frame
                                  # loop), encoder GFLOP/s against the matmul throughput, peak memory, and
                                  # the pretraining augmentations (per clip in numpy vs batched)
    python benchmark.py gru       # one BiGRU encoder on the CPU, its two directions batched or one after
                                  # the other (what bigru.BATCHED_DIRECTIONS_MAX_HIDDEN chooses)

`data` runs on the real NTU sample files in ../shared/data/ntu_samples when present (or --files-dir),
else on synthetic .skeleton files generated into a temporary folder, and reports files per second and
seconds per 1,000 samples for each stage, vectorised against a straightforward loop version (the
transcription of the released ntu_gendata.py / preprocess.py that the tests check against,
reference/released_reference.py).
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

import readers
from cli import cli_errors
from reference.released_reference import loop_pre_normalization, loop_read_xyz

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
        from readers import synthetic  # noqa: PLC0415
        tmp = tempfile.TemporaryDirectory()
        synthetic.generate(tmp.name, num_clips=args.synthetic_clips, seed=0)
        files = sorted(glob.glob(os.path.join(tmp.name, "*.skeleton")))
        source = f"synthetic ({len(files)} generated files)"
    clips = [readers.to_fixed_length(readers.ntu.select_bodies(readers.ntu.read_ntu_skeleton(f)[0]))
             for f in files]
    # the two versions agree before we compare their speed
    for clip, path in zip(clips, files):
        reference = loop_pre_normalization(readers.to_fixed_length(loop_read_xyz(path)[0])[None])[0]
        if not np.allclose(readers.pre_normalize(clip), reference, atol=1e-5):
            raise AssertionError(f"vectorised and loop preprocessing disagree on {path}")
    timings = {
        "parser": {"loop": _timed(loop_read_xyz, files, args.repeats),
                   "vectorised": _timed(lambda f: readers.ntu.select_bodies(
                       readers.ntu.read_ntu_skeleton(f)[0]), files, args.repeats)},
        "preprocessing": {"loop": _timed(lambda c: loop_pre_normalization(c[None]), clips, args.repeats),
                          "vectorised": _timed(readers.pre_normalize, clips, args.repeats)},
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
        from storage.atomic_files import atomic_write_json  # noqa: PLC0415
        atomic_write_json(args.json, result)
    if tmp is not None:
        tmp.cleanup()
    return result


# ----------------------------------------------------------------------------------------------------
# train


BENCHMARK_HIDDEN_SIZE = 256  # the BiGRU's H unless --hidden-size is given (the paper's 1024 takes minutes)


def _train_arguments(parser):
    import cmd_model  # noqa: PLC0415
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    cmd_model.add_encoder_arguments(parser)  # --encoder and every encoder's flags (--hidden-size, ...)
    parser.add_argument("--batch-size", type=int, default=16, help="clips per step (paper: 64)")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip after the crop-resize")
    parser.add_argument("--contrast-k", type=int, default=1024, help="queue size K (paper: 16384)")
    parser.add_argument("--topk", type=int, default=512, help="CMD neighbours (paper: 8192)")
    parser.add_argument("--modes", nargs="+", default=["stepwise", "loop"],
                        choices=cmd_model.StepwiseGRU.MODES,
                        help="BiGRU computations to time (cmd_model.StepwiseGRU.MODES; 'stepwise' is the "
                             "default, which runs StepwiseGRU.IMPLEMENTATION[device])")
    parser.add_argument("--amp", action="store_true",
                        help="autocast as pretrain_cmd.py --amp does (devices.amp_dtype of the device)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode first")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (CPU); 0 = parallelism.default_threads()")
    parser.add_argument("--no-augment", action="store_true", help="skip the augmentation timing")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def _sync(device):
    if device.type == "cuda":
        import torch  # noqa: PLC0415
        torch.cuda.synchronize(device)


GRU_FORMULA = ("GRU multiply-adds of one encoder's forward = N*T*2*3H*sum_l(I_l + H), I_0 = 150, "
               "I_l = 2H for l > 0 (both directions, gates r, z, n; element-wise work not counted); "
               "one encoder forward+backward = 3x that; one CMD step = 3 query encoders forward+backward "
               "+ 3 key encoders forward = 12x that; FLOP = 2 x multiply-adds")


def gru_macs(batch: int, frames: int, hidden: int, layers: int = 3, input_size: int = 150) -> int:
    """Multiply-adds of one BiGRU encoder's forward pass (see GRU_FORMULA)."""
    total, size = 0, input_size
    for _ in range(layers):
        total += 2 * 3 * hidden * (size + hidden)
        size = 2 * hidden
    return batch * frames * total


class _PeakRSS:
    """Peak resident memory of this process while active (sampled every 5 ms by a thread), in bytes."""

    def __init__(self):
        import threading  # noqa: PLC0415
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.current())

    def __enter__(self):
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def _matmul_gflops(torch, device, repeats: int = 3) -> tuple[float, float]:
    """Measured float32 matrix-multiply throughput: the best over square products of two sizes and
    `repeats` runs each, GFLOP/s of wall time and of this process's CPU time (the same on a quiet
    machine; CPU time ignores other processes). One small size alone under-reads the CPU's rate."""
    sizes = (8192,) if device.type == "cuda" else (2048, 3072)
    best, best_cpu = 0.0, 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        a @ b
        for _ in range(repeats):
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            a @ b
            _sync(device)
            flop = 2 * size ** 3
            best = max(best, flop / (time.perf_counter() - start) / 1e9)
            best_cpu = max(best_cpu, flop / max(time.process_time() - start_cpu, 1e-9) / 1e9)
    return best, best_cpu


def run_train(args) -> dict:
    """Seconds per CMD training step (forward, backward, SGD update, enqueue) for each BiGRU mode, timed
    interleaved in one process on one model (same weights and inputs; the modes take turns step by step),
    the BiGRU encoder's own forward+backward rate against the measured matrix-multiply throughput, and
    clips per second of the SPEC s.4 pretraining augmentations (numpy per clip and batched torch)."""
    import torch  # noqa: PLC0415

    import cmd_model  # noqa: PLC0415
    from cli import devices, parallelism  # noqa: PLC0415
    from storage import atomic_files  # noqa: PLC0415

    parallelism.set_threads(args.threads)
    device = devices.resolve_device(args.device)
    amp_dtype = devices.amp_dtype(device) if args.amp else None
    if args.amp and amp_dtype is None:
        print(f"warning: --amp: {device} has no bfloat16/float16 autocast support here; float32")
    torch.manual_seed(0)
    args.encoder = args.encoder or cmd_model.DEFAULT_ENCODER
    overrides = cmd_model.encoder_overrides(args.encoder, args)
    if args.encoder == "bigru":
        overrides.setdefault("hidden_size", BENCHMARK_HIDDEN_SIZE)
    model = cmd_model.CMD(encoder=args.encoder, K=args.contrast_k, topk=args.topk, mlp=True, **overrides)
    n, t, h = args.batch_size, args.frames, model.encoder_config.hidden_size
    model = model.to(device)
    grus = [m for m in model.modules() if isinstance(m, cmd_model.StepwiseGRU)]
    if not grus:  # BiGRU modes do not apply: one row, named by the encoder
        args.modes = [args.encoder]
        implementation = {args.encoder: args.encoder}
    else:
        implementation = {mode: cmd_model.StepwiseGRU(1, 1, 1, mode=mode).implementation(device)
                          for mode in args.modes}
    macs_encoder = gru_macs(n, t, h) if grus else 0
    result = {"device": str(device), "device_name": _device_name(torch, device),
              "threads": torch.get_num_threads(), "encoder": args.encoder,
              "encoder_config": model.encoder_record()["encoder_config"], "hidden_size": h, "batch_size": n,
              "frames": t, "contrast_k": args.contrast_k, "topk": args.topk, "amp": str(amp_dtype),
              "steps": args.steps, "warmup": args.warmup, "implementation": implementation,
              "gru_formula": GRU_FORMULA, "gru_gmacs_per_step": 12 * macs_encoder / 1e9, "modes": {}}
    print(f"CMD training step on {result['device_name']} ({device}, {torch.get_num_threads()} threads): "
          f"{args.encoder}, H={h}, batch {n}, {t} frames, K={args.contrast_k}, top-k {args.topk}, MLP head, "
          f"{'autocast ' + str(amp_dtype) if amp_dtype else 'float32'}; median of {args.steps} steps after "
          f"{args.warmup} warm-up, modes interleaved step by step")
    print(GRU_FORMULA)
    matmul, matmul_cpu = _matmul_gflops(torch, device)
    timings = _time_train_steps(args, torch, model, grus, device, amp_dtype)
    del model, grus
    result["modes"] = _report_train_steps(args, timings, implementation, macs_encoder, (matmul, matmul_cpu),
                                          device)
    result["matmul_gflops"], result["matmul_gflops_cpu_time"] = matmul, matmul_cpu
    if not args.no_augment:
        result["augment_clips_per_s"] = _time_augmentations(args, torch, device)
    if args.json:
        atomic_files.atomic_write_json(args.json, result)
    return result


def _time_train_steps(args, torch, model, grus, device, amp_dtype) -> dict:
    """Per mode: wall and CPU seconds of each timed training step and encoder pass, and the peak memory
    (on CPU sampled during the warm-up steps, or the first step when there are none, so that the
    sampling thread does not disturb the timed steps)."""
    import contextlib  # noqa: PLC0415

    n, t = args.batch_size, args.frames
    x_q = torch.randn(n, 3, t, 25, 2, device=device)
    x_k = torch.randn(n, 3, t, 25, 2, device=device)
    from engine import training  # noqa: PLC0415
    optimizer = training.sgd(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)  # as pretraining
    encoder_seq = torch.randn(n, t, 150, device=device) if grus else None

    def autocast():
        return contextlib.nullcontext() if amp_dtype is None else torch.autocast(device.type, dtype=amp_dtype)

    def step():
        with autocast():
            loss = model(x_q, x_k).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def encoder_pass():
        with autocast():
            out = model.encoder_q.encoder(encoder_seq)
        out[:, -1].float().sum().backward()

    timings = {mode: {"step": [], "step_cpu": [], "enc": [], "enc_cpu": [], "peak": 0} for mode in args.modes}
    for i in range(args.warmup + args.steps):
        for mode in args.modes:
            for gru in grus:
                gru.mode = mode
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                elapsed, elapsed_cpu = _time_once(step, device)
                peak = torch.cuda.max_memory_allocated(device)
            elif i < max(args.warmup, 1):  # the RSS sampler thread runs in the warm-up steps only
                with _PeakRSS() as rss:
                    elapsed, elapsed_cpu = _time_once(step, device)
                peak = rss.peak
            else:
                elapsed, elapsed_cpu = _time_once(step, device)
                peak = 0
            timings[mode]["peak"] = max(timings[mode]["peak"], peak)
            enc_elapsed, enc_cpu = _time_once(encoder_pass, device) if grus else (None, None)
            model.zero_grad(set_to_none=True)
            if i >= args.warmup:
                timings[mode]["step"].append(elapsed)
                timings[mode]["step_cpu"].append(elapsed_cpu)
                if grus:
                    timings[mode]["enc"].append(enc_elapsed)
                    timings[mode]["enc_cpu"].append(enc_cpu)
    return timings


def _time_once(fn, device) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call, the device synchronised before and after."""
    _sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def _report_train_steps(args, timings, implementation, macs_encoder, matmul, device) -> dict:
    """Print the per-mode table and return its entries (speed-ups against the released 'loop' mode)."""
    (matmul, matmul_cpu), n, med, nan = matmul, args.batch_size, statistics.median, float("nan")
    base = med(timings["loop"]["step"]) if "loop" in timings else None
    base_cpu = med(timings["loop"]["step_cpu"]) if "loop" in timings else None
    memory = "GPU peak" if device.type == "cuda" else "RSS peak"
    print(f"float32 matrix-multiply throughput measured here: {matmul:.1f} GFLOP/s wall, "
          f"{matmul_cpu:.1f} GFLOP/s of process CPU time")
    print(f"{'mode':<11}{'runs':<7}{'s/step':>8}{'clips/s':>8}{'vs loop':>8}{'enc GFLOP/s':>12}"
          f"{'share':>6}{'step GRU':>9}{'CPU s/step':>11}{'vs loop':>8}{'CPU share':>10}"
          f"{memory + ' GiB':>13}")
    modes = {}
    for mode, tm in timings.items():
        seconds, cpu_s = med(tm["step"]), med(tm["step_cpu"])
        enc_s, enc_cpu = (med(tm["enc"]), med(tm["enc_cpu"])) if tm["enc"] else (nan, nan)
        enc_gflops = 2 * 3 * macs_encoder / enc_s / 1e9 if tm["enc"] else nan
        enc_gflops_cpu = 2 * 3 * macs_encoder / max(enc_cpu, 1e-9) / 1e9 if tm["enc"] else nan
        step_gflops = 2 * 12 * macs_encoder / seconds / 1e9
        modes[mode] = {"s_per_step": seconds, "clips_per_s": n / seconds, "times": tm["step"],
                       "speedup_vs_loop": base / seconds if base else None,
                       "implementation": implementation[mode], "cpu_s_per_step": cpu_s,
                       "cpu_speedup_vs_loop": base_cpu / cpu_s if base_cpu else None,
                       "encoder_fwd_bwd_s": enc_s, "encoder_gflops": enc_gflops,
                       "encoder_share_of_matmul": enc_gflops / matmul, "encoder_cpu_s": enc_cpu,
                       "encoder_share_of_matmul_cpu_time": enc_gflops_cpu / matmul_cpu,
                       "step_gru_gflops": step_gflops, "peak_memory_bytes": tm["peak"]}
        ratio = f"{base / seconds:>7.2f}x" if base else f"{'-':>8}"
        ratio_cpu = f"{base_cpu / cpu_s:>7.2f}x" if base_cpu else f"{'-':>8}"
        print(f"{mode:<11}{implementation[mode]:<7}{seconds:>8.3f}{n / seconds:>8.1f}{ratio}"
              f"{enc_gflops:>12.1f}{100 * enc_gflops / matmul:>5.0f}%{step_gflops:>9.1f}"
              f"{cpu_s:>11.3f}{ratio_cpu}{100 * enc_gflops_cpu / matmul_cpu:>9.0f}%"
              f"{tm['peak'] / 2 ** 30:>13.2f}")
    print("enc GFLOP/s: one BiGRU encoder's forward+backward alone (3x the forward count); share: of the "
          "matrix-multiply throughput; step GRU: the step's GRU GFLOP over the whole step's wall time; CPU "
          "columns: the same from this process's CPU time (all its threads), robust to other processes")
    return modes


def _time_augmentations(args, torch, device) -> dict:
    """Clips per second of one pretraining view: numpy per clip (loader workers) and batched torch."""
    from augmentation import augment  # noqa: PLC0415

    n = args.batch_size
    clips = np.random.default_rng(0).normal(size=(n, 3, 300, 25, 2)).astype(np.float32)
    num_frame = np.full(n, 150)
    rng = np.random.default_rng(0)
    per_clip = _timed(lambda _: [augment.augment_pretrain(c, 150, rng) for c in clips], [None],
                      max(args.steps, 1))
    clips_t = torch.from_numpy(clips).to(device)
    frames_t = torch.from_numpy(num_frame).to(device)

    def batched(_):
        augment.augment_pretrain_batch(clips_t, frames_t)
        _sync(device)
    batched_s = _timed(batched, [None], max(args.steps, 1))
    print(f"pretraining augmentation (one view): numpy per clip {n / per_clip:.0f} clips/s in one process "
          f"(the loader's workers each add about as much), batched torch on {device} "
          f"{n / batched_s:.0f} clips/s")
    return {"numpy_per_clip": n / per_clip, "torch_batched": n / batched_s}


# ----------------------------------------------------------------------------------------------------
# gru


def _gru_arguments(parser):
    parser.add_argument("--hidden-size", type=int, nargs="+", default=[512, 1024], help="GRU hidden sizes H")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per pass")
    parser.add_argument("--frames", type=int, default=64, help="time steps")
    parser.add_argument("--layers", type=int, default=3, help="GRU layers")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of repeats")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads; 0 = parallelism.default_threads()")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def run_gru(args) -> dict:
    """One BiGRU encoder (input 150) through bigru.custom_pair_gru on the CPU: forward+backward and the
    no-grad forward (key encoders), with the two directions batched in one product per step or run
    one after the other; the measurement behind bigru.BATCHED_DIRECTIONS_MAX_HIDDEN. The groupings
    take turns in each repeat; the best of the repeats is reported."""
    import torch  # noqa: PLC0415

    from encoders import bigru  # noqa: PLC0415
    from cli import devices, parallelism  # noqa: PLC0415
    from storage import atomic_files  # noqa: PLC0415

    parallelism.set_threads(args.threads)
    groupings = {"batched": 10 ** 9, "split": 0}
    chosen = bigru.BATCHED_DIRECTIONS_MAX_HIDDEN
    defaults = {h: "batched" if bigru.direction_groups(h) == ((0, 1),) else "split" for h in args.hidden_size}
    result = {"threads": torch.get_num_threads(), "batch_size": args.batch_size, "frames": args.frames,
              "layers": args.layers, "batched_directions_max_hidden": chosen, "sizes": {}}
    print(f"BiGRU encoder on the CPU ({torch.get_num_threads()} threads): batch {args.batch_size}, "
          f"{args.frames} frames, {args.layers} layers; seconds, best of {args.repeats}")
    print(f"{'H':>6} {'directions':<10}{'forward':>9}{'backward':>10}{'no-grad':>9}{'total':>8}  default")
    torch.manual_seed(0)
    try:
        for h in args.hidden_size:
            gru = torch.nn.GRU(150, h, args.layers, bidirectional=True)
            x = torch.randn(args.frames, args.batch_size, 150)
            times = {name: [] for name in groupings}
            for _ in range(args.repeats):
                for name, limit in groupings.items():
                    bigru.BATCHED_DIRECTIONS_MAX_HIDDEN = limit
                    gru.zero_grad(set_to_none=True)
                    start = time.perf_counter()
                    out = bigru.custom_pair_gru(gru, x)
                    forward = time.perf_counter()
                    out[-1].sum().backward()
                    backward = time.perf_counter()
                    with torch.no_grad():
                        bigru.custom_pair_gru(gru, x)
                    times[name].append((forward - start, backward - forward, time.perf_counter() - backward))
            result["sizes"][h] = {}
            for name, runs in times.items():
                best = [min(run[i] for run in runs) for i in range(3)]
                default = name == defaults[h]
                result["sizes"][h][name] = {"forward_s": best[0], "backward_s": best[1], "no_grad_s": best[2],
                                            "default": default}
                print(f"{h:>6} {name:<10}{best[0]:>9.3f}{best[1]:>10.3f}{best[2]:>9.3f}{sum(best):>8.3f}  "
                      f"{'yes' if default else ''}")
    finally:
        bigru.BATCHED_DIRECTIONS_MAX_HIDDEN = chosen
    if args.json:
        atomic_files.atomic_write_json(args.json, result)
    return result


def _device_name(torch, device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


SUBCOMMANDS = {
    "data": (_data_arguments, run_data),
    "train": (_train_arguments, run_train),
    "gru": (_gru_arguments, run_gru),
}


def main(argv=None):
    parser = cli_errors.ArgumentParser(description=__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(sub.add_parser(name))
    args = parser.parse_args(argv)
    return SUBCOMMANDS[args.command][1](args)


if __name__ == "__main__":
    main()
