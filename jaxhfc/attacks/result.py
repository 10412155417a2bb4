"""The outcome of a robust evaluation (:func:`jaxhfc.attacks.robust_accuracy`), per example and
in summary, with its JSON per-example record.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["RobustResult"]


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
      scaled_attack_correct: ``{attack name: (n,) bool}``, right clean and under that attack
        alone on ``logits / logit_scale``, for the first ``n`` examples (those the logit-scale
        check re-ran; None when it did not run): with ``attack_correct`` on the same examples,
        per image what a saturated softmax does to each attack.
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
    scaled_attack_correct: dict | None = None

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
