"""SPEC section 4 augmentations: the numpy functions against their definition, and the batched torch
versions against the numpy ones (exactly where they share the draws, in distribution otherwise)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp

from augmentation import augment as D

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def released_resize(clip, window=64):
    """The released resize: bilinear F.interpolate on a (1, 1, C*V*M, L) image to (C*V*M, window)."""
    c, length, v, m = clip.shape
    data = torch.tensor(clip, dtype=torch.float).permute(0, 2, 3, 1).reshape(c * v * m, length)
    data = F.interpolate(data[None, None], size=(c * v * m, window), mode="bilinear", align_corners=False)
    return data[0, 0].reshape(c, v, m, window).permute(0, 3, 1, 2).numpy()


def time_coded(num_t=300):
    """A clip whose every value is its frame index, so a crop-resize reveals its start and length."""
    return np.broadcast_to(np.arange(num_t, dtype=np.float32)[None, :, None, None], (3, num_t, 25, 2)).copy()


def crop_of(view, window=64):
    """(start, length) of a crop-resize of a time-coded clip: the output's first and last values are
    start + max(L/(2*window) - 1/2, 0) and start + min(L - 1, L - 1/2 - L/(2*window))."""
    first, last = float(view[0, 0, 0, 0]), float(view[0, -1, 0, 0])
    for length in range(1, 301):
        offset = max(length / (2 * window) - 0.5, 0)
        start = first - offset
        end = min(length - 1.0, length - 0.5 - length / (2 * window))
        if abs(start - round(start)) < 1e-3 and abs(last - (round(start) + end)) < 1e-3:
            return round(start), length
    raise AssertionError("not a crop of a time-coded clip")


@pytest.mark.parametrize("length", [1, 2, 5, 63, 64, 65, 100, 300])
def test_resize_matches_released_interpolate(length):
    clip = np.random.default_rng(length).normal(size=(3, length, 25, 2)).astype(np.float32)
    # linear interpolation of N(0, 1) values (|x| < 5) in float32: a few ulps of 5 (4.8e-7 each)
    np.testing.assert_allclose(D.resize_time(clip), released_resize(clip), atol=1e-5)


def test_crop_length_rule():
    for n in (1, 30, 63, 64, 65, 100, 300):
        for scale in np.linspace(0.1, 1.0, 37):
            length = D.crop_length(n, float(scale))
            floor = math.floor(n * scale)
            expected = n if n <= 64 else min(max(floor, 64), n)
            assert length == expected
    assert D.crop_length(300, np.float64(0.5)) == 150 and isinstance(D.crop_length(300, 0.5), int)


def test_random_crop_stays_inside_valid_frames_and_follows_the_length_rule():
    rng = np.random.default_rng(0)
    clip = time_coded()
    lengths = []
    for n in (40, 64, 150, 300, 500):
        for _ in range(200):
            start, length = crop_of(D.random_crop_resize(clip, n, rng))
            valid = min(n, 300)
            assert 0 <= start and start + length <= valid
            assert min(64, valid) <= length <= valid
            if n == 300:
                lengths.append(length)
    # L = 64 whenever floor(300 s) <= 64, i.e. s < 65/300: probability (65/300 - 0.1) / 0.9
    assert abs(np.mean(np.array(lengths) == 64) - (65 / 300 - 0.1) / 0.9) < 0.07


def test_center_crop_definition():
    clip = time_coded()
    for n in (50, 101, 300, 400):
        valid = min(n, 300)
        start = int((1 - 0.95) * valid / 2)
        assert crop_of(D.center_crop_resize(clip, n)) == (start, valid - 2 * start)


def test_joint_corruption_changes_exactly_15_joints_by_zero_or_one_matrix():
    rng = np.random.default_rng(1)
    clip = np.random.default_rng(2).normal(size=(3, 64, 25, 2)).astype(np.float32)
    modes = []
    for _ in range(200):
        out = D.corrupt_joints(clip, rng)
        changed = np.flatnonzero(np.abs(out - clip).reshape(3, 64, 25, 2).max(axis=(0, 1, 3)) > 1e-6)
        assert len(changed) == 15
        unchanged = np.setdiff1d(np.arange(25), changed)
        np.testing.assert_array_equal(out[:, :, unchanged], clip[:, :, unchanged])
        if not out[:, :, changed].any():
            modes.append("zero")
            continue
        x = clip[:, :, changed].reshape(3, -1).T           # rows: xyz of each point
        y = out[:, :, changed].reshape(3, -1).T
        matrix, *_ = np.linalg.lstsq(x, y, rcond=None)     # y = x @ R
        np.testing.assert_allclose(x @ matrix, y, atol=1e-4)
        assert np.abs(matrix).max() <= 1 + 1e-4
        modes.append("matrix")
    assert 0.38 < modes.count("zero") / len(modes) < 0.62


def test_shear_form():
    rng = np.random.default_rng(3)
    clip = np.random.default_rng(4).normal(size=(3, 64, 25, 2)).astype(np.float32)
    for _ in range(50):
        out = D.shear(clip, rng)
        x, y = clip.reshape(3, -1).T, out.reshape(3, -1).T
        transposed, *_ = np.linalg.lstsq(x, y, rcond=None)  # y = x @ S.T
        shear = transposed.T
        np.testing.assert_allclose(np.diag(shear), 1, atol=1e-4)
        assert np.abs(shear - np.eye(3)).max() <= 1 + 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_batched_resize_equals_numpy(device):
    rng = np.random.default_rng(5)
    clips = rng.normal(size=(6, 3, 300, 25, 2)).astype(np.float32)
    starts = np.array([0, 3, 10, 0, 200, 100])
    lengths = np.array([64, 70, 1, 300, 100, 64])
    out = D._resize_windows(torch.from_numpy(clips).to(device), torch.from_numpy(starts).to(device),
                            torch.from_numpy(lengths).to(device), 64).cpu().numpy()
    for i in range(6):   # N(0, 1) values interpolated in another order: a few ulps of |x| < 5, atol 20 ulps
        expected = D.resize_time(clips[i][:, starts[i]:starts[i] + lengths[i]])
        np.testing.assert_allclose(out[i], expected, atol=1e-5)
    frames = torch.tensor([50, 101, 300, 400])
    centred = D.center_crop_resize_batch(torch.from_numpy(clips[:4]).to(device), frames.to(device))
    centred = centred.cpu().numpy()
    for i in range(4):
        np.testing.assert_allclose(centred[i], D.center_crop_resize(clips[i], int(frames[i])), atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_crop_has_the_numpy_distribution(device):
    clip = time_coded()
    frames = [40, 150, 300]
    rng = np.random.default_rng(6)
    generator = torch.Generator(device=device).manual_seed(0)
    for n in frames:
        numpy_crops = [crop_of(D.random_crop_resize(clip, n, rng)) for _ in range(400)]
        batch = torch.from_numpy(clip)[None].expand(400, -1, -1, -1, -1).to(device)
        views = D.crop_resize_batch(batch, torch.full((400,), n, device=device), generator=generator)
        views = views.cpu().numpy()
        torch_crops = [crop_of(v) for v in views]
        for k in range(2):
            a, b = [c[k] for c in numpy_crops], [c[k] for c in torch_crops]
            if len(set(a)) > 1:
                assert ks_2samp(a, b).pvalue > 1e-3
            else:
                assert set(a) == set(b)
        for start, length in torch_crops:
            assert 0 <= start and start + length <= min(n, 300) and min(64, n) <= length


@pytest.mark.parametrize("device", DEVICES)
def test_batched_corruption_and_shear_forms(device):
    generator = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(300, 3, 16, 25, 2, device=device)
    out = D.corrupt_joints_batch(x, torch.ones(300, dtype=torch.bool, device=device), generator)
    zero = 0
    for i in range(300):
        changed = torch.nonzero((out[i] - x[i]).abs().amax(dim=(0, 1, 3)) > 1e-6).flatten()
        assert len(changed) == 15
        if not out[i][:, :, changed].any():
            zero += 1
        else:
            a = x[i][:, :, changed].reshape(3, -1).T.double().cpu()
            b = out[i][:, :, changed].reshape(3, -1).T.double().cpu()
            matrix = torch.linalg.lstsq(a, b).solution
            torch.testing.assert_close(a @ matrix, b, atol=1e-4, rtol=0)
            assert matrix.abs().max() <= 1 + 1e-4
    assert 0.38 < zero / 300 < 0.62
    untouched = D.corrupt_joints_batch(x, torch.zeros(300, dtype=torch.bool, device=device), generator)
    assert torch.equal(untouched, x)
    sheared = D.shear_batch(x[:20], torch.ones(20, dtype=torch.bool, device=device), generator)
    for i in range(20):
        a, b = x[i].reshape(3, -1).T.double().cpu(), sheared[i].reshape(3, -1).T.double().cpu()
        shear = torch.linalg.lstsq(a, b).solution.T
        torch.testing.assert_close(torch.diagonal(shear), torch.ones(3, dtype=torch.float64),
                                   atol=1e-4, rtol=0)
        assert (shear - torch.eye(3, dtype=torch.float64)).abs().max() <= 1 + 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_full_pretraining_augmentation_batched_vs_numpy_in_distribution(device):
    """Statistics of one view of a fixed clip: the share of views with a zeroed joint (corruption in
    zero mode: 1/2 * 1/2), and the distribution of the view's mean absolute value."""
    clip = np.random.default_rng(7).normal(size=(3, 300, 25, 2)).astype(np.float32) + 1.0
    rng = np.random.default_rng(8)
    count = 600
    numpy_views = np.stack([D.augment_pretrain(clip, 250, rng) for _ in range(count)])
    generator = torch.Generator(device=device).manual_seed(2)
    batch = torch.from_numpy(clip)[None].expand(count, -1, -1, -1, -1).to(device)
    torch_views = D.augment_pretrain_batch(batch, torch.full((count,), 250, device=device),
                                           generator=generator).cpu().numpy()
    assert torch_views.shape == numpy_views.shape == (count, 3, 64, 25, 2)
    for views in (numpy_views, torch_views):
        zeroed = (np.abs(views).max(axis=(1, 2, 4)) == 0).any(axis=1).mean()
        assert abs(zeroed - 0.25) < 0.06
    a, b = np.abs(numpy_views).mean(axis=(1, 2, 3, 4)), np.abs(torch_views).mean(axis=(1, 2, 3, 4))
    assert ks_2samp(a, b).pvalue > 1e-3
