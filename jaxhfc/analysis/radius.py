"""Predictions on the LFC/HFC versions of a set at many radii in one compiled sweep, accuracy
versus radius with the crossing point, and accuracy on band-pass rings.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc import fourier, parallel
from jaxhfc.parallel import join_callable
from jaxhfc.analysis.base import LogitsFn, _CACHE_SIZE, _argmax, _body, _check_batch_size, _check_labels, _check_mesh, _check_nhwc, _check_scaling, _scale_filtered
from jaxhfc.analysis.counts import prediction_counts


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _components_fn(spec, make_components, scaling: str) -> Callable:
    def body(arrays, extra, x):
        logits_fn = join_callable(spec, arrays)
        comps = _scale_filtered(make_components(x, *extra), scaling)
        pred_orig = _argmax(logits_fn(x / 255.0))
        preds = jax.lax.map(lambda c: _argmax(logits_fn(c)), comps)  # (M, B): one radius at a time
        return preds.T, pred_orig

    return body


def _component_predictions(
    logits_fn: LogitsFn,
    images: np.ndarray,
    make_components: Callable[..., jax.Array],
    extra: tuple,
    *,
    scaling: str,
    batch_size: int,
    mesh: Optional[Mesh],
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions on ``M`` filtered components of every image, one compiled call per chunk.

    ``make_components(x, *extra)``: ``(B, H, W, C)`` 0..255 -> ``(M, B, H, W, C)`` 0..255.
    Returns ``(preds (M, N) int32, pred_orig (N,) int32)``.
    """

    fn, arrays = _body(_components_fn, logits_fn, make_components, scaling)
    preds, orig = parallel.sweep(fn, (images,), (arrays, tuple(extra)), batch_size=_check_batch_size(batch_size),
                                 mesh=_check_mesh(mesh))
    return np.ascontiguousarray(preds.T), orig


def _check_radii(radii) -> np.ndarray:
    r = np.asarray(radii, dtype=np.float64)
    if r.ndim == 0:
        r = r[None]
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"radii must be a non-empty 1-D array of finite numbers >= 0, got {radii!r}")
    return r.astype(np.float32)


def _default_radii(h: int, w: int) -> np.ndarray:
    """0, 1, ..., ceil(corner): the last radius keeps every frequency (HFC = 0)."""
    return np.arange(0, math.floor(fourier.corner_radius(h, w)) + 2, dtype=np.float32)


def _low_high(x, radii):
    low = fourier.low_pass(x, radii)  # one forward FFT for every radius
    return jnp.concatenate([low, x[None] - low], axis=0)


def radius_predictions(
    logits_fn: LogitsFn,
    images,
    radii=None,
    *,
    scaling: str = "paper",
    batch_size: int = 500,
    mesh: Optional[Mesh] = None,
) -> dict[str, np.ndarray]:
    """Predictions on the original, LFC and HFC versions of every image at every radius.

    One compiled call per chunk of ``batch_size`` images filters the chunk at all radii
    (one forward FFT), scales each filtered image (``scaling``) and runs the model on each
    radius in turn (``lax.map``, so memory grows with ``batch_size``, not with ``R``).

    Args:
      logits_fn: jittable ``(B, H, W, C) unit scale -> (B, K)`` logits.
      images: ``(N, H, W, C)`` uint8 or float, 0..255 scale.
      radii: 1-D radii (default ``0, 1, ..., ceil(corner)``, 0..23 for 32x32).
      scaling: ``"paper"`` or ``"unit"`` (see the module docstring).
      batch_size: images per compiled call (rounded up to a multiple of the device count).
      mesh: optional 1-D ``"data"`` mesh; images are sharded over it.

    Returns:
      ``{"radii": (R,) float32, "pred_low": (R, N) int32, "pred_high": (R, N) int32,
      "pred_orig": (N,) int32}``.
    """
    scaling = _check_scaling(scaling)
    images = _check_nhwc(images, "images")
    radii = _default_radii(*images.shape[1:3]) if radii is None else _check_radii(radii)
    preds, orig = _component_predictions(
        logits_fn, images, _low_high, (radii,), scaling=scaling, batch_size=batch_size, mesh=mesh
    )
    r = len(radii)
    return {"radii": radii, "pred_low": preds[:r], "pred_high": preds[r:], "pred_orig": orig}


@jax.jit
def _unit_original(x):
    return x / 255.0


_split_scaled = jax.jit(
    lambda x, radii, scaling: _scale_filtered(_low_high(x, radii), scaling), static_argnums=2
)




def crossing_point(radii, acc_low, acc_high) -> Optional[float]:
    """First radius where the LFC curve meets the HFC curve.

    With ``d = acc_low - acc_high``: the first grid radius where ``d == 0``, or the first
    sign change of ``d`` between consecutive radii, linearly interpolated
    (``r_i + (r_{i+1} - r_i) * d_i / (d_i - d_{i+1})``); ``None`` if ``d`` never changes sign.

    Args:
      radii: ``(R,)`` increasing radii.
      acc_low, acc_high: ``(R,)`` accuracies.

    Returns:
      The crossing radius (float) or ``None``.
    """
    r = np.asarray(radii, np.float64)
    d = np.asarray(acc_low, np.float64) - np.asarray(acc_high, np.float64)
    if r.ndim != 1 or d.shape != r.shape:
        raise ValueError(f"radii, acc_low and acc_high must be 1-D of one length, got {r.shape}, {d.shape}")
    if np.any(np.diff(r) <= 0):
        raise ValueError("radii must be strictly increasing")
    for i in range(len(d)):
        if d[i] == 0:
            return float(r[i])
        if i + 1 < len(d) and d[i] * d[i + 1] < 0:
            return float(r[i] + (r[i + 1] - r[i]) * d[i] / (d[i] - d[i + 1]))
    return None


def accuracy_vs_radius(
    logits_fn: LogitsFn,
    images,
    labels,
    radii=None,
    *,
    scaling: str = "paper",
    batch_size: int = 500,
    mesh: Optional[Mesh] = None,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Test accuracy on the LFC and HFC versions at every radius (paper's curves).

    One compiled call per chunk of images covers all radii (see :func:`radius_predictions`).

    Args:
      logits_fn, images, radii, scaling, batch_size, mesh: as in :func:`radius_predictions`.
      labels: ``(N,)`` int labels.
      return_predictions: also return the ``pred_*`` arrays.

    Returns:
      dict with ``radii (R,)``, ``acc_low (R,)``, ``acc_high (R,)`` (float64 numpy),
      ``acc_orig`` (float), ``crossing`` (:func:`crossing_point` of the two curves, or
      ``None``), ``counts`` (:func:`prediction_counts` with the original predictions) and
      ``n``; with ``return_predictions`` also ``pred_low``, ``pred_high``, ``pred_orig``.
    """
    images = _check_nhwc(images, "images")
    y = _check_labels(labels, images.shape[0])
    p = radius_predictions(logits_fn, images, radii, scaling=scaling, batch_size=batch_size, mesh=mesh)
    acc_low = np.mean(p["pred_low"] == y, axis=1)
    acc_high = np.mean(p["pred_high"] == y, axis=1)
    out = {
        "radii": p["radii"],
        "acc_low": acc_low,
        "acc_high": acc_high,
        "acc_orig": float(np.mean(p["pred_orig"] == y)),
        "crossing": crossing_point(p["radii"], acc_low, acc_high) if len(p["radii"]) > 1 else None,
        "counts": prediction_counts(p["pred_low"], p["pred_high"], y, pred_orig=p["pred_orig"]),
        "n": int(y.shape[0]),
    }
    if return_predictions:
        out.update({k: p[k] for k in ("pred_low", "pred_high", "pred_orig")})
    return out


def ring_edges(h: int, w: int, *, width: float) -> np.ndarray:
    """Ring edges ``0, width, 2 * width, ...`` up to the first edge beyond the corner.

    Rings ``[edges[k], edges[k + 1])`` then cover every frequency of an ``h x w`` image.

    Returns:
      ``(E,)`` float32 edges, ``E >= 2``.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    corner = fourier.corner_radius(h, w)
    k = math.floor(corner / width) + 1  # edges[k] = k * width > corner
    return (np.arange(k + 1, dtype=np.float64) * width).astype(np.float32)


def _rings(x, edges):
    low = fourier.low_pass(x, edges)
    return low[1:] - low[:-1]


def ring_accuracy(
    logits_fn: LogitsFn,
    images,
    labels,
    *,
    width: Optional[float] = None,
    edges=None,
    scaling: str = "paper",
    batch_size: int = 500,
    mesh: Optional[Mesh] = None,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Accuracy on band-pass versions of the images (annuli ``[edges[k], edges[k+1])``).

    Args:
      logits_fn, images, labels, scaling, batch_size, mesh: as in :func:`accuracy_vs_radius`.
      width: ring width; edges default to :func:`ring_edges` ``(H, W, width=width)``.
      edges: explicit increasing edges (instead of ``width``).
      return_predictions: also return ``pred_ring (K, N)`` and ``pred_orig (N,)``.

    Returns:
      ``{"r_in": (K,), "r_out": (K,), "acc": (K,) float64, "acc_orig": float, "n": int}``.
    """
    scaling = _check_scaling(scaling)
    images = _check_nhwc(images, "images")
    y = _check_labels(labels, images.shape[0])
    if (width is None) == (edges is None):
        raise ValueError("give exactly one of width and edges")
    edges = ring_edges(*images.shape[1:3], width=width) if edges is None else _check_radii(edges)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be >= 2 increasing radii, got {edges.tolist()}")
    preds, orig = _component_predictions(
        logits_fn, images, _rings, (edges,), scaling=scaling, batch_size=batch_size, mesh=mesh
    )
    out = {
        "r_in": edges[:-1],
        "r_out": edges[1:],
        "acc": np.mean(preds == y, axis=1),
        "acc_orig": float(np.mean(orig == y)),
        "n": int(y.shape[0]),
    }
    if return_predictions:
        out.update(pred_ring=preds, pred_orig=orig)
    return out
