"""A claim of the paper and its verdict over seeds, and the helpers that turn per-seed,
per-image outcomes into one: paired per-image terms and their standard errors, the per-example
records behind a claim, and rows of several seeds combined into intervals.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

from jaxhfc import evidence as E


@dataclasses.dataclass
class Claim:
    """One claim of the paper and the verdict our seeds give it.

    Attributes:
      artefact: the driver's name.
      claim: the claim in words.
      judgement: the :class:`jaxhfc.evidence.Judgement` (verdict, effect interval over
        seeds, the per-seed values, the preconditions and their status).
      effect: what the effect is, with its sign convention ("LFC minus HFC test accuracy").
      evidence: extra words (the numbers behind the effect).
    """

    artefact: str
    claim: str
    judgement: E.Judgement
    effect: str = ""
    evidence: str = ""
    primary: bool = False
    #: a sanity check (e.g. "adversarial training is robust at its own eps"), not a claim of the
    #: paper: judged alone at 95%, outside its artefact's Holm family, and counted apart
    check: bool = False

    def __post_init__(self):
        if not isinstance(self.judgement, E.Judgement):  # a bare single-run bool: no interval, no verdict
            nan = float("nan")
            self.judgement = E.Judgement(
                "not tested", E.Interval(nan, nan, nan, 1, 0.95, "none"), 1, (nan,),
                (E.Precondition("an effect with an interval over seeds", False,
                                f"single-run comparison only (it said {self.judgement})"),))

    def mark(self) -> str:
        return self.judgement.verdict

    def to_dict(self) -> dict:
        return {"artefact": self.artefact, "claim": self.claim, "judgement": self.judgement.to_dict(),
                "effect": self.effect, "evidence": self.evidence, "primary": self.primary, "check": self.check}

    @classmethod
    def from_dict(cls, d: dict) -> "Claim":
        return cls(d["artefact"], d["claim"], E.Judgement.from_dict(d["judgement"]), d.get("effect", ""),
                   d.get("evidence", ""), bool(d.get("primary", False)), bool(d.get("check", False)))

    def effect_text(self) -> str:
        iv = self.judgement.effect
        if math.isnan(iv.mean):
            return "n/a"
        return str(iv)

    def preconditions_text(self) -> str:
        return "; ".join(str(p) for p in self.judgement.preconditions) or "none"


def claim(artefact: str, text: str, values, *, effect: str, direction: int = 1, se=None, preconditions=(),
          evidence: str = "", bounds=None, opposite_possible: bool = True, primary: bool = False,
          check: bool = False) -> Claim:
    """A :class:`Claim` judged from per-seed effect ``values`` (see :func:`jaxhfc.evidence.judge`:
    ``bounds`` is the effect's possible range, ``opposite_possible=False`` says a floor or ceiling
    made the other sign impossible). Its family's Holm control is applied when the artefact is
    written (:func:`family`)."""
    return Claim(artefact, text, E.judge(list(values), direction=direction, se=se, preconditions=preconditions,
                                         bounds=bounds, opposite_possible=opposite_possible),
                 effect, evidence, primary, check)


def family(claims: Sequence[Claim]) -> list[Claim]:
    """An artefact's claims as one family: Holm's control of the family-wise error
    (:func:`jaxhfc.evidence.holm`) applied to their judgements in place, and the first claim
    marked primary when the driver marked none. A family already adjusted (``family_control``)
    is left as it is."""
    claims = list(claims)
    if not claims:
        return claims
    members = [c for c in claims if not c.check]  # sanity checks stay outside the family
    if members and not any(c.judgement.family_control for c in members):
        for c, j in zip(members, E.holm([c.judgement for c in members])):
            c.judgement = j
    if members and not any(c.primary for c in claims):
        members[0].primary = True
    return claims


def paired_terms(a, b) -> np.ndarray:
    """Per-example terms ``a - b`` of two arms' outcomes on the same images (bool or float
    ``(N,)``). Raises ValueError unless both are 1-D of one length >= 2 (no broadcasting)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"the two arms' per-example outcomes must align image by image (1-D, one length >= 2); "
                         f"got shapes {a.shape} and {b.shape}")
    return a.astype(np.float64) - b.astype(np.float64)


def image_se(per_seed: Sequence[dict], terms: Callable[[dict], Any], fallback: Callable[[dict], float]) -> list[float]:
    """Per-image standard errors of a per-seed effect for :func:`claim`'s ``se``.

    ``terms(m)`` gives a seed's per-example effect terms (e.g. ``1[A right] - 1[B right]`` on
    each test image, or None when its metrics lack them). When every seed has them, of one
    length, they are paired over seeds image by image (:func:`jaxhfc.evidence.seeds_paired_se`;
    seeds share one test set). Otherwise ``fallback(m)``: the seed's add-one binomial error
    (:func:`jaxhfc.evidence.diff_se`), conservative.
    """
    arrays = [terms(m) for m in per_seed]
    if all(a is None for a in arrays):
        return [float(fallback(m)) for m in per_seed]
    shapes = [None if a is None else np.shape(a) for a in arrays]
    if any(a is None for a in arrays) or len(set(shapes)) != 1 or len(shapes[0]) != 1 or shapes[0][0] < 2:
        raise ValueError(f"per-example terms must be present for every seed, 1-D, of one length >= 2 (the seeds "
                         f"share one test set); got shapes {shapes}")
    return E.seeds_paired_se(np.stack([np.asarray(a, np.float64) for a in arrays]))


def outcome_records(per_seed: Sequence[dict], seeds: Sequence[int], key: str = "correct") -> dict[str, np.ndarray]:
    """``{"seed <s>|<name>": array}`` of the per-example arrays kept under ``m[key]`` of each
    seed's metrics (nested dicts joined by ``|``), for :func:`write_artefact`'s ``outcomes``."""
    out: dict[str, np.ndarray] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}|{k}", v)
        else:
            out[prefix] = np.asarray(value)

    for s, m in zip(seeds, per_seed):
        walk(f"seed {s}", m.get(key, {}))
    return out


def combine_seeds(per_seed: Sequence[Sequence[dict]], *, confidence: float = 0.95) -> list[dict]:
    """Rows of several seeds (the same rows in the same order for every seed) as one set of
    rows: a number becomes ``{"mean", "low", "high", "n", "values"}`` (``low``/``high``: the
    Student-t interval over seeds; NaN with one seed), anything else is kept from the first
    seed. A cell missing (None) on some seed is averaged over the seeds that have it."""
    if not per_seed:
        return []
    n_rows = len(per_seed[0])
    if any(len(rows) != n_rows for rows in per_seed):
        raise ValueError(f"every seed must give the same rows; got {[len(r) for r in per_seed]} rows")
    out = []
    for i in range(n_rows):
        row = {}
        for col, first in per_seed[0][i].items():
            vals = [rows[i].get(col) for rows in per_seed]
            nums = [float(v) for v in vals if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                    and v is not None and math.isfinite(float(v))]
            if isinstance(first, (float, np.floating)) or (nums and not isinstance(first, (str, bool))
                                                           and not isinstance(first, (int, np.integer))):
                if not nums:
                    row[col] = None
                    continue
                if len(nums) == len(vals) and all(v == nums[0] for v in nums):
                    row[col] = nums[0]  # the same on every seed (a reference value, a setting)
                    continue
                iv = E.interval(nums, confidence=confidence)
                row[col] = {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "values": vals}
            else:
                row[col] = first
        out.append(row)
    return out
