"""Convolution-kernel smoothness and the paper's kernel-side defences.

Kernels are Flax ``nn.Conv`` kernels: 4-D arrays ``(kh, kw, in, out)`` (HWIO). Functions
that take ``params`` accept either the ``params`` collection or the whole variables dict
``{'params': ..., 'batch_stats': ...}`` and return the same structure they were given.
A kernel's *path* is its key path joined by ``'/'``, e.g. ``'conv_init/kernel'``.

Definitions (all spatial, over the first two axes, for every ``(in, out)`` pair):

- **Adjacent pairs**: horizontally and vertically neighbouring weights
  ``(w[i, j], w[i, j+1])`` and ``(w[i, j], w[i+1, j])`` (4-neighbourhood, each pair once):
  ``kh * (kw - 1) + (kh - 1) * kw`` pairs per 2-D kernel (12 for 3x3).
- **Smoothness measure** (:func:`smoothness`, scale-free, lower = smoother)::

      S(w) = mean over adjacent pairs of (w_a - w_b)^2  /  mean over weights of w^2

  pooled over all ``(in, out)`` pairs of a layer. ``S = 0`` for spatially constant
  kernels, ``E[S] = 2`` for i.i.d. white-noise weights and ``S`` approaches 4 for a
  checkerboard; multiplying a kernel by a constant leaves ``S`` unchanged.
- **Smoothing** (:func:`smooth_kernel`, paper Eq. 3): ``w[i,j] <- w[i,j] + rho * (sum of
  the 8 neighbours of w[i,j])`` with borders by duplicating edge values, i.e.
  ``scipy.signal.convolve2d(w, mask, mode='same', boundary='symm')`` with the 3x3 mask of
  centre 1 and ``rho`` elsewhere; no renormalisation (a constant kernel becomes
  ``(1 + 8 rho)`` times itself). That scales the first layer's output, and with it the
  logits of a model without normalisation layers, by up to ``1 + 8 rho`` (a saturated
  softmax masks cross-entropy gradients); ``renormalize=True`` divides by ``1 + 8 rho``
  (mask weights summing to 1: a constant kernel is unchanged), which separates the
  smoothing from that rescaling.
- **Kernel low pass** (:func:`lowpass_kernel`): the ``fourier`` convention applied to each
  ``kh x kw`` kernel: ``real(ifft2(ifftshift(M * fftshift(fft2(w)))))`` with
  ``M = distance from (kh//2, kw//2) < radius``.
- **Smoothness penalty** (:func:`smoothness_penalty`, a training regulariser in the spirit
  of the authors' follow-up on smooth kernels): the *sum* over the selected layers and all
  adjacent pairs of ``(w_a - w_b)^2``. Not normalised, so its gradient pulls neighbouring
  weights together with a strength set by the regulariser's coefficient.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FIRST_CONV_PATH",
    "conv_kernels",
    "first_conv_kernel",
    "kernel_figure_data",
    "lowpass_kernel",
    "lowpass_params",
    "smooth_kernel",
    "smooth_params",
    "smoothness",
    "smoothness_by_layer",
    "smoothness_penalty",
]

#: Path of the first conv layer's kernel in every ``jaxhfc.models`` model.
FIRST_CONV_PATH = "conv_init/kernel"

Layers = str | Sequence[str]


# ----------------------------------------------------------------------------- pytrees


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path_str(path) -> str:
    return "/".join(_key_name(k) for k in path)


def _unwrap(params):
    """``(inner_params, rewrap)``: descend into ``variables['params']`` when given variables."""
    if isinstance(params, Mapping) and isinstance(params.get("params"), Mapping):
        inner = params["params"]

        def rewrap(new_inner):
            out = dict(params)
            out["params"] = new_inner
            return out if type(params) is dict else type(params)(out)

        return inner, rewrap
    return params, lambda p: p


def _is_conv_kernel(path: str, leaf) -> bool:
    return path.split("/")[-1] == "kernel" and getattr(leaf, "ndim", 0) == 4


def _leaves_in_order(tree, prefix=()):
    """``(path tuple, leaf)`` pairs; mappings in insertion order (Flax: module call order)."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _leaves_in_order(v, prefix + (str(k),))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _leaves_in_order(v, prefix + (str(i),))
    elif tree is None:
        return
    elif hasattr(tree, "ndim") or np.isscalar(tree):
        yield prefix, tree
    else:  # any other pytree node
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            yield prefix + tuple(_key_name(k) for k in path), leaf


def conv_kernels(params) -> dict[str, jax.Array]:
    """All 4-D conv kernels of a params pytree, by path.

    Args:
      params: Flax params (or variables with a ``'params'`` collection).

    Returns:
      ``{path: kernel (kh, kw, in, out)}`` in the params dicts' insertion order, which for
      Flax modules is the order the submodules were first called (network depth order:
      ``conv_init`` first). Leaves named ``kernel`` with 4 dimensions count as convs.
    """
    inner, _ = _unwrap(params)
    out = {}
    for path, leaf in _leaves_in_order(inner):
        p = "/".join(path)
        if _is_conv_kernel(p, leaf):
            out[p] = leaf
    return out


def _first_path(kernels: dict, path: str | None) -> str:
    if not kernels:
        raise ValueError("params contain no 4-D conv kernel (a leaf named 'kernel' with 4 dims)")
    want = path or FIRST_CONV_PATH
    if want in kernels:
        return want
    if path is not None:
        raise ValueError(f"no conv kernel at path {path!r}; conv kernels: {list(kernels)}")
    rgb = [p for p, k in kernels.items() if k.shape[2] == 3]
    if len(rgb) != 1:
        raise ValueError(f"no conv kernel at {FIRST_CONV_PATH!r} and {len(rgb)} kernels with 3 "
                         f"input channels; pass path=... (conv kernels: {list(kernels)})")
    return rgb[0]


def first_conv_kernel(params, *, path: str | None = None) -> jax.Array:
    """The first conv layer's kernel ``(kh, kw, in, out)``.

    Looks up ``path`` (default ``'conv_init/kernel'``, the ``jaxhfc.models`` name); when
    the default path is absent it falls back to the only conv kernel whose input depth is
    3 (RGB) — and raises if there is none or several.
    """
    kernels = conv_kernels(params)
    return kernels[_first_path(kernels, path)]


def _select(params, layers: Layers) -> list[str]:
    kernels = conv_kernels(params)
    if isinstance(layers, str):
        if layers == "all":
            return list(kernels)
        if layers == "first":
            return [_first_path(kernels, None)]
        if layers in kernels:
            return [layers]
        raise ValueError(f"layers must be 'first', 'all', a kernel path or a list of paths; "
                         f"got {layers!r} (conv kernels: {list(kernels)})")
    paths = list(layers)
    missing = [p for p in paths if p not in kernels]
    if missing:
        raise ValueError(f"no conv kernel at {missing}; conv kernels: {list(kernels)}")
    return paths


def _map_kernels(params, layers: Layers, fn):
    selected = set(_select(params, layers))
    inner, rewrap = _unwrap(params)

    def f(path, leaf):
        p = _path_str(path)
        return fn(leaf) if p in selected else leaf

    return rewrap(jax.tree_util.tree_map_with_path(f, inner))


def _check_kernel(kernel) -> jax.Array:
    kernel = jnp.asarray(kernel)
    if kernel.ndim < 2:
        raise ValueError(f"kernel must be (kh, kw, ...) e.g. (kh, kw, in, out), got shape "
                         f"{tuple(kernel.shape)}")
    if not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise ValueError(f"kernel must be float, got dtype {kernel.dtype}")
    return kernel


# ----------------------------------------------------------------------------- measures


def _adjacent_sq_diffs(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Squared differences of horizontal and vertical neighbours (over axes 0 and 1)."""
    dh = kernel[:, 1:] - kernel[:, :-1]
    dv = kernel[1:, :] - kernel[:-1, :]
    return dh * dh, dv * dv


def smoothness(kernel) -> jax.Array:
    """Scale-free roughness ``S`` of one layer's kernels (see module docstring); lower = smoother.

    Args:
      kernel: ``(kh, kw, ...)`` float, e.g. ``(kh, kw, in, out)``, with ``kh * kw >= 2``.

    Returns:
      Scalar float32: mean squared difference of adjacent weights / mean squared weight
      (0 for an all-zero kernel).
    """
    kernel = _check_kernel(kernel).astype(jnp.float32)
    if kernel.shape[0] * kernel.shape[1] < 2:
        raise ValueError(f"smoothness needs at least 2 spatial weights, got kernel shape "
                         f"{tuple(kernel.shape)} (1x1 kernels have no neighbours)")
    sh, sv = _adjacent_sq_diffs(kernel)
    mean_diff = (jnp.sum(sh) + jnp.sum(sv)) / (sh.size + sv.size)
    mean_sq = jnp.mean(kernel * kernel)
    return jnp.where(mean_sq > 0, mean_diff / jnp.where(mean_sq > 0, mean_sq, 1.0), 0.0)


def smoothness_by_layer(params) -> dict[str, float]:
    """:func:`smoothness` of every conv layer with a spatial extent (1x1 kernels skipped).

    Returns:
      ``{path: S}`` as Python floats, in :func:`conv_kernels` order.
    """
    return {p: float(smoothness(k)) for p, k in conv_kernels(params).items()
            if k.shape[0] * k.shape[1] >= 2}


def smoothness_penalty(params, *, layers: Layers = "all") -> jax.Array:
    """Differentiable sum of squared differences of adjacent kernel weights.

    ``sum_layers sum_(in,out) sum_adjacent (w_a - w_b)^2`` over the selected conv layers
    (``'all'`` default, ``'first'``, a path, or a list of paths); 1x1 kernels contribute 0.
    Plug it into the training engine's regulariser hook (``loss + lam * penalty``).

    Returns:
      Scalar float32 (float64 for float64 kernels).
    """
    kernels = conv_kernels(params)
    total = jnp.zeros((), jnp.float32)
    for p in _select(params, layers):
        k = jnp.asarray(kernels[p])
        sh, sv = _adjacent_sq_diffs(k.astype(jnp.promote_types(k.dtype, jnp.float32)))
        total = total + jnp.sum(sh) + jnp.sum(sv)
    return total


# ----------------------------------------------------------------------------- smoothing


def smooth_kernel(kernel, rho, *, renormalize: bool = False) -> jax.Array:
    """Paper Eq. 3: add ``rho`` times the sum of the 8 spatial neighbours to each weight.

    Borders duplicate the edge values (numpy ``'symmetric'`` padding = scipy's
    ``boundary='symm'``); applied to every ``(in, out)`` pair; no renormalisation (the
    paper's), or divided by ``1 + 8 rho`` with ``renormalize=True``.

    Args:
      kernel: ``(kh, kw, ...)`` float, e.g. ``(kh, kw, in, out)``.
      rho: the neighbour weight (a number or a traced scalar; ``1 + 8 rho`` must not be 0
        when renormalising).
      renormalize: divide the result by ``1 + 8 rho``.

    Returns:
      Same shape and dtype as ``kernel``.
    """
    kernel = _check_kernel(kernel)
    kh, kw = kernel.shape[:2]
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (kernel.ndim - 2)
    padded = jnp.pad(kernel, pad, mode="symmetric")
    neigh = jnp.zeros_like(kernel)
    for di in range(3):
        for dj in range(3):
            if di == 1 and dj == 1:
                continue
            neigh = neigh + padded[di:di + kh, dj:dj + kw]
    rho_c = jnp.asarray(rho, kernel.dtype)
    out = kernel + rho_c * neigh
    if renormalize:
        if isinstance(rho, (int, float)) and 1 + 8 * rho == 0:
            raise ValueError(f"renormalize divides by 1 + 8*rho, which is 0 for rho={rho!r}")
        out = out / (1 + 8 * rho_c)
    return out.astype(kernel.dtype)


def smooth_params(params, rho, *, layers: Layers = "first", renormalize: bool = False):
    """Apply :func:`smooth_kernel` to the selected conv layers (the paper: the first only);
    ``renormalize=True`` divides by ``1 + 8 rho`` (see the module docstring)."""
    return _map_kernels(params, layers, lambda k: smooth_kernel(k, rho, renormalize=renormalize))


@functools.lru_cache(maxsize=64)
def _kernel_mask(kh: int, kw: int, radius: float) -> np.ndarray:
    i = np.arange(kh)[:, None] - kh // 2
    j = np.arange(kw)[None, :] - kw // 2
    return (np.sqrt(i * i + j * j) < radius).astype(np.float32)


def lowpass_kernel(kernel, radius: float) -> jax.Array:
    """Remove the high frequencies of each ``kh x kw`` kernel (``fourier`` mask convention).

    ``real(ifft2(ifftshift(M * fftshift(fft2(w)))))`` over the two spatial axes, with ``M``
    1 where the distance from ``(kh//2, kw//2)`` is ``< radius``. For 3x3 kernels:
    ``radius <= 0`` gives zeros, ``0 < radius <= 1`` keeps only the mean,
    ``1 < radius <= sqrt(2)`` keeps the mean and the 4 axis frequencies, larger radii are the
    identity.

    Args:
      kernel: ``(kh, kw, ...)`` float.
      radius: a Python number >= 0 (static: the mask is a compile-time constant).

    Returns:
      Same shape and dtype as ``kernel``.
    """
    kernel = _check_kernel(kernel)
    from jaxhfc import fourier

    r = fourier.check_radius(radius)
    kh, kw = kernel.shape[:2]
    mask = _kernel_mask(kh, kw, r).reshape((kh, kw) + (1,) * (kernel.ndim - 2))
    spec = jnp.fft.fftshift(jnp.fft.fft2(kernel.astype(jnp.float32), axes=(0, 1)), axes=(0, 1))
    low = jnp.fft.ifft2(jnp.fft.ifftshift(spec * mask, axes=(0, 1)), axes=(0, 1))
    return jnp.real(low).astype(kernel.dtype)


def lowpass_params(params, radius: float, *, layers: Layers = "first"):
    """Apply :func:`lowpass_kernel` to the selected conv layers (first conv by default)."""
    return _map_kernels(params, layers, lambda k: lowpass_kernel(k, radius))


# ----------------------------------------------------------------------------- figure data


def kernel_figure_data(params, *, path: str | None = None, spectrum_size: int = 16
                       ) -> dict[str, Any]:
    """Arrays for the picture of the first-layer kernels and of their spectra.

    Args:
      params: Flax params or variables.
      path: the kernel's path (default: :func:`first_conv_kernel`).
      spectrum_size: the spectra are the DFT of each kernel zero-padded to
        ``spectrum_size x spectrum_size`` (the kernel's frequency response sampled finely;
        a 3x3 DFT alone is a 3x3 picture), at least the kernel size.

    Returns:
      dict of numpy arrays, ``O`` output channels, ``I`` input channels:
        ``kernels``: ``(O, kh, kw, I)`` float32, raw weights, one kernel per output channel.
        ``images``: ``(O, kh, kw, I)`` float32 in [0, 1], each kernel min-max scaled on
        its own (RGB pictures when ``I == 3``).
        ``spectra``: ``(O, S, S)`` float32, fftshift'ed amplitude ``|DFT|`` averaged over the
        input channels (zero frequency at ``(S//2, S//2)``).
        ``log_spectra``: ``(O, S, S)`` ``log1p`` of ``spectra`` divided by its max per kernel.
        ``smoothness``: ``(O,)`` float32, :func:`smoothness` of each output channel's kernel.
    """
    k = first_conv_kernel(params, path=path)
    k = np.asarray(k, np.float32)
    kh, kw, ci, co = k.shape
    if spectrum_size < max(kh, kw):
        raise ValueError(f"spectrum_size must be >= the kernel size {max(kh, kw)}, "
                         f"got {spectrum_size}")
    kernels = np.transpose(k, (3, 0, 1, 2))  # (O, kh, kw, I)
    lo = kernels.min(axis=(1, 2, 3), keepdims=True)
    hi = kernels.max(axis=(1, 2, 3), keepdims=True)
    images = (kernels - lo) / np.where(hi > lo, hi - lo, 1.0)
    spec = np.fft.fftshift(
        np.abs(np.fft.fft2(kernels, s=(spectrum_size, spectrum_size), axes=(1, 2))), axes=(1, 2)
    ).mean(axis=3).astype(np.float32)
    logs = np.log1p(spec)
    logs = logs / np.maximum(logs.max(axis=(1, 2), keepdims=True), 1e-12)
    smooth = np.array([float(smoothness(kernels[o])) for o in range(co)], np.float32)
    return {
        "kernels": kernels,
        "images": images.astype(np.float32),
        "spectra": spec,
        "log_spectra": logs.astype(np.float32),
        "smoothness": smooth,
    }
