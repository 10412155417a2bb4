"""Each artefact's verdict rule on hand-made per-seed metrics: a planted effect holds, its
reverse is contradicted, noise is inconclusive, and a failed precondition (a model that did not
train) gives "not tested" naming it. No training here: these are the rules alone."""
import dataclasses
import math
import numpy as np
import pytest

from experiments import (fourier_heatmap, heuristics, label_shuffle, perturbation_spectra, prediction_counts,
                         radius_curves, table1)

QUICK = "quick"


def verdicts(claims):
    return [c.mark() for c in claims]


def failed_names(c):
    return [p.name for p in c.judgement.failed]


# ------------------------------------------------------------------ table 1

def _t1(low_test, high_test, fit=0.99):
    radii = table1.SETTINGS[QUICK]["radii"]
    return {"low": {r: (fit, low_test) for r in radii}, "high": {r: (fit, high_test) for r in radii}}


def test_table1_rule():
    st = table1.SETTINGS[QUICK]
    n_r = len(st["radii"])
    planted = [_t1(0.80 + d, 0.15 - d) for d in (0.0, 0.01, -0.01)]
    assert verdicts(table1.judge_claims(planted, st, 1000)) == ["holds"] * n_r
    reverse = [_t1(0.15 - d, 0.80 + d) for d in (0.0, 0.01, -0.01)]
    assert verdicts(table1.judge_claims(reverse, st, 1000)) == ["contradicted"] * n_r
    noise = [_t1(0.5 + d, 0.5 - d) for d in (0.03, -0.04, 0.01)]
    assert verdicts(table1.judge_claims(noise, st, 1000)) == ["inconclusive"] * n_r
    # An HFC-trained model that did not fit its training data: not tested, and it is named;
    # only the radius where it failed.
    unfit = [_t1(0.8, 0.1) for _ in range(3)]
    for m in unfit:
        m["high"][16] = (0.18, 0.1)
    cs = table1.judge_claims(unfit, st, 1000)
    assert verdicts(cs) == ["holds"] * (n_r - 1) + ["not tested"]
    assert failed_names(cs[-1]) == ["HFC-trained r=16 train acc >= 0.9"]
    # Models at 0.620 training accuracy (the share of easy images) did not fit their data: that
    # blocks whatever the failed gate could fake. Both arms under-fitted: not tested.
    partial = [_t1(0.9, 0.3, fit=0.62) for _ in range(3)]
    assert verdicts(table1.judge_claims(partial, st, 1000)) == ["not tested"] * n_r
    # Only the LFC arm under-fitted: that can only lower the LFC arm, so a holds stands (with a
    # note naming the gate) while a contradiction is blocked; the HFC arm's gate is the mirror.
    lfc_unfit = [_t1(0.9, 0.3) for _ in range(3)]
    for m in lfc_unfit:
        m["low"] = {r: (0.62, acc) for r, (_, acc) in m["low"].items()}
    cs = table1.judge_claims(lfc_unfit, st, 1000)
    assert verdicts(cs) == ["holds"] * n_r and "failed" in cs[0].judgement.note
    lfc_unfit_rev = [_t1(0.3, 0.9) for _ in range(3)]
    for m in lfc_unfit_rev:
        m["low"] = {r: (0.62, acc) for r, (_, acc) in m["low"].items()}
    assert verdicts(table1.judge_claims(lfc_unfit_rev, st, 1000)) == ["not tested"] * n_r
    hfc_unfit_rev = [_t1(0.3, 0.9) for _ in range(3)]
    for m in hfc_unfit_rev:
        m["high"] = {r: (0.62, acc) for r, (_, acc) in m["high"].items()}
    assert verdicts(table1.judge_claims(hfc_unfit_rev, st, 1000)) == ["contradicted"] * n_r
    # the interval never leaves [-1, 1]: one seed whose HFC model learned, two that did not
    spread = [_t1(0.9, h) for h in (0.63, 0.126, 0.142)]
    for c in table1.judge_claims(spread, st, 500):
        assert -1 <= c.judgement.effect.low and c.judgement.effect.high <= 1
    # With 250 test images the per-image error alone makes a 0.02 effect inconclusive.
    small = [_t1(0.52, 0.50) for _ in range(3)]
    assert verdicts(table1.judge_claims(small, st, 250)) == ["inconclusive"] * n_r


# ------------------------------------------------------------------ heuristics

def _heur(st, *, bn_hfc=0.6, van_hfc=0.3, adv_hfc=0.15, small_gap=0.10, large_gap=0.02, adv_test=0.7, test=0.85):
    small, large = (f"batch {b}" for b in st["batches"])
    radii = (4, 8, 12, 16)

    def model(hfc, t=test, gap=0.05):
        return {"test": t, "train": t + gap, **{f"test_high_{r}": hfc for r in radii}}

    # the claim compares the small batch with the large one trained for as many steps
    return {"vanilla": model(van_hfc), "batchnorm": model(bn_hfc), small: model(van_hfc, gap=small_gap),
            large: model(van_hfc), heuristics.scaled_lr_label(st): model(van_hfc, gap=large_gap), "adversarial": model(adv_hfc, t=adv_test), "mixup": model(van_hfc),
            "adversarial twin": model(van_hfc),
            "dropout 0.5": model(van_hfc)}


def test_heuristics_rules():
    st = heuristics.SETTINGS[QUICK]
    kw = dict(radii=(4, 8, 12, 16), n_test=1000, num_classes=10)
    rng = np.random.default_rng(0)
    planted = [_heur(st, bn_hfc=0.6 + 0.01 * rng.standard_normal(), adv_hfc=0.15 + 0.01 * rng.standard_normal())
               for _ in range(3)]
    assert verdicts(heuristics.judge_claims(planted, st, **kw)) == ["holds", "holds", "holds"]
    reverse = [_heur(st, bn_hfc=0.1, small_gap=0.0, large_gap=0.1 + 0.01 * i, adv_hfc=0.5 + 0.01 * i) for i in range(3)]
    assert verdicts(heuristics.judge_claims(reverse, st, **kw)) == ["contradicted"] * 3
    # The adversarial claim needs M_adversarial trained and a vanilla model that uses HFC at all.
    stuck = [_heur(st, adv_test=0.22) for _ in range(3)]
    c = heuristics.judge_claims(stuck, st, **kw)[2]
    assert c.mark() == "not tested" and failed_names(c) == ["adversarial test acc >= 0.6"]
    no_hfc = [_heur(st, van_hfc=0.1, adv_hfc=0.1) for _ in range(3)]
    c = heuristics.judge_claims(no_hfc, st, **kw)[2]
    assert c.mark() == "not tested" and failed_names(c) == ["twin mean HFC-test acc >= 0.2"]
    # Relative to clean accuracy: an adversarial model with lower HFC accuracy only because its
    # clean accuracy is lower relies on HFC just as much -> not "holds".
    same_share = [_heur(st, van_hfc=0.1 + 0.5 * 0.75, test=0.85, adv_hfc=0.1 + 0.5 * 0.6 + d, adv_test=0.7)
                  for d in (0.01, -0.01, 0.0)]
    assert heuristics.judge_claims(same_share, st, **kw)[2].mark() == "inconclusive"
    # Batch gap: equal size, opposite signs (+0.05 vs -0.05) is no smaller gap.
    opposite = [_heur(st, small_gap=0.05 + d, large_gap=-0.05 + d, test=0.9) for d in (0.0, 0.005, -0.005)]
    assert heuristics.judge_claims(opposite, st, **kw)[1].mark() == "inconclusive"
    # A "batch 512" that learned only the easy part (train 0.60, test 0.90) has a small (negative)
    # gap because it under-fits: not tested, named.
    large = heuristics.scaled_lr_label(st)
    underfit = [_heur(st) for _ in range(3)]
    for m in underfit:
        m[large].update(train=0.60, test=0.90)
    c = heuristics.judge_claims(underfit, st, **kw)[1]
    assert c.mark() == "not tested" and failed_names(c) == [f"{large} train acc (eval mode, clean) >= 0.8"]
    # with a small training evaluation set the per-image error of each gap counts
    close = [_heur(st, small_gap=0.07 + d, large_gap=0.02) for d in (0.0, 0.004, -0.004)]
    assert heuristics.judge_claims(close, st, **kw)[1].mark() == "holds"
    assert heuristics.judge_claims(close, st, **kw, n_train=100)[1].mark() == "inconclusive"
    # identical values on every seed and a constant classifier: never holds
    const = [_heur(st, bn_hfc=0.1, van_hfc=0.1, adv_hfc=0.1, test=0.1, adv_test=0.1) for _ in range(3)]
    assert "holds" not in verdicts(heuristics.judge_claims(const, st, **kw))


# ------------------------------------------------------------------ label shuffle

def test_label_shuffle_rule():
    st = label_shuffle.SETTINGS[QUICK]
    m = lambda nat, shu, fit_n=1.0, fit_s=1.0: {"natural": {"train": fit_n, "train_low_4": nat},  # noqa: E731
                                                "shuffle": {"train": fit_s, "train_low_4": shu}}
    assert verdicts(label_shuffle.judge_claims([m(0.4 + d, 0.12) for d in (0, .01, -.01)], st, 512)) == ["holds"]
    assert verdicts(label_shuffle.judge_claims([m(0.12, 0.4 + d) for d in (0, .01, -.01)], st, 512)) == ["contradicted"]
    # M_natural at 0.51 on its own labels (the case) is not a model that fitted them.
    c = label_shuffle.judge_claims([m(0.4, 0.1, fit_n=0.51) for _ in range(3)], st, 512)[0]
    assert c.mark() == "not tested" and "M_natural" in failed_names(c)[0]


# ------------------------------------------------------------------ prediction counts

def test_prediction_counts_radius_selection_uses_the_given_split():
    rng = np.random.default_rng(3)
    n, radii = 2000, np.array([4.0, 8.0, 12.0])
    y = rng.integers(0, 10, n)
    low_right = np.stack([rng.random(n) < 0.5 for _ in radii])
    # HFC predictions informative only at r = 8 on this split
    high = np.stack([rng.integers(0, 10, n), np.where(rng.random(n) < 0.8, y, (y + 1) % 10), rng.integers(0, 10, n)])
    assert prediction_counts.select_radius(low_right, high, y, radii) == 8.0


def test_prediction_counts_rule_constant_classifier_not_tested():
    st = dict(prediction_counts.SETTINGS[QUICK], radii_claimed=(4.0, 8.0))
    at = lambda v: {4.0: v, 8.0: v}  # noqa: E731
    ok = [{"test_acc": 0.9, "excess": at(0.05 + d), "excess_se": at(0.005), "counter": 0.3, "counter_se": 0.01,
           "cells": at({"low_wrong_high_right": 0.06})} for d in (0, 0.002, -0.002)]
    assert verdicts(prediction_counts.judge_claims(ok, st)) == ["holds", "holds", "holds"]
    # every claimed radius has its own claim and interval; the first is primary
    cs = prediction_counts.judge_claims(ok, st)
    assert [c.primary for c in cs] == [True, False, False] and "r=8" in cs[1].claim
    # Label-blind HFC predictions: excess ~ 0 -> inconclusive, even with many L-H+ images.
    blind = [dict(m, excess=at(e), cells=at({"low_wrong_high_right": 0.09})) for m, e in zip(ok, (0.003, -0.004, 0.001))]
    assert prediction_counts.judge_claims(blind, st)[0].mark() == "inconclusive"
    # A constant classifier (test acc 0.1) is not a trained model: not tested.
    const = [dict(m, test_acc=0.1) for m in ok]
    assert verdicts(prediction_counts.judge_claims(const, st)) == ["not tested"] * 3


# ------------------------------------------------------------------ radius curves, heat maps, spectra

def test_radius_curves_rule():
    st = radius_curves.SETTINGS[QUICK]
    m = lambda v, b, t=0.9: {"vanilla": {"test": t, "crossing": 3.0, "hfc_area": v},  # noqa: E731
                             "batchnorm": {"test": t, "crossing": None, "hfc_area": b}}
    assert verdicts(radius_curves.judge_claims([m(0.2, 0.4 + d) for d in (0, .01, -.01)], st)) == ["holds"]
    assert verdicts(radius_curves.judge_claims([m(0.4 + d, 0.2) for d in (0, .01, -.01)], st)) == ["contradicted"]
    # nearly tied curves: no effect, whatever their crossings do
    assert verdicts(radius_curves.judge_claims([m(0.3, 0.3 + d) for d in (0.01, -0.012, 0.0)], st)) == ["inconclusive"]
    # two untrained models (chance everywhere): not tested
    assert verdicts(radius_curves.judge_claims([m(0.1, 0.1, t=0.1)] * 3, st)) == ["not tested"]


def test_fourier_heatmap_rule_compares_with_clean_error():
    st = fourier_heatmap.SETTINGS[QUICK]
    # The case: the adversarial model's high-frequency error (0.802) equals its clean
    # error (0.801): it did not train, and it is not "insensitive" either -> not tested.
    stuck = [{"twin": {"clean": 0.1, "low": 0.15, "high": 0.17}, "adversarial": {"clean": 0.801, "low": 0.82,
                                                                                     "high": 0.802}}] * 3
    assert verdicts(fourier_heatmap.judge_claims(stuck, st, 128)) == ["not tested", "not tested"]
    good = [{"twin": {"clean": 0.1, "low": 0.15, "high": 0.6 + d}, "adversarial": {"clean": 0.25, "low": 0.7,
                                                                                       "high": 0.3}}
            for d in (0, .02, -.02)]
    assert verdicts(fourier_heatmap.judge_claims(good, st, 1000)) == ["holds", "holds"]
    # Claim 2 is the adversarial model's own low-minus-high error: with zero low-frequency
    # error it cannot hold, whatever its twin does.
    no_low = [{"twin": {"clean": 0.1, "low": 0.15, "high": 0.6 + d}, "adversarial": {"clean": 0.0, "low": 0.0,
                                                                                         "high": 0.3}}
              for d in (0, .02, -.02)]
    assert fourier_heatmap.judge_claims(no_low, st, 1000)[1].mark() == "contradicted"


def test_perturbation_spectra_rule():
    st = perturbation_spectra.SETTINGS[QUICK]
    m = lambda v, a, na=100: {"twin": {"test": 0.9, "attacked": 200, "share": v},  # noqa: E731
                              "adversarial": {"test": 0.7, "attacked": na, "share": a}}
    assert verdicts(perturbation_spectra.judge_claims([m(0.4 + d, 0.2) for d in (0, .01, -.01)], st)) == ["holds"]
    # No successful attack on correctly classified examples: nothing to compare.
    c = perturbation_spectra.judge_claims([m(0.4, None, na=0)] * 3, st)[0]
    assert c.mark() == "not tested" and any("adversarial: examples" in n for n in failed_names(c))


@pytest.mark.parametrize("module", [table1, heuristics, label_shuffle, prediction_counts, radius_curves,
                                    fourier_heatmap, perturbation_spectra])
def test_one_place_per_artefact(module):
    # Every scale is spelled out in the artefact's own SETTINGS, with the same keys.
    assert set(module.SETTINGS) == {"full", "quick", "tiny"}
    keys = {k: set(v) for k, v in module.SETTINGS.items()}
    assert keys["full"] == keys["quick"] == keys["tiny"]


def test_compare_runs_finds_a_flip(tmp_path):
    # Two hand-made results roots: one claim holds in a and is contradicted in b -> flagged.
    import json

    from experiments import compare_runs
    from experiments.claims import claim

    for root, vals in (("a", [0.2, 0.21, 0.19]), ("b", [-0.2, -0.21, -0.19])):
        folder = tmp_path / root / "table1"
        folder.mkdir(parents=True)
        c = claim("table1", "x beats y", vals, effect="x - y")
        (folder / "table.json").write_text(json.dumps({"claims": [c.to_dict()]}))
    rows, flips = compare_runs.compare(tmp_path / "a", tmp_path / "b")
    assert flips == 1 and rows[0]["verdict a"] == "holds" and rows[0]["verdict b"] == "contradicted"
    assert compare_runs.main([str(tmp_path / "a"), str(tmp_path / "a")]) == 0


# ------------------------------------------------------------------ defences: floors and constant classifiers

def _rob_seed(*, nat_worst, smooth_clean, smooth_worst, nat_clean=0.9, adv_small=0.6, nat_small=0.1):
    from experiments import robustness

    st = robustness.SETTINGS[QUICK]
    big, small = f"worst {st['eps'][-1]:g}", f"worst {st['eps'][0]:g}"
    row = lambda clean, b, s: {"clean": clean, big: b, small: s, f"PGD {st['eps'][-1]:g}": b,  # noqa: E731
                               "median |logit|": 3.0, "checks": "ok"}
    rows = {("M_natural", "none"): row(nat_clean, nat_worst, nat_small),
            ("M_adversarial", "none"): row(0.8, 0.3, adv_small)}
    for d in ("smooth rho=1", "smooth-renorm rho=1"):
        rows[("M_natural", d)] = row(smooth_clean, smooth_worst, smooth_worst)
    return {"rows": rows, "rough": {"twin": 2.0, "M_adversarial": 1.5, "M_natural": 2.1},
            "test": {"M_natural": nat_clean, "M_adversarial": 0.8, "twin": 0.9}}


def test_kernel_smoothing_defence_rules_cannot_be_fooled():
    from experiments import robustness

    st = robustness.SETTINGS[QUICK]
    # A smoothed model that predicts one class (clean = worst = 0.10) against an undefended worst
    # case of 0: it "raises" robust accuracy by 0.1, and must not hold.
    const = [_rob_seed(nat_worst=0.0, smooth_clean=0.1, smooth_worst=0.1) for _ in range(3)]
    cs = robustness.judge_claims(const, st, 128)
    for c in cs[2:4]:
        assert c.mark() == "not tested" and any("clean acc" in n for n in failed_names(c))
    # A working classifier whose defence changes nothing against a floor of 0: no power, not inconclusive.
    flat = [_rob_seed(nat_worst=0.0, smooth_clean=0.85, smooth_worst=w) for w in (0.0, 0.008, 0.0)]
    assert [c.mark() for c in robustness.judge_claims(flat, st, 128)[2:4]] == ["no power", "no power"]
    # A real gain holds; the opposite sign (possible when the undefended model is above 0) is contradicted.
    gain = [_rob_seed(nat_worst=0.05, smooth_clean=0.85, smooth_worst=w) for w in (0.4, 0.42, 0.38)]
    assert [c.mark() for c in robustness.judge_claims(gain, st, 128)[2:4]] == ["holds", "holds"]
    loss = [_rob_seed(nat_worst=0.4 + d, smooth_clean=0.85, smooth_worst=0.05) for d in (0.0, 0.02, -0.02)]
    assert [c.mark() for c in robustness.judge_claims(loss, st, 128)[2:4]] == ["contradicted", "contradicted"]
    # 0 vs 0 on the adversarial-training claim: no evidence either way
    floor = [_rob_seed(nat_worst=0.0, smooth_clean=0.85, smooth_worst=0.0, adv_small=0.0, nat_small=0.0)] * 3
    assert robustness.judge_claims(floor, st, 128)[4].mark() != "holds"


def test_input_defence_rule_cannot_be_fooled():
    from experiments import input_defence, robustness

    st = {**robustness.SETTINGS[QUICK], **input_defence.SETTINGS[QUICK], "claim_eps": 0.05}
    e = "worst 0.05"
    m = lambda base, low, low_clean=0.8: {"r_star": 4, "test": 0.9,  # noqa: E731
                                          "rows": {"none": {"clean": 0.9, e: base, "checks": "ok"},
                                                   4: {"clean": low_clean, e: low, "checks": "ok"}}}
    const = [m(0.0, 0.1, low_clean=0.1)] * 3  # the low-passed model predicts one class
    c = input_defence.judge_claims(const, st, 128)[0]
    assert c.mark() == "not tested" and "M_natural low-passed clean acc >= 0.5" in failed_names(c)
    assert input_defence.judge_claims([m(0.0, w) for w in (0.0, 0.008, 0.0)], st, 128)[0].mark() == "no power"
    assert input_defence.judge_claims([m(0.05, w) for w in (0.3, 0.32, 0.28)], st, 128)[0].mark() == "holds"
    assert input_defence.judge_claims([m(0.3 + d, 0.05) for d in (0, .02, -.02)], st, 128)[0].mark() == "contradicted"


def test_family_control_is_applied_when_an_artefact_is_written(tmp_path):
    from experiments import claims, common, reporting

    ctx = common.Context(dataset="synthetic", scale="tiny", out=tmp_path, progress=False)
    weak = [0.1, 0.04, 0.06, 0.12, 0.0]  # p ~ 0.040 alone
    cs = [claims.claim("x", "a", weak, effect="e"), claims.claim("x", "b", [0.09, 0.03, 0.05, 0.11, 0.0], effect="e")]
    assert [c.mark() for c in cs] == ["holds", "holds"]
    reporting.write_artefact(ctx, "x", title="t", rows=[{"a": 1}], claims=cs)
    assert [c.mark() for c in cs] == ["inconclusive", "inconclusive"] and cs[0].primary and not cs[1].primary
    import json
    saved = json.loads((tmp_path / "x" / "table.json").read_text())["claims"]
    assert [c["judgement"]["verdict"] for c in saved] == ["inconclusive", "inconclusive"]
    assert "Holm" in saved[0]["judgement"]["note"] and "(primary)" in (tmp_path / "x" / "table.md").read_text()


def test_family_control_is_applied_once_and_read_from_old_files():
    """A family is adjusted once: family() on judgements that carry ``family_control`` leaves them,
    even when a driver's own note mentions Holm; files written before the field existed are read
    as adjusted when their note says Holm, and as not adjusted otherwise."""
    from experiments import claims
    from jaxhfc import evidence as E

    weak = [0.1, 0.04, 0.06, 0.12, 0.0]
    fresh = [claims.claim("x", "a", weak, effect="e"), claims.claim("x", "b", weak, effect="e")]
    fresh[0].judgement = dataclasses.replace(fresh[0].judgement, note="mentions Holm but is not adjusted")
    claims.family(fresh)
    assert all(c.judgement.family_control == "holm" for c in fresh) and fresh[1].mark() == "inconclusive"
    twice = [dataclasses.replace(c.judgement) for c in fresh]
    claims.family(fresh)
    assert [c.judgement for c in fresh] == twice  # not adjusted again
    d = fresh[0].judgement.to_dict()
    assert E.Judgement.from_dict(d) == fresh[0].judgement
    old = {k: v for k, v in d.items() if k != "family_control"}
    assert E.Judgement.from_dict(old).family_control == "holm"
    assert E.Judgement.from_dict({**old, "note": ""}).family_control is None


# ------------------------------------------------------------------ per-example outcomes: paired image errors

def _right(p: float, n: int, rng=None) -> np.ndarray:
    """``(n,)`` bool with exactly ``round(p n)`` True: the first ones, or random ones with ``rng``."""
    k = int(round(p * n))
    out = np.zeros(n, bool)
    out[rng.permutation(n)[:k] if rng is not None else slice(0, k)] = True
    return out


def test_image_se_pairs_over_seeds_by_hand_and_falls_back():
    from experiments import claims

    terms = [np.array([1.0, 0.0, 1.0, -1.0]), np.array([1.0, 1.0, 0.0, -1.0])]
    per_seed = [{"t": t, "fb": 0.5} for t in terms]
    # seed means per image [1, .5, .5, -1] (mean .25, squares 2.25) and two pseudo-images .25 +- 1
    by_hand = math.sqrt((2.25 + 2) / 5) / math.sqrt(6)
    assert claims.image_se(per_seed, lambda m: m["t"], lambda m: m["fb"]) == [pytest.approx(by_hand)] * 2
    # no seed with terms (metrics saved before outcomes were kept): every seed's fallback
    assert claims.image_se([{"fb": 0.5}, {"fb": 0.25}], lambda m: m.get("t"), lambda m: m["fb"]) == [0.5, 0.25]
    # terms on some seeds only, or of different lengths, or 2-D: misaligned outcomes are an error
    for bad in ([per_seed[0], {"fb": 0.25}], [per_seed[0], {"t": np.ones(5)}], [{"t": np.ones((2, 2))}] * 2):
        with pytest.raises(ValueError, match="per-example terms"):
            claims.image_se(bad, lambda m: m.get("t"), lambda m: m["fb"])
    # an arm of length 1 is not broadcast against 400 images
    with pytest.raises(ValueError, match="align"):
        claims.paired_terms(np.ones(1, bool), np.ones(400, bool))


def test_table1_rule_with_outcomes_cannot_be_fooled():
    st = table1.SETTINGS[QUICK]
    n, rng = 400, np.random.default_rng(5)

    def seed(low, high, *, low_right=None, high_right=None):
        m = _t1(low, high)
        lr = _right(low, n, rng) if low_right is None else low_right
        hr = _right(high, n, rng) if high_right is None else high_right
        m["correct"] = {"low": {r: lr for r in st["radii"]}, "high": {r: hr for r in st["radii"]}}
        return m

    planted = [seed(0.80 + d, 0.15 - d) for d in (0.0, 0.01, -0.01)]
    assert verdicts(table1.judge_claims(planted, st, n)) == ["holds"] * len(st["radii"])
    # constant classifiers (both predict one class: the same images right) on every seed
    same = _right(0.1, n)
    const = [seed(0.1, 0.1, low_right=same, high_right=same) for _ in range(3)]
    assert "holds" not in verdicts(table1.judge_claims(const, st, n))
    # floor 0 vs 0, and effects of equal size and opposite sign over seeds
    floor = [seed(0.0, 0.0) for _ in range(3)]
    assert set(verdicts(table1.judge_claims(floor, st, n))) == {"inconclusive"}
    flip = [seed(0.6, 0.5), seed(0.5, 0.6), seed(0.55, 0.55)]
    assert "holds" not in verdicts(table1.judge_claims(flip, st, n))
    # two models that share their hard images: the paired error is smaller than the binomial one
    base = rng.random(n)
    shared = [seed(0.62, 0.6, low_right=base < 0.62, high_right=base < 0.6) for _ in range(3)]
    paired = table1.judge_claims(shared, st, n)[0].judgement.effect
    binom = table1.judge_claims([{k: v for k, v in m.items() if k != "correct"} for m in shared], st, n)[0].judgement.effect
    assert paired.high - paired.low < 0.5 * (binom.high - binom.low)


def test_batch_gap_paired_error_matches_a_bootstrap_over_images():
    """The per-image error of |gap(small)| - |gap(large)| (training-subset and test terms, each
    paired between the two models) against a bootstrap that resamples the images of one seed."""
    from experiments import claims

    st = heuristics.SETTINGS[QUICK]
    small, large = f"batch {st['batches'][0]}", heuristics.scaled_lr_label(st)
    rng = np.random.default_rng(9)
    n_tr, n_te = 250, 1000
    u_tr, u_te = rng.random(n_tr), rng.random(n_te)  # shared difficulty: the models agree on most images
    c = {small: {"train": u_tr < 0.97, "test": u_te < 0.85}, large: {"train": u_tr < 0.9, "test": u_te < 0.83}}
    m = {v: {"train": c[v]["train"].mean(), "test": c[v]["test"].mean()} for v in c}
    m["correct"] = c
    ses = [claims.image_se([m], lambda s: heuristics._gap_terms(s, small, large, split), lambda s: math.nan)[0]
           for split in ("train", "test")]
    se = math.hypot(*ses)
    gap = lambda tr, te: np.abs(tr.mean(-1) - te.mean(-1))  # noqa: E731
    i, j = rng.integers(0, n_tr, (4000, n_tr)), rng.integers(0, n_te, (4000, n_te))
    boot = (gap(c[small]["train"][i], c[small]["test"][j]) - gap(c[large]["train"][i], c[large]["test"][j]))
    assert se == pytest.approx(np.std(boot), rel=0.1)


def test_scaled_lr_overrides_by_hand():
    st = dict(heuristics.SETTINGS[QUICK], batches=(32, 512))
    assert heuristics.lr_factor(st) == 4.0 and heuristics.scaled_lr_label(st) == "batch 512, lr x4"
    assert heuristics.scaled_lr_overrides(st, 3e-3) == {"optim": {"batch_size": 512, "learning_rate": 0.012}}
    assert heuristics.lr_factor(dict(st, batches=(32, 128))) == 2.0


def test_defence_rules_with_outcomes_cannot_be_fooled():
    from experiments import input_defence, robustness

    st = robustness.SETTINGS[QUICK]
    n, rng = 128, np.random.default_rng(4)
    big, small = f"worst {st['eps'][-1]:g}", f"worst {st['eps'][0]:g}"

    def with_outcomes(m):
        m["correct"] = {f"{k[0]}/{k[1]}": {col: _right(row[col], n, rng) for col in ("clean", big, small)}
                        for k, row in m["rows"].items()}
        return m

    const = [with_outcomes(_rob_seed(nat_worst=0.0, smooth_clean=0.1, smooth_worst=0.1)) for _ in range(3)]
    for c in robustness.judge_claims(const, st, n)[2:4]:
        assert c.mark() == "not tested"
    flat = [with_outcomes(_rob_seed(nat_worst=0.0, smooth_clean=0.85, smooth_worst=w)) for w in (0.0, 0.008, 0.0)]
    assert [c.mark() for c in robustness.judge_claims(flat, st, n)[2:4]] == ["no power", "no power"]
    gain = [with_outcomes(_rob_seed(nat_worst=0.05, smooth_clean=0.85, smooth_worst=w)) for w in (0.4, 0.42, 0.38)]
    assert [c.mark() for c in robustness.judge_claims(gain, st, n)[2:4]] == ["holds", "holds"]
    floor = [with_outcomes(_rob_seed(nat_worst=0.0, smooth_clean=0.85, smooth_worst=0.0, adv_small=0.0,
                                     nat_small=0.0)) for _ in range(3)]
    assert robustness.judge_claims(floor, st, n)[4].mark() != "holds"

    st = {**st, **input_defence.SETTINGS[QUICK], "claim_eps": 0.05}
    e = "worst 0.05"

    def m(base, low, low_clean=0.8):
        rows = {"none": {"clean": 0.9, e: base, "checks": "ok"}, 4: {"clean": low_clean, e: low, "checks": "ok"}}
        return {"r_star": 4, "test": 0.9, "rows": rows,
                "correct": {k: {"clean": _right(r["clean"], n, rng), e: _right(r[e], n, rng)} for k, r in rows.items()}}

    assert input_defence.judge_claims([m(0.0, 0.1, low_clean=0.1)] * 3, st, n)[0].mark() == "not tested"
    assert input_defence.judge_claims([m(0.0, w) for w in (0.0, 0.008, 0.0)], st, n)[0].mark() == "no power"
    assert input_defence.judge_claims([m(0.05, w) for w in (0.3, 0.32, 0.28)], st, n)[0].mark() == "holds"
    assert input_defence.judge_claims([m(0.3 + d, 0.05) for d in (0, .02, -.02)], st, n)[0].mark() == "contradicted"


def test_heatmap_and_label_shuffle_rules_with_outcomes():
    n, rng = 200, np.random.default_rng(6)
    st = fourier_heatmap.SETTINGS[QUICK]

    def hm_seed(twin_high, adv_high, adv_low, clean=0.1):
        per = {k: {"clean": _right(clean, n, rng).astype(float), "low": rng.random(n) < lo, "high": rng.random(n) < hi}
               for k, lo, hi in (("twin", 0.2, twin_high), ("adversarial", adv_low, adv_high))}
        per = {k: {p: v.astype(float) for p, v in d.items()} for k, d in per.items()}
        return {**{k: {p: float(v.mean()) for p, v in d.items()} for k, d in per.items()}, "per_image": per}

    good = [hm_seed(0.6, 0.2, 0.5) for _ in range(3)]
    assert verdicts(fourier_heatmap.judge_claims(good, st, n)) == ["holds", "holds"]
    same = [hm_seed(0.3, 0.3, 0.3) for _ in range(3)]  # no effect in either claim
    assert "holds" not in verdicts(fourier_heatmap.judge_claims(same, st, n))

    st = label_shuffle.SETTINGS[QUICK]
    key = "train_low_4"

    def ls_seed(nat, shu):
        c = {"natural": {key: _right(nat, n, rng)}, "shuffle": {key: _right(shu, n, rng)}}
        return {"natural": {"train": 1.0, key: float(c["natural"][key].mean())},
                "shuffle": {"train": 1.0, key: float(c["shuffle"][key].mean())}, "correct": c}

    assert verdicts(label_shuffle.judge_claims([ls_seed(0.4 + d, 0.12) for d in (0, .01, -.01)], st, n)) == ["holds"]
    assert verdicts(label_shuffle.judge_claims([ls_seed(0.12, 0.4 + d) for d in (0, .01, -.01)], st, n)) == [
        "contradicted"]
    assert verdicts(label_shuffle.judge_claims([ls_seed(0.0, 0.0)] * 3, st, n)) == ["inconclusive"]


def test_radius_curves_rule_with_outcomes():
    st = radius_curves.SETTINGS[QUICK]
    n, rng = 300, np.random.default_rng(7)

    def seed(van, bn, t=0.9):
        per = {"vanilla": rng.binomial(17, van, n) / 17, "batchnorm": rng.binomial(17, bn, n) / 17}
        return {"vanilla": {"test": t, "crossing": None, "hfc_area": float(per["vanilla"].mean())},
                "batchnorm": {"test": t, "crossing": None, "hfc_area": float(per["batchnorm"].mean())},
                "per_image": per}

    c = radius_curves.judge_claims([seed(0.2, 0.4) for _ in range(3)], st)[0]
    assert c.mark() == "holds" and "test images" in c.judgement.effect.method
    assert radius_curves.judge_claims([seed(0.4, 0.2) for _ in range(3)], st)[0].mark() == "contradicted"
    same = seed(0.1, 0.1, t=0.1)
    same["per_image"]["batchnorm"] = same["per_image"]["vanilla"]
    same["batchnorm"]["hfc_area"] = same["vanilla"]["hfc_area"]
    assert radius_curves.judge_claims([same] * 3, st)[0].mark() == "not tested"


# ------------------------------------------------------------------ null simulations, rule by rule
# Every seed scores the same test images (hard images stay hard for every seed, as on the shared
# test subset); both arms come from one distribution, so any "holds" is false. Each rule must keep
# it at the nominal 2.5% within Monte Carlo error.

REPS = 300
MC = 0.025 + 3 * math.sqrt(0.025 * 0.975 / REPS)


def _shared_draws(rng, p, seeds, shared=0.8):
    """(seeds, N) bool outcomes with per-image probabilities p: a share ``shared`` fixed per image."""
    fixed = rng.random(p.shape) < p
    return np.stack([np.where(rng.random(p.shape) < shared, fixed, rng.random(p.shape) < p) for _ in range(seeds)])


def _false_holds(make, judge, reps=REPS, seed=0):
    rng = np.random.default_rng(seed)
    return float(np.mean([judge(make(rng)) == "holds" for _ in range(reps)]))


def test_null_simulation_table1_rule():
    st = dict(table1.SETTINGS[QUICK], radii=(4,))
    n = 400

    def make(rng):
        p = rng.beta(3, 1.5, n)
        a, b = _shared_draws(rng, p, 5), _shared_draws(rng, p, 5)
        return [{"low": {4: (0.95, x.mean())}, "high": {4: (0.95, y.mean())},
                 "correct": {"low": {4: x}, "high": {4: y}}} for x, y in zip(a, b)]

    assert _false_holds(make, lambda m: table1.judge_claims(m, st, n)[0].mark()) <= MC


def _heur_null(rng, n=400, seeds=5, classes=10):
    """Per-seed heuristics metrics where every pair the claims compare comes from one model
    distribution: predictions right with a per-image probability (shared over seeds), else a
    random other class."""
    st = heuristics.SETTINGS[QUICK]
    radii = (4,)
    y = rng.integers(0, classes, n)
    p_clean, p_high = rng.beta(6, 1, n), rng.beta(1, 3, n)

    def preds(p):
        right = _shared_draws(rng, p, seeds)
        other = (y + rng.integers(1, classes, (seeds, n))) % classes
        return np.where(right, y, other)

    out = [dict() for _ in range(seeds)]
    small, large = "batch 32", heuristics.scaled_lr_label(st)
    arms = {v: {"test": preds(p_clean), "test_high_4": preds(p_high)}
            for v in ("vanilla", "batchnorm", "adversarial twin", "adversarial")}
    for s in range(seeds):
        m = out[s]
        m["pred"] = {v: {k: a[k][s] for k in a} for v, a in arms.items()}
        m["labels"] = {"test": y, "test_high_4": y}
        for v, a in arms.items():
            m[v] = {"test": float(np.mean(a["test"][s] == y)), "train": 0.95,
                    "test_high_4": float(np.mean(a["test_high_4"][s] == y))}
        for v in (small, large, "batch 512"):
            m[v] = {"test": 0.85, "train": 0.95}
        tr, te = _shared_draws(rng, np.full(250, 0.95), 2), _shared_draws(rng, np.full(n, 0.85), 2)
        m["correct"] = {small: {"train": tr[0], "test": te[0]}, large: {"train": tr[1], "test": te[1]}}
        m[small] = {"train": float(tr[0].mean()), "test": float(te[0].mean())}
        m[large] = {"train": float(tr[1].mean()), "test": float(te[1].mean())}
    return out, dict(st, running_arm="adversarial twin"), radii, n


def test_null_simulation_heuristics_rules():
    """BatchNorm (both statistics), the batch gap and the adversarial HFC reliance, with their
    per-image errors from predictions against the label-blind baseline."""
    rng = np.random.default_rng(1)
    rates = np.zeros(4)
    for _ in range(REPS):
        per_seed, st, radii, n = _heur_null(rng)
        cs = heuristics.judge_claims(per_seed, st, radii=radii, n_test=n, num_classes=10)
        assert len(cs) == 4
        rates += [c.mark() == "holds" for c in cs]
    assert np.all(rates / REPS <= MC), rates / REPS


def test_null_simulation_prediction_counts_rule():
    """HFC predictions that carry no label information among the LFC-wrong images (shared over
    seeds image by image), with imbalanced classes: the per-radius excess must not hold."""
    st = dict(prediction_counts.SETTINGS[QUICK], radii_claimed=(4.0,))
    n = 600

    def make(rng):
        y = rng.choice(10, n, p=np.r_[0.4, np.full(9, 0.6 / 9)])
        low_right = _shared_draws(rng, rng.beta(2, 2, n), 5)
        fav = rng.integers(0, 10, n)  # each image's favourite HFC class, whatever its label
        out = []
        for lr in low_right:
            hp = np.where(rng.random(n) < 0.7, fav, rng.integers(0, 10, n))
            t = evidence_terms(lr, hp, y)
            out.append({"test_acc": 0.9, "excess": {4.0: float(t.mean())}, "excess_terms": {4.0: t},
                        "excess_se": {4.0: 0.0}, "counter": 0.0, "counter_terms": np.zeros(n), "counter_se": 0.0,
                        "cells": {4.0: {"low_wrong_high_right": 0.0}}})
        return out

    assert _false_holds(make, lambda m: prediction_counts.judge_claims(m, st)[0].mark()) <= MC


def evidence_terms(low_right, high_pred, labels):
    from jaxhfc import evidence as E

    return E.cell_excess_terms(low_right, high_pred, labels)


def test_null_simulation_perturbation_spectra_rule():
    """Two arms whose perturbation energies come from one distribution (each seed attacks the
    same images, so the spread over seeds is small): the ratio's per-image error keeps false
    holds at the nominal rate."""
    st = perturbation_spectra.SETTINGS[QUICK]
    n = 300

    def make(rng):
        base_out, base_tot = rng.gamma(2.0, 1.0, n), rng.gamma(5.0, 1.0, n)  # per image, shared by seeds
        out = []
        for _ in range(5):
            arms = {}
            for k in ("twin", "adversarial"):
                keep = rng.random(n) < 0.7
                o = base_out[keep] * rng.gamma(20, 1 / 20, keep.sum())
                tot = base_tot[keep] + o
                arms[k] = {"test": 0.9, "attacked": int(keep.sum()), "share": float(o.sum() / tot.sum()),
                           "share_se": perturbation_spectra.ratio_se(o, tot)}
            out.append(arms)
        return out

    assert _false_holds(make, lambda m: perturbation_spectra.judge_claims(m, st)[0].mark()) <= MC
    # the error by hand: a ratio of two columns
    num, den = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 4.0])
    r = 6 / 8
    assert perturbation_spectra.ratio_se(num, den) == pytest.approx(np.std(num - r * den, ddof=1) / (8 / 3 * math.sqrt(3)))
    with pytest.raises(ValueError, match="equal-length"):
        perturbation_spectra.ratio_se(num, den[:2])


def test_context_puts_floors_on_the_datasets_chance_scale(tmp_path):
    """A 2-class dataset whose test split is 70% one class: every floor of a driver's settings is
    raised above what a constant classifier scores there; 10 balanced classes keep them."""
    from experiments import common
    from experiments import heuristics as H

    rng = np.random.default_rng(0)
    y_test = np.r_[np.zeros(70, np.uint8), np.ones(30, np.uint8)]
    path = tmp_path / "two.npz"
    np.savez(path, x_train=rng.integers(0, 255, (200, 8, 8), dtype=np.uint8), y_train=rng.integers(0, 2, 200),
             x_test=rng.integers(0, 255, (100, 8, 8), dtype=np.uint8), y_test=y_test)
    ctx = common.Context(dataset=f"npz:{path}", scale="tiny", out=tmp_path / "out", progress=False)
    st = ctx.models.chance_floors(dict(H.SETTINGS["quick"]))
    for k in ("min_test", "adv_min", "hfc_min", "fit_min"):
        assert st[k] > 0.7 and st["floors"][k] == [H.SETTINGS["quick"][k], st[k]]
    balanced = common.Context(dataset="synthetic", scale="tiny", out=tmp_path / "syn", progress=False)
    st10 = balanced.models.chance_floors(dict(H.SETTINGS["quick"]))
    # (its tiny test split is nearly balanced: 20 of 192 in the largest class, so the floors barely move)
    assert all(st10[k] == pytest.approx(H.SETTINGS["quick"][k], abs=0.005) for k in ("min_test", "adv_min", "hfc_min",
                                                                                         "fit_min"))


# ------------------------------------------------------------------ minimal eps and logit saturation

GRID = (0.3 / 64, 0.3 / 32, 0.3 / 16, 0.3 / 8, 0.3 / 4, 0.3 / 2, 0.3)


def _min_eps_seed(none_eps, smooth_eps, *, pgd=(0.3, 0.3), n_check=250, rng=None):
    """A robustness seed with the search's per-image minimal eps of M_natural and its smoothed
    row, and the paper's PGD on logits / on logits / 10 of the smoothed row at the claim eps."""
    from experiments import robustness
    from jaxhfc import attacks as A

    m = _rob_seed(nat_worst=0.3, smooth_clean=0.85, smooth_worst=0.3)
    ce = 0.3 / 8
    for k in list(m["rows"]):
        m["rows"][k][f"worst {ce:g}"] = 0.3
        m["rows"][k][f"PGD {ce:g}"] = 0.3
    raw = "smooth rho=1"
    m["rows"][("M_natural", "none")]["median min eps"] = A.median_min_eps(none_eps, above=0.6)
    m["rows"][("M_natural", raw)]["median min eps"] = A.median_min_eps(smooth_eps, above=0.6)
    a, b = _right(pgd[0], n_check, rng), _right(pgd[1], n_check, rng)
    m["rows"][("M_natural", raw)][f"PGD scale d {ce:g}"] = float(b.mean() - a.mean())
    m["correct"] = {f"{k[0]}/{k[1]}": {c: _right(r[c], 1000, rng) for c in ("clean", "worst 0.03", f"worst {ce:g}")}
                    for k, r in m["rows"].items()}
    m["correct"]["M_natural/none"]["min eps"] = none_eps
    m["correct"][f"M_natural/{raw}"].update({"min eps": smooth_eps, f"PGD {ce:g}": a, f"PGD/10 {ce:g}": b})
    return m, dict(robustness.SETTINGS[QUICK], claim_eps=ce, eps=(0.03, ce, 0.09), paper_eps=(0.03, 0.09))


def _grid_eps(rng, n, shift=0):
    k = np.clip(rng.integers(0, 7, n) + shift, 0, 7)
    return np.where(k == 7, np.inf, np.asarray(GRID + (0.6,))[k])


def test_min_eps_and_saturation_claims_hold_contradict_and_need_their_inputs():
    from experiments import robustness

    rng = np.random.default_rng(3)
    base = [_grid_eps(rng, 250) for _ in range(3)]
    up = [_min_eps_seed(b, np.where(np.isfinite(b), np.minimum(b * 4, 0.3), b), rng=rng) for b in base]
    down = [_min_eps_seed(b, np.where(b > 0.0047 * 2, b / 4, b), rng=rng) for b in base]
    same = [_min_eps_seed(b, b, rng=rng) for b in base]

    def marks(seeds):
        cs = robustness.judge_claims([m for m, _ in seeds], seeds[0][1], 1000)
        return {("min" if "minimal eps" in c.claim else "sat" if "overstates" in c.claim else "other"): c
                for c in cs}

    assert marks(up)["min"].mark() == "holds" and marks(down)["min"].mark() == "contradicted"
    assert marks(same)["min"].mark() != "holds"
    assert marks(up)["min"].judgement.effect.mean > 0
    sat = [_min_eps_seed(b, b, pgd=(0.3, 0.05), rng=rng) for b in base]
    none = [_min_eps_seed(b, b, pgd=(0.05, 0.05), rng=rng) for b in base]
    assert marks(sat)["sat"].mark() == "holds" and marks(none)["sat"].mark() != "holds"
    assert marks(sat)["sat"].judgement.effect.mean == pytest.approx(0.25, abs=0.01)
    # rows without the search or the signed PGD check: neither claim is made
    plain = [_rob_seed(nat_worst=0.05, smooth_clean=0.85, smooth_worst=0.4) for _ in range(3)]
    assert len(robustness.judge_claims(plain, robustness.SETTINGS[QUICK], 128)) == 5


def test_null_simulation_min_eps_and_saturation_rules():
    """Both arms' minimal eps (and PGD outcomes) drawn from one per-image distribution shared
    over seeds: the bootstrap and paired per-image errors keep false holds at the nominal rate."""
    from experiments import robustness

    n = 250

    def make(rng):
        k = rng.integers(0, 8, n)  # each image's typical grid position, shared by seeds and arms
        p_pgd = rng.beta(1, 3, n)

        def draw():
            j = np.clip(k + rng.integers(-1, 2, n), 0, 7)
            return np.where(j == 7, np.inf, np.asarray(GRID + (0.6,))[j])

        seeds = []
        for _ in range(5):
            m, st = _min_eps_seed(draw(), draw(), rng=rng)
            a, b = _shared_draws(rng, p_pgd, 2)
            raw = "M_natural/smooth rho=1"
            m["correct"][raw]["PGD 0.0375"], m["correct"][raw]["PGD/10 0.0375"] = a, b
            m["rows"][("M_natural", "smooth rho=1")]["PGD scale d 0.0375"] = float(b.mean() - a.mean())
            seeds.append(m)
        return [m for m in seeds], st

    def verdict(which):
        def judge(made):
            per_seed, st = made
            return next(c.mark() for c in robustness.judge_claims(per_seed, st, 1000) if which in c.claim)
        return judge

    assert _false_holds(make, verdict("minimal eps"), reps=150) <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / 150)
    assert _false_holds(make, verdict("overstates")) <= MC
