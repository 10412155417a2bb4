"""The device-side input pipeline: pure, jittable functions of a key.

The whole split lives on the accelerator(s) as one unit-scale float32 array (CIFAR-10 train:
50,000 x 32 x 32 x 3 x 4 B = 614 MB), replicated on every device, with its labels. Per epoch,
:func:`epoch_indices` draws a permutation on device from a key and cuts it into
``(steps, global_batch)`` index batches (last partial batch dropped); the train engine shards
each row of indices over the ``'data'`` mesh axis, and every device gathers its own rows
(:func:`gather_batch`), augments them (:func:`augment`: pad-4 random crop and horizontal flip,
per example), optionally mixes them (:func:`mixup`) and normalises them (:func:`normalize`)
inside the jitted step. No batch ever crosses the host. Evaluation uses :func:`eval_indices`:
the last batch is padded with index 0 and a ``False`` mask, so every example counts once.
``global_batch`` must be a multiple of the device count (the engine checks that).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxhfc.datasets.core import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["augment", "epoch_indices", "eval_indices", "gather_batch", "mixup", "normalize"]


def normalize(x, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD):
    """``(x - mean) / std`` per channel for unit-scale images (jittable).

    Args:
      x: ``(..., C)`` float images in [0, 1].
      mean, std: ``C`` values each.

    Returns:
      Same shape, ``x``'s float dtype.
    """
    x = jnp.asarray(x)
    mean = jnp.asarray(mean, dtype=x.dtype)
    std = jnp.asarray(std, dtype=x.dtype)
    return (x - mean) / std


def augment(key: jax.Array, x: jax.Array, *, crop_pad: int = 4, flip: bool = True) -> jax.Array:
    """Random crop after zero padding, and random horizontal flip, per example.

    Each example is zero-padded by ``crop_pad`` pixels on every side and a window of the
    original size is cut at a uniformly random offset in ``[0, 2 * crop_pad]`` per axis
    (the usual CIFAR "pad 4, crop 32"); then, if ``flip``, it is mirrored left-right with
    probability 1/2. Labels are untouched, so they stay aligned.

    Args:
      key: a JAX PRNG key (same key, same output).
      x: ``(B, H, W, C)`` float images.
      crop_pad: padding in pixels (0 disables cropping); static.
      flip: enable the horizontal flip; static.

    Returns:
      ``(B, H, W, C)``, ``x``'s dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"augment expects images (B, H, W, C), got shape {tuple(x.shape)}")
    if not isinstance(crop_pad, (int, np.integer)) or crop_pad < 0:
        raise ValueError(f"crop_pad must be an int >= 0, got {crop_pad!r}")
    b, h, w, c = x.shape
    k_crop, k_flip = jax.random.split(key)
    if crop_pad:
        p = int(crop_pad)
        xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * p + 1)
        x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(xp, offsets)
    if flip:
        mirror = jax.random.bernoulli(k_flip, 0.5, (b,))
        x = jnp.where(mirror[:, None, None, None], x[:, :, ::-1, :], x)
    return x


def mixup(key: jax.Array, x: jax.Array, y_onehot: jax.Array, *, alpha: float):
    """Mixup as in the paper's code: one ``lambda ~ Beta(alpha, alpha)`` per batch.

    ``x' = lam * x + (1 - lam) * x[perm]`` and ``y' = lam * y + (1 - lam) * y[perm]`` with
    a random permutation ``perm`` of the batch (the code used Beta(1, 1); the paper's text
    alpha = 0.5). Under ``shard_map`` the permutation is within each device's batch.

    Args:
      key: JAX PRNG key.
      x: ``(B, ...)`` float inputs.
      y_onehot: ``(B, K)`` float (one-hot or soft) targets.
      alpha: Beta parameter > 0 (static).

    Returns:
      ``(x_mixed, y_mixed)`` with the shapes and dtypes of the inputs.
    """
    if not isinstance(alpha, (int, float, np.number)) or not alpha > 0:
        raise ValueError(f"mixup alpha must be a number > 0, got {alpha!r}")
    if x.shape[0] != y_onehot.shape[0]:
        raise ValueError(f"mixup: x has {x.shape[0]} rows but y has {y_onehot.shape[0]}")
    k_lam, k_perm = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha)
    perm = jax.random.permutation(k_perm, x.shape[0])
    xm = lam.astype(x.dtype) * x + (1 - lam).astype(x.dtype) * x[perm]
    ym = lam.astype(y_onehot.dtype) * y_onehot + (1 - lam).astype(y_onehot.dtype) * y_onehot[perm]
    return xm, ym


def _check_batching(n, global_batch):
    for nm, v in (("n", n), ("global_batch", global_batch)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{nm} must be a positive int, got {v!r}")


def epoch_indices(key: jax.Array, n: int, global_batch: int) -> jax.Array:
    """One epoch of training index batches: a random permutation of ``range(n)``.

    Args:
      key: JAX PRNG key (e.g. ``fold_in(data_key, epoch)``).
      n: dataset size (static).
      global_batch: examples per step over all devices (static).

    Returns:
      ``(n // global_batch, global_batch)`` int32 on device; the last partial batch of
      the permutation (``n % global_batch`` examples) is dropped.

    Raises:
      ValueError: non-positive sizes, or ``global_batch > n`` (an epoch of zero steps).
    """
    _check_batching(n, global_batch)
    if global_batch > n:
        raise ValueError(f"global_batch={global_batch} exceeds the dataset size {n}")
    steps = n // global_batch
    perm = jax.random.permutation(key, n)[: steps * global_batch]
    return perm.reshape(steps, global_batch).astype(jnp.int32)


def eval_indices(n: int, global_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation index batches covering ``range(n)`` exactly once, in order.

    Returns:
      ``(idx, mask)``, both ``(ceil(n / global_batch), global_batch)``: ``idx`` int32, the
      positions ``0..n-1`` then index 0 as padding; ``mask`` bool, False on padding. Sum
      per-example metrics with the mask (and divide by ``n``).
    """
    _check_batching(n, global_batch)
    steps = -(-n // global_batch)
    flat = np.arange(steps * global_batch)
    mask = flat < n
    idx = np.where(mask, flat, 0).astype(np.int32)
    return idx.reshape(steps, global_batch), mask.reshape(steps, global_batch)


def gather_batch(images: jax.Array, labels: jax.Array, idx: jax.Array):
    """Rows ``idx`` of a device-resident split (jittable): ``(images[idx], labels[idx])``.

    Args:
      images: ``(N, H, W, C)`` unit-scale float32.
      labels: ``(N,)`` int32 (or ``(N, K)`` soft targets).
      idx: integer indices of any shape ``S``.

    Returns:
      ``(S + (H, W, C), S + labels.shape[1:])``.
    """
    return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)
