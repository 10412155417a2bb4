"""Fourier filters of the paper: low/high-frequency split, radial spectra, basis images.

The convention is exactly that of the paper's released code (``utility/frequencyHelper.py``):

* each image and each channel is filtered independently;
* the spectrum is ``F = fftshift(fft2(x))``, whose zero frequency sits at
  ``(H // 2, W // 2)`` (for even and odd sizes alike);
* the low-pass mask keeps ``M[i, j] = 1`` where ``sqrt((i - H//2)**2 + (j - W//2)**2) < r``
  (strict ``<``; the paper's text writes ``<=``), the high-pass mask is ``1 - M``;
* the filtered image is the *real part* of ``ifft2(ifftshift(M * F))`` (the mask is
  point-symmetric, so the imaginary part is rounding noise);
* values are not clipped or rescaled: a uint8 image converted to float in 0..255 gives an
  LFC that may ring outside 0..255 and an HFC with zero mean and negative values.

Implementation notes. The mask is moved to the unshifted layout once (``ifftshift``), so no
shift is ever applied to data; because the masked spectrum is Hermitian, a real FFT
(``rfft2``/``irfft2``) gives the same real part at half the cost. ``high = x - low`` saves a
second inverse transform, and ``low + high == x`` holds to float rounding. One forward
transform serves every radius of a sweep.

Shapes: images are real float arrays ``(..., H, W, C)``. A radius ``r`` is a Python number
(the mask is then a compile-time constant, built once per ``(H, W, r)``), or a 1-D array of
``R`` radii, in which case the outputs gain a leading axis of size ``R`` and the whole sweep
is one compiled call; an array radius may be traced (passed through ``jit``) without
recompiling when its values change.

All functions work under ``jit``, ``vmap``, ``grad`` and on arrays sharded over devices.
"""

from __future__ import annotations

import functools
import math
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "PAPER_RADII",
    "check_radius",
    "corner_radius",
    "distance_grid",
    "radius_mask",
    "kept_count",
    "low_pass",
    "high_pass",
    "split",
    "radial_power_spectrum",
    "energy_outside",
    "fourier_basis",
]

#: Radii used for the paper's curves and Table 1.
PAPER_RADII = (4, 8, 12, 16)

Radius = Union[float, int, np.ndarray, jax.Array]


# --------------------------------------------------------------------------------------
# Masks (numpy, built once per shape and cached: constants under jit)
# --------------------------------------------------------------------------------------


def _check_size(h: int, w: int) -> tuple[int, int]:
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise ValueError(f"image height and width must be >= 1, got H={h}, W={w}")
    return h, w


@functools.lru_cache(maxsize=64)
def _distance_grid_cached(h: int, w: int) -> np.ndarray:
    i = np.arange(h, dtype=np.float64)[:, None] - h // 2
    j = np.arange(w, dtype=np.float64)[None, :] - w // 2
    d = np.sqrt(i * i + j * j)
    d.setflags(write=False)
    return d


def distance_grid(h: int, w: int) -> np.ndarray:
    """Distance of each entry of the *shifted* spectrum from its centre ``(H//2, W//2)``.

    Returns:
      ``(H, W)`` float64 numpy array (read-only).
    """
    return _distance_grid_cached(*_check_size(h, w))


def corner_radius(h: int, w: int) -> float:
    """The largest distance in :func:`distance_grid`: any ``r`` above it keeps everything.

    For 32x32 this is ``sqrt(16**2 + 16**2) = 22.63``.
    """
    h, w = _check_size(h, w)
    return math.hypot(h // 2, w // 2)


def radius_mask(h: int, w: int, r: float) -> np.ndarray:
    """The paper's low-pass mask on the shifted spectrum: ``distance < r``.

    Args:
      h, w: image height and width.
      r: radius, a finite number >= 0.

    Returns:
      ``(H, W)`` bool numpy array, ``True`` where the frequency is kept by the low pass.
    """
    r = check_radius(r)
    return distance_grid(h, w) < r


def kept_count(h: int, w: int, r: float) -> int:
    """Number of frequencies the low pass keeps (45 for 32x32 at r=4, 193 at r=8, ...)."""
    return int(radius_mask(h, w, r).sum())


@functools.lru_cache(maxsize=256)
def _rfft_mask(h: int, w: int, r: float) -> np.ndarray:
    """Low-pass mask in the unshifted ``rfft2`` layout, ``(H, W//2 + 1)`` float32."""
    m = np.fft.ifftshift(distance_grid(h, w) < r)[:, : w // 2 + 1].astype(np.float32)
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=64)
def _rfft_distance(h: int, w: int) -> np.ndarray:
    d = np.fft.ifftshift(distance_grid(h, w))[:, : w // 2 + 1].astype(np.float32)
    d.setflags(write=False)
    return d


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------


def check_radius(r) -> float:
    """``r`` as a Python float, or a ValueError naming what was expected (a finite number >= 0)."""
    try:
        value = float(r)
    except (TypeError, ValueError):
        raise ValueError(f"radius must be a real number, got {r!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {r!r}")
    return value


def _is_python_scalar(r) -> bool:
    return isinstance(r, (int, float, np.integer, np.floating)) and not isinstance(r, bool)


def _check_radius_array(r) -> jax.Array:
    if isinstance(r, jax.core.Tracer):
        arr = r
    else:
        arr_np = np.asarray(r)
        if arr_np.dtype.kind not in "iuf":
            raise ValueError(f"radius must be real numbers, got an array of dtype {arr_np.dtype}")
        if arr_np.size and (not np.all(np.isfinite(arr_np)) or np.any(arr_np < 0)):
            raise ValueError(f"radii must be finite and >= 0, got {arr_np.tolist()}")
        arr = arr_np
    if arr.ndim != 1:
        raise ValueError(
            f"radius must be a number or a 1-D array of radii, got an array of shape {tuple(arr.shape)}"
        )
    return jnp.asarray(arr, dtype=jnp.float32)


def _check_images(x) -> jax.Array:
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        x = np.asarray(x)
    if x.ndim < 3:
        raise ValueError(
            f"images must have shape (..., H, W, C) with rank >= 3, got shape {tuple(x.shape)}"
        )
    dtype = np.dtype(x.dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"images must be real, got complex dtype {dtype}")
    if not np.issubdtype(dtype, np.floating) and dtype != jnp.bfloat16:
        raise ValueError(
            f"images must be a float array (e.g. uint8 pixels converted with .astype(np.float32)), "
            f"got dtype {dtype}"
        )
    return jnp.asarray(x)


def _compute_dtype(dtype) -> jnp.dtype:
    # FFTs run in float32 (or float64 when x64 is on and the input is float64).
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


# --------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------


def _spectrum(x: jax.Array) -> jax.Array:
    """rfft2 over (H, W) of ``(..., H, W, C)``; returns ``(..., H, W//2+1, C)``."""
    return jnp.fft.rfft2(x.astype(_compute_dtype(x.dtype)), axes=(-3, -2))


def _inverse(spec: jax.Array, h: int, w: int) -> jax.Array:
    return jnp.fft.irfft2(spec, s=(h, w), axes=(-3, -2))


def _low_static(x: jax.Array, r: float) -> jax.Array:
    h, w = x.shape[-3], x.shape[-2]
    if r == 0:
        return jnp.zeros_like(x)
    if r > corner_radius(h, w):
        return x
    mask = jnp.asarray(_rfft_mask(h, w, r))[:, :, None]
    return _inverse(_spectrum(x) * mask, h, w).astype(x.dtype)


def _low_sweep(x: jax.Array, radii: jax.Array) -> jax.Array:
    h, w = x.shape[-3], x.shape[-2]
    dist = jnp.asarray(_rfft_distance(h, w))
    masks = (dist[None] < radii[:, None, None]).astype(jnp.float32)  # (R, H, W//2+1)
    spec = _spectrum(x)  # (..., H, W//2+1, C), computed once for all radii
    masks = masks.reshape((radii.shape[0],) + (1,) * (spec.ndim - 3) + masks.shape[1:] + (1,))
    low = _inverse(spec[None] * masks, h, w).astype(x.dtype)
    # Exact edge cases, matching the static path: nothing kept -> 0, everything kept -> x.
    bshape = (radii.shape[0],) + (1,) * x.ndim
    full = (radii > corner_radius(h, w)).reshape(bshape)
    empty = (radii == 0).reshape(bshape)
    low = jnp.where(full, x[None], low)
    return jnp.where(empty, jnp.zeros_like(low), low)


@functools.partial(jax.jit, static_argnums=1)
def _low_pass_static_jit(x, r):
    return _low_static(x, r)


_low_pass_sweep_jit = jax.jit(_low_sweep)


def low_pass(x, r: Radius) -> jax.Array:
    """Low-frequency component (LFC): keep frequencies at distance ``< r`` from the centre.

    Args:
      x: ``(..., H, W, C)`` real float images (any scale; the paper uses 0..255).
      r: a number >= 0, or a 1-D array of ``R`` radii.

    Returns:
      Same dtype as ``x``; shape ``x.shape`` for a number, ``(R,) + x.shape`` for an array.

    Raises:
      ValueError: rank < 3, a non-float or complex ``x``, or a negative/non-finite radius.
    """
    x = _check_images(x)
    if _is_python_scalar(r) or (not isinstance(r, jax.core.Tracer) and np.ndim(r) == 0):
        return _low_pass_static_jit(x, check_radius(r))
    if r.ndim == 0:  # a traced scalar radius: a sweep of one
        return _low_pass_sweep_jit(x, jnp.reshape(r, (1,)).astype(jnp.float32))[0]
    return _low_pass_sweep_jit(x, _check_radius_array(r))


def high_pass(x, r: Radius) -> jax.Array:
    """High-frequency component (HFC): ``x - low_pass(x, r)`` (frequencies at distance ``>= r``).

    Same arguments, shapes and errors as :func:`low_pass`.
    """
    return split(x, r)[1]


def split(x, r: Radius) -> tuple[jax.Array, jax.Array]:
    """``(low, high)`` with ``low + high == x``; see :func:`low_pass` for shapes."""
    x = _check_images(x)
    low = low_pass(x, r)
    return low, (x - low)


# --------------------------------------------------------------------------------------
# Spectra and basis images
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _ring_index(h: int, w: int) -> tuple[np.ndarray, int]:
    ring = np.floor(distance_grid(h, w) + 1e-9).astype(np.int32)
    return ring, int(ring.max()) + 1


def radial_power_spectrum(x, *, reduce: str = "mean") -> jax.Array:
    """Radially binned power spectrum of each image.

    Power at a frequency is ``|fftshift(fft2(x))|**2 / (H * W)`` summed over channels, so by
    Parseval the power over all frequencies equals ``sum(x**2)``. Ring ``k`` holds the
    frequencies with ``k <= distance < k + 1`` (distance as in :func:`distance_grid`).

    Args:
      x: ``(..., H, W, C)`` real float images.
      reduce: ``"sum"`` (total power in each ring; the rings add up to ``sum(x**2)``) or
        ``"mean"`` (power per frequency in each ring).

    Returns:
      ``(..., K)`` float32 with ``K = floor(corner_radius(H, W)) + 1`` rings.
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    x = _check_images(x)
    h, w = x.shape[-3], x.shape[-2]
    ring, k = _ring_index(h, w)
    return _radial_jit(x, reduce, h, w, k, ring.tobytes())


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _radial_jit(x, reduce, h, w, k, ring_bytes):
    ring = np.frombuffer(ring_bytes, dtype=np.int32).reshape(h, w)
    xc = jnp.moveaxis(x.astype(_compute_dtype(x.dtype)), -1, -3)
    spec = jnp.fft.fftshift(jnp.fft.fft2(xc, axes=(-2, -1)), axes=(-2, -1))
    power = (jnp.abs(spec) ** 2).sum(axis=-3) / (h * w)  # (..., H, W)
    onehot = jnp.asarray(np.eye(k, dtype=np.float32)[ring])  # (H, W, K)
    total = jnp.einsum("...hw,hwk->...k", power, onehot)
    if reduce == "sum":
        return total
    counts = np.bincount(ring.ravel(), minlength=k).astype(np.float32)
    return total / jnp.asarray(counts)


def energy_outside(x, r: Radius) -> jax.Array:
    """Share of each image's energy (``sum(x**2)``) in frequencies at distance ``>= r``.

    Args:
      x: ``(..., H, W, C)`` real float images.
      r: a number or a 1-D array of ``R`` radii.

    Returns:
      ``x.shape[:-3]`` (or ``(R,) + x.shape[:-3]``) float in [0, 1]; 0 for an all-zero image.
    """
    high = high_pass(x, r)
    x = jnp.asarray(x)
    e_high = jnp.sum(jnp.square(high.astype(jnp.float32)), axis=(-3, -2, -1))
    e_all = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(-3, -2, -1))
    return jnp.where(e_all > 0, e_high / jnp.where(e_all > 0, e_all, 1.0), 0.0)


def fourier_basis(h: int, w: int, u, v, *, norm: float = 1.0) -> jax.Array:
    """Real Fourier basis image(s) with one frequency ``(u, v)`` and L2 norm ``norm``.

    ``(u, v)`` are indices into the *shifted* spectrum (``0 <= u < H``, ``0 <= v < W``; the
    zero frequency is ``(H//2, W//2)``), as in Yin et al. (2019) heat maps. The image is the
    real part of the inverse FFT of a spectrum that is non-zero only at ``(u, v)`` and its
    conjugate partner, i.e. ``cos(2 pi ((u - H//2) i / H + (v - W//2) j / W))``, scaled to
    the requested L2 norm.

    Args:
      h, w: image size.
      u, v: integers or integer arrays of one shape ``S``.
      norm: L2 norm of each basis image.

    Returns:
      ``S + (H, W)`` float32.
    """
    h, w = _check_size(h, w)
    if not isinstance(u, jax.core.Tracer) and not isinstance(v, jax.core.Tracer):
        u_np, v_np = np.asarray(u), np.asarray(v)
        if u_np.dtype.kind not in "iu" or v_np.dtype.kind not in "iu":
            raise ValueError("u and v must be integers (indices into the shifted spectrum)")
        if np.any(u_np < 0) or np.any(u_np >= h) or np.any(v_np < 0) or np.any(v_np >= w):
            raise ValueError(f"u must be in [0, {h}) and v in [0, {w}), got u={u_np}, v={v_np}")
    fu = (jnp.asarray(u) - h // 2).astype(jnp.float32)[..., None, None]
    fv = (jnp.asarray(v) - w // 2).astype(jnp.float32)[..., None, None]
    i = jnp.arange(h, dtype=jnp.float32)[:, None]
    j = jnp.arange(w, dtype=jnp.float32)[None, :]
    img = jnp.cos(2 * jnp.pi * (fu * i / h + fv * j / w))
    return norm * img / jnp.sqrt(jnp.sum(img * img, axis=(-2, -1), keepdims=True))
