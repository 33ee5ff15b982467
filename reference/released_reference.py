"""The loop reference for the data tests and `benchmark.py data`: a straightforward transcription of
the released ntu_gendata / preprocess code (per-frame, per-body, per-joint Python loops), written
independently of prepare_data.py so that the vectorised pipeline can be checked against it."""
import math

import numpy as np


def loop_read_xyz(path, max_body=4, num_joint=25):
    with open(path) as f:
        num_frame = int(f.readline())
        frames = []
        for _ in range(num_frame):
            bodies = []
            for _ in range(int(f.readline())):
                f.readline()                                    # body info
                joints = [[float(v) for v in f.readline().split()] for _ in range(int(f.readline()))]
                bodies.append(joints)
            frames.append(bodies)
    data = np.zeros((max_body, num_frame, num_joint, 3))
    for n, bodies in enumerate(frames):
        for m, joints in enumerate(bodies):
            for j, v in enumerate(joints):
                if m < max_body and j < num_joint:
                    data[m, n, j, :] = v[:3]
    energy = []
    for body in data:
        index = body.sum(-1).sum(-1) != 0
        body = body[index]
        energy.append(0 if len(body) == 0 else
                      body[:, :, 0].std() + body[:, :, 1].std() + body[:, :, 2].std())
    index = np.array(energy).argsort()[::-1][0:2]
    return data[index].transpose(3, 1, 2, 0), [len(b) for b in frames]


def loop_rotation_matrix(axis, theta):
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


def loop_angle_between(v1, v2):
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0
    v1_u = v1 / np.linalg.norm(v1)
    v2_u = v2 / np.linalg.norm(v2)
    return np.arccos(np.clip(np.dot(v1_u, v2_u), -1.0, 1.0))


def loop_pre_normalization(data, zaxis=(0, 1), xaxis=(8, 4)):
    """data (N, C, T, V, M) float32 -> normalised copy, by loops as in the released code."""
    N, C, T, V, M = data.shape
    s = np.transpose(data, [0, 4, 2, 3, 1]).copy()
    for i_s, skeleton in enumerate(s):
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            if person[0].sum() == 0:
                index = (person.sum(-1).sum(-1) != 0)
                tmp = person[index].copy()
                person *= 0
                person[:len(tmp)] = tmp
            for i_f, frame in enumerate(person):
                if frame.sum() == 0:
                    if person[i_f:].sum() == 0:
                        rest = len(person) - i_f
                        num = int(np.ceil(rest / i_f))
                        pad = np.concatenate([person[0:i_f] for _ in range(num)], 0)[:rest]
                        s[i_s, i_p, i_f:] = pad
                        break
    for i_s, skeleton in enumerate(s):
        if skeleton.sum() == 0:
            continue
        main_body_center = skeleton[0][:, 1:2, :].copy()
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            mask = (person.sum(-1) != 0).reshape(T, V, 1)
            s[i_s, i_p] = (s[i_s, i_p] - main_body_center) * mask
    for i_s, skeleton in enumerate(s):
        if skeleton.sum() == 0:
            continue
        bottom, top = skeleton[0, 0, zaxis[0]], skeleton[0, 0, zaxis[1]]
        matrix_z = loop_rotation_matrix(np.cross(top - bottom, [0, 0, 1]),
                                        loop_angle_between(top - bottom, [0, 0, 1]))
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            for i_f, frame in enumerate(person):
                if frame.sum() == 0:
                    continue
                for i_j, joint in enumerate(frame):
                    s[i_s, i_p, i_f, i_j] = np.dot(matrix_z, joint)
    for i_s, skeleton in enumerate(s):
        if skeleton.sum() == 0:
            continue
        right, left = skeleton[0, 0, xaxis[0]], skeleton[0, 0, xaxis[1]]
        matrix_x = loop_rotation_matrix(np.cross(right - left, [1, 0, 0]),
                                        loop_angle_between(right - left, [1, 0, 0]))
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            for i_f, frame in enumerate(person):
                if frame.sum() == 0:
                    continue
                for i_j, joint in enumerate(frame):
                    s[i_s, i_p, i_f, i_j] = np.dot(matrix_x, joint)
    return np.transpose(s, [0, 4, 2, 3, 1])


def loop_fixed_length(clip, max_frame=300):
    out = np.zeros((3, max_frame, 25, 2), dtype=np.float32)
    length = min(clip.shape[1], max_frame)
    out[:, :length] = clip[:, :length]
    return out


def loop_pipeline(path):
    clip, _ = loop_read_xyz(path)
    return loop_pre_normalization(loop_fixed_length(clip)[None])[0]
