"""Adversarial attacks (FGSM, PGD in Linf and L2), robust evaluation and Madry training.

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
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from jaxhfc.parallel import join_callable, split_callable

__all__ = [
    "PAPER_ADV_EPS",
    "PAPER_ADV_STEP_SIZE",
    "PAPER_ADV_STEPS",
    "RobustResult",
    "fgsm",
    "lowpass_defended",
    "madry_adversary",
    "more_steps_check",
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


def _objective(logits_fn, x, y, targeted):
    """Per-example objective to *maximise*, ``(B,)``, and the logits."""
    logits = logits_fn(x).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return (-ce if targeted else ce), logits


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
        ``unroll=True`` is much faster for few steps, at the price of a longer compile.

    Returns:
      ``(x_adv, success)``: ``x_adv`` like ``x``, within the eps-ball around ``x`` and the
      box; ``success`` ``(B,)`` bool, ``argmax logits_fn(x_adv) != y`` (``== y`` when
      ``targeted``).
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    _check_attack_args(x, y, eps=eps, step_size=step_size, steps=steps, norm=norm,
                       clip_min=clip_min, clip_max=clip_max)
    eps_c = jnp.asarray(eps, x.dtype)
    step_c = jnp.asarray(step_size, x.dtype)

    def value_and_grad(xa):
        def total(xa):
            obj, logits = _objective(logits_fn, xa, y, targeted)
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
    obj, logits = _objective(logits_fn, xa, y, targeted)  # the last iterate
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


def _lowpass_apply(logits_fn, x, *, radius, rescale, clip):
    from jaxhfc import fourier  # imported lazily: no work at import of jaxhfc.attacks

    low = fourier.low_pass(x, radius)
    if rescale:
        m = jnp.max(low, axis=tuple(range(1, low.ndim)), keepdims=True)
        low = low / jnp.maximum(m, _TINY)
    if clip:
        low = jnp.clip(low, 0.0, 1.0)
    return logits_fn(low)


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
    fn = functools.partial(_lowpass_apply, radius=r, rescale=bool(rescale), clip=bool(clip))
    return jax.tree_util.Partial(fn, logits_fn)


# ----------------------------------------------------------------------------- evaluation


@dataclasses.dataclass(frozen=True)
class RobustResult:
    """Per-example outcome of :func:`robust_accuracy` (numpy arrays of length N).

    Attributes:
      clean_correct: ``(N,)`` bool, ``argmax logits(x) == y``.
      adv_correct: ``(N,)`` bool, ``argmax logits(x_adv) == y`` (raw, any clean outcome).
      robust_correct: ``(N,)`` bool, ``clean_correct & adv_correct`` (the usual robust
        accuracy: an example counts only if it is right before and after the attack).
      noise_correct: ``(N,)`` bool, correct under a random perturbation of size eps (Linf:
        random signs times eps; L2: random direction of norm eps), or None without checks.
      zero_grad: ``(N,)`` bool, the input gradient of the loss at ``x`` is exactly zero,
        or None without checks.
      perturbation: ``(N,)`` float32, ``||x_adv - x||`` in the attack's norm.
      clean_accuracy, adv_accuracy, robust_accuracy, noise_accuracy: means (floats).
      max_perturbation: max of ``perturbation``.
      attack: the attack's keyword arguments.
      warnings: messages of the sanity checks that fired.
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

    @property
    def n(self) -> int:
        return int(self.clean_correct.shape[0])

    def summary(self) -> dict:
        """The scalar results as a JSON-friendly dict."""
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "adv_accuracy": self.adv_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "noise_accuracy": self.noise_accuracy,
            "max_perturbation": self.max_perturbation,
            "attack": dict(self.attack),
            "warnings": list(self.warnings),
        }


def _batch_eval(spec, attack_kw, checks, dyn, x, y, idx, key):
    """One batch: clean/adv/noise correctness, perturbation norms, zero-gradient flags."""
    logits_fn = join_callable(spec, dyn)
    kw = dict(attack_kw)
    norm = kw["norm"]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    x_adv, _ = pgd(logits_fn, x, y, keys, **kw)
    clean_logits = logits_fn(x)
    adv_logits = logits_fn(x_adv)
    delta = (x_adv - x).astype(jnp.float32)
    if norm == "linf":
        pert = jnp.max(jnp.abs(delta).reshape(x.shape[0], -1), axis=1)
    else:
        pert = _flat_norm(delta)
    in_box = jnp.all(((x_adv >= kw["clip_min"]) & (x_adv <= kw["clip_max"]))
                     .reshape(x.shape[0], -1), axis=1)
    out = {
        "clean": jnp.argmax(clean_logits, -1) == y,
        "adv": jnp.argmax(adv_logits, -1) == y,
        "pert": pert,
        "in_box": in_box,
    }
    if checks:
        nkeys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        if norm == "linf":
            noise = jax.vmap(lambda k, xi: jax.random.rademacher(k, xi.shape, xi.dtype))(
                nkeys, x) * kw["eps"]
        else:
            d = jax.vmap(lambda k, xi: jax.random.normal(k, xi.shape, jnp.float32))(nkeys, x)
            noise = (d / _bcast(jnp.maximum(_flat_norm(d), _TINY), d) * kw["eps"]).astype(x.dtype)
        x_noise = jnp.clip(x + noise, kw["clip_min"], kw["clip_max"])
        out["noise"] = jnp.argmax(logits_fn(x_noise), -1) == y
        # y is the true label here (robust_accuracy is untargeted).
        g = jax.grad(lambda xx: jnp.sum(_objective(logits_fn, xx, y, False)[0]))(x)
        out["zero_grad"] = jnp.all(g.reshape(x.shape[0], -1) == 0, axis=1)
    return out


@functools.lru_cache(maxsize=32)
def _compiled_eval(spec, attack_kw, checks, mesh):
    body = functools.partial(_batch_eval, spec, attack_kw, checks)
    if mesh is None:
        return jax.jit(body)
    return jax.jit(
        jax.shard_map(
            body,
            mesh=mesh,
            in_specs=(P(), P("data"), P("data"), P("data"), P()),
            out_specs=P("data"),
        )
    )


def robust_accuracy(
    logits_fn: LogitsFn,
    x,
    y,
    key: jax.Array,
    *,
    batch_size: int,
    mesh: Mesh | None = None,
    eps: float,
    step_size: float | None = None,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool = True,
    keep_best: bool = True,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    unroll: int | bool = 1,
    checks: bool = True,
    tol: float = 1e-5,
    mask_threshold: float = 0.1,
) -> RobustResult:
    """Clean and PGD accuracy over a whole set, each example counted exactly once.

    The set is cut into batches of ``batch_size`` (the last one padded and masked), each
    batch is attacked with :func:`pgd` and the host waits for every batch before sending
    the next (so fake-device collectives never pile up). With a ``mesh`` (1-D, axis
    ``'data'``) each batch is split over its devices with ``jax.shard_map``; ``batch_size``
    must then be a multiple of the number of devices. The random start of example ``i``
    uses ``fold_in(key, i)``, so the result does not depend on ``batch_size`` or the mesh.

    Sanity checks (``checks=True``), as robustness libraries run them:

    - every perturbation is within ``eps`` (+``tol``) and every ``x_adv`` in the box
      (``RuntimeError`` otherwise: that is a bug, not a property of the model);
    - adversarial accuracy <= clean accuracy (warning otherwise: the attack is weaker
      than doing nothing);
    - gradient masking: a warning when more than ``mask_threshold`` of the correctly
      classified examples have an exactly zero input gradient, or when a random
      perturbation of size eps lowers accuracy more than the attack does.

    Warnings go through ``warnings.warn`` (``RuntimeWarning``) and ``logging`` and are also
    recorded in the result.

    Args:
      logits_fn: ``(B, H, W, C) -> (B, K)``; a ``jax.tree_util.Partial`` keeps its arrays as
        program arguments.
      x: ``(N, H, W, C)`` float images in ``[clip_min, clip_max]`` (numpy or jax;
        ``ValueError`` otherwise).
      y: ``(N,)`` int labels.
      key: PRNG key of the attack.
      batch_size: examples per compiled call.
      mesh: optional 1-D mesh with axis ``'data'``.
      eps, step_size, steps, norm, random_start, keep_best, clip_min, clip_max, unroll:
        attack settings (:func:`pgd`); ``step_size`` defaults to ``2.5 * eps / steps``.
      checks: run the gradient-masking checks (one extra forward and backward pass).
      tol: tolerance of the perturbation-size check.
      mask_threshold: fraction of zero gradients above which masking is reported.

    Returns:
      A :class:`RobustResult`.
    """
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    y = np.asarray(y) if not isinstance(y, jax.Array) else y
    if x.ndim < 2 or y.shape != x.shape[:1]:
        raise ValueError(f"need x (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("robust_accuracy needs at least one example, got N=0")
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if lo < clip_min or hi > clip_max:
        raise ValueError(f"x must lie in the box [clip_min, clip_max] = [{clip_min}, {clip_max}], "
                         f"got values in [{lo:.4g}, {hi:.4g}] (filtered images ring outside "
                         "[0, 1]: widen the box, e.g. clip_min=-numpy.inf, clip_max=numpy.inf)")
    if step_size is None:
        step_size = 2.5 * eps / max(steps, 1)
    attack_kw = dict(eps=float(eps), step_size=float(step_size), steps=int(steps), norm=norm,
                     random_start=bool(random_start), keep_best=bool(keep_best),
                     clip_min=float(clip_min), clip_max=float(clip_max), unroll=unroll)
    _check_attack_args(jnp.zeros((1,) + tuple(x.shape[1:]), jnp.float32),
                       jnp.zeros((1,), jnp.int32), eps=eps, step_size=step_size,
                       steps=steps, norm=norm, clip_min=clip_min, clip_max=clip_max)
    if mesh is not None:
        if tuple(mesh.axis_names) != ("data",):
            raise ValueError(f"mesh must be 1-D with axis 'data', got axes {mesh.axis_names}")
        ndev = mesh.devices.size
        if batch_size % ndev:
            raise ValueError(f"batch_size={batch_size} must be a multiple of the {ndev} "
                             "devices of the mesh")

    dyn, spec = split_callable(logits_fn)
    cache_key = (spec, tuple(sorted(attack_kw.items())), bool(checks), mesh)
    try:
        fn = _compiled_eval(*cache_key)
    except TypeError:  # an unhashable static leaf: compile without the cache
        fn = _compiled_eval.__wrapped__(*cache_key)

    keys_out = ("clean", "adv", "pert", "in_box") + (("noise", "zero_grad") if checks else ())
    acc: dict[str, list[np.ndarray]] = {k: [] for k in keys_out}
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        m = stop - start
        xb, yb = x[start:stop], y[start:stop]
        idx = np.arange(start, start + batch_size, dtype=np.int32)
        if m < batch_size:  # pad with copies of the first example; masked out below
            pad = batch_size - m
            xb = jnp.concatenate([jnp.asarray(xb), jnp.repeat(jnp.asarray(xb[:1]), pad, 0)])
            yb = jnp.concatenate([jnp.asarray(yb), jnp.repeat(jnp.asarray(yb[:1]), pad, 0)])
        out = fn(dyn, jnp.asarray(xb, jnp.float32), jnp.asarray(yb, jnp.int32),
                 jnp.asarray(idx), key)
        for k in keys_out:  # np.asarray blocks: one batch in flight at a time
            acc[k].append(np.asarray(out[k])[:m])
    res = {k: np.concatenate(v) for k, v in acc.items()}

    pert = res["pert"].astype(np.float32)
    max_pert = float(pert.max())
    if max_pert > eps + tol:
        raise RuntimeError(f"perturbation {max_pert:.6g} exceeds eps={eps} (+tol {tol})")
    if not res["in_box"].all():
        raise RuntimeError(f"{int((~res['in_box']).sum())} adversarial images leave the box "
                           f"[{clip_min}, {clip_max}]")

    clean, adv = res["clean"].astype(bool), res["adv"].astype(bool)
    robust = clean & adv
    msgs: list[str] = []
    if adv.mean() > clean.mean():
        msgs.append(f"adversarial accuracy {adv.mean():.4f} > clean accuracy {clean.mean():.4f}:"
                    " the attack is weaker than no attack (broken attack or masked gradients)")
    noise = zero = None
    if checks:
        noise, zero = res["noise"].astype(bool), res["zero_grad"].astype(bool)
        frac_zero = float(zero[clean].mean()) if clean.any() else 0.0
        if frac_zero > mask_threshold:
            msgs.append(f"{frac_zero:.1%} of correctly classified examples have an exactly zero "
                        "input gradient: gradients look masked (saturated softmax or "
                        "non-differentiable input processing)")
        if noise.mean() < adv.mean():
            msgs.append(f"random noise of size eps (accuracy {noise.mean():.4f}) hurts more than "
                        f"the attack (accuracy {adv.mean():.4f}): gradients look masked")
    for msg in msgs:
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)

    return RobustResult(
        clean_correct=clean,
        adv_correct=adv,
        robust_correct=robust,
        noise_correct=noise,
        zero_grad=zero,
        perturbation=pert,
        clean_accuracy=float(clean.mean()),
        adv_accuracy=float(adv.mean()),
        robust_accuracy=float(robust.mean()),
        noise_accuracy=None if noise is None else float(noise.mean()),
        max_perturbation=max_pert,
        attack=attack_kw,
        warnings=tuple(msgs),
    )


def more_steps_check(
    logits_fn: LogitsFn,
    x,
    y,
    key: jax.Array,
    *,
    factor: int = 4,
    tolerance: float = 0.02,
    **kwargs: Any,
) -> tuple[RobustResult, RobustResult]:
    """Sanity check "more steps never helps the model much": attack with ``steps`` and with
    ``factor * steps`` (same key, same step size) and warn if the longer attack leaves
    adversarial accuracy higher by more than ``tolerance``.

    Run it on a subset (a few hundred examples); ``kwargs`` go to :func:`robust_accuracy`
    (``steps`` defaults to 10 there).

    Returns:
      ``(result_short, result_long)``.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an int >= 1, got {factor!r}")
    steps = int(kwargs.pop("steps", 10))
    if kwargs.get("step_size") is None:
        kwargs["step_size"] = 2.5 * kwargs["eps"] / max(steps, 1)
    short = robust_accuracy(logits_fn, x, y, key, steps=steps, **kwargs)
    long = robust_accuracy(logits_fn, x, y, key, steps=factor * steps, **kwargs)
    if long.adv_accuracy > short.adv_accuracy + tolerance:
        msg = (f"{factor * steps} PGD steps leave adversarial accuracy {long.adv_accuracy:.4f}, "
               f"above {short.adv_accuracy:.4f} after {steps} steps: the attack is not "
               "converging (masked or noisy gradients)")
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return short, long
