"""Tests of jaxhfc.analysis against numpy references, identities and hand-derived values.

Models are tiny hand-written jax functions (linear, constant, a small flax conv), so the
tests do not depend on jaxhfc.models / jaxhfc.fit.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhfc import analysis, fourier, parallel

H = W = 8


# ----------------------------------------------------------------------------- helpers


def linear_model(rng, h=H, w=W, c=3, k=4, scale=1.0):
    wmat = (scale * rng.normal(size=(h * w * c, k))).astype(np.float32)
    bias = rng.normal(size=(k,)).astype(np.float32)

    def logits_fn(x):
        return x.reshape(x.shape[0], -1) @ wmat + bias

    def numpy_logits(x):
        return np.asarray(x, np.float64).reshape(len(x), -1) @ wmat.astype(np.float64) + bias

    return logits_fn, numpy_logits


def constant_model(logits):
    logits = jnp.asarray(logits, jnp.float32)
    return lambda x: jnp.broadcast_to(logits, (x.shape[0], logits.shape[0]))


class TinyConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.Conv(4, (3, 3), strides=2)(x)
        return nn.Dense(3)(x.mean(axis=(1, 2)))


def tiny_conv(seed=0, h=H, w=W):
    model = TinyConv()
    variables = model.init(jax.random.key(seed), jnp.zeros((1, h, w, 3)))
    return lambda x: model.apply(variables, x)


def numpy_low_pass(x, r):
    """Paper-code filter in numpy, per image and channel: mask distance < r on fftshift(fft2)."""
    x = np.asarray(x, np.float64)
    h, w = x.shape[-3:-1]
    i = np.arange(h)[:, None] - h // 2
    j = np.arange(w)[None, :] - w // 2
    mask = (np.sqrt(i * i + j * j) < r)[..., None]
    f = np.fft.fftshift(np.fft.fft2(x, axes=(-3, -2)), axes=(-3, -2))
    return np.real(np.fft.ifft2(np.fft.ifftshift(f * mask, axes=(-3, -2)), axes=(-3, -2)))


def numpy_scale(z, scaling):
    if scaling == "unit":
        return z / 255.0
    peak = z.max(axis=(-3, -2, -1), keepdims=True)
    return np.where(peak <= 1e-3, 0.0, z / np.where(peak <= 1e-3, 1.0, peak))


@pytest.fixture(scope="module")
def mesh():
    return parallel.make_mesh()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(13, H, W, 3)).astype(np.uint8)
    labels = rng.integers(0, 4, size=13).astype(np.int32)
    return images, labels


# ----------------------------------------------------------------------------- counts


def test_prediction_counts_match_numpy_and_add_up():
    rng = np.random.default_rng(1)
    n, r = 57, 4
    y = rng.integers(0, 3, n)
    lo = rng.integers(0, 3, (r, n))
    hi = rng.integers(0, 3, (r, n))
    po = rng.integers(0, 3, n)
    c = analysis.prediction_counts(lo, hi, y, pred_orig=po)
    for k in range(r):
        ref = {"low_right_high_wrong": 0, "low_wrong_high_right": 0, "both_right": 0, "both_wrong": 0}
        agree = {"agree_low_only": 0, "agree_high_only": 0, "agree_both": 0, "agree_neither": 0}
        for i in range(n):
            a, b = lo[k, i] == y[i], hi[k, i] == y[i]
            if a:
                key = "both_right" if b else "low_right_high_wrong"
            else:
                key = "low_wrong_high_right" if b else "both_wrong"
            ref[key] += 1
            a, b = lo[k, i] == po[i], hi[k, i] == po[i]
            key = ("agree_both" if b else "agree_low_only") if a else ("agree_high_only" if b else "agree_neither")
            agree[key] += 1
        for name, v in {**ref, **agree}.items():
            assert c[name][k] == v, (name, k)
        assert c["low_right"][k] == ref["low_right_high_wrong"] + ref["both_right"]
        assert c["high_right"][k] == ref["low_wrong_high_right"] + ref["both_right"]
    four = c["low_right_high_wrong"] + c["low_wrong_high_right"] + c["both_right"] + c["both_wrong"]
    np.testing.assert_array_equal(four, n)
    np.testing.assert_array_equal(c["agree_low_only"] + c["agree_high_only"] + c["agree_both"] + c["agree_neither"], n)
    assert c["n"] == n and c["orig_right"] == int(np.sum(po == y))
    # one radius: scalars
    c1 = analysis.prediction_counts(lo[0], hi[0], y)
    assert np.ndim(c1["both_right"]) == 0 and c1["both_right"] == c["both_right"][0]
    with pytest.raises(ValueError, match="pred_low and pred_high"):
        analysis.prediction_counts(lo, hi[0], y)


def test_cell_indices():
    y = np.array([0, 1, 2, 0, 1, 2])
    lo = np.array([0, 0, 2, 1, 1, 0])
    hi = np.array([1, 1, 2, 0, 0, 1])
    np.testing.assert_array_equal(analysis.cell_indices(lo, hi, y), [1, 3])
    np.testing.assert_array_equal(analysis.cell_indices(lo, hi, y, "low_right_high_wrong"), [0, 4])
    np.testing.assert_array_equal(analysis.cell_indices(lo, hi, y, "both_right"), [2])
    np.testing.assert_array_equal(analysis.cell_indices(lo, hi, y, "both_wrong"), [5])


def test_scaling_matches_data_to_model_input():
    from jaxhfc import datasets

    rng = np.random.default_rng(2)
    z = rng.normal(50, 80, size=(5, H, W, 3)).astype(np.float32)
    z[0] = 0.0  # empty image -> zeros
    for scaling in ("paper", "unit"):
        ours = np.asarray(analysis.base._scale_filtered(jnp.asarray(z), scaling))
        np.testing.assert_allclose(ours, datasets.to_model_input(z, scaling=scaling), rtol=1e-6, atol=1e-7)
    peaks = np.asarray(analysis.base._scale_filtered(jnp.asarray(z), "paper")).max(axis=(1, 2, 3))
    np.testing.assert_allclose(peaks[1:], 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------- radius sweeps


def test_radius_predictions_match_numpy_reference(data):
    images, _ = data
    logits_fn, np_logits = linear_model(np.random.default_rng(3))
    radii = np.array([0.0, 1.5, 3.0, 6.0])
    for scaling in ("paper", "unit"):
        p = analysis.radius_predictions(logits_fn, images, radii, scaling=scaling, batch_size=8)
        for k, r in enumerate(radii):
            low = numpy_low_pass(images, r)
            high = images - low
            np.testing.assert_array_equal(p["pred_low"][k], np_logits(numpy_scale(low, scaling)).argmax(-1))
            np.testing.assert_array_equal(p["pred_high"][k], np_logits(numpy_scale(high, scaling)).argmax(-1))
        np.testing.assert_array_equal(p["pred_orig"], np_logits(images / 255.0).argmax(-1))


def test_accuracy_vs_radius_endpoints_unit_and_sharded(data, mesh):
    images, labels = data
    logits_fn, np_logits = linear_model(np.random.default_rng(4))
    plain = float(np.mean(np_logits(images / 255.0).argmax(-1) == labels))
    res = analysis.accuracy_vs_radius(logits_fn, images, labels, scaling="unit", batch_size=8)
    np.testing.assert_array_equal(res["radii"], np.arange(0, 7))  # 0 .. ceil(corner 5.66)
    assert res["acc_orig"] == pytest.approx(plain)
    assert res["acc_high"][0] == pytest.approx(plain)  # r=0: HFC is the image
    assert res["acc_low"][-1] == pytest.approx(plain)  # r beyond the corner: LFC is the image
    assert res["acc_low"][0] == pytest.approx(np.mean(np_logits(np.zeros((1, H, W, 3))).argmax(-1)[0] == labels))
    counts = res["counts"]
    np.testing.assert_array_equal(counts["low_right"], np.round(res["acc_low"] * len(labels)))
    sharded = analysis.accuracy_vs_radius(logits_fn, images, labels, scaling="unit", batch_size=8, mesh=mesh,
                                          return_predictions=True)
    plain_p = analysis.accuracy_vs_radius(logits_fn, images, labels, scaling="unit", batch_size=8,
                                          return_predictions=True)
    for k in ("pred_low", "pred_high", "pred_orig"):
        np.testing.assert_array_equal(sharded[k], plain_p[k])


def test_crossing_point_synthetic():
    radii = np.arange(5.0)
    low = np.array([0.1, 0.2, 0.4, 0.6, 0.8])
    high = np.array([0.9, 0.7, 0.5, 0.3, 0.2])
    assert analysis.crossing_point(radii, low, high) == pytest.approx(2.25)  # d: -.1 -> .3
    assert analysis.crossing_point(radii, [0.1, 0.3, 0.5, 0.7, 0.9], [0.9, 0.7, 0.5, 0.3, 0.1]) == 2.0
    assert analysis.crossing_point(radii, low, high + 1.0) is None
    assert analysis.crossing_point(2 * radii, low, high) == pytest.approx(4.5)


# ----------------------------------------------------------------------------- heat maps


@pytest.mark.parametrize("uv", [(0, 0), (3, 5), (4, 4), (4, 0), (1, 7), (6, 2)])
def test_heatmap_perturbation_is_one_frequency_pair_with_norm_eps(uv):
    u, v = uv
    signs = analysis.heatmap_signs(jax.random.key(1), np.array([u * W + v]), np.arange(4), 3)
    eps = 2.5
    pert = np.asarray(analysis.heatmap_perturbation(H, W, np.array([u]), np.array([v]), signs, eps=eps))[0]
    assert pert.shape == (4, H, W, 3)
    np.testing.assert_allclose(np.sqrt((pert.astype(np.float64) ** 2).sum(axis=(1, 2))), eps, rtol=1e-5)
    partner = ((H - u) % H, (W - v) % W)
    for b in range(4):
        for ch in range(3):
            f = np.fft.fftshift(np.fft.fft2(pert[b, :, :, ch].astype(np.float64)))
            nz = {tuple(p) for p in np.argwhere(np.abs(f) > 1e-4 * np.abs(f).max())}
            assert nz == {(u, v), partner}
            sign = np.sign(pert[b, :, :, ch].ravel()[np.argmax(np.abs(pert[b, :, :, ch]))] /
                           np.cos(2 * np.pi * ((u - H // 2) * np.arange(H)[:, None] / H
                                               + (v - W // 2) * np.arange(W)[None] / W)).ravel()[
                               np.argmax(np.abs(pert[b, :, :, ch]))])
            assert sign == signs[0, b, ch]
    s = np.asarray(signs)
    assert set(np.unique(s)) <= {-1.0, 1.0}


def test_heatmap_signs_do_not_depend_on_chunking():
    key = jax.random.key(3)
    full = np.asarray(analysis.heatmap_signs(key, np.arange(10), np.arange(20), 3))
    part = np.asarray(analysis.heatmap_signs(key, np.arange(4, 7), np.arange(5, 9), 3))
    np.testing.assert_array_equal(full[4:7, 5:9], part)
    assert 0.3 < (full > 0).mean() < 0.7


def test_heatmap_of_constant_model_is_its_error_everywhere(data):
    _, labels = data
    x = np.random.default_rng(7).uniform(size=(13, H, W, 3)).astype(np.float32)
    hm = analysis.fourier_heatmap(constant_model([0.0, 0.0, 1.0, 0.0]), x, labels, jax.random.key(0), eps=3.0,
                                  batch_size=8, freq_chunk=16)
    assert hm.shape == (H, W)
    np.testing.assert_array_equal(hm, np.mean(labels != 2))


def test_heatmap_linear_model_closed_form():
    rng = np.random.default_rng(8)
    n, c, eps = 6, 3, 1.5
    x = rng.uniform(0.4, 0.6, size=(n, H, W, c)).astype(np.float32)
    wd = rng.normal(size=(H, W, c))  # logit difference weights: class 1 minus class 0
    m0 = (x.astype(np.float64) * wd).sum(axis=(1, 2, 3))
    bias = -np.median(m0)
    wmat = np.stack([np.zeros(H * W * c), wd.ravel()], axis=1).astype(np.float32)
    logits_fn = lambda z: z.reshape(z.shape[0], -1) @ wmat + jnp.array([0.0, bias], jnp.float32)  # noqa: E731
    y = (m0 + bias > 0).astype(np.int32)  # the clean predictions are right
    key = jax.random.key(11)
    hm = analysis.fourier_heatmap(logits_fn, x, y, key, eps=eps, batch_size=4, freq_chunk=12)
    signs = np.asarray(analysis.heatmap_signs(key, np.arange(H * W), np.arange(n), c))  # (F, N, C)
    ref, ref_wrong = np.zeros((H, W)), np.zeros((n, H, W), bool)
    i, j = np.arange(H)[:, None], np.arange(W)[None, :]
    for u in range(H):
        for v in range(W):
            basis = np.cos(2 * np.pi * ((u - H // 2) * i / H + (v - W // 2) * j / W))
            basis *= eps / np.linalg.norm(basis)
            assert np.all(x.max() + np.abs(basis).max() < 1) and np.all(x.min() - np.abs(basis).max() > 0)
            proj = (basis[:, :, None] * wd).sum(axis=(0, 1))  # (C,) <w_c, basis>
            margin = m0 + bias + (signs[u * W + v] * proj).sum(axis=1)
            ref_wrong[:, u, v] = (margin > 0).astype(int) != y
            ref[u, v] = np.mean(ref_wrong[:, u, v])
    assert 0 < ref.mean() < 1 and len(np.unique(ref)) > 2  # a non-trivial map
    np.testing.assert_array_equal(hm, ref)
    # per image: which image each frequency broke (the outcomes behind paired per-image errors)
    hm2, wrong = analysis.fourier_heatmap(logits_fn, x, y, key, eps=eps, batch_size=4, freq_chunk=12, per_image=True)
    np.testing.assert_array_equal(hm2, ref)
    assert wrong.shape == (n, H, W) and wrong.dtype == bool
    np.testing.assert_array_equal(wrong, ref_wrong)


def test_heatmap_sharded_equals_unsharded(mesh):
    rng = np.random.default_rng(9)
    x = rng.uniform(size=(11, H, W, 3)).astype(np.float32)
    fn = tiny_conv()
    y = np.asarray(jnp.argmax(fn(jnp.asarray(x)), -1)).astype(np.int32)
    y[:4] = (y[:4] + 1) % 3
    kw = dict(eps=4.0, batch_size=8, freq_chunk=40)
    a = analysis.fourier_heatmap(fn, x, y, jax.random.key(2), **kw)
    b = analysis.fourier_heatmap(fn, x, y, jax.random.key(2), mesh=mesh, **kw)
    np.testing.assert_array_equal(a, b)
    assert np.all(a * 11 == np.round(a * 11))  # counts over 11 images, each counted once
    # eps = 0: every frequency gives the clean error (4 of 11 labels were made wrong)
    clean = analysis.fourier_heatmap(fn, x, y, jax.random.key(2), eps=0.0, batch_size=8, freq_chunk=40, mesh=mesh)
    np.testing.assert_array_equal(clean, 4 / 11)
    assert np.any(a != 4 / 11)  # while eps = 4 changes some predictions


TRACES = []


def linear_apply(params, x):
    TRACES.append(x.shape)  # runs once per trace (Python side effect)
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def test_partials_of_one_function_share_one_compiled_sweep(data, mesh):
    """Two Partials of one function with other parameters: one cache entry, no retrace,
    results of each parameter set (parameters are program arguments, not constants)."""
    images, labels = data
    rng = np.random.default_rng(30)
    params = [{"w": rng.normal(size=(H * W * 3, 4)).astype(np.float32),
               "b": rng.normal(size=(4,)).astype(np.float32)} for _ in range(2)]
    radii = np.array([0.0, 2.0, 5.0])
    analysis.radius._components_fn.cache_clear()
    TRACES.clear()
    results, traces = [], []
    for p in params:
        fn = jax.tree_util.Partial(linear_apply, p)  # a new object each time
        results.append(analysis.radius_predictions(fn, images, radii, scaling="unit", batch_size=8, mesh=mesh))
        traces.append(len(TRACES))
    info = analysis.radius._components_fn.cache_info()
    assert (info.currsize, info.misses, info.hits) == (1, 1, 1)
    assert traces[0] > 0 and traces[1] == traces[0]  # the second parameter set is not retraced
    for p, res in zip(params, results):
        def np_logits(x):
            return np.asarray(x, np.float64).reshape(len(x), -1) @ p["w"].astype(np.float64) + p["b"]

        for k, r in enumerate(radii):
            low = numpy_low_pass(images, r)
            np.testing.assert_array_equal(res["pred_low"][k], np_logits(low / 255.0).argmax(-1))
            np.testing.assert_array_equal(res["pred_high"][k], np_logits((images - low) / 255.0).argmax(-1))
        np.testing.assert_array_equal(res["pred_orig"], np_logits(images / 255.0).argmax(-1))
    assert np.any(results[0]["pred_low"] != results[1]["pred_low"])  # the parameters matter

    # the other sweeps too: occlusion with both parameter sets, one compiled program
    analysis.occlusion._occlusion_fn.cache_clear()
    x = rng.uniform(size=(5, H, W, 3)).astype(np.float32)
    occ = [analysis.occlusion_map(jax.tree_util.Partial(linear_apply, p), x, labels[:5], patch=4, stride=4,
                                  batch_size=8, mesh=mesh) for p in params]
    assert analysis.occlusion._occlusion_fn.cache_info().currsize == 1
    for p, o in zip(params, occ):
        ref = analysis.occlusion_map(lambda xx, p=p: xx.reshape(xx.shape[0], -1) @ p["w"] + p["b"], x,
                                     labels[:5], patch=4, stride=4, batch_size=8)
        np.testing.assert_allclose(o, ref, rtol=1e-5, atol=1e-7)
    assert np.abs(occ[0] - occ[1]).max() > 1e-3
    # an unhashable non-array leaf: compiled without the cache, same result
    odd = jax.tree_util.Partial(lambda tag, prm, xx: linear_apply(prm, xx), bytearray(b"x"), params[0])
    np.testing.assert_allclose(analysis.occlusion_map(odd, x, labels[:5], patch=4, stride=4, batch_size=8),
                               occ[0], rtol=1e-5, atol=1e-7)
    assert analysis.occlusion._occlusion_fn.cache_info().currsize == 3  # 1 + the two closures above; not cached


# ----------------------------------------------------------------------------- spectra


def test_perturbation_spectrum_parseval_and_energy_share():
    rng = np.random.default_rng(10)
    delta = rng.normal(size=(9, H, W, 3)).astype(np.float32) * np.linspace(0.1, 1, 9)[:, None, None, None]
    energy = (delta.astype(np.float64) ** 2).sum(axis=(1, 2, 3))
    spec_sum = analysis.perturbation_spectrum(delta, reduce="sum", batch_size=4)
    assert spec_sum.shape == (6,)  # rings 0..floor(5.66)
    assert spec_sum.sum() == pytest.approx(energy.mean(), rel=1e-5)
    ring = np.floor(fourier.distance_grid(H, W) + 1e-9).astype(int)
    counts = np.bincount(ring.ravel())
    spec_mean = analysis.perturbation_spectrum(delta, reduce="mean")
    assert (spec_mean * counts).sum() == pytest.approx(energy.mean(), rel=1e-5)
    # independent numpy spectrum, ring 2
    f = np.fft.fftshift(np.fft.fft2(delta.astype(np.float64), axes=(1, 2)), axes=(1, 2))
    power = (np.abs(f) ** 2).sum(-1) / (H * W)
    assert spec_sum[2] == pytest.approx(power[:, ring == 2].sum(-1).mean(), rel=1e-5)

    radii = np.array([0.0, 1.0, 2.5, 4.0, 6.0])
    share = analysis.energy_share_outside(delta, radii, batch_size=4)
    per_image = np.asarray(fourier.energy_outside(delta, radii))  # (R, N)
    np.testing.assert_allclose(share["share_mean"], per_image.mean(axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(share["share_pooled"], (per_image * energy).sum(1) / energy.sum(), rtol=1e-4, atol=1e-6)
    assert share["share_mean"][0] == pytest.approx(1.0) and share["share_mean"][-1] == 0.0
    assert share["energy_mean"] == pytest.approx(energy.mean(), rel=1e-5)


def test_pgd_perturbations_sharded_and_bounded(mesh):
    rng = np.random.default_rng(12)
    logits_fn, _ = linear_model(rng, k=3, scale=0.1)
    x = rng.uniform(size=(10, H, W, 3)).astype(np.float32)
    y = rng.integers(0, 3, 10).astype(np.int32)
    kw = dict(eps=0.03, step_size=0.01, steps=3, batch_size=8)
    d1, s1 = analysis.pgd_perturbations(logits_fn, x, y, jax.random.key(0), **kw)
    d8, s8 = analysis.pgd_perturbations(logits_fn, x, y, jax.random.key(0), mesh=mesh, **kw)
    assert d1.shape == x.shape and np.abs(d1).max() <= 0.03 + 1e-6
    assert np.all(x + d1 >= -1e-6) and np.all(x + d1 <= 1 + 1e-6)
    np.testing.assert_allclose(d1, d8, atol=1e-6)
    np.testing.assert_array_equal(s1, s8)
    assert np.abs(d1).max() > 0.02  # the attack moved


# ----------------------------------------------------------------------------- occlusion


def test_occlusion_full_patch_equals_fill_image():
    rng = np.random.default_rng(13)
    fn = tiny_conv(seed=1)
    x = rng.uniform(size=(5, H, W, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0], np.int32)
    occ = analysis.occlusion_map(fn, x, y, patch=H, stride=1, fill=0.5)
    assert occ.shape == (5, 1, 1)
    p = np.asarray(jax.nn.softmax(fn(jnp.full((1, H, W, 3), 0.5))))[0]
    np.testing.assert_allclose(occ[:, 0, 0], p[y], rtol=1e-5)


def test_occlusion_matches_numpy_loop_and_sharded(mesh):
    rng = np.random.default_rng(14)
    logits_fn, np_logits = linear_model(rng, k=3, scale=0.3)
    x = rng.uniform(size=(9, H, W, 3)).astype(np.float32)
    y = rng.integers(0, 3, 9).astype(np.int32)
    occ = analysis.occlusion_map(logits_fn, x, y, patch=3, stride=2, fill=0.25, batch_size=4)
    rows, cols = analysis.occlusion_positions(H, W, patch=3, stride=2)
    np.testing.assert_array_equal(rows, [0, 2, 4])
    ref = np.zeros((9, 3, 3))
    for a, r0 in enumerate(rows):
        for b, c0 in enumerate(cols):
            z = x.astype(np.float64).copy()
            z[:, r0:r0 + 3, c0:c0 + 3] = 0.25
            lg = np_logits(z)
            pr = np.exp(lg - lg.max(1, keepdims=True))
            pr /= pr.sum(1, keepdims=True)
            ref[:, a, b] = pr[np.arange(9), y]
    np.testing.assert_allclose(occ, ref, rtol=1e-4, atol=1e-6)
    occ8 = analysis.occlusion_map(logits_fn, x, y, patch=3, stride=2, fill=0.25, batch_size=4, mesh=mesh)
    np.testing.assert_allclose(occ8, occ, rtol=1e-6, atol=1e-7)


def test_bad_inputs_raise():
    fn = constant_model([0.0, 1.0])
    x = np.zeros((2, H, W, 3), np.float32)
    with pytest.raises(ValueError, match="scaling"):
        analysis.accuracy_vs_radius(fn, x, np.zeros(2, int), scaling="max")
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        analysis.fourier_heatmap(fn, x[0], np.zeros(2, int), jax.random.key(0), eps=1.0)
    with pytest.raises(ValueError, match="labels|y must"):
        analysis.occlusion_map(fn, x, np.zeros(3, int), patch=2, stride=1)
    with pytest.raises(ValueError, match="patch"):
        analysis.occlusion_map(fn, x, np.zeros(2, int), patch=H + 1, stride=1)


# ----------------------------------------------------------------------------- figures


def test_analysis_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from jaxhfc import plotting

    occ = np.arange(4.0).reshape(2, 2) / 4
    pix = plotting._occlusion_pixels(occ, 4, 4, 2, 2)  # non-overlapping: block upsampling
    np.testing.assert_array_equal(pix, np.kron(occ, np.ones((2, 2))))
    pix = plotting._occlusion_pixels(np.array([[0.2, 0.6]]), 2, 3, 2, 1)  # overlap in column 1
    np.testing.assert_allclose(pix, [[0.2, 0.4, 0.6], [0.2, 0.4, 0.6]])

    radii = np.arange(5.0)
    counts = analysis.prediction_counts(np.zeros((5, 10), int), np.ones((5, 10), int), np.arange(10) % 2)
    figs = [
        plotting.prediction_counts_figure(radii, counts),
        plotting.accuracy_radius_figure(radii, [0.1, 0.2, 0.4, 0.6, 0.8], [0.9, 0.7, 0.5, 0.3, 0.2], crossing=2.25,
                                        acc_orig=0.9),
        plotting.ring_accuracy_figure([0, 2, 4], [2, 4, 6], [0.5, 0.3, 0.1], acc_orig=0.9),
        plotting.occlusion_figure(np.random.default_rng(0).uniform(size=(2, 8, 8, 3)), np.full((2, 3, 3), 0.5),
                                  patch=3, stride=2, titles=["a", "b"]),
        plotting.perturbation_spectrum_figure({"vanilla": np.ones(6), "adv": np.linspace(1, 0.1, 6)},
                                              {"vanilla": (radii, np.linspace(1, 0, 5))}),
    ]
    for k, fig in enumerate(figs):
        path = tmp_path / f"fig{k}.png"
        fig.savefig(path)
        assert path.stat().st_size > 1000
    import matplotlib.pyplot as plt

    plt.close("all")
