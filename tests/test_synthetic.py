"""Tests of jaxhfc.synthetic, the built-in dataset: determinism, the generative model's parts
(templates, texture spectrum, high-frequency cue, conflicts) against numpy references, knobs
and errors. The properties the experiments rely on are in test_calibration.py."""

import numpy as np
import pytest

from jaxhfc import datasets
from jaxhfc.datasets import synthetic


@pytest.fixture(scope="module")
def split():
    images, labels, names, shown = synthetic.generate_split("train", 1000, seed=0, return_templates=True)
    return images, labels, names, shown


def _np_pass(x, r, low):
    """Reference low/high pass (numpy, per image and channel, strict < r on the shifted grid)."""
    s = x.shape[1]
    i, j = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    mask = np.hypot(i - s // 2, j - s // 2) < r
    if not low:
        mask = ~mask
    f = np.fft.fftshift(np.fft.fft2(x.astype(np.float64), axes=(1, 2)), axes=(1, 2))
    return np.real(np.fft.ifft2(np.fft.ifftshift(f * mask[None, :, :, None], axes=(1, 2)), axes=(1, 2)))


def test_shapes_determinism_balance_and_streams(split):
    images, labels, names, shown = split
    assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert names == datasets.SYNTHETIC_CLASSES
    assert np.all(np.bincount(labels, minlength=10) == 100)
    again = datasets.load_dataset("synthetic", split="train", seed=0, num_train=1000)
    np.testing.assert_array_equal(again.images, images)
    np.testing.assert_array_equal(again.labels, labels)
    tr, te = datasets.make_synthetic(num_train=1000, num_test=200, seed=0)
    np.testing.assert_array_equal(tr.images, images)
    assert te.images.shape == (200, 32, 32, 3) and np.mean(te.images != images[:200]) > 0.5
    other = datasets.load_dataset("synthetic", split="train", seed=1, num_train=1000)
    assert np.mean(other.images != images) > 0.5
    # Not saturated: natural-looking grey levels, few clipped pixels.
    assert 100 < images.mean() < 155 and 35 < images.std() < 75
    assert np.mean((images == 0) | (images == 255)) < 0.05


def test_conflict_share_exact_and_uniform(split):
    _, labels, _, shown = split
    conflict = shown != labels
    assert conflict.sum() == 400  # round(0.4 * 1000), exactly
    # The shown template of a conflict image is another class, spread over the other nine.
    offsets = (shown[conflict] - labels[conflict]) % 10
    assert offsets.min() >= 1 and np.bincount(offsets, minlength=10)[1:].min() > 20
    _, te_labels, _, te_shown = synthetic.generate_split("test", 1000, seed=0, return_templates=True)
    assert (te_shown != te_labels).sum() == 100  # test_conflict 0.1
    _, l2, _, s2 = synthetic.generate_split("test", 500, seed=0, return_templates=True, test_conflict=None)
    assert (s2 != l2).sum() == 200  # None: same share as training


def test_image_is_template_plus_texture_plus_cue():
    """With the texture, cue, noise and brightness knobs at zero, an image is 128 + contrast x its
    template; with only the cue on, the difference is the class's cosines (per-image phase 0)."""
    knobs = dict(texture_std=0.0, noise_std=0.0, brightness_std=0.0, hf_amplitude=0.0, conflict=0.0)
    images, labels, _ = synthetic.generate_split("train", 50, seed=3, **knobs)
    model = synthetic.class_model(3, **knobs)
    for i in range(5):
        t = model.templates[labels[i]]
        x = images[i].astype(np.float64) - 128
        c = np.sum(x * t) / np.sum(t * t)
        assert 0.83 < c < 1.17
        assert np.abs(x - np.clip(c * t, -128, 127)).max() < 0.75  # rounding (and the fitted c) only
    # The cue: cosines at the class's frequencies, peak hf_amplitude x U(0.8, 1.2) each.
    cue_knobs = dict(knobs, hf_amplitude=10.0)
    with_cue, labels2, _ = synthetic.generate_split("train", 50, seed=3, **cue_knobs)
    m = synthetic.class_model(3, **cue_knobs)
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    for i in range(3):
        # Not the same random stream as above (uniform draws differ), so test the spectrum.
        f = np.fft.fft2(with_cue[i].astype(np.float64).mean(-1))
        for (u, v), ph in zip(m.hf_frequencies[labels2[i]], m.hf_phases[labels2[i]]):
            amp = 2 * np.abs(f[u % 32, v % 32]) / 32 ** 2
            assert 7.5 < amp < 12.5, amp
            ref = np.cos(2 * np.pi * (u * yy + v * xx) / 32 + ph)
            assert np.sum(ref * (with_cue[i].mean(-1) - 128)) > 0.7 * 0.5 * 32 ** 2 * 8  # phase as the class's


def test_hf_cue_band_disjoint_and_removed_by_low_pass_12():
    m = synthetic.class_model(0)
    f = m.hf_frequencies.reshape(-1, 2)
    d = np.hypot(f[:, 0], f[:, 1])
    assert np.all((d >= 12.5) & (d <= 15.5)) and np.all(np.abs(f) < 16)
    assert len({tuple(p) for p in f}) == len(f)  # disjoint between classes
    cue = (m.hf_cos[..., None] * np.ones(3)).reshape(-1, 32, 32, 3)
    assert np.abs(_np_pass(cue, 12, low=True)).max() < 1e-5
    np.testing.assert_allclose(_np_pass(cue, 12, low=False), cue, atol=1e-5)
    # ... and low_pass(x, 16) keeps it (radius < 16), so HFC at 16 does not hold it.
    np.testing.assert_allclose(_np_pass(cue, 16, low=True), cue, atol=1e-5)


def test_texture_spectrum_follows_the_power_law():
    """The texture alone: power ~ |f|^-slope above lf_radius (fitted slope within 0.15), none below."""
    for slope in (2.0, 1.0):
        m = synthetic.class_model(0, slope=slope)
        tex = synthetic._texture(m, 400, np.random.default_rng(0)).astype(np.float64)
        assert abs(tex.std() - 30.0) < 1.5
        p = np.abs(np.fft.fft2(tex, axes=(1, 2))) ** 2
        p = p.mean(axis=(0, 3))
        fu = np.fft.fftfreq(32) * 32
        d = np.hypot(fu[:, None], fu[None, :])
        assert p[(d > 0) & (d < 4)].max() < 1e-6 * p[(d >= 4)].mean()
        sel = (d >= 5) & (d <= 14)
        fitted = np.polyfit(np.log(d[sel]), np.log(p[sel]), 1)[0]
        assert abs(fitted + slope) < 0.15, (slope, fitted)


def test_radial_power_spectrum_matches_a_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16, 16, 2))
    radii, power = synthetic.radial_power_spectrum(x)
    acc = {}
    for n in range(3):
        for c in range(2):
            img = x[n, :, :, c] - x[n, :, :, c].mean()
            f = np.abs(np.fft.fft2(img)) ** 2
            for u in range(16):
                for v in range(16):
                    uu, vv = min(u, 16 - u), min(v, 16 - v)
                    r = int(round(np.hypot(uu, vv)))
                    if 1 <= r <= 8:
                        acc.setdefault(r, []).append(f[u, v])
    np.testing.assert_allclose(power, [np.mean(acc[r]) for r in radii], rtol=1e-10)
    assert list(radii) == list(range(1, 9))
    # A planted power law is recovered by spectrum_slope.
    fu = np.fft.fftfreq(32) * 32
    d = np.maximum(np.hypot(fu[:, None], fu[None, :]), 1)
    noise = rng.normal(size=(200, 32, 32)) + 1j * rng.normal(size=(200, 32, 32))
    field = np.real(np.fft.ifft2(noise * d ** -1.5))[..., None]
    assert abs(synthetic.spectrum_slope(field) + 3.0) < 0.15


def test_knobs_and_errors():
    a, _, _ = synthetic.generate_split("train", 20, seed=0, hf_components=2, num_classes=5)
    assert a.shape == (20, 32, 32, 3)
    b, _, names = synthetic.generate_split("train", 20, seed=0, size=16, hf_band=(5.5, 7.5), num_classes=3)
    assert b.shape == (20, 16, 16, 3) and names == ("class_0", "class_1", "class_2")
    bad = [dict(conflict=1.5), dict(test_conflict=-0.1), dict(hf_amplitude=-1.0), dict(noise_std=float("nan")),
           dict(size=4), dict(num_classes=1), dict(hf_components=0), dict(hf_band=(20.0, 10.0)),
           dict(hf_band=(12.1, 12.15)), dict(lf_radius=0.5), dict(colour=1.0), dict(slope=True)]
    for kw in bad:
        with pytest.raises(ValueError):
            synthetic.generate_split("train", 10, seed=0, **kw)
    with pytest.raises(ValueError, match="split"):
        synthetic.generate_split("val", 10)
    with pytest.raises(ValueError, match="positive"):
        synthetic.generate_split("train", 0)
    with pytest.raises(ValueError, match="square"):
        synthetic.radial_power_spectrum(np.zeros((2, 8, 6, 1)))
