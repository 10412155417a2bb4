"""The masking checks of an evaluation: cheap per-example diagnostics (random noise, the
cross-entropy input gradient, the margin's first-order gain) and the checks built on them and
on re-runs (logit scale, more steps).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxhfc.parallel import join_callable

from jaxhfc.attacks.base import _TINY, _bcast, _dual_norm, _flat_norm
from jaxhfc.attacks.losses import _objective, margin_loss


def batch_diagnostics(spec, plan, dyn, key, eps, scale, x, y, idx):
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


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`sanity_checks` found: the failed checks' names (``flags``) and messages, each
    check's numbers (``checks``, JSON-ready), and the per-example diagnostics (None without
    ``checks``)."""

    flags: tuple[str, ...]
    messages: tuple[str, ...]
    checks: dict
    noise: np.ndarray | None
    zero_grad: np.ndarray | None
    ce_gain: np.ndarray | None
    margin_gain: np.ndarray | None
    scaled_correct: dict | None = None


def sanity_checks(res: dict, *, clean, per_attack, attacks, x, y, rerun, checks: bool, logit_scale, more_steps,
                  check_examples, mask_threshold: float, grad_tol: float, check_tol: float) -> Report:
    """Phase 3 of :func:`jaxhfc.attacks.robust_accuracy`: the masking checks of one evaluation.

    ``res``: the attack and diagnostic arrays of the whole set; ``clean`` ``(N,)`` and
    ``per_attack`` ``(N, J)`` correctness; ``rerun(x, y, attacks, scale=1.0)`` runs attacks
    again (the logit-scale and more-steps checks, on the first ``check_examples`` examples).
    The checks and their thresholds are described in :func:`robust_accuracy`.
    """
    names = tuple(a.name for a in attacks)
    adv = per_attack.all(axis=1)
    robust = clean & adv
    n = len(clean)
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
    noise = zero = ce_gain = margin_gain = scaled_correct = None
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
            r = rerun(xs, ys, attacks, scale=1.0 / float(logit_scale))
            scaled_correct = {nm: r["clean"].astype(bool) & r["adv"].astype(bool)[:, j] for j, nm in enumerate(names)}
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
            r = rerun(xs, ys, strong)
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
    check_out = {k: {kk: (vv.item() if isinstance(vv, np.generic) else vv) for kk, vv in v.items()}
                 for k, v in check_out.items()}  # plain Python values: JSON-ready
    return Report(tuple(flags), tuple(msgs), check_out, noise, zero, ce_gain, margin_gain, scaled_correct)
