"""Input defences as logits functions: the low-pass filter before the model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


from jaxhfc.attacks.base import LogitsFn, _TINY


def _lowpass_apply(logits_fn, radius, x, *, rescale, clip):
    from jaxhfc import fourier  # imported lazily: no work at import of jaxhfc.attacks

    # ``radius``: a (1,) array, a program argument, so every radius shares one compiled attack
    low = fourier.low_pass(x, radius)[0]
    if rescale:
        m = jnp.max(low, axis=tuple(range(1, low.ndim)), keepdims=True)
        low = low / jnp.maximum(m, _TINY)
    if clip:
        low = jnp.clip(low, 0.0, 1.0)
    return logits_fn(low)


@functools.lru_cache(maxsize=None)
def _lowpass_fn(rescale: bool, clip: bool):
    # One function object per option pair: compiled programs are keyed on it.
    return functools.partial(_lowpass_apply, rescale=rescale, clip=clip)


def lowpass_defended(
    logits_fn: LogitsFn, radius: float, *, rescale: bool = False, clip: bool = False
) -> LogitsFn:
    """Input-side defence: ``x -> logits_fn(fourier.low_pass(x, radius))``.

    The filter is linear and differentiable, so attacking the returned function is a full
    white-box attack on the defended pipeline (no gradient obfuscation).

    Scale choice (documented deviation point): by default the low-passed image is fed to the
    model as it is, **not** re-scaled and **not** clipped. The low pass keeps the zero
    frequency, so the filtered image stays in the scale the model was trained on
    (unit-scale originals); the paper code's per-image ``x / max(x)`` was used for the
    LFC/HFC *data sets*, not for a defence. ``rescale=True`` applies that per-image max
    scaling (max over H, W, C), ``clip=True`` clips to [0, 1] afterwards.

    Args:
      logits_fn: ``(B, H, W, C) -> (B, K)``.
      radius: a Python number, the low-pass radius (``fourier`` convention: keep frequencies
        at distance ``< radius`` from the centre of the shifted spectrum).
      rescale, clip: see above.

    Returns:
      A logits function of the same signature; a ``jax.tree_util.Partial`` so that the
      arrays inside ``logits_fn`` (if it is itself a ``Partial``) stay pytree leaves.
    """
    from jaxhfc import fourier  # imported lazily, as in _lowpass_apply

    r = fourier.check_radius(radius)
    fn = _lowpass_fn(bool(rescale), bool(clip))
    # the radius is an array leaf of the Partial (not a constant): attacks and sweeps compiled
    # for one radius serve every radius
    return jax.tree_util.Partial(fn, logits_fn, np.asarray([r], np.float32))
