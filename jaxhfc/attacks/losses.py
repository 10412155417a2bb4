"""The attack objectives: cross-entropy (the paper's), the CW margin and the DLR loss (Croce &
Hein 2020), untargeted and targeted; the last two do not saturate when the logits grow.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp



def cross_entropy_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example cross-entropy ``-log softmax(z)_y``, ``(B,)`` float32.

    Args:
      logits: ``(B, K)``; y: ``(B,)`` int labels.
    """
    logits = logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _other_max(logits: jax.Array, y: jax.Array) -> jax.Array:
    onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    return jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)


def margin_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y``, ``(B,)`` float32 (positive = misclassified).

    Its sign does not depend on the logits' scale, and the sign of its gradient neither, so a
    sign-gradient (Linf) or normalised-gradient (L2) attack on it is invariant to ``z -> z / T``.
    """
    logits = logits.astype(jnp.float32)
    _check_classes(logits, 2, "margin")
    z_y = jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return _other_max(logits, y) - z_y


def dlr_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Difference of Logits Ratio (Croce & Hein 2020, Eq. 6), ``(B,)`` float32, to maximise::

        DLR(z, y) = -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)

    with ``z_pi1 >= z_pi2 >= ...`` the sorted logits. Invariant to shifting and (positive)
    scaling of the logits; needs at least 3 classes.
    """
    logits = logits.astype(jnp.float32)
    _check_classes(logits, 3, "dlr")
    srt = jnp.sort(logits, axis=-1)
    denom = srt[:, -1] - srt[:, -3] + 1e-12
    return margin_loss(logits, y) / denom


def dlr_targeted_loss(logits: jax.Array, y: jax.Array, t: jax.Array) -> jax.Array:
    """Targeted DLR (Croce & Hein 2020, Eq. 7), ``(B,)`` float32, to maximise::

        DLR_T(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

    with ``t`` the target class. Invariant to shifting and (positive) scaling of the logits;
    needs at least 4 classes.
    """
    logits = logits.astype(jnp.float32)
    _check_classes(logits, 4, "targeted DLR")
    srt = jnp.sort(logits, axis=-1)
    z_y = jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    z_t = jnp.take_along_axis(logits, t[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return (z_t - z_y) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


def _check_classes(logits, k_min, name):
    if logits.ndim != 2 or logits.shape[-1] < k_min:
        raise ValueError(f"the {name} loss needs logits (B, K) with K >= {k_min}, got shape "
                         f"{tuple(logits.shape)}")


LOSSES = ("ce", "margin", "dlr")


def _objective(logits_fn, x, y, targeted, loss="ce"):
    """Per-example objective to *maximise*, ``(B,)``, and the logits."""
    logits = logits_fn(x).astype(jnp.float32)
    if loss == "ce":
        ce = cross_entropy_loss(logits, y)
        return (-ce if targeted else ce), logits
    if loss == "margin":
        m = margin_loss(logits, y)  # targeted: raise z_t above every other logit
        return (-m if targeted else m), logits
    if loss == "dlr":
        if targeted:
            raise ValueError("targeted attacks support loss='ce' or 'margin', not 'dlr'")
        return dlr_loss(logits, y), logits
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def _success(logits, y, targeted):
    pred = jnp.argmax(logits, axis=-1)
    return (pred == y) if targeted else (pred != y)


def _check_loss(loss, targeted):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if targeted and loss == "dlr":
        raise ValueError("targeted attacks support loss='ce' or 'margin', not 'dlr'")
