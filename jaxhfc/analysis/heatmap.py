"""Fourier heat maps (Yin et al. 2019): the error when a Fourier basis image of a given L2 norm
is added to the images, per frequency.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc import fourier, parallel
from jaxhfc.parallel import join_callable
from jaxhfc.analysis.base import LogitsFn, _CACHE_SIZE, _argmax, _body, _check_batch_size, _check_labels, _check_mesh, _check_nhwc, _on_devices

logger = logging.getLogger(__name__)


def heatmap_signs(key: jax.Array, freq_index, image_index, channels: int) -> jax.Array:
    """Random signs of the heat-map perturbations, one per (frequency, image, channel).

    The sign of frequency ``f`` (``f = u * W + v`` on the shifted grid), image ``i`` (its
    index in the whole test set) and channel ``c`` is
    ``rademacher(fold_in(fold_in(key, f), i), (C,))[c]``: it does not depend on the chunking
    or sharding of the sweep.

    Args:
      key: PRNG key.
      freq_index: ``(F,)`` int frequency indices.
      image_index: ``(B,)`` int image indices.
      channels: ``C``.

    Returns:
      ``(F, B, C)`` float32 in {-1, +1}.
    """

    return _heatmap_signs(key, jnp.asarray(freq_index), jnp.asarray(image_index), int(channels))


@functools.partial(jax.jit, static_argnums=3)
def _heatmap_signs(key, freq_index, image_index, channels):
    def one(f, i):
        k = jax.random.fold_in(jax.random.fold_in(key, f), i)
        return jax.random.rademacher(k, (channels,), dtype=jnp.float32)

    return jax.vmap(lambda f: jax.vmap(lambda i: one(f, i))(image_index))(freq_index)


def heatmap_perturbation(h: int, w: int, u, v, signs, *, eps: float) -> jax.Array:
    """Perturbations of the heat map: ``eps * sign * basis(u, v)`` per channel.

    Each channel of each perturbation is the real Fourier basis image of frequency
    ``(u, v)`` (indices of the shifted spectrum, :func:`jaxhfc.fourier.fourier_basis`) with
    L2 norm ``eps`` times its own sign. :func:`fourier_heatmap` adds exactly these.

    Args:
      h, w: image size.
      u, v: ``(F,)`` ints (concrete values).
      signs: ``(F, B, C)`` in {-1, +1} (see :func:`heatmap_signs`).
      eps: L2 norm of each channel's perturbation (unit-scale images).

    Returns:
      ``(F, B, H, W, C)`` float32.
    """
    return _perturb(fourier.fourier_basis(h, w, u, v, norm=eps), signs)


def _perturb(basis: jax.Array, signs) -> jax.Array:
    """``basis (F, H, W)`` x ``signs (F, B, C)`` -> ``(F, B, H, W, C)``."""
    return basis[:, None, :, :, None] * jnp.asarray(signs, jnp.float32)[:, :, None, None, :]


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _heatmap_fn(spec) -> Callable:
    def body(arrays, freqs, basis_all, k, xb, yb, idx):
        logits_fn = join_callable(spec, arrays)
        signs = _heatmap_signs(k, freqs, idx, xb.shape[-1])
        pert = _perturb(jnp.take(basis_all, freqs, axis=0), signs)  # (F, B, H, W, C)
        xp = jnp.clip(xb[None] + pert, 0.0, 1.0)
        logits = logits_fn(xp.reshape((-1,) + xb.shape[1:]))
        return (_argmax(logits).reshape(freqs.shape[0], -1) != yb[None]).T  # (B, F) wrong

    return body


def _freq_basis(h: int, w: int, freqs: np.ndarray, eps: float) -> np.ndarray:
    return np.asarray(fourier.fourier_basis(h, w, freqs // w, freqs % w, norm=eps), np.float32)


def fourier_heatmap(
    logits_fn: LogitsFn,
    x,
    y,
    key: jax.Array,
    *,
    eps: float,
    mesh: Optional[Mesh] = None,
    freq_chunk: int = 8,
    batch_size: int = 256,
    per_image: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fourier sensitivity heat map: error rate under a Fourier basis perturbation per (u, v).

    For every frequency ``(u, v)`` of the shifted ``H x W`` grid (zero frequency at
    ``(H//2, W//2)``) every image gets ``x + eps * s * basis(u, v)`` with an independent
    random sign ``s`` per image and channel (:func:`heatmap_signs`), clipped to [0, 1];
    the map holds the fraction of images the model then misclassifies (Yin et al. 2019).
    Each compiled call evaluates ``freq_chunk`` frequencies on ``batch_size`` images
    (``freq_chunk * batch_size`` model inputs at once; mind the memory for big models).

    Args:
      logits_fn: jittable ``(B, H, W, C) -> (B, K)`` logits.
      x: ``(N, H, W, C)`` float unit-scale images.
      y: ``(N,)`` int labels.
      key: PRNG key for the signs.
      eps: L2 norm of each channel's perturbation (Yin et al. used 4 for CIFAR-10).
      mesh: optional 1-D ``"data"`` mesh; images are sharded over it.
      freq_chunk: frequencies per compiled call.
      batch_size: images per compiled call (rounded up to a multiple of the device count).
      per_image: also return which image each frequency broke.

    Returns:
      ``(H, W)`` float64 numpy error rates in [0, 1], indexed like the shifted spectrum; with
      ``per_image``, ``(map, wrong)`` where ``wrong: (N, H, W) bool`` says whether image ``n`` is
      misclassified under frequency ``(u, v)`` (``map == wrong.mean(0)``).
    """
    x = _check_nhwc(x, "x", float_only=True)
    n, h, w, c = x.shape
    yv = _check_labels(y, n, "y")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if int(freq_chunk) < 1:
        raise ValueError(f"freq_chunk must be >= 1, got {freq_chunk}")
    nf = h * w
    fc = min(int(freq_chunk), nf)
    mesh = _check_mesh(mesh)
    fn, arrays = _body(_heatmap_fn, logits_fn)
    bs = _check_batch_size(batch_size)
    errors = np.zeros((nf,), np.int64)
    wrong_all = np.zeros((n, nf), bool) if per_image else None
    # images, labels and all bases (nf * H * W floats) go to the devices once and are read
    # there by every frequency chunk; chunks are padded to one shape (padding frequencies
    # are computed and dropped)
    x_dev, y_dev = _on_devices(x, mesh), _on_devices(yv, mesh)
    basis = _freq_basis(h, w, np.arange(nf, dtype=np.int32), eps)
    broadcast = [arrays, None, _on_devices(basis, mesh), key]
    for f0 in range(0, nf, fc):
        freqs = np.arange(f0, min(nf, f0 + fc), dtype=np.int32)
        valid = freqs.shape[0]
        broadcast[1] = np.concatenate([freqs, np.zeros((fc - valid,), np.int32)])
        wrong = parallel.sweep(fn, (x_dev, y_dev), broadcast, batch_size=bs, mesh=mesh, with_index=True)
        errors[f0:f0 + valid] += wrong[:, :valid].sum(axis=0)
        if per_image:
            wrong_all[:, f0:f0 + valid] = wrong[:, :valid]
        logger.debug("heat map: %d / %d frequencies", f0 + valid, nf)
    rates = (errors / n).reshape(h, w)
    return (rates, wrong_all.reshape(n, h, w)) if per_image else rates
