"""Evaluation of a trained model: mean loss and accuracy, predictions, a logits function,
and the names of the filtered evaluation sets in ``metrics.jsonl``.

Everything runs data-parallel through :func:`jaxhfc.parallel.sweep` (padded, sharded over
``"data"``, every example counted once; multi-host safe).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxhfc import parallel
from jaxhfc.step import TrainState

__all__ = ["EVAL_KINDS", "eval_set_name", "evaluate", "predict", "logits_fn"]


#: Kinds of filtered evaluation sets (:func:`eval_set_name`).
EVAL_KINDS = ("test_low", "test_high", "train_low")


def eval_set_name(kind: str, radius: float) -> str:
    """Name of a filtered evaluation set in ``metrics.jsonl``: ``kind`` and the radius, an
    integer radius without decimals and a point written ``p``.

    >>> eval_set_name("test_low", 12.0), eval_set_name("test_high", 12.5), eval_set_name("train_low", 4)
    ('test_low_12', 'test_high_12p5', 'train_low_4')
    """
    if kind not in EVAL_KINDS:
        raise ValueError(f"kind must be one of {EVAL_KINDS}; got {kind!r}")
    r = float(radius)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"radius must be a finite number >= 0; got {radius!r}")
    return f"{kind}_{int(r) if r.is_integer() else repr(r).replace('.', 'p')}"


@functools.lru_cache(maxsize=64)
def _eval_rows(model: nn.Module, with_logits: bool) -> Callable[..., dict[str, jax.Array]]:
    """Per-example evaluation of a batch (the function :func:`parallel.sweep` maps)."""

    def rows(variables: Any, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        logits = model.apply(variables, x, train=False)
        out = {"loss": optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y),
               "pred": jnp.argmax(logits, -1).astype(jnp.int32)}
        if with_logits:
            out["logits"] = logits.astype(jnp.float32)
        return out

    return rows


def _run_eval(state: TrainState | Mapping[str, Any], model: nn.Module, mesh: Mesh | None, x: Any, y: Any, *,
              batch_size: int, with_logits: bool) -> dict[str, np.ndarray]:
    variables = state.variables() if isinstance(state, TrainState) else dict(state)
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"x must be (N, H, W, C) unit-scale float; got shape {getattr(x, 'shape', None)}")
    n = int(x.shape[0])
    if y is None:
        y = np.zeros((n,), np.int32)
    if int(np.shape(y)[0]) != n:
        raise ValueError(f"x and y must have the same length; got {n} and {np.shape(y)[0]}")
    if not isinstance(x, jax.Array):
        x = np.asarray(x, np.float32)
    if not isinstance(y, jax.Array):
        y = np.asarray(y, np.int32)
    return parallel.sweep(_eval_rows(model, with_logits), (x, y), (variables,), batch_size=batch_size, mesh=mesh)


def evaluate(state: TrainState | Mapping[str, Any], model: nn.Module, mesh: Mesh | None, x: Any, y: Any, *,
             batch_size: int = 1000) -> dict[str, float]:
    """Mean loss and accuracy of a model on a whole array, data-parallel.

    Runs through :func:`jaxhfc.parallel.sweep` (multi-host safe: every process passes the
    same full arrays and gets the same numbers).

    Args:
        state: A :class:`TrainState` or a variables dict (``params``, optional ``batch_stats``).
        model: The model.
        mesh: 1-D mesh over ``"data"`` (None: the default device).
        x: (N, H, W, C) float32 unit-scale images (numpy, or a jax array, e.g. placed once
            on the mesh with :func:`parallel.global_from_full`; then it is not copied again).
        y: (N,) int labels.
        batch_size: Global evaluation batch (rounded up to a multiple of the device count);
            the last batch is padded and the padding dropped, so each example counts once.

    Returns:
        ``{"loss": mean cross entropy, "accuracy": fraction correct, "n": N}`` (sums in float64).
    """
    out = _run_eval(state, model, mesh, x, y, batch_size=batch_size, with_logits=False)
    n = int(x.shape[0])
    labels = parallel.to_host(y) if isinstance(y, jax.Array) else np.asarray(y)
    return {"loss": float(np.sum(out["loss"], dtype=np.float64) / n),
            "accuracy": float(np.sum(out["pred"] == labels) / n), "n": n}


def predict(state: TrainState | Mapping[str, Any], model: nn.Module, mesh: Mesh | None, x: Any, *,
            batch_size: int = 1000, return_logits: bool = False) -> Any:
    """Per-example predicted labels (and logits), data-parallel, in input order.

    Args:
        state, model, mesh, x, batch_size: As in :func:`evaluate`.
        return_logits: Also return the logits.

    Returns:
        ``pred: (N,) int32``, or ``(pred, logits: (N, num_classes) float32)``.
    """
    out = _run_eval(state, model, mesh, x, None, batch_size=batch_size, with_logits=return_logits)
    return (out["pred"], out["logits"]) if return_logits else out["pred"]


@functools.lru_cache(maxsize=64)
def _eval_apply(model: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
    def apply(variables: Any, x: jax.Array) -> jax.Array:
        return model.apply(variables, x, train=False)

    return apply


def logits_fn(state: TrainState | Mapping[str, Any], model: nn.Module) -> Callable[[jax.Array], jax.Array]:
    """``x: (B, H, W, C) unit scale -> logits (B, num_classes)`` in eval mode (jittable).

    Returns a ``jax.tree_util.Partial`` whose arguments are the variables: passed to a jitted
    attack or analysis, the parameters stay program arguments (not constants), and one
    compiled program serves every set of parameters of the same model (e.g. smoothed kernels).
    """
    variables = state.variables() if isinstance(state, TrainState) else dict(state)
    return jax.tree_util.Partial(_eval_apply(model), variables)

