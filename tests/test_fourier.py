"""Numerics of jaxhfc.fourier against an independent numpy version of the paper's code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxhfc import fourier


def paper_reference(images: np.ndarray, r: float):
    """The released code's loop, per image and per channel, in float64 numpy."""
    n, h, w, c = images.shape
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    mask = np.sqrt((ii - h // 2) ** 2 + (jj - w // 2) ** 2) < r
    low = np.zeros(images.shape, np.float64)
    high = np.zeros(images.shape, np.float64)
    for k in range(n):
        for ch in range(c):
            spec = np.fft.fftshift(np.fft.fft2(images[k, :, :, ch].astype(np.float64)))
            low[k, :, :, ch] = np.real(np.fft.ifft2(np.fft.ifftshift(spec * mask)))
            high[k, :, :, ch] = np.real(np.fft.ifft2(np.fft.ifftshift(spec * (1 - mask))))
    return low, high


def _images(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(3, 32, 32, 3), (2, 31, 31, 3), (2, 16, 21, 1), (1, 9, 12, 2)])
@pytest.mark.parametrize("r", [0, 1, 2.5, 4, 8, 12, 16, 30])
def test_matches_paper_code(shape, r):
    x = _images(shape, seed=len(shape) + int(r))
    low_ref, high_ref = paper_reference(x, r)
    low, high = fourier.split(x, r)
    # float32 FFT of 0..255 values: absolute error of a few 1e-4 grey levels.
    np.testing.assert_allclose(np.asarray(low), low_ref, atol=2e-3)
    np.testing.assert_allclose(np.asarray(high), high_ref, atol=2e-3)
    np.testing.assert_allclose(np.asarray(fourier.low_pass(x, r)), low_ref, atol=2e-3)
    np.testing.assert_allclose(np.asarray(fourier.high_pass(x, r)), high_ref, atol=2e-3)


def test_kept_counts_match_paper():
    # docs/paper.md: pixels kept by the mask at 32x32 (the released code's counts).
    expected = {4: 45, 8: 193, 12: 437, 16: 793, 20: 995, 24: 1024, 0: 0}
    for r, n in expected.items():
        assert fourier.kept_count(32, 32, r) == n
    # strict '<': radius exactly 1 keeps only the centre
    assert fourier.kept_count(32, 32, 1) == 1
    assert fourier.radius_mask(32, 32, 1)[16, 16]


def test_low_plus_high_is_identity_and_edges():
    x = _images((4, 32, 32, 3))
    for r in (0, 3, 8, 16, 22, 23, 100):
        low, high = fourier.split(x, r)
        np.testing.assert_allclose(np.asarray(low + high), x, atol=1e-3)
    # radius 0: nothing kept, exactly
    low, high = fourier.split(x, 0)
    assert np.all(np.asarray(low) == 0) and np.array_equal(np.asarray(high), x)
    # beyond the corner distance: everything kept, exactly
    r_full = fourier.corner_radius(32, 32) + 1e-3
    low, high = fourier.split(x, r_full)
    assert np.array_equal(np.asarray(low), x) and np.all(np.asarray(high) == 0)
    assert fourier.corner_radius(32, 32) == pytest.approx(math.sqrt(512))
    assert fourier.corner_radius(31, 31) == pytest.approx(math.sqrt(450))


def test_mask_symmetry():
    for h, w in [(32, 32), (31, 31), (16, 21)]:
        for r in (1, 3.3, 7, 12):
            m = np.fft.ifftshift(fourier.radius_mask(h, w, r))
            # point symmetry f -> -f (mod size) makes the masked spectrum Hermitian
            flipped = np.roll(m[::-1, ::-1], shift=(1, 1), axis=(0, 1))
            assert np.array_equal(m, flipped)


def test_filter_is_real_part_imaginary_negligible():
    x = _images((1, 32, 32, 1))[0, :, :, 0].astype(np.float64)
    m = fourier.radius_mask(32, 32, 8)
    out = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(x)) * m))
    assert np.abs(out.imag).max() < 1e-9


def test_linearity():
    a, b = _images((2, 32, 32, 3), 1), _images((2, 32, 32, 3), 2)
    lhs = fourier.low_pass(2.0 * a - 0.5 * b, 6)
    rhs = 2.0 * fourier.low_pass(a, 6) - 0.5 * fourier.low_pass(b, 6)
    np.testing.assert_allclose(np.asarray(lhs), np.asarray(rhs), atol=3e-3)


def test_constant_image_is_pure_lfc():
    x = np.full((1, 32, 32, 3), 100.0, np.float32)
    low, high = fourier.split(x, 1)  # r=1 keeps only the DC term
    np.testing.assert_allclose(np.asarray(low), x, atol=1e-3)
    np.testing.assert_allclose(np.asarray(high), 0, atol=1e-3)


def test_radius_sweep_equals_individual_calls():
    x = _images((3, 32, 32, 3))
    radii = np.array([0, 2, 4, 8, 12, 16, 23], np.float32)
    low, high = fourier.split(x, radii)
    assert low.shape == (7, 3, 32, 32, 3)
    for k, r in enumerate(radii):
        np.testing.assert_allclose(np.asarray(low[k]), np.asarray(fourier.low_pass(x, float(r))), atol=1e-3)
        np.testing.assert_allclose(np.asarray(high[k]), paper_reference(x, r)[1], atol=2e-3)
    # exact edge cases inside a sweep too
    assert np.all(np.asarray(low[0]) == 0)
    assert np.array_equal(np.asarray(low[-1]), x)


def test_traced_radius_does_not_recompile_and_jit_vmap():
    x = _images((2, 32, 32, 3))
    traces = []

    @jax.jit
    def f(x, radii):
        traces.append(1)
        return fourier.low_pass(x, radii)

    for radii in ([4.0, 8.0], [12.0, 16.0], [1.0, 2.0]):
        out = f(x, jnp.asarray(radii))
        np.testing.assert_allclose(np.asarray(out[1]), paper_reference(x, radii[1])[0], atol=2e-3)
    assert len(traces) == 1
    # traced scalar radius
    g = jax.jit(fourier.low_pass)
    np.testing.assert_allclose(np.asarray(g(x, 8.0)), paper_reference(x, 8)[0], atol=2e-3)
    # vmap over an extra leading axis equals the batched call
    xs = _images((3, 2, 32, 32, 3))
    np.testing.assert_allclose(
        np.asarray(jax.vmap(lambda a: fourier.low_pass(a, 5))(xs)),
        np.asarray(fourier.low_pass(xs, 5)),
        atol=1e-4,
    )


def test_no_recompile_when_only_content_changes():
    x1, x2 = _images((2, 32, 32, 3), 1), _images((2, 32, 32, 3), 2)
    fourier.low_pass(x1, 7)
    before = fourier._low_pass_static_jit._cache_size()
    fourier.low_pass(x2, 7)
    fourier.high_pass(x1 * 0.5, 7)
    assert fourier._low_pass_static_jit._cache_size() == before


def test_gradients():
    from jax.test_util import check_grads

    x = jnp.asarray(_images((1, 8, 8, 2)) / 255.0, jnp.float32)
    check_grads(lambda a: jnp.sum(fourier.low_pass(a, 3) ** 2), (x,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    check_grads(lambda a: jnp.sum(jnp.sin(fourier.high_pass(a, 2))), (x,), order=1, modes=["fwd", "rev"], atol=1e-2, rtol=1e-2)
    # the filter is a symmetric projection: grad of <low(x), c> is low(c)
    c = jnp.asarray(_images((1, 8, 8, 2), 5))
    grad = jax.grad(lambda a: jnp.vdot(fourier.low_pass(a, 3), c))(x)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(fourier.low_pass(c, 3)), atol=1e-3)


def test_sharded_equals_unsharded():
    n = jax.device_count()
    assert n == 8, "tests expect 8 fake devices (see conftest.py)"
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = _images((16, 32, 32, 3))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    low_s = fourier.low_pass(xs, 8)
    sweep_s = jax.jit(lambda a: fourier.split(a, jnp.array([4.0, 12.0])))(xs)
    np.testing.assert_allclose(np.asarray(low_s), np.asarray(fourier.low_pass(x, 8)), atol=1e-4)
    np.testing.assert_allclose(np.asarray(sweep_s[1]), np.asarray(fourier.split(x, jnp.array([4.0, 12.0]))[1]), atol=1e-4)
    assert len(low_s.sharding.device_set) == 8


def test_parseval_radial_spectrum():
    x = _images((3, 32, 32, 3)) / 255.0
    total = np.asarray(fourier.radial_power_spectrum(x, reduce="sum"))
    assert total.shape == (3, 23)  # floor(22.63) + 1 rings
    np.testing.assert_allclose(total.sum(-1), (x.astype(np.float64) ** 2).sum((1, 2, 3)), rtol=1e-5)
    # ring k sums the power at distances in [k, k+1), by direct numpy
    spec = np.abs(np.fft.fftshift(np.fft.fft2(x[0].transpose(2, 0, 1)), axes=(-2, -1))) ** 2 / 1024
    d = fourier.distance_grid(32, 32)
    ring5 = spec[:, (d >= 5) & (d < 6)].sum()
    np.testing.assert_allclose(total[0, 5], ring5, rtol=1e-5)
    mean = np.asarray(fourier.radial_power_spectrum(x, reduce="mean"))
    np.testing.assert_allclose(mean[0, 5], ring5 / ((d >= 5) & (d < 6)).sum(), rtol=1e-5)


def test_energy_outside():
    x = _images((2, 32, 32, 3))
    share = np.asarray(fourier.energy_outside(x, np.array([0.0, 8.0, 30.0])))
    np.testing.assert_allclose(share[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(share[2], 0.0, atol=1e-6)
    high = paper_reference(x, 8)[1]
    np.testing.assert_allclose(share[1], (high**2).sum((1, 2, 3)) / (x.astype(np.float64) ** 2).sum((1, 2, 3)), rtol=1e-4)


@pytest.mark.parametrize("h,w", [(32, 32), (31, 31), (8, 10)])
def test_fourier_basis(h, w):
    rng = np.random.default_rng(0)
    for u, v in [(h // 2, w // 2), (0, 0), (h // 2 + 3, w // 2 - 2)] + [tuple(rng.integers(0, [h, w])) for _ in range(4)]:
        img = np.asarray(fourier.fourier_basis(h, w, u, v, norm=2.5), np.float64)
        assert img.shape == (h, w)
        np.testing.assert_allclose(np.linalg.norm(img), 2.5, rtol=1e-5)
        spec = np.fft.fftshift(np.fft.fft2(img))
        nonzero = set(zip(*np.nonzero(np.abs(spec) > 1e-3 * np.abs(spec).max())))
        partner = (((h // 2) - (u - h // 2)) % h, ((w // 2) - (v - w // 2)) % w)
        assert nonzero == {(u, v), partner}
    # traced frequencies (inside jit) give the same images
    traced = jax.jit(lambda a, b: fourier.fourier_basis(h, w, a, b, norm=2.5))(np.int32(u), np.int32(v))
    np.testing.assert_allclose(np.asarray(traced), img, atol=1e-5)
    # vectorised over arrays of frequencies
    us, vs = np.array([1, 2, 3]), np.array([4, 5, 6])
    batch = fourier.fourier_basis(h, w, us, vs)
    assert batch.shape == (3, h, w)
    np.testing.assert_allclose(np.asarray(batch[1]), np.asarray(fourier.fourier_basis(h, w, 2, 5)), atol=1e-6)


@pytest.mark.parametrize(
    "x,r,match",
    [
        (np.zeros((2, 32, 32, 3), np.float32), -1.0, "radius"),
        (np.zeros((2, 32, 32, 3), np.float32), float("nan"), "radius"),
        (np.zeros((2, 32, 32, 3), np.float32), float("inf"), "radius"),
        (np.zeros((2, 32, 32, 3), np.float32), np.array([4.0, -2.0]), "radii"),
        (np.zeros((2, 32, 32, 3), np.float32), np.ones((2, 2)), "1-D"),
        (np.zeros((32, 32), np.float32), 4, "rank"),
        (np.zeros((2, 32, 32, 3), np.uint8), 4, "float"),
        (np.zeros((2, 32, 32, 3), np.complex64), 4, "real"),
        (np.zeros((2, 32, 32, 3), np.float32), "big", "radius"),
    ],
)
def test_bad_inputs(x, r, match):
    with pytest.raises(ValueError, match=match):
        fourier.low_pass(x, r)


def test_bad_basis_and_spectrum_args():
    with pytest.raises(ValueError, match="u must be"):
        fourier.fourier_basis(8, 8, 8, 0)
    with pytest.raises(ValueError, match="integers"):
        fourier.fourier_basis(8, 8, 1.5, 0)
    with pytest.raises(ValueError, match="reduce"):
        fourier.radial_power_spectrum(np.zeros((1, 8, 8, 1), np.float32), reduce="max")


def test_bfloat16_and_float64_inputs():
    x = _images((1, 16, 16, 3))
    out = fourier.low_pass(jnp.asarray(x, jnp.bfloat16), 4)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), paper_reference(x, 4)[0], atol=2.0)
