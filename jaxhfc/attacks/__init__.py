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

from jaxhfc.attacks.base import PAPER_ADV_EPS, PAPER_ADV_STEPS, PAPER_ADV_STEP_SIZE
from jaxhfc.attacks.losses import LOSSES, cross_entropy_loss, dlr_loss, dlr_targeted_loss, margin_loss
from jaxhfc.attacks.pgd import fgsm, madry_adversary, pgd
from jaxhfc.attacks.apgd import apgd, apgd_checkpoints, apgd_targeted
from jaxhfc.attacks.defences import lowpass_defended
from jaxhfc.attacks.result import RobustResult
from jaxhfc.attacks.evaluation import (Attack, fgsm_attack, pgd_attack, robust_accuracy,
                                       standard_attacks)
from jaxhfc.attacks.search import ascending_minimal_eps, doubling_grid, median_min_eps, minimal_eps

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
    "ascending_minimal_eps",
    "doubling_grid",
    "median_min_eps",
    "pgd_attack",
    "standard_attacks",
    "lowpass_defended",
    "madry_adversary",
    "pgd",
    "robust_accuracy",
]
