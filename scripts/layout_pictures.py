"""The pictures of docs/data.md ("Looking at the data"): one prepared clip per skeleton layout, drawn with
draw_skeleton.py, made from the built-in synthetic set only (no licensed data):

    python scripts/layout_pictures.py [--out-dir docs/img] [--overwrite]

1. generates a small synthetic set and prepares it (prepare_data.py synthetic): the `ntu` layout;
2. rewrites its one-person clips of classes that resemble an NW-UCLA action as NW-UCLA JSON files
   (`write_as_nw_ucla`: the first 20 NTU joints, NTU's neck as NW-UCLA's shoulder centre) and prepares
   them with the NW-UCLA reader (prepare_data.py nw_ucla): the `nw_ucla` layout, through the real reader
   and pre-normalisation;
3. draws a two-person clip (ntu), a one-person clip (nw_ucla) and the two augmented pretraining views
   of a one-person clip (ntu), each as a GIF and a PNG strip, into --out-dir as skeleton_<what>.gif/png:
   of its class, the clip that stands upright (MAX_LEAN) and misses the fewest joints.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dataset  # noqa: E402
import draw_skeleton  # noqa: E402
import graph  # noqa: E402
import prepare_data  # noqa: E402
from cli import cli_errors  # noqa: E402
from readers import dataset_table, ntu, nw_ucla, synthetic  # noqa: E402
from storage import run_folder  # noqa: E402

# synthetic class -> the NW-UCLA action it most resembles (the others are not written)
NW_UCLA_ACTION_OF_CLASS = {
    synthetic.CLASS_NAMES.index("reach forward (left hand)"): 1,     # pick up with one hand
    synthetic.CLASS_NAMES.index("bow"): 2,                           # pick up with two hands
    synthetic.CLASS_NAMES.index("turn around"): 4,                   # walk around
    synthetic.CLASS_NAMES.index("squat"): 5,                         # sit down
}
# NW-UCLA's joints in NTU's numbering: its first 20 joints, NTU's neck (2) as the shoulder centre (on the
# real files, NW-UCLA's shoulder centre sits a third of the way from the shoulders to the head, where
# NTU's neck is; NTU's spine_shoulder, joint 20, sits at shoulder height)
NTU_JOINTS_OF_NW_UCLA = tuple(range(graph.get_layout("nw_ucla").num_joints))
NUM_CLIPS = 300
# The pre-normalisation aligns only the short hip -> spine segment with +z: the body axis of the
# synthetic performers then leans a median 10 degrees from vertical in the first frame (as in NW-UCLA's
# real clips; 3-6 degrees in NTU's sample files). The pictures show a clip within this many degrees, and
# of those the one with the fewest of the dropped joints and frames the set simulates (drawn as lines to
# the origin and "(empty)" frames).
MAX_LEAN = 10.0
PICTURES = {     # name -> (dataset, part, class of the clip, draw_skeleton.py flags)
    "ntu": ("synthetic", "train", "handshake", []),
    "nw_ucla": ("nw_ucla", "train", "sit down", []),
    # --seed 4 draws, for the clip it picks, a crop alone for x_q and a crop, zeroed joints and a shear
    # for x_k (looked up by logging augment.py's calls; another clip or seed draws other augmentations)
    "ntu_augmented": ("synthetic", "train", "squat", ["--augmented", "--seed", "4"]),
}


def nw_ucla_name(ntu_name: str) -> tuple[str, int]:
    """(aAA_sSS_eEE_vVV, synthetic class) of a synthetic SsssCcccPpppRrrrAaaa name: view = camera, subject =
    performer, episode from setup and replication."""
    setup, camera, performer, replication, action = (int(g) for g in ntu.NTU_NAME.match(ntu_name).groups())
    label = action - 1
    episode = (setup - 1) * 2 + replication - 1
    if performer > 99 or episode > 99:
        raise ValueError(f"{ntu_name}: performer {performer} or episode {episode} has more than the two "
                         f"digits of an NW-UCLA name")
    return (f"a{NW_UCLA_ACTION_OF_CLASS.get(label, 0):02d}_s{performer:02d}_e{episode:02d}_v{camera:02d}",
            label)


def write_as_nw_ucla(raw_dir: str, out_dir: str) -> list[str]:
    """Synthetic one-person .skeleton files of the classes in NW_UCLA_ACTION_OF_CLASS as NW-UCLA JSON files
    (readers/nw_ucla.py's format) in `out_dir`; returns their stems. Raw Kinect coordinates: the body of
    largest energy, its frames that are not empty, the NW-UCLA joints."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for filename in sorted(os.listdir(raw_dir)):
        stem, ext = os.path.splitext(filename)
        if ext != ".skeleton" or not ntu.NTU_NAME.match(stem):
            continue
        name, label = nw_ucla_name(stem)
        if label not in NW_UCLA_ACTION_OF_CLASS:
            continue
        xyz, _ = ntu.read_ntu_skeleton(os.path.join(raw_dir, filename))
        body = ntu.select_bodies(xyz)[..., 0].transpose(1, 2, 0)             # (T, 25, 3), largest energy
        body = body[np.any(body != 0, axis=(1, 2))][:, NTU_JOINTS_OF_NW_UCLA]
        if name in written:
            raise ValueError(f"{filename}: {name} was written already (two synthetic clips map to one name)")
        action = int(name[1:3])
        record = {"file_name": name, "skeletons": np.round(body, 6).tolist(),
                  "label": nw_ucla.ACTIONS.index(action) + 1}
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(record, f)
        written.append(name)
    return written


def body_lean(clip: np.ndarray) -> float:
    """Degrees between +z and person 0's body axis (ankle midpoint -> joint 2: NTU's neck, NW-UCLA's
    shoulder centre) in the first frame of a prepared clip (3, T, V, M)."""
    neck, ankles = clip[:, 0, 2, 0], (clip[:, 0, 14, 0] + clip[:, 0, 18, 0]) / 2
    axis = neck - ankles
    return float(np.degrees(np.arccos(axis[2] / max(float(np.linalg.norm(axis)), 1e-9))))


def missing_joints(clip: np.ndarray, num_frame: int) -> int:
    """How many joints the persons present in the clip (3, T, V, M) miss in its first num_frame frames (all
    zero, a lost frame counting all its joints; person 0's joint 1 is the centre, zero by the
    pre-normalisation)."""
    xyz = np.abs(clip[:, :num_frame]).sum(0)                                   # (T, V, M)
    xyz[:, 1, 0] = 1.0
    return sum(int(np.sum(xyz[..., m] == 0)) for m in range(xyz.shape[-1]) if np.any(xyz[..., m]))


def upright_whole_clip(folder: str, dataset_name: str, part: str, class_name: str,
                       max_lean: float = MAX_LEAN) -> str:
    """Index (as text) of the clip of `class_name` in the prepared part whose person 0 stands within
    `max_lean` degrees of vertical in its first frame and that misses the fewest joints (the first such)."""
    entry = dataset_table.get(dataset_name)
    split = dataset.load_split(folder, part, entry.num_class, entry.layout)
    label = entry.class_names.index(class_name)
    upright = {}                     # index -> joints missing
    for index in np.flatnonzero(split.labels == label):
        clip = np.asarray(split.data[index])
        if body_lean(clip) <= max_lean:
            upright[int(index)] = missing_joints(clip, int(split.num_frame[index]))
    if not upright:
        raise ValueError(f"{folder} {part}: no clip of class {class_name!r} within {max_lean} degrees of "
                         f"vertical; raise NUM_CLIPS")
    return str(min(upright, key=lambda index: (upright[index], index)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "img"))
    parser.add_argument("--overwrite", action="store_true", help="replace pictures already there")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set")
    return parser


def main(argv=None) -> list[str]:
    args = build_parser().parse_args(argv)
    targets = [os.path.join(args.out_dir, f"skeleton_{name}.{ext}")
               for name in PICTURES for ext in ("gif", "png")]
    for path in targets:
        run_folder.check_output_file(path, args.overwrite, "--out-dir")
    draw_skeleton.require_matplotlib()
    work = tempfile.mkdtemp(prefix="layout_pictures_")
    try:
        data = os.path.join(work, "data")
        prepare_data.main(["synthetic", "--out", os.path.join(data, "synthetic"), "--benchmarks", "xsub",
                           "--num-clips", str(NUM_CLIPS), "--seed", str(args.seed), "--workers", "1"])
        raw = os.path.join(work, "nw_ucla_raw")
        write_as_nw_ucla(os.path.join(data, "synthetic", "raw"), raw)
        prepare_data.main(["nw_ucla", "--raw-dir", raw, "--out", os.path.join(data, "nw_ucla"),
                           "--workers", "1"])
        written = []
        for name, (dataset_name, part, class_name, flags) in PICTURES.items():
            folder = os.path.join(data, dataset_name, "xsub" if dataset_name == "synthetic" else "xview")
            clip = upright_whole_clip(folder, dataset_name, part, class_name)
            drawn = draw_skeleton.main(["--dataset", dataset_name, "--data-dir", data, "--part", part,
                                        "--clips", clip, "--out-dir", os.path.join(work, "pictures"), *flags])
            for path in drawn:
                target = os.path.join(args.out_dir, f"skeleton_{name}{os.path.splitext(path)[1]}")
                os.makedirs(args.out_dir, exist_ok=True)
                shutil.copyfile(path, target + ".tmp")
                os.replace(target + ".tmp", target)
                print(f"{target}  ({os.path.getsize(target) // 1024} KiB)")
                written.append(target)
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(cli_errors.run_main(main))
