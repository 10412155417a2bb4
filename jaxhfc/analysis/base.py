"""Shared pieces of the analyses: argument checks, the cached per-batch programs, the paper's
scaling of filtered images inside a program.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc import parallel
from jaxhfc.datasets.transforms import EMPTY_IMAGE_MAX, SCALINGS
from jaxhfc.parallel import DATA_AXIS, split_callable


LogitsFn = Callable[[jax.Array], jax.Array]

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
