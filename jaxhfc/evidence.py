"""Verdicts on claims: a signed effect, its interval over seeds (and test images), and
named preconditions.

A *claim* is stated as an effect whose sign is the claim (e.g. "LFC-trained minus
HFC-trained test accuracy", claimed > 0). Each seed gives one value of the effect, optionally
with a standard error over the test images it was measured on. :func:`judge` returns a
:class:`Judgement` whose ``verdict`` is one of

* ``"holds"``: the interval excludes 0 in the claimed direction;
* ``"contradicted"``: the interval excludes 0 in the other direction;
* ``"inconclusive"``: the interval contains 0, or there is no interval (one seed and no
  per-image standard error), or the interval has zero width (identical values on every seed
  and no per-image error: no spread is no evidence);
* ``"no power"``: the interval contains 0 and the opposite sign was impossible to begin with
  (e.g. a defence judged against an undefended accuracy of 0, which no defence can lower), so
  the claim could not have failed: the rule says so instead of "inconclusive";
* ``"not tested"``: a precondition failed that could have produced the verdict the interval
  gives (e.g. a model that did not train, an attack that failed its sanity checks); the failed
  ones are named.

Gates guard a direction. Each :class:`Precondition` says which verdicts its failure could make
false (``guards``): ``"both"`` (the default: a model that did not train can produce anything),
``"holds"`` (e.g. an under-fitted large-batch model has a small generalisation gap for the wrong
reason: that can only fake the claim) or ``"contradicted"`` (e.g. an under-fitted LFC-trained
model can only lower the LFC arm). A failed gate blocks only the verdicts it guards: an interval
that excludes 0 in a direction no failed gate guards keeps its verdict, with a note naming the
failed gates; an interval that contains 0 with a failed gate is "not tested".

Interval (``method`` says which parts were used):

* seeds (n >= 2): Student t, ``mean +- t_{n-1, (1+c)/2} * sd / sqrt(n)``;
* test images (when per-seed standard errors ``se`` are given): ``z_{(1+c)/2} *
  sqrt(mean(se^2))``, *not* divided by n, since every seed is evaluated on the same test
  images and their sampling error does not average away over seeds;
* both: the two half-widths added in quadrature;
* ``bounds`` (the range the statistic can take, e.g. ``(-1, 1)`` for a difference of
  accuracies): the interval is intersected with it, so it never claims impossible values.

Families (:func:`holm`): the claims of one artefact are one family; Holm's step-down
procedure keeps the family-wise error at ``1 - confidence``: the claim with the smallest
p-value is judged at confidence ``1 - alpha / m``, the next at ``1 - alpha / (m - 1)``, ... and
once one is not rejected, none after it is. The p-value of a claim is ``1 - c*``, where ``c*``
is the largest confidence at which its interval still excludes 0.

Per-image errors of proportions (:func:`diff_se`) use add-one smoothing, ``(k + 1) / (n + 2)``,
so an accuracy of exactly 0 or 1 still carries its sampling error.

Everything here is pure numpy/math; no scipy needed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Optional, Sequence

import numpy as np

from jaxhfc.stats import normal_quantile, t_quantile

__all__ = [
    "VERDICTS",
    "Interval",
    "Judgement",
    "Precondition",
    "diff_se",
    "cell_excess",
    "cell_excess_terms",
    "chance_floor",
    "label_blind_terms",
    "mde",
    "holm",
    "p_value",
    "interval",
    "judge",
    "normal_quantile",
    "paired_se",
    "seeds_paired_se",
    "precondition",
    "t_quantile",
]

VERDICTS = ("holds", "contradicted", "inconclusive", "no power", "not tested")


# ------------------------------------------------------------------------ floors

#: The chance level the floors of the drivers are written for: 10 balanced classes.
REFERENCE_CHANCE = 0.1


def chance_floor(level: float, *, num_classes: int, majority: Optional[float] = None) -> float:
    """An accuracy floor written for 10 balanced classes, on the scale of a dataset whose best
    constant classifier scores ``majority`` (the largest class share; default ``1 /
    num_classes``): the same fraction of the way from that score to 1,
    ``majority + (level - 0.1) / 0.9 * (1 - majority)``. Unchanged for 10 balanced classes; a
    floor of 0 or less (no gate) stays as it is. Raises on a majority share outside
    ``[1 / num_classes, 1)``."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
    m = 1.0 / num_classes if majority is None else float(majority)
    if not 1.0 / num_classes - 1e-9 <= m < 1.0:
        raise ValueError(f"majority share must lie in [1/{num_classes}, 1), got {majority!r}")
    if level <= 0:
        return float(level)
    return float(m + (float(level) - REFERENCE_CHANCE) / (1.0 - REFERENCE_CHANCE) * (1.0 - m))


# ------------------------------------------------------------------------ standard errors


def paired_se(a_correct, b_correct) -> float:
    """Standard error of ``mean(a) - mean(b)`` for per-example 0/1 outcomes of two models (or
    two inputs) on the *same* examples: ``sd(a - b, ddof=1) / sqrt(n)``."""
    a = np.asarray(a_correct, np.float64).reshape(-1)
    b = np.asarray(b_correct, np.float64).reshape(-1)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two equal-length outcome vectors of >= 2 examples, got {a.shape} and {b.shape}")
    return float(np.std(a - b, ddof=1) / math.sqrt(a.size))


def seeds_paired_se(terms, *, pseudo: float = 1.0) -> list[float]:
    """Per-image standard error of a mean-over-seeds effect, from per-example effect terms
    ``terms (S, N)`` of ``S`` seeds on the *same* ``N`` test images (e.g. ``1[A right] -
    1[B right]``): ``sd_i(mean_s terms[s, i]) / sqrt(N)``, returned once per seed so that
    :func:`interval`'s image term (``sqrt(mean(se^2))``) is exactly it.

    Pairing on images removes what the seeds share image by image, and averaging over seeds
    before taking the spread over images keeps the per-seed noise that the seed term already
    counts from being counted in full a second time (only its ``1 / S`` share remains).

    Smoothing, as add-one smoothing does for a proportion: two pseudo-images whose terms lie
    ``pseudo`` above and below the mean (one image each way on which the two arms disagree) join
    the ``N`` images, so terms that are equal on every image seen (two arms both at accuracy 0)
    still carry a sampling error (about ``sqrt(2) pseudo / N``); the mean is unchanged and the
    error of real spread barely moves. ``pseudo=0``: none.
    """
    d = np.asarray(terms, np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"terms must have shape (seeds, images >= 2), got {d.shape}")
    if not (np.isfinite(pseudo) and pseudo >= 0):
        raise ValueError(f"pseudo must be a finite number >= 0, got {pseudo!r}")
    col = d.mean(axis=0)
    if pseudo:
        col = np.concatenate([col, col.mean() + np.array([pseudo, -pseudo])])
    se = float(np.std(col, ddof=1) / math.sqrt(col.size))
    return [se] * d.shape[0]


def median_shift_se(a, b, *, n_boot: int = 500, seed: int = 0) -> list[float]:
    """Per-image standard error of a mean-over-seeds median shift ``mean_s [median(a[s]) -
    median(b[s])]``, where ``a`` and ``b`` ``(S, N)`` are per-example values of two arms of ``S``
    seeds on the same ``N`` images (e.g. minimal eps; +-inf allowed, NaN not): the spread of that
    shift when the images are drawn again (a bootstrap of image indices shared by every seed
    and both arms, so the pairing is kept; ``seed`` fixes it). Returned once per seed, as
    :func:`seeds_paired_se` does, for :func:`judge`'s ``se``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[1] < 2 or np.isnan(a).any() or np.isnan(b).any():
        raise ValueError(f"a and b must align as (seeds, images >= 2) without NaN, got {a.shape} and {b.shape}")
    if int(n_boot) < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot!r}")
    idx = np.random.default_rng(seed).integers(0, a.shape[1], size=(int(n_boot), a.shape[1]))
    shift = (np.median(a[:, idx], axis=2) - np.median(b[:, idx], axis=2)).mean(axis=0)  # (n_boot,)
    shift = shift[np.isfinite(shift)]
    se = float(np.std(shift, ddof=1)) if shift.size >= 2 else float("inf")
    return [se] * a.shape[0]


def diff_se(p1: float, n1: int, p2: float, n2: int) -> float:
    """Standard error of a difference of two independent proportions ``p1 - p2`` measured on
    ``n1`` and ``n2`` examples (binomial, ``sqrt(q1(1-q1)/n1 + q2(1-q2)/n2)`` with the add-one
    smoothed ``q = (p n + 1) / (n + 2)``, so an accuracy of 0 or 1 is not an exact number)."""
    if n1 < 1 or n2 < 1:
        raise ValueError(f"n1 and n2 must be >= 1, got {n1}, {n2}")

    def var(p: float, n: int) -> float:  # add-one smoothed: never 0 at p = 0 or 1
        q = (min(max(p, 0.0), 1.0) * n + 1.0) / (n + 2.0)
        return q * (1.0 - q) / n

    return math.sqrt(var(p1, n1) + var(p2, n2))


def cell_excess(low_right, high_pred, labels) -> tuple[float, float]:
    """How much more often "LFC wrong, HFC right" occurs than if the HFC predictions carried
    no information about the label, as a fraction of the examples, with its standard error.

    The baseline keeps every prediction the model made but breaks the link between an
    example's HFC prediction and its label: HFC predictions shuffled across the LFC-wrong
    examples (the conditioning set the count is taken in), so LFC-wrong example ``i`` is "HFC
    right" with probability ``f(y_i)``, the share of HFC predictions equal to its label among
    the LFC-wrong examples (:func:`label_blind_terms`; shares over all examples would be biased
    when the LFC-wrong examples' classes differ from the whole set's). For a constant classifier on HFC inputs (e.g. at a radius where the
    HFC image is all zeros) the observed count equals this baseline, so the excess is 0,
    whereas the raw count is not (every example of the favourite class is "HFC right").

    Args:
      low_right: ``(N,)`` bool, the model is right on the LFC input.
      high_pred: ``(N,)`` int, its prediction on the HFC input.
      labels: ``(N,)`` int labels.

    Returns:
      ``(excess, se)``: ``mean(1[L-] * (1[H+] - f(y)))`` and ``sd(.) / sqrt(N)`` of the same
      per-example terms (the shares ``f`` treated as known); the terms themselves are
      :func:`cell_excess_terms`.
    """
    terms = cell_excess_terms(low_right, high_pred, labels)
    return float(terms.mean()), float(np.std(terms, ddof=1) / math.sqrt(terms.size))


def cell_excess_terms(low_right, high_pred, labels) -> np.ndarray:
    """The per-example terms ``1[L-] * (1[H+] - f(y))`` whose mean is :func:`cell_excess`."""
    lw = ~np.asarray(low_right, bool).reshape(-1)
    hp = np.asarray(high_pred).reshape(-1).astype(np.int64)
    if lw.shape != hp.shape:
        raise ValueError(f"need equal-length vectors of >= 2 examples, got {lw.shape}, {hp.shape}")
    return lw * label_blind_terms(hp, labels, within=lw)


def label_blind_terms(pred, labels, *, within=None) -> np.ndarray:
    """Per example, right minus what a label-blind classifier with the same predictions would
    score: ``1[pred_i == y_i] - f(y_i)``, with ``f(c)`` the share of predictions equal to ``c``
    among the examples of the conditioning set ``within`` ((N,) bool; default all). Their mean
    over the set is the accuracy in excess of the label-blind baseline ``sum_c p_pred(c)
    p_label(c)``: 0 for a constant classifier, whatever the class balance. Examples outside
    ``within`` get terms too (against the same shares); callers mask them.

    Raises on vectors of unequal length or fewer than 2 examples."""
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    w = np.ones(p.shape, bool) if within is None else np.asarray(within, bool).reshape(-1)
    if not (p.shape == y.shape == w.shape) or y.size < 2:
        raise ValueError(f"need equal-length vectors of >= 2 examples, got {p.shape}, {y.shape}, {w.shape}")
    k = int(max(p.max(), y.max())) + 1
    share = np.bincount(p[w], minlength=k) / max(int(w.sum()), 1)
    return (p == y).astype(np.float64) - share[y]


# ------------------------------------------------------------------------ intervals and verdicts


@dataclasses.dataclass(frozen=True)
class Interval:
    """Mean effect and its interval. ``low``/``high`` are NaN when there is no interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    method: str

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:+.3f} (no interval)"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def _finite(values: Iterable[float], name: str) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty; need one value per seed")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite numbers, got {arr.tolist()}")
    return arr


def interval(values: Sequence[float], *, se: Optional[Sequence[float]] = None,
             confidence: float = 0.95, bounds: Optional[tuple[float, float]] = None) -> Interval:
    """Mean of per-seed effects and its ``confidence`` interval (see the module docstring).

    Args:
      values: one effect per seed.
      se: optional per-seed standard errors over test images (same length as ``values``).
      confidence: e.g. 0.95.
      bounds: ``(low, high)``, the range the effect can take; the interval is clipped to it.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    v = _finite(values, "values")
    n = int(v.size)
    mean = float(v.mean())
    half_sq, parts = 0.0, []
    if n >= 2:
        t = t_quantile(0.5 + confidence / 2, n - 1)
        half_sq += (t * float(np.std(v, ddof=1)) / math.sqrt(n)) ** 2
        parts.append(f"t over {n} seeds")
    if se is not None:
        s = _finite(se, "se")
        if s.size != n or np.any(s < 0):
            raise ValueError(f"se must hold {n} non-negative values, got {s.tolist()}")
        z = normal_quantile(0.5 + confidence / 2)
        half_sq += (z * math.sqrt(float(np.mean(s ** 2)))) ** 2
        parts.append("normal over test images")
    if not parts:
        return Interval(mean, float("nan"), float("nan"), n, confidence, "none (1 seed, no per-image error)")
    half = math.sqrt(half_sq)
    low, high, method = mean - half, mean + half, " + ".join(parts)
    if bounds is not None:
        b_lo, b_hi = (float(b) for b in bounds)
        if not b_lo <= mean <= b_hi:
            raise ValueError(f"mean effect {mean} lies outside its bounds {bounds}")
        if low < b_lo or high > b_hi:
            low, high = max(low, b_lo), min(high, b_hi)
            method += f", clipped to [{b_lo:g}, {b_hi:g}]"
    return Interval(mean, low, high, n, confidence, method)


#: What a failed precondition can make false (:class:`Precondition`'s ``guards``).
GUARDS = ("both", "holds", "contradicted")


@dataclasses.dataclass(frozen=True)
class Precondition:
    """A named condition a claim needs before its effect means anything.

    ``guards``: the verdicts its failure could make false, ``"both"``, ``"holds"`` or
    ``"contradicted"`` (see the module docstring); a failed gate blocks only those."""

    name: str
    ok: bool
    detail: str = ""
    guards: str = "both"

    def __post_init__(self):
        if self.guards not in GUARDS:
            raise ValueError(f"guards must be one of {GUARDS}, got {self.guards!r}")

    def blocks(self) -> tuple[str, ...]:
        """The verdicts this precondition blocks (none when it passed)."""
        if self.ok:
            return ()
        return ("holds", "contradicted") if self.guards == "both" else (self.guards,)

    def __str__(self) -> str:
        guard = "" if self.guards == "both" else f" [guards {self.guards}]"
        return f"{self.name}{guard}: {'ok' if self.ok else 'FAILED'}{f' ({self.detail})' if self.detail else ''}"


def precondition(name: str, values: Iterable[float], *, minimum: Optional[float] = None,
                 maximum: Optional[float] = None, digits: int = 3, guards: str = "both") -> Precondition:
    """A precondition that every per-seed value lies in ``[minimum, maximum]``; ``detail``
    lists the values. A missing (None/NaN) value fails it. ``guards``: the verdicts its failure
    could make false (:class:`Precondition`)."""
    vals = [None if v is None else float(v) for v in values]
    ok = bool(vals) and all(
        v is not None and math.isfinite(v) and (minimum is None or v >= minimum) and (maximum is None or v <= maximum)
        for v in vals
    )
    bound = " and ".join(s for s in ((f">= {minimum:g}" if minimum is not None else ""),
                                      (f"<= {maximum:g}" if maximum is not None else "")) if s)
    shown = ", ".join("n/a" if v is None else f"{v:.{digits}f}" for v in vals)
    return Precondition(f"{name} {bound}".strip(), ok, shown, guards)


@dataclasses.dataclass(frozen=True)
class Judgement:
    """A verdict with everything it rests on."""

    verdict: str
    effect: Interval
    direction: int
    values: tuple[float, ...]
    preconditions: tuple[Precondition, ...]
    se: Optional[tuple[float, ...]] = None
    bounds: Optional[tuple[float, float]] = None
    opposite_possible: bool = True
    note: str = ""
    #: the family-wise control already applied to this judgement's family (``"holm"``), or None
    family_control: Optional[str] = None

    @property
    def failed(self) -> tuple[Precondition, ...]:
        return tuple(p for p in self.preconditions if not p.ok)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "effect": dataclasses.asdict(self.effect),
            "direction": self.direction,
            "values": list(self.values),
            "preconditions": [dataclasses.asdict(p) for p in self.preconditions],
            "se": None if self.se is None else list(self.se),
            "bounds": None if self.bounds is None else list(self.bounds),
            "opposite_possible": self.opposite_possible,
            "note": self.note,
            "family_control": self.family_control,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Judgement":
        """Inverse of :meth:`to_dict`, also after a JSON round trip (which writes NaN as null)."""
        nan = lambda v: float("nan") if v is None else v  # noqa: E731
        eff = {k: (nan(v) if k in ("mean", "low", "high") else v) for k, v in d["effect"].items()}
        return cls(d["verdict"], Interval(**eff), int(d["direction"]), tuple(nan(v) for v in d["values"]),
                   tuple(Precondition(**p) for p in d["preconditions"]),
                   None if d.get("se") is None else tuple(d["se"]),
                   None if d.get("bounds") is None else tuple(d["bounds"]),
                   bool(d.get("opposite_possible", True)), d.get("note", ""),
                   # files written before the field existed said so only in the note
                   d.get("family_control", "holm" if "Holm" in d.get("note", "") else None))


def judge(values: Sequence[float], *, direction: int = 1, se: Optional[Sequence[float]] = None,
          preconditions: Sequence[Precondition] = (), confidence: float = 0.95,
          bounds: Optional[tuple[float, float]] = None, opposite_possible: bool = True) -> Judgement:
    """The verdict on a claim whose effect, per seed, is ``values`` and is claimed to be
    ``> 0`` (``direction=1``) or ``< 0`` (``direction=-1``). See the module docstring.

    A failed precondition gives ``"not tested"`` when it guards the verdict the interval gives
    (or the interval contains 0); a verdict no failed precondition guards stands, with a note.
    Values that cannot be computed (None/NaN) give ``"not tested"``, with a precondition saying so. ``bounds``: the effect's possible range (the interval is clipped to
    it). ``opposite_possible=False``: the data make an effect of the other sign impossible (a
    floor or ceiling), so an interval that contains 0 gives ``"no power"``.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 (claimed > 0) or -1 (claimed < 0), got {direction!r}")
    pre = tuple(preconditions)
    raw = [None if v is None else float(v) for v in values]
    if not raw or any(v is None or not math.isfinite(v) for v in raw):
        pre = pre + (Precondition("effect computable on every seed", False,
                                  ", ".join("n/a" if v is None else f"{v:.3f}" for v in raw)),)
        nan = float("nan")
        return Judgement("not tested", Interval(nan, nan, nan, len(raw), confidence, "none"), direction,
                         tuple(nan if v is None else v for v in raw), pre)
    se_t = None if se is None else tuple(float(v) for v in se)
    iv = interval(raw, se=se_t, confidence=confidence, bounds=bounds)
    note = ""
    if math.isnan(iv.low):
        verdict = "inconclusive"
    elif iv.high - iv.low <= 1e-12 * max(1.0, abs(iv.mean)):
        verdict, note = "inconclusive", "zero-width interval (identical values, no per-image error): no evidence"
    elif direction * iv.low > 0 and direction * iv.high > 0:
        verdict = "holds"
    elif direction * iv.low < 0 and direction * iv.high < 0:
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    if verdict == "inconclusive" and not opposite_possible:
        verdict = "no power"
        note = note or "the opposite sign was impossible (a floor or ceiling): this claim could not have failed"
    failed = [p for p in pre if not p.ok]
    if failed:
        blocked = {v for p in failed for v in p.blocks()}
        if verdict in ("holds", "contradicted") and verdict not in blocked:
            note = (f"{verdict}, although {', '.join(p.name for p in failed)} failed: "
                    f"{'that gate guards' if len(failed) == 1 else 'those gates guard'} only the other direction")
        else:
            verdict = "not tested"
    return Judgement(verdict, iv, direction, tuple(raw), pre, se_t, None if bounds is None else tuple(bounds),
                     bool(opposite_possible), note)


def mde(sd_seed: float, se_image: float, n_seeds: int, *, confidence: float = 0.95, power: float = 0.8) -> float:
    """Minimum detectable effect of a claim judged by :func:`interval` over ``n_seeds`` seeds: the
    smallest true effect whose interval excludes 0 in its direction with probability ``power``.

    ``sd_seed``: the spread of the per-seed effect over seeds; ``se_image``: its per-image
    standard error, shared by the seeds (the seeds score the same test images, so it does not
    average away). The interval's half-width is ``h = sqrt((t sd / sqrt(n))^2 + (z se)^2)`` and
    the mean effect varies with ``s = sqrt(sd^2 / n + se^2)``, so ``MDE = h + z_power s``
    (normal approximation for the mean, the seeds' t quantile in the interval)."""
    if n_seeds < 2 and se_image <= 0:
        return float("inf")
    if not (0.0 < power < 1.0):
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    if sd_seed < 0 or se_image < 0 or not (math.isfinite(sd_seed) and math.isfinite(se_image)):
        raise ValueError(f"sd_seed and se_image must be finite and >= 0, got {sd_seed!r}, {se_image!r}")
    t = t_quantile(0.5 + confidence / 2, n_seeds - 1) if n_seeds >= 2 else 0.0
    z = normal_quantile(0.5 + confidence / 2)
    half = math.sqrt((t * sd_seed / math.sqrt(n_seeds)) ** 2 + (z * se_image) ** 2)
    spread = math.sqrt(sd_seed ** 2 / n_seeds + se_image ** 2)
    return half + normal_quantile(power) * spread


def rejudge(j: Judgement, confidence: float) -> Judgement:
    """``j`` judged again from its own values, errors and bounds at another confidence."""
    return judge(j.values, direction=j.direction, se=j.se, preconditions=j.preconditions, confidence=confidence,
                 bounds=j.bounds, opposite_possible=j.opposite_possible)


def _excludes_zero(j: Judgement, confidence: float) -> bool:
    iv = interval(j.values, se=j.se, confidence=confidence, bounds=j.bounds)
    return not math.isnan(iv.low) and iv.high - iv.low > 0 and (iv.low > 0 or iv.high < 0)


def p_value(j: Judgement) -> float:
    """Two-sided p-value of a judged effect against 0: ``1 - c*``, with ``c*`` the largest
    confidence at which its interval (same method) excludes 0; 1.0 when no interval does."""
    if any(not math.isfinite(v) for v in j.values) or not _excludes_zero(j, 1e-6):
        return 1.0
    lo, hi = 1e-6, 1.0 - 1e-15
    if _excludes_zero(j, hi):
        return 1.0 - hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _excludes_zero(j, mid) else (lo, mid)
    return 1.0 - lo


def holm(judgements: Sequence[Judgement], *, confidence: float = 0.95) -> list[Judgement]:
    """The judgements of one family with Holm's step-down control of the family-wise error
    (``alpha = 1 - confidence``); "not tested" ones are left out of the family. Each tested
    judgement comes back judged at its Holm confidence; after the first that is not rejected,
    every later one is "inconclusive" (or "no power")."""
    alpha = 1.0 - confidence
    out = list(judgements)
    tested = [i for i, j in enumerate(out) if j.verdict != "not tested"]
    m = len(tested)
    order = sorted(tested, key=lambda i: p_value(out[i]))
    stopped = False
    for k, i in enumerate(order):
        c = 1.0 - alpha / (m - k)
        j = rejudge(out[i], c)
        if stopped and j.verdict in ("holds", "contradicted"):
            j = dataclasses.replace(j, verdict="no power" if not j.opposite_possible else "inconclusive",
                                    note="Holm: a claim with a smaller p-value in its family was not rejected")
        if j.verdict not in ("holds", "contradicted"):
            stopped = True
        note = f"Holm {k + 1} of {m} in its family (confidence {c:.4g})"
        out[i] = dataclasses.replace(j, note=f"{j.note}; {note}" if j.note else note)
    return [dataclasses.replace(j, family_control="holm") for j in out]
