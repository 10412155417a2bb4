"""Analyses of what a trained model uses: LFC/HFC predictions, accuracy vs radius, Fourier
sensitivity heat maps, spectra of adversarial perturbations and occlusion maps.

Every sweep here is one compiled, batched call per chunk of images (and, for heat maps, per
chunk of frequencies) instead of a Python loop over images, radii or frequencies, run by
:func:`jaxhfc.parallel.sweep`: with a ``mesh`` (a 1-D :class:`jax.sharding.Mesh` with axis
``"data"``, see :func:`jaxhfc.parallel.make_mesh`) the images of each chunk are sharded
over the devices; the last chunk is padded and the padding dropped, so each image counts
exactly once, and results equal the unsharded ones (also with several processes, each
passing the same full arrays). The arrays of a
``logits_fn`` (the bound arguments of a ``jax.tree_util.Partial``, e.g. the model variables
of :func:`jaxhfc.train.logits_fn`) are arguments of the compiled sweeps, replicated over the
mesh, never constants; sweeps are cached on the rest of ``logits_fn`` (its function and
non-array leaves, :func:`jaxhfc.parallel.split_callable`), the mesh and static settings, so
the same model with other parameters (e.g. smoothed kernels) reuses one compiled program.

Conventions (see ``docs/architecture.md``):

* ``images`` arguments named ``images`` are the dataset's ``(N, H, W, C)`` 0..255 pixels
  (uint8 or float); the filters run on that scale, as in the paper's code.
* ``x`` arguments are unit-scale model inputs: ``(N, H, W, C)`` float32 in [0, 1].
* A ``logits_fn`` is a jittable ``x: (B, H, W, C) unit scale -> logits (B, K)`` whose
  examples are independent (eval mode), e.g. :func:`jaxhfc.train.logits_fn`.
* Filtered images become model inputs with ``scaling``: ``"paper"`` (the released code,
  the default) divides each filtered image by its own maximum over (H, W, C), and gives an
  all-zero input where that maximum is ``<= EMPTY_IMAGE_MAX`` (e.g. the LFC at r=0);
  ``"unit"`` divides by 255. Original images are always divided by 255. This is the rule of
  :func:`jaxhfc.datasets.to_model_input`, applied on the device.

Public API:

* :func:`prediction_counts`, :func:`cell_indices`, :data:`COUNT_COLUMNS` -- the paper's
  Fig. 1/2 counts of {LFC right/wrong} x {HFC right/wrong}.
* :func:`radius_predictions` (jitted, ``logits_fn``): predictions on LFC/HFC versions at many radii.
* :func:`accuracy_vs_radius`, :func:`crossing_point`,
  :func:`ring_edges`, :func:`ring_accuracy`.
* :func:`fourier_heatmap`, :func:`heatmap_signs`, :func:`heatmap_perturbation`
  (Yin et al. 2019).
* :func:`perturbation_spectrum`, :func:`energy_share_outside`, :func:`pgd_perturbations`.
* :func:`occlusion_map` (Zeiler and Fergus 2014).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc import fourier, parallel
from jaxhfc.parallel import DATA_AXIS, join_callable, split_callable

__all__ = [
    "SCALINGS",
    "EMPTY_IMAGE_MAX",
    "COUNT_COLUMNS",
    "prediction_counts",
    "cell_indices",
    "radius_predictions",
    "accuracy_vs_radius",
    "crossing_point",
    "ring_edges",
    "ring_accuracy",
    "heatmap_signs",
    "heatmap_perturbation",
    "fourier_heatmap",
    "perturbation_spectrum",
    "energy_share_outside",
    "pgd_perturbations",
    "occlusion_positions",
    "occlusion_map",
]

logger = logging.getLogger(__name__)

LogitsFn = Callable[[jax.Array], jax.Array]

#: Scalings of filtered images into model inputs (see the module docstring).
SCALINGS = ("paper", "unit")
#: A filtered image whose maximum is at most this (0..255 grey levels) counts as empty and
#: becomes an all-zero input under ``scaling="paper"`` (same rule as ``datasets.to_model_input``).
EMPTY_IMAGE_MAX = 1e-3

#: ``(key, label)`` of the counts in the paper's Fig. 1/2 table, in display order.
COUNT_COLUMNS = (
    ("low_right_high_wrong", "LFC right, HFC wrong"),
    ("low_wrong_high_right", "LFC wrong, HFC right"),
    ("both_right", "both right"),
    ("both_wrong", "both wrong"),
    ("low_right", "LFC right"),
    ("high_right", "HFC right"),
)


# --------------------------------------------------------------------------------------
# Validation and chunked execution helpers
# --------------------------------------------------------------------------------------


def _check_scaling(scaling: str) -> str:
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    return scaling


def _check_nhwc(a, name: str, *, float_only: bool = False) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 4:
        raise ValueError(f"{name} must have shape (N, H, W, C), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image")
    kind = a.dtype.kind
    if float_only and kind != "f":
        raise ValueError(f"{name} must be a float array (unit scale), got dtype {a.dtype}")
    if kind not in "uif":
        raise ValueError(f"{name} must be uint8 or float, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


def _check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an int array of shape ({n},), got {y.dtype} {y.shape}")
    return y.astype(np.int32)


def _check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


def _check_mesh(mesh: Optional[Mesh]) -> Optional[Mesh]:
    if mesh is not None and tuple(mesh.axis_names) != (DATA_AXIS,):
        raise ValueError(f"mesh must be 1-D with axis {DATA_AXIS!r}, got axes {mesh.axis_names}")
    return mesh


#: Compiled sweeps are cached per (spec of logits_fn, static settings), where the spec
#: (:func:`jaxhfc.parallel.split_callable`) is ``logits_fn`` without its arrays: calling an
#: analysis again with a ``logits_fn`` of the same function and structure (any parameter
#: values) and the same shapes does not recompile. The cache holds no parameters, only
#: references to the functions (and any non-array leaves) of the last few ``logits_fn``.
_CACHE_SIZE = 8


def _body(builder: Callable, logits_fn: LogitsFn, *static) -> tuple[Callable, list]:
    """``builder(spec, *static)`` (cached when the spec is hashable, so that
    :func:`jaxhfc.parallel.sweep` reuses its compiled program) and the arrays of
    ``logits_fn``, to pass as the first broadcast argument."""
    arrays, spec = split_callable(logits_fn)
    try:
        hash(spec)
    except TypeError:  # an unhashable non-array leaf: compile without the cache
        return builder.__wrapped__(spec, *static), arrays
    return builder(spec, *static), arrays


def _on_devices(a, mesh: Optional[Mesh]):
    """A host array placed whole (replicated over ``mesh``), for sweeps that read it many times."""
    return jnp.asarray(a) if mesh is None else parallel.global_from_full(mesh, a)


def _scale_filtered(z: jax.Array, scaling: str) -> jax.Array:
    """0..255 filtered images ``(..., H, W, C)`` -> unit-scale model input (jittable)."""
    if scaling == "unit":
        return z / 255.0
    peak = jnp.max(z, axis=(-3, -2, -1), keepdims=True)
    empty = peak <= EMPTY_IMAGE_MAX
    return jnp.where(empty, 0.0, z / jnp.where(empty, 1.0, peak)).astype(z.dtype)


def _argmax(logits: jax.Array) -> jax.Array:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


# --------------------------------------------------------------------------------------
# Prediction counts (paper Fig. 1/2)
# --------------------------------------------------------------------------------------


def prediction_counts(pred_low, pred_high, labels, *, pred_orig=None) -> dict[str, Any]:
    """Counts of test images in each cell of {LFC right, wrong} x {HFC right, wrong}.

    Args:
      pred_low: ``(N,)`` or ``(R, N)`` int predictions on the LFC versions (``R`` radii).
      pred_high: same shape as ``pred_low``, predictions on the HFC versions.
      labels: ``(N,)`` int true labels.
      pred_orig: optional ``(N,)`` int predictions on the original images; adds the same
        four cells with "right" meaning "agrees with the original prediction".

    Returns:
      dict of int64 numpy arrays of shape ``pred_low.shape[:-1]`` (scalars for 1-D input):
      ``low_right_high_wrong``, ``low_wrong_high_right``, ``both_right``, ``both_wrong``
      (these four add up to ``N``), ``low_right``, ``high_right``, and ``n`` (int). With
      ``pred_orig``: ``orig_right`` (int) and ``agree_low_only``, ``agree_high_only``,
      ``agree_both``, ``agree_neither`` (adding up to ``N``), ``low_agree``, ``high_agree``.

    Raises:
      ValueError: mismatched shapes or non-integer predictions.
    """
    lo, hi = np.asarray(pred_low), np.asarray(pred_high)
    if lo.shape != hi.shape or lo.ndim not in (1, 2):
        raise ValueError(
            f"pred_low and pred_high must have one shape (N,) or (R, N); got {lo.shape} and {hi.shape}"
        )
    if lo.dtype.kind not in "iu" or hi.dtype.kind not in "iu":
        raise ValueError(f"predictions must be int labels, got {lo.dtype} and {hi.dtype}")
    n = lo.shape[-1]
    y = _check_labels(labels, n)

    def cells(a_ok, b_ok, prefix_a, prefix_b, names):
        return {
            names[0]: np.sum(a_ok & ~b_ok, axis=-1),
            names[1]: np.sum(~a_ok & b_ok, axis=-1),
            names[2]: np.sum(a_ok & b_ok, axis=-1),
            names[3]: np.sum(~a_ok & ~b_ok, axis=-1),
            prefix_a: np.sum(a_ok, axis=-1),
            prefix_b: np.sum(b_ok, axis=-1),
        }

    out = cells(lo == y, hi == y, "low_right", "high_right",
                ("low_right_high_wrong", "low_wrong_high_right", "both_right", "both_wrong"))
    out["n"] = int(n)
    if pred_orig is not None:
        po = np.asarray(pred_orig)
        if po.shape != (n,) or po.dtype.kind not in "iu":
            raise ValueError(f"pred_orig must be an int array of shape ({n},), got {po.dtype} {po.shape}")
        out.update(cells(lo == po, hi == po, "low_agree", "high_agree",
                         ("agree_low_only", "agree_high_only", "agree_both", "agree_neither")))
        out["orig_right"] = int(np.sum(po == y))
    return out


_CELLS = {
    "low_right_high_wrong": lambda a, b: a & ~b,
    "low_wrong_high_right": lambda a, b: ~a & b,
    "both_right": lambda a, b: a & b,
    "both_wrong": lambda a, b: ~a & ~b,
}


def cell_indices(pred_low, pred_high, labels, cell: str = "low_wrong_high_right") -> np.ndarray:
    """Indices of the images in one cell of :func:`prediction_counts` (one radius).

    Args:
      pred_low, pred_high, labels: ``(N,)`` int arrays.
      cell: ``"low_wrong_high_right"`` (the paper's examples: the HFC is classified right,
        the LFC wrong), ``"low_right_high_wrong"``, ``"both_right"`` or ``"both_wrong"``.

    Returns:
      ``(M,)`` int64 increasing indices.
    """
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {tuple(_CELLS)}, got {cell!r}")
    lo, hi = np.asarray(pred_low), np.asarray(pred_high)
    if lo.ndim != 1 or lo.shape != hi.shape:
        raise ValueError(f"pred_low and pred_high must be (N,) arrays, got {lo.shape} and {hi.shape}")
    y = _check_labels(labels, lo.shape[0])
    return np.flatnonzero(_CELLS[cell](lo == y, hi == y))


# --------------------------------------------------------------------------------------
# Predictions on filtered images
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Accuracy vs radius, band-pass rings
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Fourier sensitivity heat maps (Yin et al. 2019)
# --------------------------------------------------------------------------------------


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
) -> np.ndarray:
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

    Returns:
      ``(H, W)`` float64 numpy error rates in [0, 1], indexed like the shifted spectrum.
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
        logger.debug("heat map: %d / %d frequencies", f0 + valid, nf)
    return (errors / n).reshape(h, w)


# --------------------------------------------------------------------------------------
# Spectra of perturbations
# --------------------------------------------------------------------------------------


def perturbation_spectrum(delta, *, reduce: str = "mean", batch_size: int = 2000) -> np.ndarray:
    """Radial power spectrum of perturbations, averaged over images.

    Args:
      delta: ``(N, H, W, C)`` float perturbations (e.g. ``x_adv - x``).
      reduce: ``"mean"`` (radially averaged: power per frequency in each ring) or ``"sum"``
        (power per ring; the rings add up to the mean energy ``mean_n sum(delta_n**2)``).
      batch_size: images per FFT call.

    Returns:
      ``(K,)`` float64, ``K = floor(corner) + 1`` rings ``k <= distance < k + 1``
      (:func:`jaxhfc.fourier.radial_power_spectrum`).
    """
    delta = _check_nhwc(delta, "delta", float_only=True)
    bs = _check_batch_size(batch_size)
    total = None
    for start in range(0, delta.shape[0], bs):
        s = np.asarray(fourier.radial_power_spectrum(delta[start:start + bs], reduce=reduce), np.float64)
        s = s.sum(axis=0)
        total = s if total is None else total + s
    return total / delta.shape[0]


@jax.jit
def _power_outside(delta, radii):
    h, w = delta.shape[-3], delta.shape[-2]
    spec = jnp.fft.fft2(jnp.moveaxis(delta, -1, -3), axes=(-2, -1))
    power = (jnp.abs(spec) ** 2).sum(axis=-3) / (h * w)  # (B, H, W), unshifted
    dist = jnp.asarray(np.fft.ifftshift(fourier.distance_grid(h, w)).astype(np.float32))
    outside = (dist[None] >= radii[:, None, None]).astype(jnp.float32)  # (R, H, W)
    return jnp.einsum("bhw,rhw->rb", power, outside), power.sum(axis=(-2, -1))


def energy_share_outside(delta, radii=None, *, batch_size: int = 2000) -> dict[str, np.ndarray]:
    """Share of perturbation energy at frequencies with ``distance >= r`` (the HFC at ``r``).

    Args:
      delta: ``(N, H, W, C)`` float perturbations.
      radii: 1-D radii (default ``0, 1, ..., ceil(corner)``).
      batch_size: images per FFT call.

    Returns:
      ``{"radii": (R,), "share_mean": (R,)`` mean over images of each image's share (an
      all-zero perturbation counts as 0), ``"share_pooled": (R,)`` energy outside ``r`` of
      all images over their total energy, ``"energy_mean": float`` mean ``sum(delta**2)``}.
    """
    delta = _check_nhwc(delta, "delta", float_only=True)
    radii = _default_radii(*delta.shape[1:3]) if radii is None else _check_radii(radii)
    bs = _check_batch_size(batch_size)
    share_sum = np.zeros(len(radii))
    out_sum = np.zeros(len(radii))
    energy_sum = 0.0
    r_dev = jnp.asarray(radii)
    for start in range(0, delta.shape[0], bs):
        outside, energy = _power_outside(jnp.asarray(delta[start:start + bs]), r_dev)
        outside, energy = np.asarray(outside, np.float64), np.asarray(energy, np.float64)
        share_sum += np.where(energy > 0, outside / np.where(energy > 0, energy, 1.0), 0.0).sum(axis=1)
        out_sum += outside.sum(axis=1)
        energy_sum += energy.sum()
    n = delta.shape[0]
    return {
        "radii": radii,
        "share_mean": share_sum / n,
        "share_pooled": out_sum / energy_sum if energy_sum > 0 else np.zeros(len(radii)),
        "energy_mean": energy_sum / n,
    }


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _pgd_fn(spec, eps, step_size, steps, norm, random_start) -> Callable:
    from jaxhfc import attacks  # lazy: only this wrapper needs it

    def body(arrays, k, xb, yb, idx):
        logits_fn = join_callable(spec, arrays)
        keys = jax.vmap(lambda i: jax.random.fold_in(k, i))(idx)
        x_adv, success = attacks.pgd(logits_fn, xb, yb, keys, eps=eps, step_size=step_size, steps=steps,
                                     norm=norm, random_start=random_start)
        return x_adv - xb, success

    return body


def pgd_perturbations(
    logits_fn: LogitsFn,
    x,
    y,
    key: jax.Array,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    batch_size: int = 500,
    mesh: Optional[Mesh] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """PGD perturbations ``delta = x_adv - x`` of a whole array (for :func:`perturbation_spectrum`).

    Calls :func:`jaxhfc.attacks.pgd` per chunk with per-example keys
    ``fold_in(key, image_index)``, so the result does not depend on chunking or sharding.

    Args:
      logits_fn: jittable logits function.
      x: ``(N, H, W, C)`` float unit-scale images; ``y``: ``(N,)`` int labels.
      key: PRNG key; eps, step_size, steps, norm, random_start: as in ``attacks.pgd``.
      batch_size, mesh: as elsewhere in this module.

    Returns:
      ``(delta (N, H, W, C) float32, success (N,) bool)``.
    """
    x = _check_nhwc(x, "x", float_only=True)
    n = x.shape[0]
    yv = _check_labels(y, n, "y")

    fn, arrays = _body(_pgd_fn, logits_fn, float(eps), float(step_size), int(steps), norm, bool(random_start))
    return parallel.sweep(fn, (x, yv), (arrays, key), batch_size=_check_batch_size(batch_size),
                          mesh=_check_mesh(mesh), with_index=True)


# --------------------------------------------------------------------------------------
# Occlusion sensitivity (Zeiler and Fergus 2014)
# --------------------------------------------------------------------------------------


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
