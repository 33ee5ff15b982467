"""The raw arrays of docs/data.md's worked example ("Your own skeletons"): a small motion-capture-like
set in the `mocap15` layout (docs/layouts/mocap15.json), made by the synthetic generator's bodies and
motions (readers/synthetic.py) without camera or sensor: 15 of its 25 joints, world coordinates (y up).

    python scripts/mocap_arrays.py --out raw/mocap15 [--performers 6] [--classes 5] [--seed 0]

Writes `<out>/clips/<name>.npy` (T, 15, 3) float32 per clip and `<out>/labels.csv` (name,label,part):
the one-person classes 0..classes-1 once per performer; the first two thirds of the performers train,
the rest are `val`. Existing files are replaced only with --overwrite."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cli import cli_errors, flag_values  # noqa: E402
from readers import synthetic  # noqa: E402
from storage import atomic_files, run_folder  # noqa: E402

# the NTU joints (0-based) of mocap15's joints, in its order: pelvis = spine_base, thorax = spine_shoulder
NTU_JOINTS = (0, 20, 3, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18)
ONE_PERSON_CLASSES = [c for c in range(synthetic.NUM_CLASSES) if c not in synthetic.INTERACTIONS]


def clip(label: int, performer: int, seed: int) -> np.ndarray:
    """One performance of class `label`: (T, 15, 3) float32, 40-80 frames."""
    rng = np.random.default_rng([seed, performer, label])
    body = synthetic.performer(seed, performer)
    phase = np.linspace(0.0, 1.0, int(rng.integers(40, 81)))
    world = synthetic.forward_kinematics(synthetic.action_angles(label, phase, body, rng), body)
    return world[:, NTU_JOINTS].astype(np.float32)


def build_parser() -> argparse.ArgumentParser:
    p = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for clips/ and labels.csv")
    p.add_argument("--performers", type=flag_values.positive_count, default=6)
    p.add_argument("--classes", type=flag_values.positive_count, default=5,
                   help=f"one-person classes of the synthetic set, at most {len(ONE_PERSON_CLASSES)}")
    p.add_argument("--seed", type=flag_values.seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace files an earlier run wrote")
    return p


def main(argv=None) -> list[str]:
    args = build_parser().parse_args(argv)
    if args.classes > len(ONE_PERSON_CLASSES):
        raise ValueError(f"--classes {args.classes}: the synthetic set has {len(ONE_PERSON_CLASSES)} "
                         f"one-person classes")
    names = [(f"p{p:02d}_a{c:02d}", c, p) for p in range(1, args.performers + 1)
             for c in ONE_PERSON_CLASSES[:args.classes]]
    labels = os.path.join(args.out, "labels.csv")
    paths = [os.path.join(args.out, "clips", f"{name}.npy") for name, _, _ in names]
    for path in [labels] + paths:
        run_folder.check_output_file(path, args.overwrite, "--out")
    train = max(1, round(2 * args.performers / 3))
    for (name, label, performer), path in zip(names, paths):
        with atomic_files.atomic_open(path, "wb") as f:
            np.save(f, clip(label, performer, args.seed))
    atomic_files.atomic_write_text(labels, "name,label,part\n" + "".join(
        f"{name},{label},{'train' if performer <= train else 'val'}\n" for name, label, performer in names))
    print(f"{len(paths)} clips in {os.path.join(args.out, 'clips')}, labels in {labels}")
    return paths


if __name__ == "__main__":
    sys.exit(cli_errors.run_main(main))
