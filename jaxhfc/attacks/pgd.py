"""Projected gradient descent (Madry et al. 2018) in Linf and L2, FGSM as its one-step case, and
the Madry adversary used for adversarial training.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


from jaxhfc.attacks.base import (LogitsFn, PAPER_ADV_EPS, PAPER_ADV_STEPS, PAPER_ADV_STEP_SIZE, _NORMS,
                                 _TINY, _bcast, _check_attack_args, _flat_norm, _per_example_keys, _project,
                                 _random_start)
from jaxhfc.attacks.losses import _check_loss, _objective, _success


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
