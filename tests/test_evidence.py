"""The verdict machinery: quantiles against scipy and tables, intervals by hand, and verdicts
on a planted effect, on noise, on a constant classifier and on failed preconditions."""
import json
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
    share = np.bincount(pred[~low_right], minlength=k) / np.sum(~low_right)  # shares within the LFC-wrong set
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
    # add-one smoothing: q = (k + 1) / (n + 2); 0.5 of 100 -> 51/102, 0.2 of 400 -> 81/402
    q1, q2 = 51 / 102, 81 / 402
    assert E.diff_se(0.5, 100, 0.2, 400) == pytest.approx(math.sqrt(q1 * (1 - q1) / 100 + q2 * (1 - q2) / 400))
    # an accuracy of exactly 0 or 1 still has a sampling error: 1/(n+2) * (n+1)/(n+2) / n
    assert E.diff_se(0.0, 128, 0.0, 128) == pytest.approx(math.sqrt(2 * (1 / 130) * (129 / 130) / 128))
    assert E.diff_se(1.0, 128, 0.0, 128) > 0


# ------------------------------------------------------------------ evidence v2: rules that can fail


def test_identical_values_are_no_evidence():
    j = E.judge([0.004] * 3)
    assert j.verdict == "inconclusive" and "zero-width" in j.note
    assert E.judge([0.004] * 3, se=[0.0] * 3).verdict == "inconclusive"
    # the same values with a real per-image error are judged by that error
    assert E.judge([0.3] * 3, se=[0.02] * 3).verdict == "holds"


def test_interval_stays_in_the_statistics_range():
    vals = [0.774, 0.758, 0.27]  # one seed whose HFC model learned, two that did not
    free = E.interval(vals)
    assert free.high > 1.0
    iv = E.interval(vals, bounds=(-1, 1))
    assert -1 <= iv.low and iv.high == 1.0 and "clipped" in iv.method and iv.low == pytest.approx(free.low)
    with pytest.raises(ValueError, match="outside its bounds"):
        E.interval([2.0, 3.0], bounds=(-1, 1))


def test_no_power_when_the_opposite_sign_is_impossible():
    # a defence against an undefended accuracy of 0: the effect cannot be negative
    j = E.judge([0.0, 0.01, 0.0], se=[0.01] * 3, opposite_possible=False)
    assert j.verdict == "no power"
    assert E.judge([0.0, 0.01, 0.0], se=[0.01] * 3).verdict == "inconclusive"
    # a clear effect still holds: the flag only renames what would have been inconclusive
    assert E.judge([0.3, 0.32, 0.31], se=[0.02] * 3, opposite_possible=False).verdict == "holds"


def test_p_value_matches_scipy_t_test():
    stats = pytest.importorskip("scipy.stats")
    vals = [0.12, 0.05, 0.2, 0.08, 0.15]
    j = E.judge(vals)
    assert E.p_value(j) == pytest.approx(stats.ttest_1samp(vals, 0.0).pvalue, rel=1e-4)
    assert E.p_value(E.judge([0.1, -0.1, 0.0])) == pytest.approx(1.0)


def test_holm_by_hand():
    stats = pytest.importorskip("scipy.stats")
    # two claims with p ~ 0.040 and ~ 0.048: each holds alone at 95%, neither survives Holm
    a = [0.1, 0.04, 0.06, 0.12, 0.0]
    b = [0.09, 0.03, 0.05, 0.11, 0.0]
    pa, pb = stats.ttest_1samp(a, 0).pvalue, stats.ttest_1samp(b, 0).pvalue
    assert 0.025 < pa < 0.05 and 0.025 < pb < 0.05
    ja, jb = E.judge(a), E.judge(b)
    assert ja.verdict == jb.verdict == "holds"
    ha, hb = E.holm([ja, jb])
    assert ha.verdict == hb.verdict == "inconclusive"
    # with a strong first claim, the second is judged at 1 - 0.05 / 1 and holds
    strong = E.judge([0.5, 0.52, 0.49, 0.51, 0.5])
    hs, hb2 = E.holm([strong, jb])
    assert hs.verdict == "holds" and hb2.verdict == "holds" and hs.effect.confidence == pytest.approx(0.975)
    assert hb2.effect.confidence == pytest.approx(0.95)
    # a "not tested" claim is not part of the family
    nt = E.judge([0.5] * 3, preconditions=[E.Precondition("model trained", False)])
    out = E.holm([nt, jb])
    assert out[0].verdict == "not tested" and out[1].verdict == "holds"


def _simulate(effect_sd: float, *, reps: int, seeds: int, rng, images: int = 0) -> np.ndarray:
    """Verdicts of ``reps`` simulated claims: per-seed effects with a true mean of ``effect_sd``
    seed standard deviations; with ``images``, accuracies of two models measured on the same
    ``images`` test images (per-image binomial errors given), equal in truth when the effect is 0."""
    out = []
    for _ in range(reps):
        if images:
            p = rng.beta(4, 1, images)  # per-image difficulty, shared by both models and every seed
            shift = effect_sd * 0.02
            a = [(rng.random(images) < np.clip(p + shift + rng.normal(0, 0.02), 0, 1)).mean() for _ in range(seeds)]
            b = [(rng.random(images) < np.clip(p + rng.normal(0, 0.02), 0, 1)).mean() for _ in range(seeds)]
            vals = np.subtract(a, b)
            se = [E.diff_se(x, images, y, images) for x, y in zip(a, b)]
            out.append(E.judge(vals, se=se, bounds=(-1, 1)).verdict)
        else:
            out.append(E.judge(rng.normal(effect_sd, 1.0, seeds)).verdict)
    return np.asarray(out)


def test_null_false_holds_and_power_by_simulation():
    """Under a null effect "holds" comes at most at the nominal 2.5% (within Monte Carlo
    error); the power for planted effects of 1, 2 and 3 seed standard deviations matches the
    noncentral t (scipy) for the seeds-only interval."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    reps, seeds = 4000, 5
    null = _simulate(0.0, reps=reps, seeds=seeds, rng=rng)
    mc = 3 * math.sqrt(0.025 * 0.975 / reps)
    # coverage: the 95% interval contains the true effect (0 here, 1.5 below) 95% of the time
    for true in (0.0, 1.5):
        ivs = [E.interval(rng.normal(true, 1.0, seeds)) for _ in range(reps)]
        cover = np.mean([iv.low <= true <= iv.high for iv in ivs])
        assert abs(cover - 0.95) < 3 * math.sqrt(0.95 * 0.05 / reps), (true, cover)
    assert np.mean(null == "holds") <= 0.025 + mc
    assert np.mean(null == "contradicted") <= 0.025 + mc
    t = stats.t.ppf(0.975, seeds - 1)
    for d in (1.0, 2.0, 3.0):
        power = np.mean(_simulate(d, reps=2000, seeds=seeds, rng=rng) == "holds")
        exact = 1 - stats.nct.cdf(t, seeds - 1, d * math.sqrt(seeds))
        assert abs(power - exact) < 3 * math.sqrt(exact * (1 - exact) / 2000) + 1e-3, (d, power, exact)


def test_null_false_holds_with_per_image_errors():
    """Accuracies of two models on the same test images: the binomial per-image term keeps the
    false-holds rate under the nominal 2.5% (it is conservative: each seed's own noise is
    counted again in full)."""
    rng = np.random.default_rng(1)
    reps = 600
    null = _simulate(0.0, reps=reps, seeds=5, rng=rng, images=300)
    assert np.mean(null == "holds") <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / reps)


def _paired(effect: float, *, reps: int, rng, seeds: int = 5, images: int = 300, shared: float = 0.8):
    """Verdicts from per-example outcomes: image i is right for model A with probability
    p_i + effect, for B with p_i; a share ``shared`` of each seed's outcomes is fixed per image
    (hard images are hard for every seed), the rest drawn per seed."""
    verdicts, widths = [], []
    for _ in range(reps):
        p = rng.beta(4, 1, images)
        fixed_a, fixed_b = rng.random(images) < p + effect, rng.random(images) < p
        terms = []
        for _ in range(seeds):
            keep = rng.random(images) < shared
            a = np.where(keep, fixed_a, rng.random(images) < p + effect)
            b = np.where(keep, fixed_b, rng.random(images) < p)
            terms.append(a.astype(float) - b)
        terms = np.asarray(terms)
        j = E.judge(terms.mean(axis=1), se=E.seeds_paired_se(terms), bounds=(-1, 1))
        verdicts.append(j.verdict)
        widths.append(j.effect.high - j.effect.low)
    return np.asarray(verdicts), float(np.mean(widths))


def test_seeds_paired_se_by_hand_and_by_simulation():
    d = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]], float)
    col = d.mean(axis=0)  # [2/3, 1/3, 2/3, 1/3], mean 1/2
    assert E.seeds_paired_se(d, pseudo=0) == [pytest.approx(np.std(col, ddof=1) / 2)] * 3
    # smoothed: two pseudo-images at 1/2 +- 1 join the four (squares 4 * 1/36 + 2 = 19/9, 5 dof)
    assert E.seeds_paired_se(d) == [pytest.approx(math.sqrt(19 / 9 / 5) / math.sqrt(6))] * 3
    # equal terms on every image (0 vs 0): an error of about sqrt(2) / N, not 0
    zero = E.seeds_paired_se(np.zeros((3, 100)))[0]
    assert zero == pytest.approx(math.sqrt(2 / 101) / math.sqrt(102)) and E.seeds_paired_se(np.zeros((3, 100)),
                                                                                          pseudo=0)[0] == 0
    with pytest.raises(ValueError, match="pseudo"):
        E.seeds_paired_se(d, pseudo=-1)
    rng = np.random.default_rng(2)
    reps = 500
    null, _ = _paired(0.0, reps=reps, rng=rng)
    assert np.mean(null == "holds") <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / reps)
    assert np.mean(null == "contradicted") <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / reps)
    planted, _ = _paired(0.06, reps=200, rng=rng)
    assert np.mean(planted == "holds") > 0.5


# ------------------------------------------------------------------ gates that guard one direction


def _gate(ok, guards):
    return E.Precondition("gate", ok, "", guards)


def test_failed_gate_blocks_only_the_direction_it_guards():
    up, down, flat = [0.30, 0.31, 0.29, 0.30], [-0.30, -0.31, -0.29, -0.30], [0.05, -0.05, 0.04, -0.04]
    # a failed gate that guards "holds" cannot hide a contradiction, and blocks a holds
    assert E.judge(down, preconditions=[_gate(False, "holds")]).verdict == "contradicted"
    assert E.judge(up, preconditions=[_gate(False, "holds")]).verdict == "not tested"
    # the mirror image
    assert E.judge(up, preconditions=[_gate(False, "contradicted")]).verdict == "holds"
    assert E.judge(down, preconditions=[_gate(False, "contradicted")]).verdict == "not tested"
    # "both" (the default) blocks either; an interval that contains 0 with a failed gate is not tested
    for values in (up, down, flat):
        assert E.judge(values, preconditions=[_gate(False, "both")]).verdict == "not tested"
    assert E.judge(flat, preconditions=[_gate(False, "holds")]).verdict == "not tested"
    # passed gates change nothing; a standing verdict names the failed gate
    j = E.judge(down, preconditions=[_gate(True, "both"), _gate(False, "holds")])
    assert j.verdict == "contradicted" and "gate" in j.note
    # one failed gate of each direction blocks both
    assert E.judge(down, preconditions=[_gate(False, "holds"), _gate(False, "contradicted")]).verdict == "not tested"
    with pytest.raises(ValueError, match="guards"):
        E.Precondition("x", True, "", "sideways")
    # round trip keeps the direction
    d = json.loads(json.dumps(j.to_dict()))
    assert E.Judgement.from_dict(d).preconditions[1].guards == "holds"


def test_holm_keeps_a_contradiction_whose_failed_gate_guards_holds():
    j1 = E.judge([-0.30, -0.31, -0.29, -0.30], preconditions=[_gate(False, "holds")])
    j2 = E.judge([0.2, 0.21, 0.19, 0.2])
    out = E.holm([j1, j2])
    assert [j.verdict for j in out] == ["contradicted", "holds"]


def test_chance_floor_is_relative_to_the_majority_class():
    assert E.chance_floor(0.5, num_classes=10) == pytest.approx(0.5)  # written for 10 balanced classes
    two = E.chance_floor(0.5, num_classes=2)
    assert two == pytest.approx(0.5 + 0.4 / 0.9 * 0.5)
    assert two > 0.5  # a constant classifier on 2 balanced classes scores 0.5 and fails it
    skew = E.chance_floor(0.5, num_classes=10, majority=0.6)
    assert skew > 0.6  # a constant classifier on the majority class scores 0.6 and fails it
    assert E.chance_floor(0.0, num_classes=2) == 0.0  # no gate stays no gate
    with pytest.raises(ValueError, match="majority"):
        E.chance_floor(0.5, num_classes=10, majority=0.05)
    with pytest.raises(ValueError, match="num_classes"):
        E.chance_floor(0.5, num_classes=1)


def test_label_blind_baseline_within_the_conditioning_set_with_imbalanced_classes():
    """A label-blind HFC classifier on LFC-wrong examples whose classes differ from the whole
    set's: its excess is 0 with the shares taken within the conditioning set, while shares over
    every example would report a spurious excess."""
    rng = np.random.default_rng(3)
    n = 20000
    y = rng.integers(0, 10, n)
    low_right = y >= 2  # LFC wrong only on classes 0 and 1
    # HFC predictions blind to the label within the LFC-wrong set (0 or 1 at random), class 5 elsewhere
    pred = np.where(low_right, 5, np.where(rng.random(n) < 0.5, 0, 1))
    terms = E.cell_excess_terms(low_right, pred, y)
    assert abs(terms.mean()) < 3 * terms.std() / np.sqrt(n)
    lw = ~low_right
    biased = lw * ((pred == y) - (np.bincount(pred, minlength=10) / n)[y])  # shares over all examples
    assert biased.mean() > 0.05  # the bias that taking the shares within the conditioning set removes
    # label_blind_terms: a constant classifier has excess exactly 0, an informative one > 0
    assert E.label_blind_terms(np.full(n, 3), y).mean() == pytest.approx(0.0, abs=1e-12)
    informative = np.where(rng.random(n) < 0.6, y, rng.integers(0, 10, n))
    assert E.label_blind_terms(informative, y).mean() > 0.5
    with pytest.raises(ValueError, match="equal-length"):
        E.label_blind_terms(np.zeros(3), np.zeros(4))


def test_mde_by_simulation():
    """The minimum detectable effect: a true effect of that size is found ("holds") about
    ``power`` of the time by the interval rule, a smaller one less often."""
    sd, se, n = 0.04, 0.01, 5
    m = E.mde(sd, se, n)
    rng = np.random.default_rng(0)

    def holds_rate(effect, reps=4000):
        shared = rng.normal(0, se, reps)  # the image error every seed shares
        vals = effect + shared[:, None] + rng.normal(0, sd, (reps, n))
        mean, s = vals.mean(1), vals.std(1, ddof=1)
        half = np.sqrt((E.t_quantile(0.975, n - 1) * s / np.sqrt(n)) ** 2 + (1.959964 * se) ** 2)
        return float(np.mean(mean - half > 0))

    assert 0.72 < holds_rate(m) < 0.88
    assert holds_rate(0.5 * m) < 0.5
    # more seeds, smaller MDE; the shared image error is a floor that seeds cannot remove
    assert E.mde(sd, se, 10) < m and E.mde(sd, se, 1000) > 2.8 * se
    assert E.mde(sd, 0.0, 1) == float("inf")
    with pytest.raises(ValueError, match="power"):
        E.mde(sd, se, n, power=1.0)
