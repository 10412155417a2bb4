"""Tests for jaxhfc.kernels against scipy/numpy references and identities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from jax.test_util import check_grads

from jaxhfc import kernels as K


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv_init": {"kernel": rng.normal(size=(3, 3, 3, 8)).astype(np.float32),
                      "bias": rng.normal(size=(8,)).astype(np.float32)},
        "layer1": {"conv": {"kernel": rng.normal(size=(3, 3, 8, 4)).astype(np.float32)},
                   "proj": {"kernel": rng.normal(size=(1, 1, 8, 4)).astype(np.float32)}},
        "head": {"kernel": rng.normal(size=(4, 10)).astype(np.float32)},
    }


def _np_smoothness(k):
    pairs = []
    kh, kw = k.shape[:2]
    for i in range(kh):
        for j in range(kw):
            if j + 1 < kw:
                pairs.append(k[i, j] - k[i, j + 1])
            if i + 1 < kh:
                pairs.append(k[i, j] - k[i + 1, j])
    d = np.stack(pairs)
    return float(np.mean(d ** 2) / np.mean(k ** 2)), float(np.sum(d ** 2))


def test_conv_kernels_and_first():
    p = _params()
    ks = K.conv_kernels(p)
    assert list(ks) == ["conv_init/kernel", "layer1/conv/kernel", "layer1/proj/kernel"]
    # insertion order, not sorted order (Flax registers modules in call order)
    rev = {"zeta": p["layer1"], "conv_init": p["conv_init"]}
    assert list(K.conv_kernels(rev)) == ["zeta/conv/kernel", "zeta/proj/kernel",
                                         "conv_init/kernel"]
    np.testing.assert_array_equal(K.first_conv_kernel(p), p["conv_init"]["kernel"])
    # variables dict is accepted too
    v = {"params": p, "batch_stats": {"bn": {"mean": np.zeros(3, np.float32)}}}
    np.testing.assert_array_equal(K.first_conv_kernel(v), p["conv_init"]["kernel"])
    # fallback: the only RGB-input conv
    q = {"stem": {"kernel": p["conv_init"]["kernel"]}, "b": p["layer1"]}
    np.testing.assert_array_equal(K.first_conv_kernel(q), p["conv_init"]["kernel"])
    with pytest.raises(ValueError, match="no conv kernel"):
        K.first_conv_kernel(p, path="nope/kernel")
    dense_only = {"a": {"kernel": np.zeros((3, 4), np.float32)}}
    assert K.conv_kernels(dense_only) == {}
    with pytest.raises(ValueError, match="no 4-D conv kernel"):
        K.first_conv_kernel(dense_only)


@pytest.mark.parametrize("rho", [0.125, 0.5, 1.0])
def test_smooth_kernel_matches_scipy(rho):
    rng = np.random.default_rng(1)
    k = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    mask = np.full((3, 3), rho)
    mask[1, 1] = 1.0
    ref = np.empty_like(k)
    for i in range(k.shape[2]):
        for o in range(k.shape[3]):
            ref[:, :, i, o] = scipy.signal.convolve2d(k[:, :, i, o], mask, mode="same",
                                                      boundary="symm")
    out = jax.jit(K.smooth_kernel)(k, rho)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # a 5x5 kernel too (general sizes)
    k5 = rng.normal(size=(5, 5, 2, 2)).astype(np.float32)
    ref5 = np.stack([np.stack([scipy.signal.convolve2d(k5[:, :, i, o], mask, mode="same",
                                                       boundary="symm") for o in range(2)], -1)
                     for i in range(2)], -2)
    np.testing.assert_allclose(K.smooth_kernel(k5, rho), ref5, rtol=1e-5, atol=1e-5)


def test_smooth_constant_kernel():
    k = np.full((3, 3, 2, 4), 0.7, np.float32) * np.arange(1, 5, dtype=np.float32)
    for rho in (0.0, 0.25, 1.0):
        np.testing.assert_allclose(K.smooth_kernel(k, rho), (1 + 8 * rho) * k, rtol=1e-6)
        assert float(K.smoothness(K.smooth_kernel(k, rho))) == 0.0
        # renormalised by 1 + 8 rho: a constant kernel is a fixed point
        np.testing.assert_allclose(K.smooth_kernel(k, rho, renormalize=True), k, rtol=1e-6)


def test_renormalised_smoothing_matches_scipy_and_keeps_scale():
    rng = np.random.default_rng(7)
    k = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    rho = 0.5
    mask = np.full((3, 3), rho) / (1 + 8 * rho)  # weights sum to 1
    mask[1, 1] = 1.0 / (1 + 8 * rho)
    ref = np.stack([np.stack([scipy.signal.convolve2d(k[:, :, i, o], mask, mode="same",
                                                      boundary="symm") for o in range(4)], -1)
                    for i in range(3)], -2)
    np.testing.assert_allclose(K.smooth_kernel(k, rho, renormalize=True), ref, rtol=1e-5, atol=1e-6)
    # the sum of each 2-D kernel (its response to a flat image patch) is preserved: the symm
    # padding makes each weight appear 9 times in total, 1 + 8 rho after renormalising
    out = np.asarray(K.smooth_kernel(k, rho, renormalize=True))
    np.testing.assert_allclose(out.sum((0, 1)), k.sum((0, 1)), rtol=1e-4, atol=1e-5)
    raw = np.asarray(K.smooth_kernel(k, rho))
    np.testing.assert_allclose(raw.sum((0, 1)), (1 + 8 * rho) * k.sum((0, 1)), rtol=1e-4, atol=1e-5)
    p = _params()
    np.testing.assert_allclose(K.smooth_params(p, rho, renormalize=True)["conv_init"]["kernel"],
                               np.asarray(K.smooth_params(p, rho)["conv_init"]["kernel"]) / 5.0,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="1 \\+ 8\\*rho"):
        K.smooth_kernel(k, -0.125, renormalize=True)


def test_smoothness_formula_and_smoothing_lowers_it():
    rng = np.random.default_rng(2)
    k = rng.normal(size=(3, 3, 3, 16)).astype(np.float32)
    s_ref, pen_ref = _np_smoothness(k)
    np.testing.assert_allclose(float(K.smoothness(k)), s_ref, rtol=1e-5)
    # scale-free
    np.testing.assert_allclose(float(K.smoothness(5.0 * k)), s_ref, rtol=1e-5)
    # checkerboard is rough (S = 4 exactly for an infinite one; 3x3: all pairs differ by 2)
    cb = np.array([[1, -1, 1], [-1, 1, -1], [1, -1, 1]], np.float32)[:, :, None, None]
    np.testing.assert_allclose(float(K.smoothness(cb)), 4.0, rtol=1e-6)
    prev = float(K.smoothness(k))
    for rho in (0.125, 0.25, 0.5, 1.0):
        s = float(K.smoothness(K.smooth_kernel(k, rho)))
        assert s < prev, (rho, s, prev)
        prev = s
    with pytest.raises(ValueError, match="1x1"):
        K.smoothness(np.ones((1, 1, 2, 2), np.float32))


def test_smooth_params_layers():
    p = _params()
    out = K.smooth_params(p, 1.0)
    np.testing.assert_allclose(out["conv_init"]["kernel"],
                               K.smooth_kernel(p["conv_init"]["kernel"], 1.0))
    np.testing.assert_array_equal(out["layer1"]["conv"]["kernel"], p["layer1"]["conv"]["kernel"])
    np.testing.assert_array_equal(out["conv_init"]["bias"], p["conv_init"]["bias"])
    out_all = K.smooth_params({"params": p}, 0.5, layers="all")["params"]
    np.testing.assert_allclose(out_all["layer1"]["conv"]["kernel"],
                               K.smooth_kernel(p["layer1"]["conv"]["kernel"], 0.5))
    np.testing.assert_allclose(out_all["layer1"]["proj"]["kernel"],
                               5.0 * p["layer1"]["proj"]["kernel"], rtol=1e-6)  # 1x1: 1+8*0.5
    np.testing.assert_array_equal(out_all["head"]["kernel"], p["head"]["kernel"])
    byl = K.smoothness_by_layer(p)
    assert set(byl) == {"conv_init/kernel", "layer1/conv/kernel"}
    np.testing.assert_allclose(byl["layer1/conv/kernel"],
                               _np_smoothness(p["layer1"]["conv"]["kernel"])[0], rtol=1e-5)
    with pytest.raises(ValueError, match="layers"):
        K.smooth_params(p, 1.0, layers="second")


def _np_lowpass(k, r):
    kh, kw = k.shape[:2]
    i = np.arange(kh)[:, None] - kh // 2
    j = np.arange(kw)[None, :] - kw // 2
    m = (np.sqrt(i ** 2 + j ** 2) < r).astype(float)
    out = np.empty_like(k)
    for a in range(k.shape[2]):
        for b in range(k.shape[3]):
            f = np.fft.fftshift(np.fft.fft2(k[:, :, a, b]))
            out[:, :, a, b] = np.real(np.fft.ifft2(np.fft.ifftshift(f * m)))
    return out


@pytest.mark.parametrize("shape", [(3, 3, 3, 4), (4, 4, 2, 3), (5, 5, 1, 2)])
def test_lowpass_kernel(shape):
    rng = np.random.default_rng(3)
    k = rng.normal(size=shape).astype(np.float32)
    full = np.hypot(shape[0], shape[1])  # beyond the corner distance
    np.testing.assert_allclose(K.lowpass_kernel(k, full), k, atol=1e-5)
    np.testing.assert_array_equal(K.lowpass_kernel(k, 0.0), np.zeros_like(k))
    for r in (0.5, 1.2, 1.5, 2.1):
        np.testing.assert_allclose(K.lowpass_kernel(k, r), _np_lowpass(k, r), atol=1e-5)
    if shape[0] == 3:  # only the DC term: every weight becomes its kernel's spatial mean
        np.testing.assert_allclose(K.lowpass_kernel(k, 1.0),
                                   np.broadcast_to(k.mean(axis=(0, 1)), k.shape), atol=1e-6)
        # low pass also lowers the roughness
        assert float(K.smoothness(K.lowpass_kernel(k, 1.2))) < float(K.smoothness(k))
    p = {"conv_init": {"kernel": k}}
    np.testing.assert_allclose(K.lowpass_params(p, 1.2)["conv_init"]["kernel"],
                               _np_lowpass(k, 1.2), atol=1e-5)
    with pytest.raises(ValueError, match="radius"):
        K.lowpass_kernel(k, -1.0)


def test_lowpass_mask_matches_fourier_convention():
    fourier = pytest.importorskip("jaxhfc.fourier")
    for n, r in ((3, 1.2), (4, 1.5), (5, 2.1)):
        np.testing.assert_array_equal(K._kernel_mask(n, n, r),
                                      np.asarray(fourier.radius_mask(n, n, r), np.float32))


def test_smoothness_penalty_value_and_grad():
    p = _params(4)
    ref_all = sum(_np_smoothness(k)[1] for k in (p["conv_init"]["kernel"],
                                                 p["layer1"]["conv"]["kernel"]))
    np.testing.assert_allclose(float(K.smoothness_penalty(p)), ref_all, rtol=1e-5)
    np.testing.assert_allclose(float(K.smoothness_penalty(p, layers="first")),
                               _np_smoothness(p["conv_init"]["kernel"])[1], rtol=1e-5)
    # analytic gradient on a 1-D-like case: w = [[a, b]] -> (a-b)^2, d/da = 2(a-b)
    q = {"c": {"kernel": np.array([[[[1.0]], [[4.0]]]], np.float32)}}  # (1, 2, 1, 1)
    g = jax.grad(K.smoothness_penalty)(q)
    np.testing.assert_allclose(np.asarray(g["c"]["kernel"]).ravel(), [-6.0, 6.0])
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p)
        check_grads(lambda pp: K.smoothness_penalty(pp).astype(jnp.float64), (p64,),
                    order=2, modes=("rev",), eps=1e-3)
    # gradient is zero for a constant kernel
    c = {"conv_init": {"kernel": jnp.ones((3, 3, 3, 2))}}
    assert float(jnp.abs(jax.grad(K.smoothness_penalty)(c)["conv_init"]["kernel"]).max()) == 0.0


def test_kernel_figure_data():
    p = _params(5)
    d = K.kernel_figure_data({"params": p}, spectrum_size=8)
    k = p["conv_init"]["kernel"]
    assert d["kernels"].shape == (8, 3, 3, 3)
    np.testing.assert_array_equal(d["kernels"][2], k[:, :, :, 2])
    assert d["images"].min() >= 0 and d["images"].max() <= 1
    np.testing.assert_allclose(d["images"].reshape(8, -1).max(1), 1.0)
    assert d["spectra"].shape == (8, 8, 8)
    # zero frequency sits at the centre: |sum of weights| averaged over input channels
    np.testing.assert_allclose(d["spectra"][:, 4, 4], np.abs(k.sum(axis=(0, 1))).mean(0),
                               rtol=1e-5)
    np.testing.assert_allclose(d["smoothness"][3], _np_smoothness(k[:, :, :, 3])[0], rtol=1e-5)
