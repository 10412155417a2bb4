"""Occlusion sensitivity (Zeiler and Fergus 2014): the drop in the true class's probability
when a patch is greyed out, per position.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc import parallel
from jaxhfc.parallel import join_callable
from jaxhfc.analysis.base import LogitsFn, _CACHE_SIZE, _body, _check_batch_size, _check_labels, _check_mesh, _check_nhwc


def _pair(v, name: str) -> tuple[int, int]:
    t = (v, v) if np.ndim(v) == 0 else tuple(v)
    if len(t) != 2 or any(int(a) != a or int(a) < 1 for a in t):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return int(t[0]), int(t[1])


def occlusion_positions(h: int, w: int, *, patch, stride) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of the occluding patch: rows ``0, s, ..., <= H - patch`` (same for columns).

    Returns:
      ``(rows (nh,), cols (nw,))`` int arrays.
    """
    ph, pw = _pair(patch, "patch")
    sh, sw = _pair(stride, "stride")
    if ph > h or pw > w:
        raise ValueError(f"patch {ph}x{pw} is larger than the image {h}x{w}")
    return np.arange(0, h - ph + 1, sh), np.arange(0, w - pw + 1, sw)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _occlusion_fn(spec) -> Callable:
    def body(arrays, m, fill, xb, yb):
        logits_fn = join_callable(spec, arrays)
        npos = m.shape[0]
        occluded = xb[None] * (1.0 - m[:, None]) + fill * m[:, None]  # (P, B, H, W, C)
        logits = logits_fn(occluded.reshape((-1,) + xb.shape[1:])).reshape(npos, xb.shape[0], -1)
        prob = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        true = jnp.take_along_axis(prob, jnp.broadcast_to(yb[None, :, None], (npos, yb.shape[0], 1)), axis=-1)
        return jnp.moveaxis(true[..., 0], 0, 1)  # (B, P)

    return body


def occlusion_map(
    logits_fn: LogitsFn,
    x,
    y,
    *,
    patch,
    stride,
    fill: float = 0.5,
    batch_size: int = 32,
    mesh: Optional[Mesh] = None,
) -> np.ndarray:
    """Probability of the true class as a ``fill``-valued patch slides over each image.

    All patch positions of a chunk of images are one compiled call (``nh * nw * batch_size``
    model inputs at once).

    Args:
      logits_fn: jittable logits function.
      x: ``(N, H, W, C)`` float unit-scale images; y: ``(N,)`` int labels.
      patch: patch size (int or ``(ph, pw)``); stride: int or pair.
      fill: value of the patch (0.5: grey).
      batch_size, mesh: as elsewhere in this module.

    Returns:
      ``(N, nh, nw)`` float32: ``softmax(logits)[y]`` with the patch's top-left corner at
      ``(rows[i], cols[j])`` of :func:`occlusion_positions`.
    """
    x = _check_nhwc(x, "x", float_only=True)
    n, h, w, _ = x.shape
    yv = _check_labels(y, n, "y")
    rows, cols = occlusion_positions(h, w, patch=patch, stride=stride)
    ph, pw = _pair(patch, "patch")
    masks = np.zeros((rows.size, cols.size, h, w, 1), np.float32)
    for a, r0 in enumerate(rows):
        for b, c0 in enumerate(cols):
            masks[a, b, r0:r0 + ph, c0:c0 + pw] = 1.0
    masks = masks.reshape((-1, h, w, 1))
    fn, arrays = _body(_occlusion_fn, logits_fn)
    out = parallel.sweep(fn, (x, yv), (arrays, masks, np.float32(fill)), batch_size=_check_batch_size(batch_size),
                         mesh=_check_mesh(mesh))
    return out.reshape(n, rows.size, cols.size)
