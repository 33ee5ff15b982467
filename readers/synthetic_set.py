"""The built-in synthetic set as a raw format: generate NTU `.skeleton` files (synthetic.py), then read
them exactly as NTU files (readers/ntu.py)."""
from __future__ import annotations

import os

from readers.common import Job, RawFormat
from readers.ntu import _read_ntu, ntu_jobs


def _synthetic_arguments(p, entry) -> None:
    p.add_argument("--raw-dir", default=None, help="where the generated .skeleton files go "
                                                   "(default <out>/raw)")
    p.add_argument("--num-clips", type=int, default=None, help="default synthetic.DEFAULT_NUM_CLIPS")
    p.add_argument("--seed", type=int, default=0)


def _synthetic_jobs(args, entry, rules: dict, out: str) -> list[Job]:
    """Generate the built-in dataset's .skeleton files, then read them as NTU files."""
    import synthetic  # noqa: PLC0415
    raw_dir = args.raw_dir or os.path.join(out, "raw")
    num_clips = args.num_clips or synthetic.DEFAULT_NUM_CLIPS
    names = synthetic.generate(raw_dir, num_clips=num_clips, seed=args.seed, workers=args.workers)
    if not args.raw_dir:      # <out>/raw is ours: files of an earlier, larger generation go
        fresh = {f"{name}.skeleton" for name in names}
        stale = sorted(f for f in os.listdir(raw_dir) if f.endswith(".skeleton") and f not in fresh)
        for name in stale:
            os.remove(os.path.join(raw_dir, name))
        if stale:
            print(f"removed {len(stale)} raw file(s) of an earlier generation from {raw_dir}")
    return ntu_jobs([raw_dir], rules, set(), only=set(names))   # not older files there



FORMAT = RawFormat(_synthetic_arguments, _synthetic_jobs, _read_ntu)
