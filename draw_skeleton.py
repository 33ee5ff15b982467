"""Draw prepared clips as moving skeletons: per clip an animated GIF and a PNG strip of a few frames.

    python draw_skeleton.py --dataset ntu60 --protocol cross_subject --clips 0 S001C001P001R001A001
    python draw_skeleton.py --dataset nw_ucla --part val --clips a01_s01_e00_v03 --modality bone
    python draw_skeleton.py --dataset synthetic --clips 3 --augmented     (the two pretraining views)
    python draw_skeleton.py --dataset custom --data-dir DIR --layout nw_ucla --clips 0

A benchmark is named as everywhere else (`--dataset`, also spelled `--finetune-dataset` or
`--pre-dataset`, with `--protocol` and `--data-dir`); a clip by its index in the part or by its sample
name. Only the clip's own `num_frame` frames are drawn (the frames after them are the pre-normalisation's
cyclic repeat), at most `--max-frames` of them, evenly spaced. Bones come from the dataset's layout
(graph.py): each person has its own colour, a dark shade on the left side of the body, a light one on
the right and a middle one on the centre line; an empty person (all zero, like the second person of a
one-person clip) is not drawn. The axes are the same in every frame. `--modality motion` draws each
joint's motion (x[t+1] - x[t], scaled so that it shows; the factor is in the panel's corner) on a faint
skeleton, `--modality bone` the bone vectors (child - parent, as the model computes them) from each
person's centre joint. `--augmented` draws, side by side, the two views x_q and x_k the pretraining
feeder makes of the clip (crop-resize to 64 frames, then joint corruption and shear, each with p = 1/2),
drawn from a seed that --seed and the clip's index fix.

matplotlib is optional for the rest of the project and needed here.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass

import numpy as np
import torch

import cmd_model
import dataset
import graph
from cli import cli_errors, seeding
from readers import dataset_table
from storage import atomic_files, run_folder

MATPLOTLIB_MISSING = "draw_skeleton.py needs matplotlib, an optional dependency: pip install matplotlib"
DPI = 100
# per person: (left side, centre line, right side) shades
PERSON_COLOURS = (("#08306b", "#2171b5", "#6baed6"), ("#7f2704", "#d94801", "#fd8d3c"))
VIEWS = ("x_q", "x_k")
NO_DITHER = 0          # PIL.Image.Dither.NONE (named so from Pillow 9.1)


def require_matplotlib():
    """pyplot with the Agg backend, or the one-line message (exit 2 through cli_errors.run_main)."""
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from mpl_toolkits.mplot3d import Axes3D  # noqa: F401, PLC0415  (registers the 3d projection)
    except ImportError as exc:
        raise SystemExit(MATPLOTLIB_MISSING) from exc
    return plt


# ----------------------------------------------------------------------------------------------------
# what one picture shows


@dataclass
class Panel:
    """One clip (or one augmented view of it) as it is drawn: per frame and person, xyz of every joint
    and, for motion and bone, the modality's vector of every joint."""
    label: str
    joints: np.ndarray              # (T, M, V, 3)
    vectors: np.ndarray | None      # (T, M, V, 3) motion or bone values; None for the joint modality
    frame_labels: list             # per drawn frame, e.g. "frame 12/44"

    @property
    def num_frames(self) -> int:
        return self.joints.shape[0]

    def persons(self) -> list[int]:
        """The persons that are not zero in every drawn frame."""
        return [m for m in range(self.joints.shape[1]) if np.any(self.joints[:, m] != 0)]


def person_visible(joints_frame: np.ndarray) -> bool:
    """A person (V, 3) is drawn in a frame unless all its joints are zero (an empty frame)."""
    return bool(np.any(joints_frame != 0))


def drawn_frames(num_frame: int, max_frames: int) -> np.ndarray:
    """Indices of at most `max_frames` frames evenly spaced over 0..num_frame-1 (all when fewer)."""
    if num_frame <= max_frames:
        return np.arange(num_frame)
    return np.unique(np.linspace(0, num_frame - 1, max_frames).round().astype(np.int64))


def frame_labels(joints: np.ndarray, frames: np.ndarray, num_frames: int) -> list[str]:
    """Per drawn frame its number and the clip's length ("frame 12/44", 1-based), with " (empty)" where no
    person is there (a frame the sensor lost: zero in the data, drawn as nothing)."""
    return [f"frame {t + 1}/{num_frames}" + ("" if np.any(frame != 0) else " (empty)")
            for t, frame in zip(frames, joints)]


def to_drawing_order(clip: np.ndarray) -> np.ndarray:
    """(3, T, V, M) -> (T, M, V, 3)."""
    return np.ascontiguousarray(np.asarray(clip, dtype=np.float32).transpose(1, 3, 2, 0))


def modality_values(clip: np.ndarray, modality: str, layout: graph.Layout) -> np.ndarray | None:
    """The model's modality transform (cmd_model.to_modality) of one clip (3, T, V, M); None for joint."""
    if modality == "joint":
        return None
    x = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))[None]
    return cmd_model.to_modality(x, modality, layout)[0].numpy()


def clip_panels(split: dataset.SkeletonSplit, index: int, layout: graph.Layout, modality: str,
                max_frames: int) -> list[Panel]:
    """The clip's own frames (its first num_frame), the modality computed over them, at most
    `max_frames` of them drawn."""
    num_frame = min(int(split.num_frame[index]), split.data.shape[2])
    clip = np.asarray(split.data[index, :, :num_frame], dtype=np.float32)
    values = modality_values(clip, modality, layout)
    frames = drawn_frames(num_frame, max_frames)
    joints = to_drawing_order(clip)[frames]
    label = "" if modality == "joint" else modality
    return [Panel(label, joints, None if values is None else to_drawing_order(values)[frames],
                  frame_labels(joints, frames, num_frame))]


def one_clip_split(split: dataset.SkeletonSplit, index: int) -> dataset.SkeletonSplit:
    """Clip `index` alone as a split (the feeder then checks that clip only for NaN/inf)."""
    one = slice(index, index + 1)
    return dataset.SkeletonSplit(data=np.asarray(split.data[one]), labels=split.labels[one],
                                 names=split.names[one], num_frame=split.num_frame[one],
                                 num_class=split.num_class, path=split.path)


def view_seed(seed: int, index: int) -> int:
    """The feeder's seed for clip `index`: a fixed function of --seed and the clip."""
    return seeding.derived_seed(seed, index)


def augmented_panels(split: dataset.SkeletonSplit, index: int, layout: graph.Layout, modality: str,
                     seed: int, max_frames: int) -> list[Panel]:
    """The two views (x_q, x_k) dataset.PretrainFeeder makes of the clip, seeded by (--seed, index)."""
    feeder = dataset.PretrainFeeder(one_clip_split(split, index), seed=view_seed(seed, index))
    panels = []
    for name, view in zip(VIEWS, feeder[0]):
        view = view.numpy()
        values = modality_values(view, modality, layout)
        frames = drawn_frames(view.shape[1], max_frames)
        label = name if modality == "joint" else f"{name}, {modality}"
        joints = to_drawing_order(view)[frames]
        panels.append(Panel(label, joints, None if values is None else to_drawing_order(values)[frames],
                            frame_labels(joints, frames, view.shape[1])))
    return panels


# ----------------------------------------------------------------------------------------------------
# segments: what is drawn of one person in one frame


def bone_side(layout: graph.Layout, child: int) -> int:
    """0 left, 1 centre line, 2 right: from the child joint's name."""
    name = layout.joint_names[child]
    return 0 if name.startswith("left") else 2 if name.startswith("right") else 1


def motion_scale(panels: list[Panel]) -> float:
    """A round factor (1, 2, 5, 10, ...) that draws the 95th percentile of the motion vectors at about a
    tenth of the drawing's extent."""
    lengths = np.concatenate([np.linalg.norm(p.vectors, axis=-1)[np.any(p.joints != 0, axis=-1)].ravel()
                              for p in panels])
    lengths = lengths[lengths > 0]
    if not len(lengths):
        return 1.0
    extent = max(float(np.ptp(np.concatenate([p.joints.reshape(-1, 3) for p in panels]), axis=0).max()), 1e-6)
    wanted = 0.1 * extent / float(np.percentile(lengths, 95))
    nice = [m * 10.0 ** e for e in range(-3, 6) for m in (1, 2, 5)]
    return max([n for n in nice if n <= wanted], default=nice[0])


def person_segments(modality: str, layout: graph.Layout, joints: np.ndarray, vectors: np.ndarray | None,
                    scale: float = 1.0) -> dict:
    """{(kind, key): (2, 3) end points} of one person in one frame; `joints` (V, 3).

    joint: ("bone", (child, parent)) from the parent joint to the child joint, for every edge of the
    layout. motion: the same edges (drawn faint) and ("motion", v) from joint v to joint v plus `scale`
    times its motion. bone: ("bone", (child, parent)) from the centre joint to the centre joint plus
    the bone vector of the child."""
    if modality == "bone":
        origin = joints[layout.center]
        return {("bone", (c, p)): np.stack([origin, origin + vectors[c]]) for c, p in layout.edges}
    segments = {("bone", (c, p)): np.stack([joints[p], joints[c]]) for c, p in layout.edges}
    if modality == "motion":
        segments.update({("motion", v): np.stack([joints[v], joints[v] + scale * vectors[v]])
                         for v in range(layout.num_joints)})
    return segments


def panel_segments(panel: Panel, t: int, person: int, modality: str, layout: graph.Layout,
                   scale: float = 1.0) -> dict:
    """`person_segments` of drawn frame `t`; empty when the person is absent in that frame."""
    joints = panel.joints[t, person]
    if not person_visible(joints):
        return {}
    vectors = None if panel.vectors is None else panel.vectors[t, person]
    return person_segments(modality, layout, joints, vectors, scale)


def axis_limits(panels: list[Panel], modality: str, layout: graph.Layout, scale: float) -> np.ndarray:
    """(3, 2) limits of a box holding every segment of every panel and frame (the same in all frames),
    with a margin of 5 % of its longest side; drawn with one scale on all three axes."""
    points = [np.zeros((1, 3))]
    for panel in panels:
        for m in panel.persons():
            for t in range(panel.num_frames):
                segments = panel_segments(panel, t, m, modality, layout, scale)
                if segments:
                    points.append(np.concatenate(list(segments.values())))
    points = np.concatenate(points)
    low, high = points.min(0), points.max(0)
    margin = 0.05 * max(float((high - low).max()), 0.2)
    return np.stack([low - margin, high + margin], axis=1)


# ----------------------------------------------------------------------------------------------------
# drawing


class SkeletonAxes:
    """One 3-D axes showing one panel at one drawn frame at a time (`show(t)`).

    `artists[(person, kind, key)]` is the Line3D of one segment (kinds of `person_segments`) or
    (person, "joints", None) the joints as dots; only persons present in the panel get artists."""

    def __init__(self, ax, panel: Panel, modality: str, layout: graph.Layout, limits: np.ndarray,
                 scale: float, elev: float, azim: float, label: str | None = None):
        self.ax, self.panel, self.modality, self.layout, self.scale = ax, panel, modality, layout, scale
        self.artists = {}
        for m in panel.persons():
            colours = PERSON_COLOURS[m % len(PERSON_COLOURS)]
            for kind, key in person_segments(modality, layout, np.zeros((layout.num_joints, 3)),
                                             np.zeros((layout.num_joints, 3)), scale):
                if kind == "bone":
                    colour = colours[bone_side(layout, key[0])]
                    faint = modality == "motion"
                    (line,) = ax.plot([], [], [], color=colour, lw=1.0 if faint else 2.0,
                                      alpha=0.35 if faint else 1.0, solid_capstyle="round")
                else:
                    (line,) = ax.plot([], [], [], color="#cb181d" if m == 0 else "#54278f", lw=1.2)
                self.artists[(m, kind, key)] = line
            if modality != "bone":
                (dots,) = ax.plot([], [], [], linestyle="", marker="o", ms=2.0, color=colours[1])
                self.artists[(m, "joints", None)] = dots
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_zlim(*limits[2])
        ax.set_box_aspect(tuple(limits[:, 1] - limits[:, 0]), zoom=0.95)
        ax.view_init(elev=elev, azim=azim)
        for axis, name in ((ax.xaxis, "x"), (ax.yaxis, "y"), (ax.zaxis, "z")):
            axis.set_ticklabels([])
            axis.set_label_text(name, fontsize=7)
            axis.labelpad = -14
        ax.tick_params(length=0, pad=0)
        ax.text2D(0.98, 0.98, panel.label if label is None else label, transform=ax.transAxes, fontsize=7,
                  ha="right", va="top")
        self.counter = ax.text2D(0.02, 0.98, "", transform=ax.transAxes, fontsize=7, va="top")

    def show(self, t: int) -> None:
        for m in self.panel.persons():
            segments = panel_segments(self.panel, t, m, self.modality, self.layout, self.scale)
            for (kind, key), line in ((k[1:], v) for k, v in self.artists.items() if k[0] == m):
                if kind == "joints":
                    xyz = self.panel.joints[t, m] if segments else np.zeros((0, 3))
                else:
                    xyz = segments.get((kind, key), np.zeros((0, 3)))
                line.set_data_3d(xyz[:, 0], xyz[:, 1], xyz[:, 2])
        self.counter.set_text(self.panel.frame_labels[t])


@dataclass
class Style:
    size: int = 320            # pixels of one panel (square)
    elev: float = 15.0
    azim: float = 45.0         # pre-normalised clips face +y: this looks at the front, from the right


def panel_labels(panels: list[Panel], modality: str, scale: float) -> list[str]:
    """What each panel shows (bottom right): its label; for motion, the factor the vectors are drawn at."""
    if modality != "motion":
        return [p.label for p in panels]
    return [f"{p.label} x{scale:g}".strip() for p in panels]


def _figure(plt, rows: int, columns: int, size: int, title: str):
    fig = plt.figure(figsize=(columns * size / DPI, rows * size / DPI), dpi=DPI)
    fig.suptitle(title, fontsize=7, y=0.995, va="top")
    return fig


def _image(fig):
    """The figure as a PIL RGB image of exactly its pixel size."""
    from PIL import Image  # noqa: PLC0415  (Pillow comes with matplotlib)
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def animation_figure(panels: list[Panel], modality: str, layout: graph.Layout, title: str,
                     style: Style | None = None):
    """(figure, [SkeletonAxes]) with the panels side by side; `show(t)` each for frame t."""
    style = style or Style()
    plt = require_matplotlib()
    scale = motion_scale(panels) if modality == "motion" else 1.0
    limits = axis_limits(panels, modality, layout, scale)
    fig = _figure(plt, 1, len(panels), style.size, title)
    drawn = []
    for i, (panel, panel_label) in enumerate(zip(panels, panel_labels(panels, modality, scale))):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        drawn.append(SkeletonAxes(ax, panel, modality, layout, limits, scale, style.elev, style.azim,
                                  panel_label))
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 36 / style.size, wspace=0)
    return fig, drawn


def strip_figure(panels: list[Panel], modality: str, layout: graph.Layout, title: str, frames: int,
                 style: Style | None = None):
    """(figure, [[SkeletonAxes]]): one row per panel, `frames` evenly spaced drawn frames across."""
    style = style or Style()
    plt = require_matplotlib()
    scale = motion_scale(panels) if modality == "motion" else 1.0
    limits = axis_limits(panels, modality, layout, scale)
    columns = min(frames, min(p.num_frames for p in panels))
    fig = _figure(plt, len(panels), columns, style.size, title)
    rows = []
    for r, (panel, panel_label) in enumerate(zip(panels, panel_labels(panels, modality, scale))):
        row = []
        for c, t in enumerate(drawn_frames(panel.num_frames, columns)):
            ax = fig.add_subplot(len(panels), columns, r * columns + c + 1, projection="3d")
            cell = SkeletonAxes(ax, panel, modality, layout, limits, scale, style.elev, style.azim,
                                panel_label)
            cell.show(int(t))
            row.append(cell)
        rows.append(row)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 36 / (style.size * len(panels)), wspace=0,
                        hspace=0.02)
    return fig, rows


def write_gif(path: str, panels: list[Panel], modality: str, layout: graph.Layout, title: str,
              style: Style | None = None, frame_ms: int = 70) -> tuple[int, tuple[int, int]]:
    """The animation as a GIF (written under a temporary name, then renamed); (frames, (width, height))."""
    style = style or Style()
    plt = require_matplotlib()
    fig, drawn = animation_figure(panels, modality, layout, title, style)
    images = []
    try:
        for t in range(panels[0].num_frames):
            for cell in drawn:
                cell.show(t)
            images.append(_image(fig))
    finally:
        plt.close(fig)
    images = shared_palette(images)
    with atomic_files.atomic_open(path, "wb") as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return len(images), images[0].size


def shared_palette(images: list, colours: int = 32, samples: int = 4) -> list:
    """The frames in one palette of `colours` colours made from a few of them, without dithering: the
    background then stays the same from frame to frame and the GIF stores only what changes (a third of
    the size of one palette per frame)."""
    from PIL import Image  # noqa: PLC0415
    width, height = images[0].size
    picks = drawn_frames(len(images), samples)
    sample = Image.new("RGB", (width * len(picks), height))
    for i, k in enumerate(picks):
        sample.paste(images[k], (width * i, 0))
    palette = sample.quantize(colors=colours, dither=NO_DITHER)
    return [image.quantize(palette=palette, dither=NO_DITHER) for image in images]


def write_strip(path: str, panels: list[Panel], modality: str, layout: graph.Layout, title: str,
                frames: int, style: Style | None = None) -> tuple[int, tuple[int, int]]:
    """`frames` evenly spaced frames of every panel as one PNG; (columns, (width, height))."""
    style = style or Style()
    plt = require_matplotlib()
    fig, rows = strip_figure(panels, modality, layout, title, frames, style)
    try:
        image = _image(fig)
    finally:
        plt.close(fig)
    with atomic_files.atomic_open(path, "wb") as f:
        image.save(f, format="PNG", optimize=True)
    return len(rows[0]), image.size


# ----------------------------------------------------------------------------------------------------
# the command


def resolve_clips(split: dataset.SkeletonSplit, selectors: list[str], flag: str = "--clips") -> list[int]:
    """Clip indices from indices ("12") or sample names, in the given order without repeats."""
    positions = {name: i for i, name in reversed(list(enumerate(split.names)))}
    for i, name in reversed(list(enumerate(split.names))):       # NTU's names end in .skeleton
        positions.setdefault(sample_stem(name), i)
    indices = []
    for selector in selectors:
        if re.fullmatch(r"\d+", selector):
            index = int(selector)
            if index >= len(split):
                raise ValueError(f"{flag} {selector}: no such clip; {split.path} holds {len(split)} clips "
                                 f"(indices 0..{len(split) - 1})")
        elif selector in positions:
            index = positions[selector]
        else:
            example = f" (its names look like {split.names[0]})" if split.names else ""
            raise ValueError(f"{flag} {selector}: no clip of that name in {split.path}{example}; give an "
                             f"index or a sample name")
        if index not in indices:
            indices.append(index)
    return indices


def clip_title(entry, benchmark, part: str, index: int, split: dataset.SkeletonSplit) -> str:
    label = int(split.labels[index])
    names = entry.class_names if entry is not None else ()
    what = f"class {label}: {names[label]}" if label < len(names) else f"label {label}"
    where = benchmark.dataset if entry is None else f"{benchmark.dataset} {benchmark.protocol}"
    return f"{split.names[index]}\n{where} {part} #{index}, {what}\n(dark: left side, light: right side)"


def sample_stem(name: str) -> str:
    """A sample name without a file extension (NTU's and the synthetic set's end in .skeleton)."""
    stem, ext = os.path.splitext(name)
    return stem if re.fullmatch(r"\.[A-Za-z]+", ext) else name


def output_stem(out_dir: str, part: str, index: int, name: str, modality: str, augmented: bool) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", sample_stem(name))[:80]
    return os.path.join(out_dir, f"{part}_{index}_{safe}_{modality}{'_augmented' if augmented else ''}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", "--finetune-dataset", "--pre-dataset", dest="dataset", default="ntu60",
                   choices=dataset_table.dataset_names(),
                   help="benchmark to draw from; 'custom' reads --data-dir itself (layout: --layout)")
    p.add_argument("--protocol", default=None, choices=dataset_table.protocol_names(),
                   help="default: the dataset's first protocol")
    p.add_argument("--data-dir", default="./data", help="root of the prepared data (see prepare_data.py)")
    dataset_table.add_layout_argument(p)
    p.add_argument("--part", default="train", choices=dataset.PARTS, help="train, or val (the test split)")
    p.add_argument("--clips", nargs="+", default=["0"], metavar="INDEX|NAME",
                   help="clips to draw: indices in the part or sample names (default: 0)")
    p.add_argument("--modality", default="joint", choices=cmd_model.MODALITIES)
    p.add_argument("--augmented", action="store_true",
                   help="draw the two views the pretraining feeder makes of each clip, side by side")
    p.add_argument("--seed", type=int, default=0, help="seed of --augmented's views (with the clip's index)")
    p.add_argument("--out-dir", default="skeleton_pictures", help="where the GIFs and PNGs go")
    p.add_argument("--max-frames", type=int, default=64,
                   help="frames in the GIF at most, evenly spaced over the clip (default 64)")
    p.add_argument("--strip-frames", type=int, default=6, help="frames in the PNG strip (default 6)")
    p.add_argument("--size", type=int, default=Style.size, help="pixels of one square panel (default 320)")
    p.add_argument("--frame-ms", type=int, default=70,
                   help="milliseconds per GIF frame, a multiple of 10 (GIF's unit; default 70)")
    p.add_argument("--view-angle", type=float, nargs=2, default=(Style.elev, Style.azim),
                   metavar=("ELEV", "AZIM"),
                   help="elevation and azimuth of the view in degrees (default 15 45: a pre-normalised clip "
                        "faces +y, its right side at +x)")
    p.add_argument("--overwrite", action="store_true", help="replace existing pictures")
    return p


def main(argv=None) -> list[str]:
    args = build_parser().parse_args(argv)
    for flag, value, low in (("--max-frames", args.max_frames, 1), ("--strip-frames", args.strip_frames, 1),
                             ("--size", args.size, 64), ("--frame-ms", args.frame_ms, 20)):
        if value < low:
            raise ValueError(f"{flag} {value}: expected {low} or more")
    if args.frame_ms % 10:
        raise ValueError(f"--frame-ms {args.frame_ms}: expected a multiple of 10 (GIF stores hundredths of a "
                         f"second)")
    require_matplotlib()
    entry = None if args.dataset == dataset_table.CUSTOM else dataset_table.get(args.dataset)
    protocol = args.protocol or (next(iter(entry.protocols)) if entry else "custom")
    layout = dataset_table.resolve_layout(args.dataset, args.layout)
    benchmark = dataset_table.resolve_benchmark(args.dataset, protocol, args.data_dir, layout)
    if not os.path.isdir(benchmark.folder):
        raise FileNotFoundError(f"{benchmark.folder}: no such folder (prepare the benchmark with "
                                f"prepare_data.py, or pass --data-dir)")
    split = dataset.load_split(benchmark.folder, args.part, benchmark.num_class, layout)
    indices = resolve_clips(split, args.clips)
    outputs = []
    for index in indices:
        if dataset.count_nonfinite(split.data[index:index + 1])[0]:
            raise ValueError(f"{split.path}: clip {index} ({split.names[index]}) holds NaN/inf values")
        stem = output_stem(args.out_dir, args.part, index, split.names[index], args.modality, args.augmented)
        for path in (f"{stem}.gif", f"{stem}.png"):
            run_folder.check_output_file(path, args.overwrite, "--out-dir")
        outputs.append((index, stem))
    style = Style(args.size, *args.view_angle)
    written = []
    for index, stem in outputs:
        if args.augmented:
            panels = augmented_panels(split, index, layout, args.modality, args.seed, args.max_frames)
        else:
            panels = clip_panels(split, index, layout, args.modality, args.max_frames)
        title = clip_title(entry, benchmark, args.part, index, split)
        frames, (width, height) = write_gif(f"{stem}.gif", panels, args.modality, layout, title, style,
                                            args.frame_ms)
        print(f"{stem}.gif: {frames} frames, {width}x{height}")
        columns, (width, height) = write_strip(f"{stem}.png", panels, args.modality, layout, title,
                                               args.strip_frames, style)
        print(f"{stem}.png: {columns} frames, {width}x{height}")
        written += [f"{stem}.gif", f"{stem}.png"]
    return written


if __name__ == "__main__":
    sys.exit(cli_errors.run_main(main))
