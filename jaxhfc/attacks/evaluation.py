"""Robust evaluation over a whole set: :class:`Attack` specs and
:func:`robust_accuracy` in three phases (validate the arguments, run the attacks data-parallel
over any mesh, check the result for gradient masking: :mod:`jaxhfc.attacks.masking`), returning
a :class:`jaxhfc.attacks.result.RobustResult`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc.parallel import join_callable, split_callable
from jaxhfc.attacks.base import LogitsFn, _bcast, _check_attack_args, _per_example_keys
from jaxhfc.attacks.losses import LOSSES
from jaxhfc.attacks.pgd import pgd
from jaxhfc.attacks.apgd import _first_success, apgd, apgd_targeted
from jaxhfc.attacks import masking
from jaxhfc.attacks.result import RobustResult

logger = logging.getLogger(__name__)


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


@functools.lru_cache(maxsize=256)
def _eval_fn(batch, spec, plan):
    """The per-batch function of one (batch function, logits_fn structure, plan): a stable
    object, so that :func:`jaxhfc.parallel.sweep` compiles it once."""

    def fn(dyn, key, eps, scale, x, y, index):
        return batch(spec, plan, dyn, key, eps, scale, x, y, index)

    fn.__name__ = batch.__name__  # what the program runs, for jaxhfc.costs records
    return fn


def _sweep(logits_fn, x, y, key, *, plan, batch_size, mesh, eps, scale=1.0, batch=_batch_attacks,
           index=None) -> dict:
    """Run ``batch`` (:func:`_batch_attacks` or :func:`jaxhfc.attacks.masking.batch_diagnostics`) over whole host arrays with
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
    # bucketed calls: the cascade's survivors and the checks' subsets change size from row to row, and
    # each new size of an unrolled attack program would be a new compilation
    return parallel.sweep(fn, rows, (dyn, key, np.float32(eps), np.float32(scale)),
                          batch_size=batch_size, mesh=mesh, with_index=index is None, bucket=True)


def _single_pgd(eps, step_size, steps, norm, random_start, keep_best, clip_min, clip_max) -> tuple[Attack, ...]:
    """The one PGD on the cross-entropy that :func:`robust_accuracy` runs without ``attacks``."""
    if step_size is None:
        step_size = 2.5 * eps / max(steps, 1)
    _check_attack_args(jnp.zeros((1, 1), jnp.float32), jnp.zeros((1,), jnp.int32),
                       eps=eps, step_size=step_size, steps=steps, norm=norm,
                       clip_min=clip_min, clip_max=clip_max)
    rel = float(step_size) / float(eps) if eps > 0 else 0.0
    return (Attack("pgd", "ce", steps=int(steps), rel_step_size=rel,
                   random_start=bool(random_start), keep_best=bool(keep_best), name="PGD"),)


def _validate(x, y, *, batch_size, mesh, eps, attacks, norm, clip_min, clip_max, single):
    """Phase 1 of :func:`robust_accuracy`: host arrays ``(x, y)`` and the attack tuple, after
    every argument check (one-line ValueErrors). ``single``: ``(step_size, steps, random_start,
    keep_best)`` of the one PGD run when ``attacks`` is None."""
    from jaxhfc import parallel

    x = parallel.to_host(x) if isinstance(x, jax.Array) else np.asarray(x)
    y = parallel.to_host(y) if isinstance(y, jax.Array) else np.asarray(y)
    if x.ndim < 2 or y.shape != x.shape[:1]:
        raise ValueError(f"need x (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if int(x.shape[0]) == 0:
        raise ValueError("robust_accuracy needs at least one example, got N=0")
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo < clip_min or hi > clip_max:
        raise ValueError(f"x must lie in the box [clip_min, clip_max] = [{clip_min}, {clip_max}], "
                         f"got values in [{lo:.4g}, {hi:.4g}] (filtered images ring outside "
                         "[0, 1]: widen the box, e.g. clip_min=-numpy.inf, clip_max=numpy.inf)")
    if attacks is None:
        attacks = _single_pgd(eps, *single[:2], norm, *single[2:], clip_min, clip_max)
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
    return x, y, attacks


CASCADES = ("survivors", "all")


def _run_attacks(logits_fn, xs, ys, atks, *, key, batch_size, mesh, eps, norm, clip_min, clip_max, unroll,
                 scale=1.0, cascade="survivors") -> dict:
    """Phase 2 of :func:`robust_accuracy`: every attack of ``atks`` on ``xs``; the cascade ones
    only on the examples the others left right (the same keys as on the whole set), or with
    ``cascade="all"`` on every example, their results kept only for those survivors."""
    n_head = sum(not a.cascade for a in atks)
    sweep = functools.partial(_sweep, batch_size=int(batch_size), mesh=mesh, eps=eps)
    head, tail = atks[:n_head], atks[n_head:]
    r = sweep(logits_fn, xs, ys, key, plan=(tuple(head), norm, clip_min, clip_max, unroll, 0), scale=scale)
    if not tail:
        return r
    r = {k: np.array(v) for k, v in r.items()}  # writable copies
    alive = np.flatnonzero(r["clean"].astype(bool) & r["adv"].astype(bool).all(1))
    r["adv"] = np.concatenate([r["adv"], np.zeros((len(ys), len(tail)), r["adv"].dtype)], axis=1)
    run_on = np.arange(len(ys)) if cascade == "all" else alive
    if run_on.size:
        t = sweep(logits_fn, xs[run_on], ys[run_on], key, plan=(tuple(tail), norm, clip_min, clip_max, unroll, n_head),
                  scale=scale, index=run_on)
        keep = np.isin(run_on, alive)
        r["adv"][alive, n_head:] = t["adv"][keep]
        r["which"][alive] = t["which"][keep]  # -1 (all failed) or the first tail attack that broke it
        r["pert"][alive] = t["pert"][keep]
        # the eps and box checks cover every adversarial image made, kept or not
        r["pert_max"][run_on] = np.maximum(r["pert_max"][run_on], t["pert_max"])
        r["in_box"][run_on] &= t["in_box"]
    return r


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
    cascade: str = "survivors",
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
      cascade: ``"survivors"`` (AutoAttack's order: cascade attacks only where the others
        failed) or ``"all"``: the cascade attacks run on every example and their results are
        kept only for those survivors, so the result is the same; it costs every attack on
        every example (the cost bound a plan counts, and a smoke run's check of the cascade's
        program whatever the model).

    Returns:
      A :class:`RobustResult`.
    """
    if cascade not in CASCADES:
        raise ValueError(f"cascade must be one of {CASCADES}, got {cascade!r}")
    x, y, attacks = _validate(x, y, batch_size=batch_size, mesh=mesh, eps=eps, attacks=attacks, norm=norm,
                              clip_min=clip_min, clip_max=clip_max,
                              single=(step_size, steps, random_start, keep_best))
    eps, clip_min, clip_max = float(eps), float(clip_min), float(clip_max)
    names = tuple(a.name for a in attacks)
    settings = dict(eps=eps, norm=norm, clip_min=clip_min, clip_max=clip_max, unroll=unroll,
                    attacks=[dataclasses.asdict(a) for a in attacks])
    if len(attacks) == 1 and attacks[0].method == "pgd":  # the single-PGD keys
        a0 = attacks[0]
        settings.update(steps=a0.steps, step_size=(a0.rel_step_size or 2.5 / max(a0.steps, 1)) * eps,
                        random_start=a0.random_start, keep_best=a0.keep_best)
    run = functools.partial(_run_attacks, logits_fn, key=key, batch_size=batch_size, mesh=mesh, eps=eps, norm=norm,
                            clip_min=clip_min, clip_max=clip_max, unroll=unroll, cascade=cascade)
    res = run(x, y, attacks)
    if checks:
        res.update(_sweep(logits_fn, x, y, key, plan=(norm, clip_min, clip_max), batch_size=int(batch_size),
                          mesh=mesh, eps=eps, batch=masking.batch_diagnostics))
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
    report = masking.sanity_checks(
        res, clean=clean, per_attack=per_attack, attacks=attacks, x=x, y=y, rerun=run, checks=checks,
        logit_scale=logit_scale, more_steps=more_steps, check_examples=check_examples,
        mask_threshold=mask_threshold, grad_tol=grad_tol, check_tol=check_tol)
    for msg in report.messages:
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    noise, ce_gain, margin_gain = report.noise, report.ce_gain, report.margin_gain
    return RobustResult(
        clean_correct=clean,
        adv_correct=adv,
        robust_correct=robust,
        noise_correct=noise,
        zero_grad=report.zero_grad,
        perturbation=res["pert"].astype(np.float32),
        clean_accuracy=float(clean.mean()),
        adv_accuracy=float(adv.mean()),
        robust_accuracy=float(robust.mean()),
        noise_accuracy=None if noise is None else float(noise.mean()),
        max_perturbation=pert_max,
        attack=settings,
        warnings=report.messages,
        attack_correct={nm: per_attack[:, j] for j, nm in enumerate(names)},
        successful_attack=np.where(clean, res["which"], -1).astype(np.int64),
        ce_gain=None if ce_gain is None else ce_gain.astype(np.float32),
        margin_gain=None if margin_gain is None else margin_gain.astype(np.float32),
        attacks=names,
        attack_accuracy={nm: float((clean & per_attack[:, j]).mean()) for j, nm in enumerate(names)},
        eps=eps,
        norm=norm,
        checks=report.checks,
        flags=report.flags,
        median_abs_logit=float(np.median(res["abs_logit"])),
        scaled_attack_correct=report.scaled_correct,
    )
