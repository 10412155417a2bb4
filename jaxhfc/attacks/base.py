"""Shared pieces of the attacks: argument checks, per-example keys, norms, projections onto
the eps-ball and the box, random starts, and the paper's adversarial-training constants.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np



LogitsFn = Callable[[jax.Array], jax.Array]

#: Adversarial training of the paper's released code (``utility/pgd_attack.py``): Linf PGD,
#: eps 0.03 (the paper text says 8/255 = 0.0314), 10 steps of 0.003, no random start.
PAPER_ADV_EPS = 0.03
PAPER_ADV_STEP_SIZE = 0.003
PAPER_ADV_STEPS = 10

_NORMS = ("linf", "l2")
_TINY = 1e-12


# ----------------------------------------------------------------------------- helpers


def _check_attack_args(x, y, *, eps, step_size, steps, norm, clip_min, clip_max):
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (B, ...) of images, got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be float in [clip_min, clip_max], got dtype {x.dtype}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape (B,)={tuple(x.shape[:1])}, got {tuple(y.shape)}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"y must be integer labels, got dtype {y.dtype}")
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a Python int >= 0, got {steps!r}")
    for name, v in (("eps", eps), ("step_size", step_size)):
        if isinstance(v, (int, float)) and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")
    if isinstance(clip_min, (int, float)) and isinstance(clip_max, (int, float)):
        if clip_min >= clip_max:
            raise ValueError(f"need clip_min < clip_max, got {clip_min!r} >= {clip_max!r}")


def _per_example_keys(key, batch: int) -> jax.Array:
    """One key per example: ``split(key, B)``, or ``key`` itself if it is already a batch."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    single_ndim = 0 if typed else 1
    if key.ndim == single_ndim:
        return jax.random.split(key, batch)
    if key.ndim == single_ndim + 1 and key.shape[0] == batch:
        return key
    raise ValueError(
        "key must be a single PRNG key or a batch of B per-example keys, got shape "
        f"{tuple(key.shape)} for B={batch}"
    )


def _flat_norm(v: jax.Array) -> jax.Array:
    """Per-example L2 norm of ``(B, ...)``, shape ``(B,)`` (computed in float32)."""
    v = v.astype(jnp.float32).reshape(v.shape[0], -1)
    return jnp.sqrt(jnp.sum(v * v, axis=1))


def _bcast(v: jax.Array, like: jax.Array) -> jax.Array:
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def _project(x_adv, x0, eps, norm, clip_min, clip_max):
    """Project onto the eps-ball around ``x0`` (Linf or L2), then onto the box."""
    delta = x_adv - x0
    if norm == "linf":
        delta = jnp.clip(delta, -eps, eps)
    else:
        n = _flat_norm(delta)
        factor = jnp.minimum(1.0, eps / jnp.maximum(n, _TINY)).astype(delta.dtype)
        delta = delta * _bcast(factor, delta)
    return jnp.clip(x0 + delta, clip_min, clip_max)


def _random_start(keys, x0, eps, norm):
    """A uniform random point of the eps-ball (Linf: cube; L2: ball), one key per example."""

    def one(k, xi):
        if norm == "linf":
            return jax.random.uniform(k, xi.shape, xi.dtype, -1.0, 1.0) * eps
        kd, kr = jax.random.split(k)
        d = jax.random.normal(kd, xi.shape, jnp.float32)
        d = d / jnp.maximum(jnp.sqrt(jnp.sum(d * d)), _TINY)
        r = jax.random.uniform(kr, (), jnp.float32) ** (1.0 / xi.size)
        return (d * r * eps).astype(xi.dtype)

    return jax.vmap(one)(keys, x0)


def _apgd_start(keys, x0, eps, norm):
    """APGD's random start as in the reference implementation (auto-attack): a point on the
    boundary of the eps-ball, ``eps * t / ||t||`` with ``t`` uniform in the cube (Linf, so
    the largest coordinate is at eps) or standard normal (L2), one key per example."""

    def one(k, xi):
        if norm == "linf":
            t = jax.random.uniform(k, xi.shape, jnp.float32, -1.0, 1.0)
            n = jnp.max(jnp.abs(t))
        else:
            t = jax.random.normal(k, xi.shape, jnp.float32)
            n = jnp.sqrt(jnp.sum(t * t))
        return (t / (n + 1e-12) * eps).astype(xi.dtype)

    return jax.vmap(one)(keys, x0)


def _dual_norm(g, norm):
    g = g.astype(jnp.float32).reshape(g.shape[0], -1)
    return jnp.sum(jnp.abs(g), axis=1) if norm == "linf" else jnp.sqrt(jnp.sum(g * g, axis=1))
