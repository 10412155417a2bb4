"""The verdict machinery: quantiles against scipy and tables, intervals by hand, and verdicts
on a planted effect, on noise, on a constant classifier and on failed preconditions."""
import math

import numpy as np
import pytest

from jaxhfc import evidence as E


def test_quantiles_match_scipy_and_tables():
    stats = pytest.importorskip("scipy.stats")
    # Textbook values first (two-sided 95%).
    assert E.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert E.t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert E.normal_quantile(0.975) == pytest.approx(1.95996, abs=1e-5)
    for df in (1, 2, 3, 4, 7, 19, 60):
        for p in (0.6, 0.9, 0.975, 0.995):
            assert E.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)
            assert E.t_quantile(1 - p, df) == pytest.approx(stats.t.ppf(1 - p, df), rel=1e-8)
    for p in (1e-8, 0.001, 0.2, 0.5, 0.8, 0.999):
        assert E.normal_quantile(p) == pytest.approx(stats.norm.ppf(p), abs=1e-9)
    with pytest.raises(ValueError, match="p must"):
        E.t_quantile(1.0, 3)


def test_interval_by_hand():
    v = [0.2, 0.3, 0.4]
    iv = E.interval(v)
    half = 4.302652729749464 * 0.1 / math.sqrt(3)  # sd = 0.1
    assert iv.mean == pytest.approx(0.3) and iv.low == pytest.approx(0.3 - half) and iv.high == pytest.approx(0.3 + half)
    assert iv.n == 3 and "t over 3 seeds" in iv.method
    # Per-image errors add in quadrature, not divided by n (same test images for every seed).
    iv2 = E.interval(v, se=[0.01, 0.02, 0.02])
    img = 1.959963984540054 * math.sqrt((0.01 ** 2 + 0.02 ** 2 + 0.02 ** 2) / 3)
    assert iv2.high - iv2.mean == pytest.approx(math.hypot(half, img))
    one = E.interval([0.5])
    assert math.isnan(one.low) and "no per-image" in one.method
    assert E.interval([0.5], se=[0.1]).low == pytest.approx(0.5 - 0.1959963984540054)
    with pytest.raises(ValueError, match="finite"):
        E.interval([0.1, float("nan")])


def test_verdicts_planted_effect_noise_and_contradiction():
    rng = np.random.default_rng(0)
    planted = 0.2 + 0.02 * rng.standard_normal(5)
    assert E.judge(planted).verdict == "holds"
    assert E.judge(planted, direction=-1).verdict == "contradicted"
    assert E.judge(-planted).verdict == "contradicted"
    noise = [0.05, -0.04, 0.01]
    assert E.judge(noise).verdict == "inconclusive"
    assert E.judge([0.3]).verdict == "inconclusive"  # one seed, no interval
    # A tiny effect measured on few images is inconclusive once the image error is counted.
    assert E.judge([0.02, 0.021, 0.019]).verdict == "holds"
    assert E.judge([0.02, 0.021, 0.019], se=[0.02] * 3).verdict == "inconclusive"


def test_noise_is_inconclusive_most_of_the_time():
    # Effects drawn from a zero-mean distribution: a 95% interval wrongly excludes 0 about 5%.
    rng = np.random.default_rng(1)
    verdicts = [E.judge(rng.standard_normal(3)).verdict for _ in range(400)]
    wrong = sum(v != "inconclusive" for v in verdicts) / len(verdicts)
    assert wrong < 0.1


def test_failed_precondition_means_not_tested_and_is_named():
    pre = [E.precondition("M_natural test acc", [0.81, 0.79, 0.83], minimum=0.5),
           E.precondition("M_adversarial test acc", [0.22, 0.21, 0.25], minimum=0.6)]
    assert pre[0].ok and not pre[1].ok and "0.220" in pre[1].detail and ">= 0.6" in pre[1].name
    j = E.judge([0.3, 0.31, 0.29], preconditions=pre)
    assert j.verdict == "not tested" and j.failed == (pre[1],)
    assert E.precondition("x", [0.7, None], minimum=0.5).ok is False
    j2 = E.judge([0.1, None, 0.2])
    assert j2.verdict == "not tested" and "computable" in j2.failed[0].name
    assert E.Judgement.from_dict(j.to_dict()) == j
    # JSON writes NaN (no interval) as null; reading it back gives NaN again
    import json

    one = E.judge([0.3])
    back = E.Judgement.from_dict(json.loads(json.dumps(one.to_dict()).replace("NaN", "null")))
    assert back.verdict == "inconclusive" and math.isnan(back.effect.low) and back.effect.mean == 0.3


def test_cell_excess_constant_and_informative_classifiers():
    rng = np.random.default_rng(2)
    n, k = 4000, 10
    y = rng.integers(0, k, n)
    low_right = rng.random(n) < 0.6
    # Constant HFC predictions (an all-zero HFC image): the raw "L- H+" count is large...
    const = np.full(n, 3)
    raw = np.mean(~low_right & (const == y))
    assert raw > 0.03
    # ...but it is exactly what label-blind predictions give: excess 0.
    ex, se = E.cell_excess(low_right, const, y)
    assert abs(ex) < 1e-12
    # Random HFC predictions: excess ~ 0 within a few standard errors.
    ex_r, se_r = E.cell_excess(low_right, rng.integers(0, k, n), y)
    assert abs(ex_r) < 4 * se_r
    # A model right from HFC on 70% of images: excess ~ P(L-) * (0.7 - 0.1) > 0, by hand.
    right = rng.random(n) < 0.7
    pred = np.where(right, y, (y + 1 + rng.integers(0, k - 1, n)) % k)
    ex_i, se_i = E.cell_excess(low_right, pred, y)
    share = np.bincount(pred, minlength=k) / n
    assert ex_i == pytest.approx(np.mean(~low_right * ((pred == y) - share[y])))
    assert ex_i > 0.2 and ex_i - 4 * se_i > 0
    # The verdict on a constant classifier is "not tested" through its precondition.
    acc = np.mean(const == y)
    j = E.judge([ex, ex, ex], preconditions=[E.precondition("HFC test acc", [acc] * 3, minimum=0.2)])
    assert j.verdict == "not tested"


def test_standard_errors_by_hand():
    a = np.array([1, 1, 0, 1, 0, 1], bool)
    b = np.array([0, 1, 0, 0, 0, 1], bool)
    d = a.astype(float) - b
    assert E.paired_se(a, b) == pytest.approx(np.std(d, ddof=1) / math.sqrt(6))
    assert E.diff_se(0.5, 100, 0.2, 400) == pytest.approx(math.sqrt(0.25 / 100 + 0.16 / 400))
