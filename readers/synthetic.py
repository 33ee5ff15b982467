"""A procedural 3D skeleton action dataset in the NTU RGB+D layout, written as real `.skeleton` files.

Each recording event (setup, performer, replication, action) is one motion, driven by joint-angle
trajectories through forward kinematics of a 25-joint NTU skeleton with the performer's body
proportions, and seen by three cameras (azimuth 0, +45 and -45 degrees, setup-dependent height and
distance) as in NTU. The classes differ in which limbs move and how (repetitions, speed, direction);
what varies within a class is the nuisance the representation should ignore: body proportions,
viewpoint, speed and timing, amplitude, idle motion of the other limbs, sensor noise, dropped joints and
frames, a spurious low-energy body. Files are named `SsssCcccPpppRrrrAaaa.skeleton`, so the NTU
pipeline of prepare_data.py (parser, 2 bodies by energy, pre-normalisation, xsub/xview splits) converts
them unchanged. Everything is a function of (seed, event, camera): deterministic for a seed, whatever
the number of worker processes.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os

import numpy as np
from tqdm import tqdm

from storage import atomic_files

CLASS_NAMES = (
    "wave right hand", "raise both hands", "reach forward (left hand)", "punch",
    "kick (right leg)", "squat", "bow", "turn around", "clap", "jump", "march in place",
    "arm circles (left arm)", "handshake", "push other person", "hug",
)
NUM_CLASSES = len(CLASS_NAMES)
INTERACTIONS = frozenset({12, 13, 14})       # 0-based labels with two performers
NUM_CAMERAS = 3
CAMERA_AZIMUTH_DEG = (0.0, 45.0, -45.0)
REPLICATIONS = 2
MIN_PERFORMERS = 10
DEFAULT_NUM_CLIPS = 1500
MIN_ACTION_FRAMES, MAX_ACTION_FRAMES = 40, 150   # length of one generated action (frames)
# base duration in frames at 30 fps, before the performer's and the replication's speed factors
_BASE_FRAMES = (80, 75, 70, 75, 70, 90, 80, 100, 70, 80, 95, 90, 85, 75, 100)


# ----------------------------------------------------------------------------------------------------
# rotations over time: angle arrays (T,) -> (T, 3, 3)

def _rx(a):
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a):
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a):
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _apply(rot, vec):
    """(T, 3, 3) @ fixed (3,) vector -> (T, 3)."""
    return rot @ np.asarray(vec, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------
# performers and forward kinematics

ANGLES = ("yaw", "bow", "lean", "head", "dx", "dy", "dz", "l_abd", "l_flex", "l_horiz", "l_elbow",
          "r_abd", "r_flex", "r_horiz", "r_elbow", "l_hip", "l_knee", "r_hip", "r_knee")


def performer(seed: int, index: int) -> dict:
    """Body proportions (metres) and movement style of performer `index` (1-based)."""
    rng = np.random.default_rng([seed, 7, index])
    height = rng.uniform(0.85, 1.15)
    limb = rng.uniform(0.9, 1.1, size=4)             # arm, forearm, thigh, shin relative lengths
    return {
        "spine": 0.26 * height * rng.uniform(0.92, 1.08), "chest": 0.22 * height, "neck": 0.08 * height,
        "head": 0.12 * height, "shoulder": 0.18 * height * rng.uniform(0.85, 1.15),
        "hip": 0.09 * height * rng.uniform(0.85, 1.15),
        "upper_arm": 0.28 * height * limb[0], "forearm": 0.25 * height * limb[1], "hand": 0.08 * height,
        "thigh": 0.43 * height * limb[2], "shin": 0.42 * height * limb[3], "foot": 0.12 * height,
        "speed": rng.uniform(0.8, 1.25), "amplitude": rng.uniform(0.8, 1.15), "idle": rng.uniform(0.5, 1.5),
        "posture": rng.normal(0, 0.06, size=len(ANGLES)),
    }


def forward_kinematics(a: dict, body: dict) -> np.ndarray:
    """Joint-angle trajectories (each (T,)) -> world joints (T, 25, 3); y up, the performer faces -z
    at yaw 0."""
    num_t = len(a["yaw"])
    out = np.zeros((num_t, 25, 3))
    r_yaw = _ry(a["yaw"])
    r_torso = r_yaw @ _rx(-a["bow"]) @ _rz(a["lean"])
    leg_length = body["thigh"] + body["shin"]
    shift = np.stack([a["dx"], np.zeros(num_t), a["dz"]], -1)                # in the performer's frame
    pelvis = (r_yaw @ shift[..., None])[..., 0] + np.stack([0 * a["dy"], leg_length + 0.06 + a["dy"],
                                                           0 * a["dy"]], -1)
    out[:, 0] = pelvis
    out[:, 1] = pelvis + _apply(r_torso, (0, body["spine"], 0))
    out[:, 20] = pelvis + _apply(r_torso, (0, body["spine"] + body["chest"], 0))
    r_head = r_torso @ _rx(-a["head"])
    out[:, 2] = out[:, 20] + _apply(r_head, (0, body["neck"], 0))
    out[:, 3] = out[:, 2] + _apply(r_head, (0, body["head"], 0))
    # side = the sign of x of the limb in the performer's frame (x right, y up, z back: right-handed)
    arm_joints = {-1: (4, 5, 6, 7, 21, 22), 1: (8, 9, 10, 11, 23, 24)}
    for side, prefix in ((-1, "l"), (1, "r")):
        sh, el, wr, ha, tip, th = arm_joints[side]
        out[:, sh] = out[:, 20] + _apply(r_torso, (side * body["shoulder"], -0.03, 0))
        r_up = (r_torso @ _ry(side * a[f"{prefix}_horiz"]) @ _rz(side * a[f"{prefix}_abd"])
                @ _rx(a[f"{prefix}_flex"]))
        r_fore = r_up @ _rx(a[f"{prefix}_elbow"])
        out[:, el] = out[:, sh] + _apply(r_up, (0, -body["upper_arm"], 0))
        out[:, wr] = out[:, el] + _apply(r_fore, (0, -body["forearm"], 0))
        out[:, ha] = out[:, wr] + _apply(r_fore, (0, -body["hand"] * 0.5, 0))
        out[:, tip] = out[:, ha] + _apply(r_fore, (0, -body["hand"] * 0.6, 0))
        out[:, th] = out[:, ha] + _apply(r_fore, (-side * 0.025, -0.02, -0.03))
    leg_joints = {-1: (12, 13, 14, 15), 1: (16, 17, 18, 19)}
    for side, prefix in ((-1, "l"), (1, "r")):
        hip, knee, ankle, foot = leg_joints[side]
        out[:, hip] = pelvis + _apply(r_yaw, (side * body["hip"], -0.05, 0))
        r_thigh = r_yaw @ _rx(a[f"{prefix}_hip"])
        r_shin = r_thigh @ _rx(-a[f"{prefix}_knee"])
        out[:, knee] = out[:, hip] + _apply(r_thigh, (0, -body["thigh"], 0))
        out[:, ankle] = out[:, knee] + _apply(r_shin, (0, -body["shin"], 0))
        out[:, foot] = out[:, ankle] + _apply(r_yaw, (0, -0.04, -body["foot"]))
    return out


# ----------------------------------------------------------------------------------------------------
# actions: phase p in [0, 1] -> joint-angle trajectories


def _envelope(p, rise=0.2):
    """0 -> 1 over the first `rise` of the clip, 1 -> 0 over the last `rise` (smooth)."""
    up = np.clip(p / rise, 0, 1)
    down = np.clip((1 - p) / rise, 0, 1)
    return (3 * up ** 2 - 2 * up ** 3) * (3 * down ** 2 - 2 * down ** 3)


def _bump(p, center=0.5, width=0.3):
    return np.exp(-0.5 * ((p - center) / (width / 2.5)) ** 2)


def _smooth_noise(rng, num_t, scale, knots=5):
    """Low-frequency noise (T,): a smooth interpolation of `knots` random values."""
    values = rng.normal(0, scale, size=knots)
    return np.interp(np.linspace(0, knots - 1, num_t), np.arange(knots), values)


def _rest_pose(num_t, body, rng) -> dict:
    a = {name: np.zeros(num_t) for name in ANGLES}
    a["l_abd"] += 0.12
    a["r_abd"] += 0.12
    a["l_elbow"] += 0.15
    a["r_elbow"] += 0.15
    for i, name in enumerate(ANGLES):          # personal posture + idle motion of every limb
        if name in ("dx", "dy", "dz"):
            a[name] += _smooth_noise(rng, num_t, 0.02 * body["idle"])
        elif name != "yaw":
            a[name] += body["posture"][i] + _smooth_noise(rng, num_t, 0.06 * body["idle"])
    return a


DISTRACTORS = ("head", "lean", "l_flex", "r_flex", "l_abd", "r_abd", "l_elbow", "r_elbow", "bow")


def action_angles(label: int, p: np.ndarray, body: dict, rng: np.random.Generator, role: int = 0) -> dict:
    """Angles of one performer doing action `label` (0-based) over phases p; role 1 = the partner."""
    a = _rest_pose(len(p), body, rng)
    amp = body["amplitude"] * rng.uniform(0.7, 1.3)
    env = _envelope(p, rng.uniform(0.12, 0.25))
    if rng.random() < 0.35:                    # an unrelated small movement (scratch, adjust, glance)
        name = DISTRACTORS[rng.integers(len(DISTRACTORS))]
        a[name] += rng.choice([-1, 1]) * rng.uniform(0.3, 0.7) * _bump(p, rng.uniform(0.2, 0.8), 0.3)
    reps = rng.integers(2, 5)
    cyc = 2 * np.pi * reps * p + rng.uniform(0, 2 * np.pi)
    variant = rng.integers(2)                  # two styles of every action
    if label == 0:      # wave right hand: hand up, forearm swinging; or the whole raised arm swaying
        if variant == 0:
            a["r_abd"] += env * 2.3 * min(amp, 1.1)
            a["r_elbow"] += env * (0.7 + 0.5 * amp * np.sin(cyc))
            a["r_horiz"] += env * 0.25 * np.sin(cyc)
        else:
            a["r_flex"] += env * rng.uniform(1.7, 2.3)
            a["r_abd"] += env * (0.5 + 0.4 * amp * np.sin(cyc))
            a["r_elbow"] += env * 0.2
    elif label == 1:    # raise both hands once, hold, lower (sideways or to the front)
        lift = _envelope(p, 0.3) * rng.uniform(2.0, 2.8) * min(amp, 1.1)
        key = "abd" if variant == 0 else "flex"
        a[f"l_{key}"] += lift
        a[f"r_{key}"] += lift
    elif label == 2:    # reach forward with the left hand, once, to a target at some height and side
        reach = _bump(p, rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6))
        a["l_flex"] += reach * rng.uniform(1.0, 2.0) * amp
        a["l_horiz"] += reach * rng.uniform(-0.4, 0.4)
        a["l_elbow"] += (1 - reach) * 0.8 * env
        a["bow"] += reach * rng.uniform(0, 0.35) * amp
    elif label == 3:    # punches: arm forward, elbow snapping straight several times (right, or alternating)
        height = rng.uniform(1.2, 1.7)
        a["r_flex"] += env * height
        a["r_elbow"] += env * (1.1 + 0.9 * np.cos(cyc)) * min(amp, 1.1)
        a["yaw"] += env * 0.15 * np.cos(cyc)
        a["l_flex"] += env * height * 0.7
        if variant == 0:
            a["l_elbow"] += env * 1.6
        else:
            a["l_elbow"] += env * (1.1 - 0.9 * np.cos(cyc)) * min(amp, 1.1)
    elif label == 4:    # kick with the right leg, once
        kick = _bump(p, rng.uniform(0.4, 0.6), rng.uniform(0.25, 0.4))
        a["r_hip"] += kick * rng.uniform(0.8, 1.4) * amp
        a["r_knee"] += env * 0.9 * (1 - kick) + 0.1
        a["l_abd"] += env * 0.4
        a["r_abd"] += env * 0.4
        a["bow"] -= kick * 0.15
    elif label == 5:    # squat down and up (1 or 2 times)
        depth = ((0.5 - 0.5 * np.cos(2 * np.pi * rng.integers(1, 3) * p))
                 * rng.uniform(0.8, 1.4) * min(amp, 1.1))
        a["l_hip"] += depth
        a["r_hip"] += depth
        a["l_knee"] += 2 * depth
        a["r_knee"] += 2 * depth
        a["dy"] -= (body["thigh"] + body["shin"]) * (1 - np.cos(depth))
        a["bow"] += 0.45 * depth
        if variant == 0:                        # arms forward for balance
            a["l_flex"] += 0.8 * depth
            a["r_flex"] += 0.8 * depth
        else:                                   # hands on the hips
            for side in ("l", "r"):
                a[f"{side}_abd"] += env * 0.5
                a[f"{side}_elbow"] += env * 1.6
    elif label == 6:    # bow: torso forward and back
        bow = _bump(p, 0.5, rng.uniform(0.4, 0.7))
        a["bow"] += bow * rng.uniform(0.6, 1.2) * amp
        a["head"] += bow * 0.3
        if variant == 1:                        # hands together in front
            a["l_flex"] += env * 0.4
            a["r_flex"] += env * 0.4
            a["l_horiz"] += env * 0.5
            a["r_horiz"] += env * 0.5
    elif label == 7:    # turn around on the spot, stepping
        direction = rng.choice([-1, 1])
        turn = np.clip((p - 0.15) / 0.7, 0, 1)
        a["yaw"] += direction * np.pi * (3 * turn ** 2 - 2 * turn ** 3) * rng.uniform(0.8, 1.1)
        step = 0.35 * env * np.sin(2 * np.pi * 3 * p)
        a["l_hip"] += np.maximum(step, 0)
        a["r_hip"] += np.maximum(-step, 0)
        a["l_knee"] += 2 * np.maximum(step, 0)
        a["r_knee"] += 2 * np.maximum(-step, 0)
    elif label == 8:    # clap: arms forward, hands meeting repeatedly
        height = rng.uniform(0.8, 1.6)
        a["l_flex"] += env * height
        a["r_flex"] += env * height
        open_close = 0.5 + 0.5 * np.cos(cyc)
        a["l_horiz"] += env * (0.35 - 0.9 * open_close * amp)
        a["r_horiz"] += env * (0.35 - 0.9 * open_close * amp)
        a["l_elbow"] += env * 0.5
        a["r_elbow"] += env * 0.5
    elif label == 9:    # jump: crouch, flight with arms up, land (1 or 2 times)
        jumps = rng.integers(1, 3)
        phase = (p * jumps) % 1.0
        flight = _bump(phase, 0.55, 0.3)
        crouch = _bump(phase, 0.3, 0.25) + _bump(phase, 0.8, 0.25)
        a["dy"] += flight * 0.25 * amp
        for side in ("l", "r"):
            a[f"{side}_hip"] += crouch * 0.6
            a[f"{side}_knee"] += crouch * 1.2 + flight * 0.3
            a[f"{side}_flex"] += (flight * 1.8 * min(amp, 1.1) if variant == 0 else 0) - crouch * 0.4
        a["dy"] -= crouch * 0.12
        a["bow"] += crouch * 0.3
    elif label == 10:   # march in place: alternating knee lifts, arms swinging
        swing = env * np.sin(cyc)
        a["l_hip"] += np.maximum(swing, 0) * 1.0 * amp
        a["r_hip"] += np.maximum(-swing, 0) * 1.0 * amp
        a["l_knee"] += np.maximum(swing, 0) * 1.6 * amp
        a["r_knee"] += np.maximum(-swing, 0) * 1.6 * amp
        arms = rng.uniform(0, 0.7)
        a["l_flex"] -= swing * arms
        a["r_flex"] += swing * arms
    elif label == 11:   # big circles with the left arm
        direction = rng.choice([-1, 1])
        a["l_flex"] += env * (1.4 + 1.1 * amp * np.sin(direction * cyc))
        a["l_abd"] += env * (0.9 + 0.7 * amp * np.cos(direction * cyc))
    elif label == 12:   # handshake: right hands forward, pumping
        a["r_flex"] += env * 0.9
        a["r_elbow"] += env * 0.5
        a["r_horiz"] += env * 0.25
        a["r_flex"] += env * 0.18 * np.sin(2 * np.pi * rng.integers(3, 6) * p)
        a["dz"] -= env * 0.1
    elif label == 13:   # push: role 0 thrusts both arms; role 1 is pushed back
        hit = rng.uniform(0.4, 0.6)
        if role == 0:
            thrust = _bump(p, hit, 0.3)
            a["l_flex"] += env * 1.3
            a["r_flex"] += env * 1.3
            a["l_elbow"] += env * 1.4 * (1 - thrust)
            a["r_elbow"] += env * 1.4 * (1 - thrust)
            a["bow"] += thrust * 0.25
            a["dz"] -= thrust * 0.15
        else:
            after = np.clip((p - hit) / 0.2, 0, 1)
            a["dz"] += after * 0.35 * amp
            a["bow"] -= _bump(p, hit + 0.05, 0.25) * 0.4
            a["l_abd"] += _bump(p, hit + 0.1, 0.3) * 0.8
            a["r_abd"] += _bump(p, hit + 0.1, 0.3) * 0.8
    elif label == 14:   # hug: step in, arms around, hold, release
        hold = _envelope(p, 0.3)
        a["dz"] -= hold * 0.2
        for side in ("l", "r"):
            a[f"{side}_abd"] += hold * 1.3
            a[f"{side}_flex"] += hold * 0.6
            a[f"{side}_horiz"] += hold * 0.9
            a[f"{side}_elbow"] += hold * 1.2
    else:
        raise ValueError(f"label must be in [0, {NUM_CLASSES}), got {label}")
    return a


# ----------------------------------------------------------------------------------------------------
# recording: events, cameras, sensor noise, the .skeleton text


def _event_grid(num_clips: int) -> list[tuple[int, int, int, int]]:
    """(setup, performer, replication, action) events; three cameras each; about num_clips clips."""
    per_performer = NUM_CLASSES * REPLICATIONS * NUM_CAMERAS
    performers = max(MIN_PERFORMERS, math.ceil(num_clips / per_performer))
    events = []
    for perf in range(1, performers + 1):
        setup = 1 + (perf - 1) % 4                    # four setups (camera heights/distances)
        for rep in range(1, REPLICATIONS + 1):
            for action in range(1, NUM_CLASSES + 1):
                events.append((setup, perf, rep, action))
    return events


def _select_clips(num_clips: int, seed: int) -> list[tuple[tuple[int, int, int, int], list[int]]]:
    """The events to record and their cameras: all of them when the grid holds num_clips clips or
    fewer, else a seeded subset of exactly num_clips clips (each event keeps its cameras together)."""
    events = _event_grid(num_clips)
    clips = [(i, cam) for i in range(len(events)) for cam in range(1, NUM_CAMERAS + 1)]
    if num_clips < len(clips):
        keep = np.random.default_rng([seed, 11]).choice(len(clips), num_clips, replace=False)
        clips = [clips[i] for i in sorted(keep)]
    cameras: dict[int, list[int]] = {}
    for i, cam in clips:
        cameras.setdefault(i, []).append(cam)
    return [(events[i], cams) for i, cams in sorted(cameras.items())]


def sample_name(setup: int, camera: int, perf: int, rep: int, action: int) -> str:
    return f"S{setup:03d}C{camera:03d}P{perf:03d}R{rep:03d}A{action:03d}"


def _camera_view(world: np.ndarray, setup: int, camera: int, seed: int) -> np.ndarray:
    """World joints (..., 3) -> Kinect camera coordinates (x, y up, z depth)."""
    rng = np.random.default_rng([seed, 13, setup])
    distance = rng.uniform(2.4, 3.6)
    height = rng.uniform(0.7, 1.3)
    pitch = math.radians(rng.uniform(-8, 8))
    azimuth = math.radians(CAMERA_AZIMUTH_DEG[camera - 1] + rng.uniform(-5, 5))
    position = np.array([distance * math.sin(azimuth), height, -distance * math.cos(azimuth)])
    forward = -np.array([position[0], 0.0, position[2]])
    forward /= np.linalg.norm(forward)
    forward = forward * math.cos(pitch) + np.array([0, math.sin(pitch), 0])
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    return (world - position) @ np.stack([right, up, forward], 1)


def _record_event(args) -> list[str]:
    """Simulate one event and write one .skeleton file per camera; returns the file names."""
    (setup, perf, rep, action), cameras, seed, out_dir = args
    label = action - 1
    rng = np.random.default_rng([seed, 17, setup, perf, rep, action])
    body = performer(seed, perf)
    speed = body["speed"] * rng.uniform(0.8, 1.25)
    num_t = int(np.clip(round(_BASE_FRAMES[label] / speed * rng.uniform(0.85, 1.15)),
                        MIN_ACTION_FRAMES, MAX_ACTION_FRAMES))
    warp = rng.uniform(0.75, 1.33)                       # uneven timing within the clip
    onset, end = rng.uniform(0, 0.2), rng.uniform(0.8, 1.0)   # idle before and after the action
    p = np.clip((np.linspace(0, 1, num_t) - onset) / (end - onset), 0, 1) ** warp
    facing = rng.normal(0, 0.25)                         # the performer is not exactly facing camera 1
    drift = _smooth_noise(rng, num_t, 0.15, knots=3)      # and turns a little while acting
    offset = np.array([rng.normal(0, 0.25), 0, rng.normal(0, 0.3)])
    people = []
    if label in INTERACTIONS:
        partner = performer(seed, 1000 + (perf * 7 + rep) % 40)
        gap = rng.uniform(0.9, 1.3) / 2
        for role, who in ((0, body), (1, partner)):
            angles = action_angles(label, p, who, rng, role)
            side = -1 if role == 0 else 1
            angles["yaw"] += facing + drift + side * np.pi / 2   # facing each other, side-on to camera 1
            joints = forward_kinematics(angles, who)
            shift = _apply(_ry(np.array([facing]))[0][None], (side * gap, 0, 0))[0]
            joints += shift + offset
            # the partner's forward motion (dz in its own frame) is towards the other person already
            people.append(joints)
    else:
        angles = action_angles(label, p, body, rng)
        angles["yaw"] += facing + drift
        people.append(forward_kinematics(angles, body) + offset)
    names = []
    for camera in cameras:
        cam_rng = np.random.default_rng([seed, 19, setup, perf, rep, action, camera])
        # each camera starts and stops recording at slightly different moments
        first = int(cam_rng.integers(0, 13))
        last = num_t - int(cam_rng.integers(0, 13))
        if last - first < MIN_ACTION_FRAMES:
            first, last = 0, num_t
        views = [_camera_view(joints[first:last], setup, camera, seed) for joints in people]
        names.append(_write_skeleton(out_dir, sample_name(setup, camera, perf, rep, action), views, cam_rng))
    return names


def _sensor(view: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Depth-dependent jitter, a per-joint bias, a slow per-joint drift, and rare dropped joints (all
    zero, tracking state 0)."""
    num_t = view.shape[0]
    depth = np.maximum(view[..., 2:3], 0.5)
    # joints hidden behind the body (further from the camera than the spine) are tracked worse
    behind = (view[..., 2] - view[:, 1:2, 2]) > 0.06
    hidden_error = rng.normal(0, 0.025, size=view.shape) + 0.15 * (view[:, 1:2] - view)
    view = view + behind[..., None] * hidden_error
    knots = np.linspace(0, 3, num_t)
    weights = np.maximum(0, 1 - np.abs(knots[:, None] - np.arange(4)[None]))        # (T, 4) linear interp
    wander = np.einsum("tk,kjc->tjc", weights, rng.normal(0, 0.015, size=(4, 25, 3)))  # slow tracking drift
    noisy = (view + rng.normal(0, 0.004, size=view.shape) * depth + rng.normal(0, 0.008, size=(1, 25, 3))
             + wander * depth / 3)
    tracked = np.full((num_t, 25), 2, dtype=np.int64)
    dropped = rng.random((num_t, 25)) < 0.002
    noisy[dropped] = 0
    tracked[dropped] = 0
    return noisy, tracked


def _joint_lines(xyz: np.ndarray, state: np.ndarray) -> list[str]:
    """(T, 25, 3) -> per frame the 25 joint lines (x y z depthX depthY colorX colorY 4 orientations state)."""
    z = np.where(xyz[..., 2] > 0.1, xyz[..., 2], 1.0)
    depth_xy = np.stack([256 + 365 * xyz[..., 0] / z, 212 - 365 * xyz[..., 1] / z], -1)
    color_xy = np.stack([960 + 1060 * xyz[..., 0] / z, 540 - 1060 * xyz[..., 1] / z], -1)
    table = np.concatenate([xyz, depth_xy, color_xy, state[..., None]], -1).reshape(xyz.shape[0], -1)
    line = "%.5f %.5f %.5f %.2f %.2f %.2f %.2f 0 0 0 0 %d\n"
    frame_format = line * 25
    return [frame_format % tuple(row) for row in table.tolist()]


def _write_skeleton(out_dir: str, name: str, views: list[np.ndarray], rng: np.random.Generator) -> str:
    num_t = views[0].shape[0]
    bodies = []
    for i, view in enumerate(views):
        xyz, state = _sensor(view, rng)
        bodies.append((72057594037900000 + int(rng.integers(0, 99999)) * 10 + i, _joint_lines(xyz, state)))
    present = np.ones((len(bodies), num_t), dtype=bool)
    if rng.random() < 0.15:                         # the performer enters late
        present[:, :rng.integers(1, 6)] = False
    if rng.random() < 0.3:                          # a few frames without any body
        present[:, rng.choice(num_t, rng.integers(1, 4), replace=False)] = False
    ghost = None
    if rng.random() < 0.05:                         # a spurious, nearly collapsed body for a while
        start = int(rng.integers(0, num_t // 2))
        length = int(rng.integers(5, num_t - start + 1))
        center = np.array([rng.uniform(-1, 1), rng.uniform(-0.5, 0.5), rng.uniform(2.5, 4)])
        blob = center + rng.normal(0, 0.02, size=(num_t, 25, 3))
        ghost = (start, start + length, _joint_lines(blob, np.ones((num_t, 25), dtype=np.int64)))
    info = "{} 0 1 1 1 1 0 {:.6f} {:.6f} 2\n"
    chunks = [f"{num_t}\n"]
    for t in range(num_t):
        frame_bodies = [(body_id, lines[t]) for (body_id, lines), here in zip(bodies, present[:, t]) if here]
        if ghost is not None and ghost[0] <= t < ghost[1] and present[0, t]:
            frame_bodies.append((72057594037999999, ghost[2][t]))
        chunks.append(f"{len(frame_bodies)}\n")
        for body_id, joints in frame_bodies:
            chunks.append(info.format(body_id, rng.normal(0, 0.05), rng.normal(0, 0.05)))
            chunks.append("25\n")
            chunks.append(joints)
    with atomic_files.atomic_open(os.path.join(out_dir, name + ".skeleton")) as f:
        f.write("".join(chunks))
    return name


def clip_names(num_clips: int = DEFAULT_NUM_CLIPS, seed: int = 0) -> list[str]:
    """The sample names `generate` writes for these settings, known before anything is written."""
    return [sample_name(setup, camera, perf, rep, action)
            for (setup, perf, rep, action), cameras in _select_clips(num_clips, seed) for camera in cameras]


def generate(out_dir: str, num_clips: int = DEFAULT_NUM_CLIPS, seed: int = 0, workers: int = 1) -> list[str]:
    """Write about `num_clips` NTU-format .skeleton files into out_dir; returns their sample names."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(event, cams, seed, out_dir) for event, cams in _select_clips(num_clips, seed)]
    names: list[str] = []
    pool = mp.Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_record_event, jobs, chunksize=8) if pool else map(_record_event, jobs)
        for written in tqdm(results, total=len(jobs), desc="synthetic events", unit="event",
                            dynamic_ncols=True):
            names.extend(written)
    finally:
        if pool:
            pool.terminate()
            pool.join()
    return names

