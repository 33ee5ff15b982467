"""draw_skeleton.py: the GIF and the PNG strip (frame count, size), the drawn segments against each
layout's bone list (read back from the matplotlib figure), one body for a clip whose second person is
empty, the motion and bone drawings, the augmented views, the NW-UCLA reader's clips standing upright,
the one-line errors, and scripts/layout_pictures.py's NW-UCLA files."""
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (Pillow comes with matplotlib)

import dataset  # noqa: E402
import draw_skeleton  # noqa: E402
import graph  # noqa: E402
import prepare_data  # noqa: E402
from augmentation.augment import augment_pretrain  # noqa: E402
from cli import cli_errors  # noqa: E402
from helpers import write_benchmark  # noqa: E402
from readers import nw_ucla  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import layout_pictures  # noqa: E402

SMALL = ["--size", "96", "--max-frames", "6", "--strip-frames", "3"]

# A standing person in Kinect camera coordinates (x to the person's right when facing the sensor, y up,
# z away from the sensor), NTU's first 20 joints = NW-UCLA's order; the person faces the sensor (-z).
STANDING = np.array([
    [0.00, 0.00, 3.00], [0.00, 0.25, 3.00], [0.00, 0.50, 3.00], [0.00, 0.68, 2.98],      # centre line
    [-0.20, 0.45, 3.00], [-0.25, 0.20, 3.00], [-0.27, -0.02, 2.98], [-0.28, -0.08, 2.97],  # left arm
    [0.20, 0.45, 3.00], [0.25, 0.20, 3.00], [0.27, -0.02, 2.98], [0.28, -0.08, 2.97],      # right arm
    [-0.10, -0.05, 3.00], [-0.11, -0.45, 3.00], [-0.12, -0.85, 3.02], [-0.12, -0.90, 2.92],  # left leg
    [0.10, -0.05, 3.00], [0.11, -0.45, 3.00], [0.12, -0.85, 3.02], [0.12, -0.90, 2.92],      # right leg
])


def distinct_clip(num_joints, frames=5, persons=2, seed=0):
    """(3, frames, V, 2) with every joint at its own coordinates (so an end point names its joint)."""
    rng = np.random.default_rng(seed)
    clip = np.zeros((3, frames, num_joints, dataset.NUM_PERSONS), dtype=np.float32)
    clip[..., :persons] = rng.uniform(-1, 1, size=(3, frames, num_joints, persons))
    return clip


def panel_of(clip, modality="joint", layout=None):
    layout = layout or graph.get_layout("ntu")
    values = draw_skeleton.modality_values(clip, modality, layout)
    joints = draw_skeleton.to_drawing_order(clip)
    frames = np.arange(clip.shape[1])
    vectors = None if values is None else draw_skeleton.to_drawing_order(values)
    labels = draw_skeleton.frame_labels(joints, frames, clip.shape[1])
    return draw_skeleton.Panel(modality, joints, vectors, labels)


def drawn_lines(cell):
    """{line: (n, 3) plotted points} of every Line3D on the axes, from matplotlib's own data."""
    return {line: np.stack(line.get_data_3d(), axis=1) for line in cell.ax.lines}


def joint_of(point, joints):
    """The index of the joint at `point` (exact match: the clips have distinct coordinates)."""
    hits = np.flatnonzero(np.all(np.isclose(joints, point, atol=1e-6), axis=1))
    assert len(hits) == 1, point
    return int(hits[0])


def write_nw_ucla_files(raw_dir, frames=12):
    """Three NW-UCLA JSON clips (views 1, 2, 3) of STANDING raising its right arm, in the reader's format."""
    os.makedirs(raw_dir, exist_ok=True)
    for view in (1, 2, 3):
        xyz = np.repeat(STANDING[None], frames, axis=0)
        lift = np.linspace(0, 0.5, frames)[:, None]
        xyz[:, 10:12, 1] += lift                             # right wrist and hand go up
        name = f"a01_s01_e00_v{view:02d}"
        with open(os.path.join(raw_dir, f"{name}.json"), "w") as f:
            json.dump({"file_name": name, "skeletons": xyz.tolist(), "label": 1}, f)


@pytest.fixture(scope="module")
def nw_ucla_data(tmp_path_factory):
    """Files the test writes, prepared by the real NW-UCLA reader (pre-normalisation included)."""
    root = tmp_path_factory.mktemp("nw_ucla")
    write_nw_ucla_files(str(root / "raw"))
    prepare_data.main(["nw_ucla", "--raw-dir", str(root / "raw"), "--out", str(root / "data" / "nw_ucla"),
                       "--workers", "1"])
    return str(root / "data")


# ---------------------------------------------------------------------------------------------- files
def test_gif_and_strip_have_the_frames_and_size_asked_for(tmp_path):
    data = write_benchmark(tmp_path / "data", n_train=4, n_val=2, frames=40)
    split = dataset.load_split(data, "train")
    split_frames = [int(n) for n in split.num_frame]
    out = tmp_path / "pictures"
    written = draw_skeleton.main(["--dataset", "custom", "--data-dir", data, "--clips", "0", "1",
                                  "--out-dir", str(out), "--frame-ms", "80", *SMALL])
    assert len(written) == 4 and all(os.path.isfile(p) for p in written)
    for index in (0, 1):
        stem = out / f"train_{index}_S001C001P001R001A{index:03d}_joint"
        with Image.open(f"{stem}.gif") as gif:
            assert gif.n_frames == min(6, split_frames[index])
            assert gif.size == (96, 96)
            assert gif.info["duration"] == 80 and gif.info["loop"] == 0
        with Image.open(f"{stem}.png") as png:
            assert png.size == (3 * 96, 96)
    # more frames asked for than the clip has: all of its own frames, none of the repeat after them
    short = int(np.argmin(split.num_frame))
    written = draw_skeleton.main(["--dataset", "custom", "--data-dir", data, "--clips", str(short),
                                  "--out-dir", str(out), "--max-frames", "300", "--strip-frames", "2",
                                  "--size", "80", "--overwrite"])
    with Image.open(written[0]) as gif:
        assert gif.n_frames == split_frames[short] and gif.size == (80, 80)
    with Image.open(written[1]) as png:
        assert png.size == (2 * 80, 80)


def test_augmented_views_side_by_side(tmp_path):
    data = write_benchmark(tmp_path / "data", n_train=3, n_val=2, frames=40)
    written = draw_skeleton.main(["--dataset", "custom", "--data-dir", data, "--clips", "2", "--augmented",
                                  "--out-dir", str(tmp_path), *SMALL])
    assert written[0].endswith("train_2_S001C001P001R001A002_joint_augmented.gif")
    with Image.open(written[0]) as gif:
        assert gif.n_frames == 6 and gif.size == (2 * 96, 96)
    with Image.open(written[1]) as png:
        assert png.size == (3 * 96, 2 * 96)                # a row per view


def test_augmented_panels_are_the_pretraining_feeders_views(tmp_path):
    data = write_benchmark(tmp_path / "data", n_train=3, n_val=2, frames=40)
    split = dataset.load_split(data, "train")
    layout = graph.get_layout("ntu")
    panels = draw_skeleton.augmented_panels(split, 1, layout, "joint", seed=5, max_frames=64)
    # the feeder's generator for epoch 0, item 0 of the one-clip split (dataset._ClipRNG)
    rng = np.random.default_rng([draw_skeleton.view_seed(5, 1) % 2 ** 32, 0, 0])
    clip = np.asarray(split.data[1])
    assert [p.label for p in panels] == ["x_q", "x_k"]
    for panel in panels:                                   # x_q, then x_k: two draws from one generator
        expected = augment_pretrain(clip, int(split.num_frame[1]), rng)
        np.testing.assert_array_equal(panel.joints, expected.transpose(1, 3, 2, 0))
    other = draw_skeleton.augmented_panels(split, 2, layout, "joint", seed=5, max_frames=64)
    assert not np.array_equal(other[0].joints, panels[0].joints)


# ---------------------------------------------------------------------------------------------- segments
@pytest.mark.parametrize("layout_name", sorted(graph.LAYOUTS))
def test_drawn_segments_are_the_layouts_bones(layout_name):
    layout = graph.get_layout(layout_name)
    clip = distinct_clip(layout.num_joints)
    fig, (cell,) = draw_skeleton.animation_figure([panel_of(clip, layout=layout)], "joint", layout, "t")
    bones = {frozenset(pair) for pair in layout.bone_pairs if pair[0] != pair[1]}
    assert len(bones) == layout.num_joints - 1                   # a tree over all joints
    for t in (0, 3):
        cell.show(t)
        lines = drawn_lines(cell)
        assert set(lines) == set(cell.artists.values())          # nothing else is drawn
        persons = [clip[:, t, :, m].T for m in (0, 1)]
        drawn = {0: [], 1: []}          # per person, the joint pairs of the 2-point lines on the axes
        for xyz in lines.values():
            if len(xyz) == 2:
                person = next(m for m in (0, 1) if np.isclose(persons[m], xyz[0], atol=1e-6).all(1).any())
                drawn[person].append(frozenset(joint_of(point, persons[person]) for point in xyz))
        for person, joints in enumerate(persons):
            assert len(drawn[person]) == len(bones) and set(drawn[person]) == bones
            dots = cell.artists[(person, "joints", None)]
            np.testing.assert_allclose(np.stack(dots.get_data_3d(), 1), joints, atol=1e-6)
        assert cell.counter.get_text() == f"frame {t + 1}/5"
    draw_skeleton.require_matplotlib().close(fig)


def test_an_empty_second_person_draws_one_body_and_an_empty_frame_nothing():
    layout = graph.get_layout("ntu")
    clip = distinct_clip(layout.num_joints, persons=1)
    clip[:, 2] = 0                                               # a frame the sensor lost
    panel = panel_of(clip)
    assert panel.persons() == [0]
    fig, (cell,) = draw_skeleton.animation_figure([panel], "joint", layout, "t")
    assert {key[0] for key in cell.artists} == {0}
    assert len(cell.ax.lines) == len(layout.edges) + 1           # one body's bones and its joints
    cell.show(1)
    dots = cell.artists[(0, "joints", None)]
    assert all(len(xyz) == 2 for line, xyz in drawn_lines(cell).items() if line is not dots)
    cell.show(2)
    assert all(len(xyz) == 0 for xyz in drawn_lines(cell).values())
    assert cell.counter.get_text() == "frame 3/5 (empty)"
    draw_skeleton.require_matplotlib().close(fig)
    # two persons: two bodies, each in its own colours
    fig, (cell,) = draw_skeleton.animation_figure([panel_of(distinct_clip(25))], "joint", layout, "t")
    assert {key[0] for key in cell.artists} == {0, 1}
    colours = [{cell.artists[(m, "bone", pair)].get_color() for pair in layout.edges} for m in (0, 1)]
    assert len(colours[0]) == 3 and not colours[0] & colours[1]  # left, centre, right shades per person
    draw_skeleton.require_matplotlib().close(fig)


def test_left_and_right_bones_take_their_sides_shade():
    for layout in graph.LAYOUTS.values():
        for child, _ in layout.edges:
            side = draw_skeleton.bone_side(layout, child)
            name = layout.joint_names[child]
            assert side == (0 if "left" in name else 2 if "right" in name else 1), name


def test_bone_and_motion_segments_are_the_models_vectors():
    layout = graph.get_layout("nw_ucla")
    clip = distinct_clip(layout.num_joints, persons=1)
    fig, (cell,) = draw_skeleton.animation_figure([panel_of(clip, "bone", layout)], "bone", layout, "t")
    cell.show(1)
    joints = clip[:, 1, :, 0].T
    for c, p in layout.edges:             # from the centre joint, the bone vector child - parent
        xyz = np.stack(cell.artists[(0, "bone", (c, p))].get_data_3d(), 1)
        np.testing.assert_allclose(xyz[0], joints[layout.center], atol=1e-6)
        np.testing.assert_allclose(xyz[1] - xyz[0], joints[c] - joints[p], atol=1e-6)
    assert len(cell.ax.lines) == len(layout.edges)
    draw_skeleton.require_matplotlib().close(fig)

    panel = panel_of(clip, "motion", layout)
    fig, (cell,) = draw_skeleton.animation_figure([panel], "motion", layout, "t")
    scale = cell.scale
    assert scale in {m * 10.0 ** e for e in range(-3, 6) for m in (1, 2, 5)}
    for t in (1, 4):
        cell.show(t)
        for v in range(layout.num_joints):
            xyz = np.stack(cell.artists[(0, "motion", v)].get_data_3d(), 1)
            motion = clip[:, t + 1, v, 0] - clip[:, t, v, 0] if t < 4 else np.zeros(3)   # the last is zero
            np.testing.assert_allclose(xyz[0], clip[:, t, v, 0], atol=1e-6)
            np.testing.assert_allclose(xyz[1] - xyz[0], scale * motion, atol=1e-5)
    draw_skeleton.require_matplotlib().close(fig)


# ---------------------------------------------------------------------------------------------- NW-UCLA
def test_nw_ucla_clip_from_the_reader_stands_upright_with_its_left_at_minus_x(nw_ucla_data, tmp_path):
    split = dataset.load_split(os.path.join(nw_ucla_data, "nw_ucla", "xview"), "train", 10, "nw_ucla")
    layout = graph.get_layout("nw_ucla")
    (panel,) = draw_skeleton.clip_panels(split, 0, layout, "joint", max_frames=64)
    assert panel.num_frames == 12 and panel.persons() == [0]
    joints = panel.joints[0, 0]
    body = joints[2] - (joints[14] + joints[18]) / 2             # ankles -> shoulder centre
    assert np.degrees(np.arccos(body[2] / np.linalg.norm(body))) < 3
    assert joints[4, 0] < 0 < joints[8, 0]                       # left shoulder at -x, right at +x
    assert abs(joints[4, 2] - joints[8, 2]) < 1e-3               # shoulders level
    assert np.mean([joints[15, 1] - joints[14, 1], joints[19, 1] - joints[18, 1]]) > 0.05   # toes +y
    written = draw_skeleton.main(["--dataset", "nw_ucla", "--data-dir", nw_ucla_data, "--clips",
                                  "a01_s01_e00_v01", "--out-dir", str(tmp_path), *SMALL])
    assert os.path.basename(written[0]) == "train_0_a01_s01_e00_v01_joint.gif"
    with Image.open(written[0]) as gif:
        assert gif.n_frames == 6


def test_layout_pictures_writes_nw_ucla_files_from_synthetic_clips(tmp_path):
    from readers import synthetic
    names = synthetic.generate(str(tmp_path / "raw"), num_clips=45, seed=0)
    written = layout_pictures.write_as_nw_ucla(str(tmp_path / "raw"), str(tmp_path / "json"))
    assert written
    for stem in written:
        xyz = nw_ucla.read_nw_ucla_json(str(tmp_path / "json" / f"{stem}.json"))      # the reader's checks
        assert xyz.shape[1:] == (20, 3) and np.all(np.any(xyz != 0, axis=(1, 2)))
    classes = {int(n[-3:]) - 1 for n in names}
    expected = {c for c in classes if c in layout_pictures.NW_UCLA_ACTION_OF_CLASS}
    assert {layout_pictures.nw_ucla_name(n)[1] for n in names if layout_pictures.nw_ucla_name(n)[0]
            in written} == expected


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("argv, message", [
    (["--clips", "7"], "--clips 7: no such clip; "),
    (["--clips", "S999"], "--clips S999: no clip of that name in "),
    (["--clips", "0", "--size", "10"], "--size 10: expected 64 or more"),
    (["--clips", "0", "--frame-ms", "75"], "--frame-ms 75: expected a multiple of 10"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    data = write_benchmark(tmp_path / "data", n_train=3, n_val=2, frames=20)
    code = cli_errors.run_main(draw_skeleton.main, ["--dataset", "custom", "--data-dir", data, "--out-dir",
                                                    str(tmp_path / "out"), *argv], prog="draw_skeleton.py")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"draw_skeleton.py: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_folder_and_existing_outputs_are_refused_before_work(tmp_path, capsys):
    code = cli_errors.run_main(draw_skeleton.main, ["--dataset", "nw_ucla", "--data-dir",
                                                    str(tmp_path / "no")], prog="draw_skeleton.py")
    assert code == 2 and f"{tmp_path / 'no' / 'nw_ucla' / 'xview'}: no such folder" in capsys.readouterr().err
    data = write_benchmark(tmp_path / "data", n_train=3, n_val=2, frames=20)
    argv = ["--dataset", "custom", "--data-dir", data, "--out-dir", str(tmp_path / "out"), *SMALL]
    draw_skeleton.main(argv)
    gif = tmp_path / "out" / "train_0_S001C001P001R001A000_joint.gif"
    before = gif.stat().st_mtime_ns
    code = cli_errors.run_main(draw_skeleton.main, argv, prog="draw_skeleton.py")
    assert code == 2 and "already exists" in capsys.readouterr().err and gif.stat().st_mtime_ns == before
    assert draw_skeleton.main(argv + ["--overwrite"]) == [str(gif), str(gif)[:-3] + "png"]


def test_without_matplotlib_one_line_how_to_install(tmp_path, capsys, monkeypatch):
    data = write_benchmark(tmp_path / "data", n_train=3, n_val=2, frames=20)
    monkeypatch.setitem(sys.modules, "matplotlib", None)         # import matplotlib raises ImportError
    code = cli_errors.run_main(draw_skeleton.main, ["--dataset", "custom", "--data-dir", data],
                               prog="draw_skeleton.py")
    assert code == 2
    assert capsys.readouterr().err == f"draw_skeleton.py: error: {draw_skeleton.MATPLOTLIB_MISSING}\n"
    assert "pip install matplotlib" in draw_skeleton.MATPLOTLIB_MISSING
