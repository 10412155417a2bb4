"""Adversarial attacks (FGSM, PGD, APGD in Linf and L2), robust evaluation and Madry training.

- Losses: cross-entropy (the paper's), the CW margin and the DLR loss (Croce & Hein 2020);
  the last two do not saturate when the logits grow, so attacks on them are not fooled by a
  model whose logits were merely scaled up (e.g. by the paper's unnormalised kernel smoothing).
- :func:`pgd` (any of the losses), :func:`fgsm`, and :func:`apgd` (Auto-PGD: step-size
  checkpoints, momentum, restarts).
- :func:`robust_accuracy` runs a list of :class:`Attack` (e.g. the paper's FGSM and PGD
  beside :func:`standard_attacks`, APGD-CE and APGD-DLR) over a whole set on any mesh and any
  number of processes, keeps per example the worst case and which attack succeeded, and runs
  sanity checks on every evaluation (logit-scale invariance, more steps and restarts, random
  noise, near-zero and flat input gradients); failed checks are ``result.flags``.
  :meth:`RobustResult.per_example` gives the per-example results as JSON-ready data.

Everything works on **unit-scale** images ``x: (B, H, W, C) float32 in [0, 1]`` with any
mean/std normalisation inside the model function (docs/architecture.md), so ``eps`` is in
the [0, 1] scale of the paper's Table 2 (0.03, 0.06, 0.09).

A *logits function* maps ``(B, H, W, C)`` images to ``(B, K)`` logits, e.g.
``lambda x: model.apply(variables, x, train=False)``. It must treat the examples of a batch
independently (BatchNorm in inference mode), so that the gradient of the summed loss is the
per-example gradient. Passing ``jax.tree_util.Partial(apply_fn, variables)`` instead of a
closure lets :func:`robust_accuracy` pass the variables to its compiled program as
arguments rather than bake them in as constants (and reuse the compilation across models
of the same shape).

Attacks are pure and jittable; the step loop is a ``lax.fori_loop`` (steps do not unroll
at compile time). Random starts draw one key per example (``jax.random.split(key, B)``, or
the per-example keys passed in), so :func:`robust_accuracy` gives the same numbers for any
batch size and any number of devices.

Conventions (as in Madry et al. 2018 and the paper's released code):

- Linf: ``x <- clip(x + step_size * sign(g), x0 - eps, x0 + eps)`` then clip to the box.
- L2: ``x <- x + step_size * g / ||g||_2`` (per example), then project ``x - x0`` onto the
  L2 ball of radius ``eps``, then clip to the box. Clipping to the box moves every
  coordinate towards ``x0`` (which lies in the box), so it never leaves the ball.
- The objective is the cross-entropy of the true label (maximised) or, when
  ``targeted=True``, minus the cross-entropy of the target label.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc.parallel import join_callable, split_callable

__all__ = [
    "LOSSES",
    "PAPER_ADV_EPS",
    "PAPER_ADV_STEP_SIZE",
    "PAPER_ADV_STEPS",
    "Attack",
    "RobustResult",
    "apgd",
    "apgd_checkpoints",
    "apgd_targeted",
    "cross_entropy_loss",
    "dlr_loss",
    "dlr_targeted_loss",
    "fgsm",
    "fgsm_attack",
    "margin_loss",
    "minimal_eps",
    "pgd_attack",
    "standard_attacks",
    "lowpass_defended",
    "madry_adversary",
    "pgd",
    "robust_accuracy",
]

logger = logging.getLogger(__name__)

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


def _check_loss(loss, targeted):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if targeted and loss == "dlr":
        raise ValueError("targeted attacks support loss='ce' or 'margin', not 'dlr'")


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


# ----------------------------------------------------------------------------- attacks


def pgd(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array | None,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    keep_best: bool = False,
    unroll: int | bool = 1,
    loss: str = "ce",
) -> tuple[jax.Array, jax.Array]:
    """Projected gradient descent attack (Madry et al. 2018), Linf or L2.

    Args:
      logits_fn: ``(B, H, W, C) -> (B, K)`` logits; examples must be independent.
      x: ``(B, H, W, C)`` float images in ``[clip_min, clip_max]``.
      y: ``(B,)`` int true labels, or target labels when ``targeted``.
      key: PRNG key (or ``(B,)`` per-example keys) for the random start; may be ``None``
        when ``random_start=False``.
      eps: radius of the perturbation ball (Linf: max abs change per pixel; L2: Euclidean
        norm of the whole per-example perturbation), in the scale of ``x``.
      step_size: Linf: size of each sign step; L2: length of each normalised-gradient step.
      steps: number of gradient steps (a Python int; ``lax.fori_loop``).
      norm: ``'linf'`` or ``'l2'``.
      random_start: start from a uniform random point of the eps-ball (clipped to the box).
      targeted: minimise the cross-entropy towards ``y`` instead of maximising it.
      clip_min, clip_max: the valid box of pixel values.
      keep_best: return, per example, the best iterate seen (start included) instead of
        the last one: a successful iterate beats an unsuccessful one, then a higher
        objective wins. With it, more steps (same key) can never weaken the attack.
      unroll: ``lax.fori_loop``'s ``unroll`` (1: a real loop, the body compiled once;
        ``True``: fully unrolled). The same numbers up to float rounding. Measured on XLA:CPU (jax
        0.10.2): convolutions inside a while loop run ~6x slower than unrolled, so on a CPU
        ``unroll=True`` is much faster for few steps, at the price of a longer compile whose
        time and memory grow with the steps (for APGD-T also with targets x restarts: the
        quick robustness driver with APGD-T over 9 targets of 10 steps, unrolled, had not
        compiled after 20 minutes at 22 GiB on a 2-core CPU).
      loss: the objective: ``'ce'`` (cross-entropy, the paper's), ``'margin'``
        (:func:`margin_loss`, CW) or ``'dlr'`` (:func:`dlr_loss`; untargeted only). The last
        two do not saturate when the logits are large.

    Returns:
      ``(x_adv, success)``: ``x_adv`` like ``x``, within the eps-ball around ``x`` and the
      box; ``success`` ``(B,)`` bool, ``argmax logits_fn(x_adv) != y`` (``== y`` when
      ``targeted``).
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    _check_attack_args(x, y, eps=eps, step_size=step_size, steps=steps, norm=norm,
                       clip_min=clip_min, clip_max=clip_max)
    _check_loss(loss, targeted)
    eps_c = jnp.asarray(eps, x.dtype)
    step_c = jnp.asarray(step_size, x.dtype)

    def value_and_grad(xa):
        def total(xa):
            obj, logits = _objective(logits_fn, xa, y, targeted, loss)
            return jnp.sum(obj), (obj, logits)

        (_, (obj, logits)), g = jax.value_and_grad(total, has_aux=True)(xa)
        return obj, logits, g

    def ascent(xa, g):
        if norm == "linf":
            upd = jnp.sign(g)
        else:
            gn = _flat_norm(g)
            upd = g / _bcast(jnp.maximum(gn, _TINY), g).astype(g.dtype)
        return _project(xa + step_c * upd.astype(xa.dtype), x, eps_c, norm, clip_min, clip_max)

    if random_start:
        if key is None:
            raise ValueError("pgd with random_start=True needs a PRNG key, got None")
        keys = _per_example_keys(key, x.shape[0])
        x_adv = _project(x + _random_start(keys, x, eps_c, norm), x, eps_c, norm,
                         clip_min, clip_max)
    else:
        x_adv = jnp.clip(x, clip_min, clip_max)

    if not keep_best:
        def body(_, xa):
            _, _, g = value_and_grad(xa)
            return ascent(xa, g)

        x_adv = jax.lax.fori_loop(0, steps, body, x_adv, unroll=unroll)
        logits = logits_fn(x_adv)
        return x_adv, _success(logits, y, targeted)

    def better(obj, succ, best_obj, best_succ):
        return (succ & ~best_succ) | ((succ == best_succ) & (obj > best_obj))

    def body_best(_, carry):
        xa, bx, bobj, bsucc = carry
        obj, logits, g = value_and_grad(xa)
        succ = _success(logits, y, targeted)
        take = better(obj, succ, bobj, bsucc)
        bx = jnp.where(_bcast(take, xa), xa, bx)
        return (ascent(xa, g), bx, jnp.where(take, obj, bobj), jnp.where(take, succ, bsucc))

    b = x.shape[0]
    # Derived from x (not jnp.full) so that, under shard_map, the carry is device-varying
    # from the start like the values the loop writes into it.
    neg_inf = x.reshape(b, -1)[:, 0].astype(jnp.float32) * 0.0 - jnp.inf
    init = (x_adv, x_adv, neg_inf, neg_inf > 0.0)
    xa, bx, bobj, bsucc = jax.lax.fori_loop(0, steps, body_best, init, unroll=unroll)
    obj, logits = _objective(logits_fn, xa, y, targeted, loss)  # the last iterate
    succ = _success(logits, y, targeted)
    take = better(obj, succ, bobj, bsucc)
    return jnp.where(_bcast(take, xa), xa, bx), jnp.where(take, succ, bsucc)


def fgsm(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array | None = None,
    *,
    eps: float,
    norm: str = "linf",
    targeted: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Fast gradient (sign) method: :func:`pgd` with one step of size ``eps``, no random start.

    For ``norm='l2'`` it is the fast gradient method (one normalised-gradient step of
    length ``eps``). Shapes and returns as :func:`pgd`; ``key`` is unused.
    """
    return pgd(logits_fn, x, y, key, eps=eps, step_size=eps, steps=1, norm=norm,
               random_start=False, targeted=targeted, clip_min=clip_min, clip_max=clip_max)


def apgd_checkpoints(steps: int) -> list[tuple[int, int]]:
    """Iterations (0-based) after which APGD checks its step size, and the window lengths.

    Croce & Hein (2020), Sec. 3.2: checkpoints ``w_j = ceil(p_j * N)`` with ``p_0 = 0``,
    ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``. As in the
    reference implementation the first window is ``max(int(0.22 N), 1)`` iterations and each
    next window ``max(int(0.03 N), 1)`` shorter, down to ``max(int(0.06 N), 1)``.

    Returns:
      ``[(iteration, window), ...]``: the check runs at the end of ``iteration`` over the last
      ``window`` iterations.
    """
    first = max(int(0.22 * steps), 1)
    min_w = max(int(0.06 * steps), 1)
    decr = max(int(0.03 * steps), 1)
    out, i, w = [], first - 1, first
    while i < steps:
        out.append((i, w))
        w = max(w - decr, min_w)
        i += w
    return out


def _apgd_run(value_and_grad, x, y, x_start, *, eps, steps, norm, clip_min, clip_max,
              rho, alpha, unroll):
    """One APGD run from ``x_start``: ``(x_out, success, best_objective)``."""
    sched = apgd_checkpoints(steps)
    is_check = np.zeros(max(steps, 1), bool)
    window = np.ones(max(steps, 1), np.float32)
    for i, w in sched:
        is_check[i], window[i] = True, w
    is_check_c, window_c = jnp.asarray(is_check), jnp.asarray(window)

    def direction(g):
        if norm == "linf":
            return jnp.sign(g)
        return g / _bcast(jnp.maximum(_flat_norm(g), _TINY), g).astype(g.dtype)

    def proj(v):
        return _project(v, x, eps, norm, clip_min, clip_max)

    obj0, succ0, g0 = value_and_grad(x_start)
    zero_b = obj0 * 0.0  # device-varying under shard_map, like everything the loop writes
    step0 = zero_b + 2.0 * eps
    # obj is the previous iterate's objective, for counting increases. As in the reference
    # implementation (auto-attack's autopgd_base.py) the first iterate is compared with 0, not
    # with the start's objective: its loss history is zero-initialised and the first window
    # reads that zero. It matters for DLR and margin (negative while still classified right).
    init = dict(x=x_start, x_prev=x_start, g=g0, obj=zero_b, step=step0, x_best=x_start,
                obj_best=obj0, g_best=g0, x_adv=x_start, succ=succ0, n_incr=zero_b,
                obj_best_last=obj0, reduced_last=zero_b == 0.0)

    def body(i, c):
        a = jnp.where(i > 0, alpha, 1.0).astype(x.dtype)
        mom = c["x"] - c["x_prev"]
        z = proj(c["x"] + _bcast(c["step"], x).astype(x.dtype) * direction(c["g"]).astype(x.dtype))
        x_new = proj(c["x"] + a * (z - c["x"]) + (1 - a) * mom)
        obj, succ, g = value_and_grad(x_new)
        x_adv = jnp.where(_bcast(succ, x), x_new, c["x_adv"])
        better = obj > c["obj_best"]
        n = dict(
            c, x=x_new, x_prev=c["x"], g=g, obj=obj, x_adv=x_adv, succ=c["succ"] | succ,
            n_incr=c["n_incr"] + (obj > c["obj"]),
            x_best=jnp.where(_bcast(better, x), x_new, c["x_best"]),
            g_best=jnp.where(_bcast(better, g), g, c["g_best"]),
            obj_best=jnp.where(better, obj, c["obj_best"]),
        )
        # step-size check at the checkpoints: too few increases in the window, or no
        # improvement since the last check without a reduction then -> halve, restart at best
        osc = n["n_incr"] <= window_c[i] * rho
        no_impr = ~c["reduced_last"] & (c["obj_best_last"] >= n["obj_best"])
        red = (osc | no_impr) & is_check_c[i]
        chk = is_check_c[i]
        n["reduced_last"] = jnp.where(chk, osc | no_impr, c["reduced_last"])
        n["obj_best_last"] = jnp.where(chk, n["obj_best"], c["obj_best_last"])
        n["step"] = jnp.where(red, n["step"] / 2.0, n["step"])
        n["x"] = jnp.where(_bcast(red, x), n["x_best"], n["x"])
        n["g"] = jnp.where(_bcast(red, g), n["g_best"], n["g"])
        n["n_incr"] = jnp.where(chk, 0.0, n["n_incr"])
        return n

    c = jax.lax.fori_loop(0, steps, body, init, unroll=unroll)
    x_out = jnp.where(_bcast(c["succ"], x), c["x_adv"], c["x_best"])
    return x_out, c["succ"], c["obj_best"]


def apgd(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array | None,
    *,
    eps: float,
    steps: int = 100,
    norm: str = "linf",
    loss: str = "ce",
    restarts: int = 1,
    random_start: bool = True,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    rho: float = 0.75,
    alpha: float = 0.75,
    unroll: int | bool = 1,
) -> tuple[jax.Array, jax.Array]:
    """Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks"), untargeted, Linf or L2.

    Step size starts at ``2 eps`` and is halved (and the iterate reset to the best point)
    at the checkpoints of :func:`apgd_checkpoints` when fewer than ``rho`` of the window's
    steps raised the objective, or when the best objective did not improve since the last
    check and the step was not reduced then. Momentum ``alpha``:
    ``z = P(x_k + eta sign(g_k))``, ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``
    (the first step without momentum). Each restart starts from a new random point on the
    ball's boundary, drawn as the reference implementation draws it (see :func:`_apgd_start`;
    per-example key ``fold_in(key_i, r)`` for restart ``r >= 1``).
    From the same start it follows the reference implementation (auto-attack's
    ``APGDAttack``) step for step, including its count of the first window's increases, which
    compares the first iterate's objective with 0 (the paper's formula compares it with the
    start's): for CE the first step always counts, for DLR only once it misclassifies.

    Args:
      logits_fn: ``(B, H, W, C) -> (B, K)``; examples must be independent.
      x: ``(B, H, W, C)`` float in ``[clip_min, clip_max]``; y: ``(B,)`` int true labels.
      key: PRNG key or ``(B,)`` per-example keys (may be None without a random start).
      eps: ball radius; steps: iterations per restart (Python int); norm: ``'linf'``/``'l2'``.
      loss: ``'ce'`` (APGD-CE), ``'dlr'`` (APGD-DLR, scale-invariant) or ``'margin'``.
      restarts: independent runs; an example counts as broken if any run breaks it.
      rho, alpha: the paper's 0.75 and 0.75. unroll: as in :func:`pgd`.

    Returns:
      ``(x_adv, success)`` as :func:`pgd`: per example a misclassified iterate when one was
      found (first restart that found one), else the iterate of highest objective.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    _check_loss(loss, False)
    keys = _apgd_keys(x, y, key, eps=eps, steps=steps, norm=norm, restarts=restarts,
                      random_start=random_start, clip_min=clip_min, clip_max=clip_max, name="apgd")
    out = _apgd_restarts(lambda xa: _objective(logits_fn, xa, y, False, loss), x, y, keys,
                         eps=eps, steps=steps, norm=norm, restarts=restarts, clip_min=clip_min,
                         clip_max=clip_max, rho=rho, alpha=alpha, unroll=unroll)
    return out[0], out[1]


def _apgd_keys(x, y, key, *, eps, steps, norm, restarts, random_start, clip_min, clip_max, name):
    """Check APGD's arguments; the ``(B,)`` per-example keys of its random starts (None
    without a random start)."""
    _check_attack_args(x, y, eps=eps, step_size=0.0, steps=steps, norm=norm,
                       clip_min=clip_min, clip_max=clip_max)
    if not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ValueError(f"restarts must be a Python int >= 1, got {restarts!r}")
    if not random_start:
        return None
    if key is None:
        raise ValueError(f"{name} with random_start=True needs a PRNG key, got None")
    return _per_example_keys(key, x.shape[0])


def _apgd_restarts(objective, x, y, keys, *, eps, steps, norm, restarts, clip_min, clip_max,
                   rho, alpha, unroll, first_run=0):
    """``restarts`` APGD runs on ``objective(x) -> (obj (B,), logits)``: ``(x, success, obj)``,
    per example the first run that broke it, else the run of highest objective. ``keys``:
    from :func:`_apgd_keys` (None: every run starts at ``x``); run ``i`` (counting from
    ``first_run``) starts from ``fold_in(key_b, i)`` (``i = 0``: the keys themselves)."""
    eps_c = jnp.asarray(eps, x.dtype)

    def value_and_grad(xa):
        def total(xa):
            obj, logits = objective(xa)
            return jnp.sum(obj), (obj, logits)

        (_, (obj, logits)), g = jax.value_and_grad(total, has_aux=True)(xa)
        return obj, _success(logits, y, False), g

    best = None
    for r in range(int(restarts)):
        i = first_run + r
        if keys is not None:
            kr = keys if i == 0 else jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
            start = jnp.clip(x + _apgd_start(kr, x, eps_c, norm), clip_min, clip_max)
        else:
            start = jnp.clip(x, clip_min, clip_max)
        out = _apgd_run(value_and_grad, x, y, start, eps=eps_c, steps=int(steps), norm=norm,
                        clip_min=clip_min, clip_max=clip_max, rho=rho, alpha=alpha,
                        unroll=unroll)
        if best is None:
            best = out
            continue
        bx, bs, bo = best
        nx, ns, no = out
        take = (ns & ~bs) | ((ns == bs) & ~bs & (no > bo))
        best = (jnp.where(_bcast(take, x), nx, bx), bs | ns, jnp.where(take, no, bo))
    return best


def _first_success(best, x_adv, success):
    """Merge one more run into ``best = (x_adv, success)`` (None: the first run): per example
    the iterate of the first run that broke it, else the earlier one's."""
    if best is None:
        return x_adv, success
    take = success & ~best[1]
    return jnp.where(_bcast(take, x_adv), x_adv, best[0]), best[1] | success


def apgd_targeted(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array | None,
    *,
    eps: float,
    steps: int = 100,
    norm: str = "linf",
    targets: int = 9,
    restarts: int = 1,
    random_start: bool = True,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    rho: float = 0.75,
    alpha: float = 0.75,
    unroll: int | bool = 1,
) -> tuple[jax.Array, jax.Array]:
    """APGD-T, AutoAttack's targeted APGD on the targeted DLR loss (:func:`dlr_targeted_loss`).

    For each of the ``targets`` classes ranked 2nd, 3rd, ... by the clean logits (at most
    K - 1), ``restarts`` APGD runs (:func:`apgd`'s schedule and start) push that class's logit
    above the true one. As in AutoAttack an example counts as broken when it is misclassified
    (as any class), and the first target and restart that broke it gives its iterate.

    Args:
      logits_fn, x, y, key, eps, steps, norm, restarts, random_start, clip_min, clip_max,
        rho, alpha, unroll: as :func:`apgd` (restarts per target class).
      targets: number of target classes (AutoAttack's ``n_target_classes``, 9 by default).

    Returns:
      ``(x_adv, success)`` as :func:`apgd`.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if not isinstance(targets, (int, np.integer)) or targets < 1:
        raise ValueError(f"targets must be a Python int >= 1, got {targets!r}")
    keys = _apgd_keys(x, y, key, eps=eps, steps=steps, norm=norm, restarts=restarts,
                      random_start=random_start, clip_min=clip_min, clip_max=clip_max,
                      name="apgd_targeted")
    clean = logits_fn(x)
    _check_classes(clean, 4, "targeted DLR")
    order = jnp.argsort(clean.astype(jnp.float32), axis=-1)
    n_t = min(int(targets), clean.shape[-1] - 1)

    def objective(xa, t):
        logits = logits_fn(xa).astype(jnp.float32)
        return dlr_targeted_loss(logits, y, t), logits

    best = None
    for k in range(n_t):  # target: the class ranked k + 2 by the clean logits
        nx, ns, _ = _apgd_restarts(functools.partial(objective, t=order[:, -(k + 2)]), x, y,
                                   keys, eps=eps, steps=steps, norm=norm, restarts=restarts,
                                   clip_min=clip_min, clip_max=clip_max, rho=rho, alpha=alpha,
                                   unroll=unroll, first_run=k * int(restarts))
        best = _first_success(best, nx, ns)
    return best


def madry_adversary(
    *,
    eps: float = PAPER_ADV_EPS,
    step_size: float = PAPER_ADV_STEP_SIZE,
    steps: int = PAPER_ADV_STEPS,
    random_start: bool = False,
    norm: str = "linf",
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    unroll: int | bool = 1,
) -> Callable[[LogitsFn, jax.Array, jax.Array, jax.Array], jax.Array]:
    """The adversary for Madry adversarial training, with the paper code's settings.

    Defaults follow the released code (Linf, eps 0.03, 10 steps of 0.003, no random start);
    the paper text's eps is 8/255 (pass ``eps=8/255``). The returned function is
    ``adversary(logits_fn, x, y, key) -> x_adv`` (the training engine's hook): it stops
    gradients through the attack, so the training loss is the loss at ``x_adv`` only.
    ``unroll`` as in :func:`pgd` (``True`` is much faster on a CPU).
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a Python int >= 0, got {steps!r}")

    def adversary(logits_fn, x, y, key):
        x_adv, _ = pgd(logits_fn, x, y, key, eps=eps, step_size=step_size, steps=steps,
                       norm=norm, random_start=random_start, clip_min=clip_min,
                       clip_max=clip_max, unroll=unroll)
        return jax.lax.stop_gradient(x_adv)

    return adversary


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


# ----------------------------------------------------------------------------- evaluation

_METHODS = ("fgsm", "pgd", "apgd", "apgd-t")


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack of an evaluation, independent of ``eps`` (hashable: a compile-cache key).

    Attributes:
      method: ``'fgsm'`` (one step of size eps, no random start), ``'pgd'`` (:func:`pgd`),
        ``'apgd'`` (:func:`apgd`) or ``'apgd-t'`` (:func:`apgd_targeted`).
      loss: ``'ce'``, ``'margin'`` or ``'dlr'`` (FGSM: ``'ce'`` or ``'margin'``; APGD-T:
        ``'dlr'``, meaning its targeted DLR).
      targets: APGD-T only: target classes (AutoAttack's 9).
      steps: iterations (per restart).
      restarts: independent random starts (an example is broken if any breaks it).
      rel_step_size: PGD step size as a fraction of eps (None: ``2.5 / steps``, Madry's).
      random_start, keep_best: PGD only (see :func:`pgd`).
      name: label in tables and per-example results (default from the settings, e.g.
        ``'APGD-DLR'``, ``'PGD-CE'``, ``'FGSM'``).
      cascade: run only on the examples that every attack before it without ``cascade`` left
        right (AutoAttack's order: an expensive attack such as APGD-T over 9 targets then
        costs nothing on the examples already broken). Such attacks come last in a list; with
        the same keys they give each example the result it would get without ``cascade``, so
        the worst case is the same, but their own accuracy in :class:`RobustResult` counts an
        example only if the earlier attacks left it right too (AutoAttack's running robust
        accuracy).
    """

    method: str
    loss: str = "ce"
    steps: int = 10
    restarts: int = 1
    rel_step_size: float | None = None
    random_start: bool = True
    keep_best: bool = True
    name: str = ""
    targets: int = 9
    cascade: bool = False

    def __post_init__(self):
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for f in ("steps", "restarts"):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v < (1 if f == "restarts" else 0):
                raise ValueError(f"{f} must be an int >= {1 if f == 'restarts' else 0}, got {v!r}")
        if self.method == "apgd-t" and self.loss != "dlr":
            raise ValueError(f"APGD-T runs the targeted DLR loss: loss must be 'dlr', got {self.loss!r}")
        if not isinstance(self.targets, (int, np.integer)) or self.targets < 1:
            raise ValueError(f"targets must be an int >= 1, got {self.targets!r}")
        if self.method == "fgsm":
            object.__setattr__(self, "steps", 1)
            object.__setattr__(self, "rel_step_size", 1.0)
            object.__setattr__(self, "random_start", False)
            object.__setattr__(self, "restarts", 1)
        if not self.name:
            base = {"fgsm": "FGSM", "pgd": f"PGD-{self.steps}", "apgd": "APGD", "apgd-t": "APGD-T"}[self.method]
            plain = (self.loss == "ce" and self.method == "fgsm") or self.method == "apgd-t"
            label = base if plain else f"{base}-{self.loss.upper()}"
            object.__setattr__(self, "name", label + (f"x{self.restarts}" if self.restarts > 1 else ""))

    def stronger(self, factor: int = 2) -> "Attack":
        """The same attack with ``factor`` times the steps and one more restart (PGD keeps
        its step size, so with ``keep_best`` and the same key it extends this attack; FGSM
        becomes ``factor`` steps of size eps from the same start)."""
        if self.method == "fgsm":
            return Attack("pgd", self.loss, steps=factor, rel_step_size=1.0, random_start=False,
                          keep_best=True, name=f"{self.name} (x{factor} steps)")
        rel = self.rel_step_size if self.rel_step_size is not None else 2.5 / max(self.steps, 1)
        restarts = self.restarts + (1 if (self.random_start or self.method.startswith("apgd")) else 0)
        return dataclasses.replace(self, steps=self.steps * factor, restarts=restarts,
                                   rel_step_size=rel,
                                   name=f"{self.name} (x{factor} steps, {restarts} restarts)")

    def run(self, logits_fn, x, y, keys, *, eps, norm="linf", clip_min=0.0, clip_max=1.0,
            unroll=1):
        """``(x_adv, success)`` of this attack at radius ``eps`` (shapes as :func:`pgd`)."""
        if self.method == "apgd-t":
            return apgd_targeted(logits_fn, x, y, keys, eps=eps, steps=self.steps, norm=norm,
                                 targets=self.targets, restarts=self.restarts,
                                 random_start=self.random_start, clip_min=clip_min,
                                 clip_max=clip_max, unroll=unroll)
        if self.method == "apgd":
            return apgd(logits_fn, x, y, keys, eps=eps, steps=self.steps, norm=norm,
                        loss=self.loss, restarts=self.restarts, random_start=self.random_start,
                        clip_min=clip_min, clip_max=clip_max, unroll=unroll)
        rel = self.rel_step_size if self.rel_step_size is not None else 2.5 / max(self.steps, 1)
        kw = dict(eps=eps, step_size=rel * eps, steps=self.steps, norm=norm, loss=self.loss,
                  random_start=self.random_start, keep_best=self.keep_best,
                  clip_min=clip_min, clip_max=clip_max, unroll=unroll)
        keys = _per_example_keys(keys, x.shape[0]) if keys is not None else None
        best = None
        for r in range(self.restarts):
            kr = keys if (r == 0 or keys is None) else jax.vmap(lambda k: jax.random.fold_in(k, r))(keys)
            best = _first_success(best, *pgd(logits_fn, x, y, kr, **kw))
        return best


def fgsm_attack() -> Attack:
    """The paper's FGSM (cross-entropy, one step of size eps)."""
    return Attack("fgsm")


def pgd_attack(steps: int, *, loss: str = "ce", restarts: int = 1) -> Attack:
    """The paper's Linf PGD: random start, ``steps`` steps of ``2.5 eps / steps``, best iterate."""
    return Attack("pgd", loss, steps=steps, restarts=restarts)


def standard_attacks(steps: int = 100, restarts: int = 1, targets: int = 0) -> tuple[Attack, ...]:
    """AutoAttack's untargeted gradient attacks: APGD-CE then APGD-DLR (scale-invariant).

    ``targets > 0`` adds APGD-T over that many target classes (AutoAttack's standard version
    runs APGD-CE and APGD-T with 9 targets, then FAB-T and Square, which are not here), as a
    ``cascade`` attack: it runs only on the examples the attacks before it left right."""
    out = (Attack("apgd", "ce", steps=steps, restarts=restarts),
           Attack("apgd", "dlr", steps=steps, restarts=restarts))
    if targets:
        out += (Attack("apgd-t", "dlr", steps=steps, restarts=restarts, targets=targets, cascade=True),)
    return out


@dataclasses.dataclass(frozen=True)
class RobustResult:
    """Per-example outcome of :func:`robust_accuracy` (numpy arrays of length N).

    Attributes:
      clean_correct: ``(N,)`` bool, ``argmax logits(x) == y``.
      adv_correct: ``(N,)`` bool, right under every attack (raw, any clean outcome).
      robust_correct: ``(N,)`` bool, ``clean_correct & adv_correct`` (the usual robust
        accuracy: an example counts only if it is right before and after every attack).
      attack_correct: ``{attack name: (N,) bool}``, right under that attack alone (a
        ``cascade`` attack: right under it and every attack before it without cascade).
      successful_attack: ``(N,)`` int, index into ``attacks`` of the first attack that made the
        correctly classified example wrong (-1: none did, or it was wrong already; AutoAttack's
        order).
      noise_correct: ``(N,)`` bool, right under a random perturbation of size eps (Linf:
        random signs times eps; L2: random direction of norm eps), or None without checks.
      zero_grad: ``(N,)`` bool, the cross-entropy's input gradient at ``x`` is exactly zero.
      ce_gain: ``(N,)`` float32, ``eps * ||grad CE||_*`` (dual norm: L1 for Linf, L2 for L2),
        the first-order rise of the cross-entropy available in the ball; near zero when the
        softmax saturates.
      margin_gain: ``(N,)`` float32, ``eps * ||grad margin||_* / |margin|``: the first-order
        change of the CW margin in the ball relative to the margin (invariant to the logits'
        scale); near zero when the model is flat to first order (masked gradients).
      perturbation: ``(N,)`` float32, ``||x_adv - x||`` (attack's norm) of the reported
        adversarial image (the first successful attack's, else the last attack's).
      attacks: the attacks' names in order; eps, norm: the threat model.
      clean_accuracy, adv_accuracy, robust_accuracy, noise_accuracy: means (floats).
      attack_accuracy: ``{name: robust accuracy of that attack alone}`` (a ``cascade``
        attack: the running robust accuracy after it, as AutoAttack reports).
      max_perturbation: max of the perturbation over every attack and example.
      attack: the settings (dict).
      checks: ``{check name: {values..., "ok": bool}}`` of the sanity checks that ran.
      flags: names of the failed checks (empty: no sign of masking or a broken attack).
      median_abs_logit: median over examples of each example's median ``|logit|`` (clean):
        the logits' scale (a saturated softmax starts at a few tens).
      warnings: messages of the checks that failed.
    """

    clean_correct: np.ndarray
    adv_correct: np.ndarray
    robust_correct: np.ndarray
    noise_correct: np.ndarray | None
    zero_grad: np.ndarray | None
    perturbation: np.ndarray
    clean_accuracy: float
    adv_accuracy: float
    robust_accuracy: float
    noise_accuracy: float | None
    max_perturbation: float
    attack: dict
    warnings: tuple[str, ...]
    attack_correct: dict = dataclasses.field(default_factory=dict)
    successful_attack: np.ndarray | None = None
    ce_gain: np.ndarray | None = None
    margin_gain: np.ndarray | None = None
    attacks: tuple[str, ...] = ()
    attack_accuracy: dict = dataclasses.field(default_factory=dict)
    eps: float = 0.0
    norm: str = "linf"
    checks: dict = dataclasses.field(default_factory=dict)
    flags: tuple[str, ...] = ()
    median_abs_logit: float = float("nan")

    @property
    def n(self) -> int:
        return int(self.clean_correct.shape[0])

    @property
    def success_rate(self) -> float:
        """Share of the correctly classified examples that the attacks make wrong."""
        c = int(self.clean_correct.sum())
        return float((self.clean_correct & ~self.adv_correct).sum() / c) if c else 0.0

    @property
    def masking_suspected(self) -> bool:
        """True when a check failed: the robust accuracy is not trustworthy as it stands."""
        return bool(self.flags)

    def summary(self) -> dict:
        """The scalar results and the checks as a JSON-friendly dict."""
        return {
            "n": self.n,
            "eps": self.eps,
            "norm": self.norm,
            "attacks": list(self.attacks),
            "clean_accuracy": self.clean_accuracy,
            "adv_accuracy": self.adv_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attack_accuracy": dict(self.attack_accuracy),
            "success_rate": self.success_rate,
            "noise_accuracy": self.noise_accuracy,
            "max_perturbation": self.max_perturbation,
            "median_abs_logit": self.median_abs_logit,
            "attack": dict(self.attack),
            "checks": self.checks,
            "flags": list(self.flags),
            "warnings": list(self.warnings),
        }

    def per_example(self, *, model_id: str, dataset: str | None = None,
                    labels=None, indices=None) -> dict:
        """Per-example results as JSON-ready data, in the layout of RobustBench's model
        entries (``clean_acc``, ``autoattack_acc``, ``eps``, ``threat_model``) with an
        ``examples`` list as AutoAttack keeps it (per example: clean and adversarial
        correctness, which attack broke it, the perturbation's norm).

        Args:
          model_id: a name of the model (and defence) that was attacked.
          dataset: optional dataset name; labels: optional ``(N,)`` labels to include;
          indices: optional ``(N,)`` example indices in the dataset (default ``0..N-1``).
        """
        idx = np.arange(self.n) if indices is None else np.asarray(indices)
        if idx.shape != (self.n,):
            raise ValueError(f"indices must have shape ({self.n},), got {idx.shape}")
        names = list(self.attacks)
        succ = self.successful_attack if self.successful_attack is not None else np.full(self.n, -1)
        examples = []
        for i in range(self.n):
            e = {"index": int(idx[i]),
                 "clean_correct": bool(self.clean_correct[i]),
                 "robust_correct": bool(self.robust_correct[i]),
                 "adv_correct": {k: bool(v[i]) for k, v in self.attack_correct.items()},
                 "successful_attack": names[int(succ[i])] if succ[i] >= 0 else None,
                 "perturbation_norm": float(self.perturbation[i])}
            if labels is not None:
                e["label"] = int(np.asarray(labels)[i])
            examples.append(e)
        return {
            "model": model_id,
            "dataset": dataset,
            "threat_model": {"linf": "Linf", "l2": "L2"}[self.norm],
            "eps": self.eps,
            "attacks": names,
            "n_examples": self.n,
            "clean_acc": self.clean_accuracy,
            "autoattack_acc": self.robust_accuracy,
            "robust_acc_per_attack": dict(self.attack_accuracy),
            "flags": list(self.flags),
            "checks": self.checks,
            "examples": examples,
        }


def _dual_norm(g, norm):
    g = g.astype(jnp.float32).reshape(g.shape[0], -1)
    return jnp.sum(jnp.abs(g), axis=1) if norm == "linf" else jnp.sqrt(jnp.sum(g * g, axis=1))


def _pert_norm(delta, norm):
    delta = delta.astype(jnp.float32).reshape(delta.shape[0], -1)
    return jnp.max(jnp.abs(delta), axis=1) if norm == "linf" else jnp.sqrt(jnp.sum(delta * delta, axis=1))


def _batch_attacks(spec, plan, dyn, key, eps, scale, x, y, idx):
    """One batch: clean correctness and each attack's correctness, the worst case and the
    perturbation checks. ``eps`` and the logit ``scale`` are traced scalars, so every radius
    and the logit-scale check reuse one compiled program per (model structure, attacks).
    ``j0``: the position of the first of ``attacks`` in the whole list (the cascade attacks run
    in a second program and keep their keys)."""
    attacks, norm, clip_min, clip_max, unroll, j0 = plan
    inner = join_callable(spec, dyn)

    def logits_fn(v):
        return inner(v) * scale.astype(jnp.float32)

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    clean_logits = logits_fn(x)
    clean = jnp.argmax(clean_logits, -1) == y
    b = x.shape[0]
    correct, x_w, which, found = [], None, None, None
    pert_max = jnp.zeros((b,), jnp.float32) + 0.0 * x.reshape(b, -1)[:, 0]
    in_box = x.reshape(b, -1)[:, 0] == x.reshape(b, -1)[:, 0]
    for j, a in enumerate(attacks, start=j0):
        kj = keys if j == 0 else jax.vmap(lambda k: jax.random.fold_in(k, 1000 + j))(keys)
        xa, _ = a.run(logits_fn, x, y, kj, eps=eps, norm=norm, clip_min=clip_min,
                      clip_max=clip_max, unroll=unroll)
        ok = jnp.argmax(logits_fn(xa), -1) == y
        correct.append(ok)
        pert_max = jnp.maximum(pert_max, _pert_norm(xa - x, norm))
        in_box = in_box & jnp.all(((xa >= clip_min) & (xa <= clip_max)).reshape(b, -1), axis=1)
        if x_w is None:
            x_w, found, which = xa, ~ok, jnp.where(ok, -1, j)
        else:
            new = ~ok & ~found
            x_w = jnp.where(_bcast(new | ~(found | new), x), xa, x_w)
            which = jnp.where(new, j, which)
            found = found | ~ok
    return {"clean": clean, "adv": jnp.stack(correct, axis=1), "which": which.astype(jnp.int32),
            "abs_logit": jnp.median(jnp.abs(clean_logits.astype(jnp.float32)), axis=-1),
            "pert": _pert_norm(x_w - x, norm), "pert_max": pert_max, "in_box": in_box}


def _batch_diagnostics(spec, plan, dyn, key, eps, scale, x, y, idx):
    """One batch of the cheap masking diagnostics: random +-eps noise, the cross-entropy input
    gradient at ``x`` and the first-order gain of the margin (no attack loops; the logits
    unscaled, ``scale`` unused)."""
    del scale
    norm, clip_min, clip_max = plan
    logits_fn = join_callable(spec, dyn)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    b = x.shape[0]
    out = {}
    nkeys = jax.vmap(lambda k: jax.random.fold_in(k, 1 << 20))(keys)
    if norm == "linf":
        noise = jax.vmap(lambda k, xi: jax.random.rademacher(k, xi.shape, xi.dtype))(nkeys, x) * eps
    else:
        d = jax.vmap(lambda k, xi: jax.random.normal(k, xi.shape, jnp.float32))(nkeys, x)
        noise = (d / _bcast(jnp.maximum(_flat_norm(d), _TINY), d) * eps).astype(x.dtype)
    x_noise = jnp.clip(x + noise, clip_min, clip_max)
    out["noise"] = jnp.argmax(logits_fn(x_noise), -1) == y
    g = jax.grad(lambda xx: jnp.sum(_objective(logits_fn, xx, y, False, "ce")[0]))(x)
    out["zero_grad"] = jnp.all(g.reshape(b, -1) == 0, axis=1)
    out["ce_gain"] = eps * _dual_norm(g, norm)
    m, gm = jax.vmap(jax.value_and_grad(
        lambda xi, yi: margin_loss(logits_fn(xi[None]).astype(jnp.float32), yi[None])[0]))(x, y)
    out["margin_gain"] = eps * _dual_norm(gm, norm) / jnp.maximum(jnp.abs(m), _TINY)
    return out


@functools.lru_cache(maxsize=32)
def _eval_fn(batch, spec, plan):
    """The per-batch function of one (batch function, logits_fn structure, plan): a stable
    object, so that :func:`jaxhfc.parallel.sweep` compiles it once."""

    def fn(dyn, key, eps, scale, x, y, index):
        return batch(spec, plan, dyn, key, eps, scale, x, y, index)

    return fn


def _sweep(logits_fn, x, y, key, *, plan, batch_size, mesh, eps, scale=1.0, batch=_batch_attacks,
           index=None) -> dict:
    """Run ``batch`` (:func:`_batch_attacks` or :func:`_batch_diagnostics`) over whole host arrays with
    :func:`jaxhfc.parallel.sweep` (pad, shard over ``'data'``, run, fetch, unpad; every
    process gets every row); ``eps`` and ``scale`` are program arguments. ``index``: the
    examples' numbers in the whole set (their keys) when ``x`` is a subset; default
    ``0..N-1``."""
    from jaxhfc import parallel

    dyn, spec = split_callable(logits_fn)
    try:
        fn = _eval_fn(batch, spec, plan)
    except TypeError:  # an unhashable static leaf: a new program each call
        fn = _eval_fn.__wrapped__(batch, spec, plan)
    rows = (np.asarray(x, np.float32), np.asarray(y, np.int32))
    if index is not None:
        rows += (np.asarray(index, np.int32),)
    return parallel.sweep(fn, rows, (dyn, key, np.float32(eps), np.float32(scale)),
                          batch_size=batch_size, mesh=mesh, with_index=index is None)


def robust_accuracy(
    logits_fn: LogitsFn,
    x,
    y,
    key: jax.Array,
    *,
    batch_size: int,
    mesh: Mesh | None = None,
    eps: float,
    attacks: Sequence[Attack] | None = None,
    step_size: float | None = None,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool = True,
    keep_best: bool = True,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    unroll: int | bool = 1,
    checks: bool = True,
    logit_scale: float | None = 10.0,
    more_steps: int | None = 2,
    check_examples: int | None = None,
    tol: float = 1e-5,
    mask_threshold: float = 0.1,
    grad_tol: float = 1e-3,
    check_tol: float = 0.03,
) -> RobustResult:
    """Clean and worst-case adversarial accuracy over a whole set, with sanity checks.

    Every attack of ``attacks`` runs on every example, except the ``cascade`` ones (e.g.
    APGD-T in :func:`standard_attacks`), which run only on the examples the others left right,
    as AutoAttack does; an example is robust when it is right clean and under every attack,
    and the first attack that broke it is recorded. Without ``attacks`` a single PGD on the
    cross-entropy runs with ``step_size``/``steps``/``random_start``/``keep_best`` (the
    paper's setting).
    The set is cut into batches of ``batch_size`` (the last one padded); with a ``mesh``
    (1-D, axis ``'data'``, any number of processes) each batch is split over its devices and
    ``batch_size`` must be a multiple of the device count. Example ``i`` uses the key
    ``fold_in(key, i)`` (attack ``j >= 1``: ``fold_in(fold_in(key, i), 1000 + j)``), so the
    result does not depend on ``batch_size``, the mesh or the number of processes.

    Always: every perturbation within ``eps`` (+``tol``) and every image in the box
    (``RuntimeError`` otherwise, a bug), and a warning when adversarial accuracy exceeds
    clean accuracy. Sanity checks (``checks=True``; each in ``result.checks``, failures in
    ``result.flags``, a ``RuntimeWarning`` and a log line):

    - ``logit_scale``: the attacks again on ``logits / logit_scale`` (the same classifier):
      flag when robust accuracy moves by more than ``check_tol`` (``delta_per_attack`` shows
      each attack alone, e.g. whether the paper's CE-PGD column depends on the scale).
    - ``more_steps``: every attack with ``more_steps`` times the steps and one more restart
      (:meth:`Attack.stronger`): flag when robust accuracy moves by more than ``check_tol``
      either way (lower: the attack had not converged; higher: a stronger attack is weaker).
    - ``noise``: flag when random noise of size eps leaves fewer examples right than the
      attacks do.
    - ``zero_grad``/``near_zero_grad``: share of the correctly classified examples whose
      cross-entropy gradient is exactly zero / has ``ce_gain < grad_tol``; flagged above
      ``mask_threshold`` only when no attack uses a scale-invariant loss (margin, DLR),
      since then the CE attacks alone carry the number.
    - ``flat``: share of correctly classified examples with ``margin_gain < grad_tol``
      (the margin is flat to first order in the ball, whatever the logits' scale): flagged
      above ``mask_threshold``.

    The two re-runs use the first ``check_examples`` examples (all by default) and cost one
    and about ``2 * more_steps`` evaluations.

    Args:
      logits_fn: ``(B, H, W, C) -> (B, K)``; a ``jax.tree_util.Partial`` keeps its arrays as
        program arguments.
      x: ``(N, H, W, C)`` float images in ``[clip_min, clip_max]`` (numpy or jax).
      y: ``(N,)`` int labels.
      key: PRNG key of the attacks.
      batch_size: examples per compiled call.
      mesh: optional 1-D mesh with axis ``'data'``.
      eps, norm, clip_min, clip_max, unroll: the threat model and loop unrolling.
      attacks: a sequence of :class:`Attack` (e.g. ``standard_attacks()``), or None.
      step_size, steps, random_start, keep_best: the single PGD when ``attacks`` is None
        (``step_size`` defaults to ``2.5 * eps / steps``).
      checks, logit_scale, more_steps, check_examples, mask_threshold, grad_tol, check_tol:
        the sanity checks (``logit_scale``/``more_steps`` None skip those two).
      tol: tolerance of the perturbation-size check.

    Returns:
      A :class:`RobustResult`.
    """
    from jaxhfc import parallel

    x = parallel.to_host(x) if isinstance(x, jax.Array) else np.asarray(x)
    y = parallel.to_host(y) if isinstance(y, jax.Array) else np.asarray(y)
    if x.ndim < 2 or y.shape != x.shape[:1]:
        raise ValueError(f"need x (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("robust_accuracy needs at least one example, got N=0")
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo < clip_min or hi > clip_max:
        raise ValueError(f"x must lie in the box [clip_min, clip_max] = [{clip_min}, {clip_max}], "
                         f"got values in [{lo:.4g}, {hi:.4g}] (filtered images ring outside "
                         "[0, 1]: widen the box, e.g. clip_min=-numpy.inf, clip_max=numpy.inf)")
    if attacks is None:
        if step_size is None:
            step_size = 2.5 * eps / max(steps, 1)
        _check_attack_args(jnp.zeros((1, 1), jnp.float32), jnp.zeros((1,), jnp.int32),
                           eps=eps, step_size=step_size, steps=steps, norm=norm,
                           clip_min=clip_min, clip_max=clip_max)
        rel = float(step_size) / float(eps) if eps > 0 else 0.0
        attacks = (Attack("pgd", "ce", steps=int(steps), rel_step_size=rel,
                          random_start=bool(random_start), keep_best=bool(keep_best), name="PGD"),)
    attacks = tuple(attacks)
    if not attacks or not all(isinstance(a, Attack) for a in attacks):
        raise ValueError(f"attacks must be a non-empty sequence of Attack, got {attacks!r}")
    names = tuple(a.name for a in attacks)
    if len(set(names)) != len(names):
        raise ValueError(f"attack names must be distinct, got {names}")
    n_head = sum(not a.cascade for a in attacks)
    if n_head == 0 or any(a.cascade for a in attacks[:n_head]):
        raise ValueError("cascade attacks run on what the others leave: they must come after at least one "
                         f"attack without cascade, got {[(a.name, a.cascade) for a in attacks]}")
    _check_attack_args(jnp.zeros((1, 1), jnp.float32), jnp.zeros((1,), jnp.int32), eps=eps,
                       step_size=0.0, steps=1, norm=norm, clip_min=clip_min, clip_max=clip_max)
    if mesh is not None:
        if tuple(mesh.axis_names) != ("data",):
            raise ValueError(f"mesh must be 1-D with axis 'data', got axes {mesh.axis_names}")
        ndev = mesh.devices.size
        if batch_size % ndev:
            raise ValueError(f"batch_size={batch_size} must be a multiple of the {ndev} "
                             "devices of the mesh")
    eps, clip_min, clip_max = float(eps), float(clip_min), float(clip_max)
    settings = dict(eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max, unroll=unroll,
                    attacks=[dataclasses.asdict(a) for a in attacks])
    if len(attacks) == 1 and attacks[0].method == "pgd":  # the single-PGD keys, as before
        a0 = attacks[0]
        settings.update(steps=a0.steps, step_size=(a0.rel_step_size or 2.5 / max(a0.steps, 1)) * eps,
                        random_start=a0.random_start, keep_best=a0.keep_best)

    def plan_for(atks, j0=0):
        return (tuple(atks), norm, clip_min, clip_max, unroll, j0)

    sweep = functools.partial(_sweep, batch_size=int(batch_size), mesh=mesh, eps=eps)

    def run_attacks(xs, ys, atks, scale=1.0):
        """Every attack of ``atks`` on ``xs``; the cascade ones only on what the others left right."""
        head, tail = atks[:n_head], atks[n_head:]
        r = sweep(logits_fn, xs, ys, key, plan=plan_for(head), scale=scale)
        if not tail:
            return r
        r = {k: np.array(v) for k, v in r.items()}  # writable copies
        alive = np.flatnonzero(r["clean"].astype(bool) & r["adv"].astype(bool).all(1))
        r["adv"] = np.concatenate([r["adv"], np.zeros((len(ys), len(tail)), r["adv"].dtype)], axis=1)
        if alive.size:
            t = sweep(logits_fn, xs[alive], ys[alive], key, plan=plan_for(tail, n_head), scale=scale,
                      index=alive)
            r["adv"][alive, n_head:] = t["adv"]
            r["which"][alive] = t["which"]  # -1 (all failed) or the first tail attack that broke it
            r["pert"][alive] = t["pert"]
            r["pert_max"][alive] = np.maximum(r["pert_max"][alive], t["pert_max"])
            r["in_box"][alive] &= t["in_box"]
        return r

    res = run_attacks(x, y, attacks)
    if checks:
        res.update(sweep(logits_fn, x, y, key, plan=(norm, clip_min, clip_max), batch=_batch_diagnostics))

    pert_max = float(res["pert_max"].max())
    if pert_max > eps + tol:
        raise RuntimeError(f"perturbation {pert_max:.6g} exceeds eps={eps} (+tol {tol})")
    if not res["in_box"].all():
        raise RuntimeError(f"{int((~res['in_box']).sum())} adversarial images leave the box "
                           f"[{clip_min}, {clip_max}]")
    clean = res["clean"].astype(bool)
    per_attack = res["adv"].astype(bool)  # (N, J)
    adv = per_attack.all(axis=1)
    robust = clean & adv
    msgs: list[str] = []
    flags: list[str] = []
    check_out: dict = {}

    def flag(name, msg):
        flags.append(name)
        msgs.append(msg)

    if adv.mean() > clean.mean():
        flag("adv_above_clean", f"adversarial accuracy {adv.mean():.4f} > clean accuracy "
             f"{clean.mean():.4f}: the attack is weaker than no attack (broken attack or masked "
             "gradients)")
    noise = zero = ce_gain = margin_gain = None
    if checks:
        noise, zero = res["noise"].astype(bool), res["zero_grad"].astype(bool)
        ce_gain, margin_gain = res["ce_gain"], res["margin_gain"]
        scale_free = any(a.loss in ("margin", "dlr") for a in attacks)

        def frac(mask):
            return float(mask[clean].mean()) if clean.any() else 0.0

        noise_acc = float((clean & noise).mean())
        check_out["noise"] = {"noise_accuracy": noise_acc, "robust_accuracy": float(robust.mean()),
                              "ok": noise_acc >= robust.mean()}
        if not check_out["noise"]["ok"]:
            flag("noise", f"random noise of size eps (accuracy {noise_acc:.4f}) hurts more than the "
                 f"attacks (robust accuracy {robust.mean():.4f}): gradients look masked")
        for name, mask, what in (
                ("zero_grad", zero, "an exactly zero cross-entropy input gradient"),
                ("near_zero_grad", ce_gain < grad_tol,
                 f"a near-zero cross-entropy input gradient (eps*||g||_* < {grad_tol:g})")):
            fz = frac(mask)
            ok = fz <= mask_threshold or scale_free
            check_out[name] = {"fraction": fz, "threshold": mask_threshold,
                               "scale_invariant_attack": scale_free, "ok": ok}
            if not ok:
                flag(name, f"{fz:.1%} of correctly classified examples have {what} and no attack "
                     "uses a scale-invariant loss: cross-entropy attacks are stalled (saturated "
                     "softmax); add margin/DLR attacks (standard_attacks())")
        ff = frac(margin_gain < grad_tol)
        check_out["flat"] = {"fraction": ff, "threshold": mask_threshold, "ok": ff <= mask_threshold}
        if not check_out["flat"]["ok"]:
            flag("flat", f"{ff:.1%} of correctly classified examples have a margin that is flat to "
                 f"first order in the ball (eps*||grad||/|margin| < {grad_tol:g}): gradients look "
                 "masked (non-differentiable or quantised processing)")
        nc = n if check_examples is None else max(1, min(int(check_examples), n))
        xs, ys = x[:nc], y[:nc]
        base_sub = float(robust[:nc].mean())

        def per_attack_delta(r):  # each attack alone: its accuracy in the re-run minus in the base run
            rc, ra = r["clean"].astype(bool), r["adv"].astype(bool)
            return {nm: float((rc & ra[:, j]).mean() - (clean[:nc] & per_attack[:nc, j]).mean())
                    for j, nm in enumerate(names)}
        if logit_scale is not None:
            r = run_attacks(xs, ys, attacks, scale=1.0 / float(logit_scale))
            acc_s = float((r["clean"].astype(bool) & r["adv"].astype(bool).all(1)).mean())
            d = acc_s - base_sub
            check_out["logit_scale"] = {"T": float(logit_scale), "n": nc, "robust_accuracy": base_sub,
                                        "robust_accuracy_scaled": acc_s, "delta": d,
                                        "delta_per_attack": per_attack_delta(r), "ok": abs(d) <= check_tol}
            if abs(d) > check_tol:
                flag("logit_scale", f"attacking logits/{logit_scale:g} (the same classifier) gives robust "
                     f"accuracy {acc_s:.4f} instead of {base_sub:.4f}: the result depends on the "
                     "logits' scale (gradient masking by a saturated loss)")
        if more_steps is not None:
            strong = tuple(a.stronger(int(more_steps)) for a in attacks)
            r = run_attacks(xs, ys, strong)
            acc_l = float((r["clean"].astype(bool) & r["adv"].astype(bool).all(1)).mean())
            d = acc_l - base_sub
            check_out["more_steps"] = {"factor": int(more_steps), "n": nc, "robust_accuracy": base_sub,
                                       "robust_accuracy_stronger": acc_l, "delta": d,
                                       "delta_per_attack": per_attack_delta(r), "ok": abs(d) <= check_tol,
                                       "converged": d >= -check_tol}
            if d < -check_tol:
                flag("more_steps", f"{more_steps}x the steps and one more restart lower robust accuracy "
                     f"from {base_sub:.4f} to {acc_l:.4f}: the attacks have not converged")
            elif d > check_tol:
                flag("more_steps", f"{more_steps}x the steps and one more restart raise robust accuracy "
                     f"from {base_sub:.4f} to {acc_l:.4f}: a stronger attack is weaker (noisy or "
                     "masked gradients)")
    for msg in msgs:
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    check_out = {k: {kk: (vv.item() if isinstance(vv, np.generic) else vv) for kk, vv in v.items()}
                 for k, v in check_out.items()}  # plain Python values: JSON-ready

    return RobustResult(
        clean_correct=clean,
        adv_correct=adv,
        robust_correct=robust,
        noise_correct=noise,
        zero_grad=zero,
        perturbation=res["pert"].astype(np.float32),
        clean_accuracy=float(clean.mean()),
        adv_accuracy=float(adv.mean()),
        robust_accuracy=float(robust.mean()),
        noise_accuracy=None if noise is None else float(noise.mean()),
        max_perturbation=pert_max,
        attack=settings,
        warnings=tuple(msgs),
        attack_correct={nm: per_attack[:, j] for j, nm in enumerate(names)},
        successful_attack=np.where(clean, res["which"], -1).astype(np.int64),
        ce_gain=None if ce_gain is None else ce_gain.astype(np.float32),
        margin_gain=None if margin_gain is None else margin_gain.astype(np.float32),
        attacks=names,
        attack_accuracy={nm: float((clean & per_attack[:, j]).mean()) for j, nm in enumerate(names)},
        eps=eps,
        norm=norm,
        checks=check_out,
        flags=tuple(flags),
        median_abs_logit=float(np.median(res["abs_logit"])),
    )


def minimal_eps(
    logits_fn: LogitsFn,
    x,
    y,
    key: jax.Array,
    *,
    eps_grid: Sequence[float],
    batch_size: int,
    attacks: Sequence[Attack] | None = None,
    **kwargs: Any,
) -> dict:
    """Per-example smallest eps of a grid at which an attack breaks the example, as the
    paper's released code searched it with Foolbox, and the accuracy at each threshold.

    The balls are nested, so an adversarial image found at ``eps_a`` also counts at every
    ``eps_b >= eps_a``: the accuracy at threshold ``t`` is the share of examples whose
    minimal eps is above ``t`` (never higher than :func:`robust_accuracy` at ``t``).

    Args:
      logits_fn, x, y, key, batch_size, attacks: as :func:`robust_accuracy` (default attacks:
        :func:`standard_attacks`); ``kwargs`` go to it too (e.g. ``mesh``, ``checks=False``).
      eps_grid: increasing positive radii.

    Returns:
      ``{"eps_grid": (E,), "min_eps": (N,) float32`` (0 for examples wrong before any attack,
      ``inf`` when no eps of the grid breaks them), ``"accuracy": (E,)`` at each threshold,
      ``"results": [RobustResult per eps]}``.
    """
    grid = [float(e) for e in eps_grid]
    if not grid or any(e <= 0 for e in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"eps_grid must be increasing positive radii, got {list(eps_grid)!r}")
    attacks = standard_attacks() if attacks is None else attacks
    results = [robust_accuracy(logits_fn, x, y, key, eps=e, batch_size=batch_size, attacks=attacks,
                               **kwargs) for e in grid]
    n = results[0].n
    min_eps = np.full(n, np.inf, np.float32)
    for e, r in zip(reversed(grid), reversed(results)):
        min_eps = np.where(~r.robust_correct, np.float32(e), min_eps)
    min_eps = np.where(results[0].clean_correct, min_eps, np.float32(0.0))
    return {"eps_grid": np.asarray(grid, np.float32), "min_eps": min_eps,
            "accuracy": np.asarray([(min_eps > e).mean() for e in grid], np.float64),
            "results": results}

