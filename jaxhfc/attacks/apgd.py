"""Auto-PGD (Croce & Hein 2020): step-size checkpoints, momentum and restarts, as auto-attack's
``APGDAttack`` runs it, and APGD-T over the top-ranked wrong classes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


from jaxhfc.attacks.base import (LogitsFn, _TINY, _apgd_start, _bcast, _check_attack_args, _flat_norm,
                                 _per_example_keys, _project)
from jaxhfc.attacks.losses import _check_classes, _check_loss, _objective, _success, dlr_targeted_loss


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
