"""The row protocol of experiments.robust_rows.eval_robust when the more-steps check says the
attacks have not converged: the eps is attacked again with 2x steps and one more restart (up to
``escalate`` times), 'worst' and the checks come from the strongest run, the paper's FGSM/PGD
columns from the set steps, and 'attack x' says how strong the reported attacks were. The
attack itself is replaced by scripted results so that each branch is hit on purpose."""

import dataclasses
import types

import numpy as np
import pytest

from experiments import common, robust_rows, robustness
from jaxhfc import attacks


def _result(atks, *, worst, delta, fgsm=0.5, pgd=0.4, n=10):
    """A RobustResult-like record of the fields eval_robust reads."""
    robust = np.arange(n) < round(worst * n)
    return types.SimpleNamespace(
        attacks=[a.name for a in atks], clean_accuracy=1.0, robust_accuracy=worst, success_rate=1.0 - worst, flags=[] if abs(delta) <= 0.03 else
        ["more_steps"], robust_correct=robust, clean_correct=np.ones(n, bool), median_abs_logit=3.0,
        attack_accuracy={atks[0].name: fgsm, atks[1].name: pgd, **{a.name: worst for a in atks[2:]}},
        checks={"logit_scale": {"delta": 0.0, "delta_per_attack": {atks[1].name: 0.0}, "ok": True},
                "more_steps": {"delta": delta, "ok": abs(delta) <= 0.03, "converged": delta >= -0.03},
                "noise": {"noise_accuracy": 1.0}, "near_zero_grad": {"fraction": 0.0}})


@pytest.fixture
def scripted(monkeypatch):
    """robust_accuracy returns the scripted (worst, delta) pairs in turn, and records the attacks."""
    calls = []

    def install(script):
        def fake(logits, x, y, key, *, attacks, **kw):
            worst, delta = script[len(calls)]
            calls.append(attacks)
            return _result(attacks, worst=worst, delta=delta)

        monkeypatch.setattr(attacks, "robust_accuracy", fake)
        return calls

    return install


def _row(tmp_path, escalate, memo_key=None, ctx=None):
    ctx = ctx or common.Context(dataset="synthetic", scale="tiny", out=tmp_path, progress=False)
    x, y = np.zeros((10, 4, 4, 3), np.float32), np.zeros(10, np.int32)
    request = robust_rows.AttackRequest(eps=(0.03,), steps=5, apgd_steps=10, batch_size=10, check_n=10,
                                        escalate=escalate)
    row = robust_rows.eval_robust(ctx, None, x, y, request, key=None, memo_key=memo_key)
    return row, ctx


def test_unconverged_attacks_are_run_again_stronger(scripted, tmp_path):
    calls = scripted([(0.8, -0.2), (0.6, -0.01)])  # set steps: 2x breaks 20% more; then converged
    row, _ = _row(tmp_path, escalate=1)
    base = robust_rows.attack_list(5, 10)
    assert calls == [base, tuple(a.stronger(2) for a in base)]
    assert row["worst 0.03"] == 0.6 and row["steps d"] == pytest.approx(0.01)
    assert row["FGSM 0.03"] == 0.5 and row["PGD 0.03"] == 0.4  # the paper's columns: the set steps
    assert row["attack x"] == 2 and row["checks"] == "ok"


def test_escalation_is_bounded_and_a_still_failing_check_is_reported(scripted, tmp_path):
    calls = scripted([(0.8, -0.2), (0.7, -0.1), (0.5, 0.0)])
    row, _ = _row(tmp_path, escalate=1)
    assert len(calls) == 2 and row["attack x"] == 2
    assert row["worst 0.03"] == 0.7 and row["checks"] == "more_steps"


@pytest.mark.parametrize("script, escalate", [([(0.8, -0.2)], 0), ([(0.8, +0.2)], 1), ([(0.8, -0.02)], 1)])
def test_no_escalation_when_off_converged_or_stronger_is_weaker(scripted, tmp_path, script, escalate):
    """escalate=0; a stronger attack that breaks fewer images (noise or masking: more steps
    would not help, the flag stays); a change within the tolerance."""
    calls = scripted(script)
    row, _ = _row(tmp_path, escalate=escalate)
    assert len(calls) == 1 and row["attack x"] == 1 and row["worst 0.03"] == 0.8
    assert row["checks"] == ("ok" if abs(script[0][1]) <= 0.03 else "more_steps")


def test_memo_keeps_the_escalated_runs(scripted, tmp_path):
    calls = scripted([(0.8, -0.2), (0.6, 0.0), (0.6, 0.0)])
    first, ctx = _row(tmp_path, escalate=1, memo_key=("run", "none", 0))
    assert len(calls) == 2  # the set attacks, then the escalated ones
    _row(tmp_path, escalate=1, memo_key=("run", "none", 0), ctx=ctx)
    assert len(calls) == 2  # the same key: nothing attacked again
    _row(tmp_path, escalate=1, memo_key=("run", "none", 1), ctx=ctx)
    assert len(calls) == 3  # another key is attacked (converged at once: no escalation)


def test_seeds_report_the_strongest_attacks_any_needed():
    rows = [{"checks": "ok", "attack x": 1}]
    robust_rows.merge_seed_checks(rows, [[{"checks": "ok", "attack x": 1}], [{"checks": "more_steps", "attack x": 2}]])
    assert rows == [{"checks": "ok / more_steps", "attack x": 2}]


def test_rows_keep_their_checks_per_eps(scripted, tmp_path):
    scripted([(0.9, 0.0), (0.3, -0.2), (0.25, -0.1)])  # eps 0.03 ok; eps 0.09 unconverged even at x2
    ctx = common.Context(dataset="synthetic", scale="tiny", out=tmp_path, progress=False)
    x, y = np.zeros((10, 4, 4, 3), np.float32), np.zeros(10, np.int32)
    request = robust_rows.AttackRequest(eps=(0.03, 0.09), steps=5, apgd_steps=10, batch_size=10, check_n=10,
                                        escalate=1)
    row = robust_rows.eval_robust(ctx, None, x, y, request, key=None)
    assert row["checks 0.03"] == "ok" and row["checks 0.09"] == "more_steps" and row["checks"] == "more_steps"
    assert robust_rows.checks_at(row, 0.03) == "ok" and robust_rows.checks_at(row, 0.09) == "more_steps"


@pytest.mark.parametrize("row, at, expected", [
    ({"checks": "more_steps", "checks 0.03": "ok", "checks 0.09": "more_steps"}, 0.03, "ok"),
    ({"checks": "more_steps", "checks 0.03": "ok", "checks 0.09": "more_steps"}, 0.09, "more_steps"),
    # masking at another radius makes every radius suspect
    ({"checks": "logit_scale, more_steps", "checks 0.03": "ok", "checks 0.09": "logit_scale, more_steps"}, 0.03,
     "logit_scale"),
    ({"checks": "noise", "checks 0.03": "noise", "checks 0.09": "ok"}, 0.09, "noise"),
    ({"checks": "more_steps"}, 0.03, "more_steps"),  # a row written before per-eps checks: all its flags
])
def test_checks_that_bear_on_one_eps(row, at, expected):
    assert robust_rows.checks_at(row, at) == expected


def test_claim_precondition_at_the_claims_eps():
    rows = [{"checks": "ok", "checks 0.03": "ok", "checks 0.09": "ok"},
            {"checks": "more_steps", "checks 0.03": "ok", "checks 0.09": "more_steps"}]
    assert robust_rows.checks_ok_at("M_adversarial none", rows, 0.03).ok
    pre = robust_rows.checks_ok_at("M_adversarial none", rows, 0.09)
    assert not pre.ok and pre.detail == "ok; more_steps" and "at eps 0.09" in pre.name



def test_apgd_t_joins_the_rows_attacks_and_their_escalation(scripted, tmp_path):
    """apgd_targets > 0 (full scale: AutoAttack's 9) puts APGD-T last in every run, stronger ones
    included, as a cascade attack (only on what the others left right); rows with and without it
    do not share a memo entry."""
    calls = scripted([(0.8, -0.2), (0.6, 0.0), (0.7, 0.0)])
    ctx = common.Context(dataset="synthetic", scale="tiny", out=tmp_path, progress=False)
    x, y = np.zeros((10, 4, 4, 3), np.float32), np.zeros(10, np.int32)
    kw = dict(eps=(0.03,), steps=5, apgd_steps=10, batch_size=10, check_n=10, escalate=1)
    robust_rows.eval_robust(ctx, None, x, y, robust_rows.AttackRequest(apgd_targets=9, **kw), key=None,
                            memo_key=("run", "none", 0))
    base = calls[0]
    assert [a.name for a in base] == ["FGSM", "PGD-5-CE", "APGD-CE", "APGD-DLR", "APGD-T"]
    assert base[-1].method == "apgd-t" and base[-1].targets == 9 and base[-1].steps == 10 and base[-1].cascade
    assert calls[1][-1].steps == 20 and calls[1][-1].restarts == 2 and calls[1][-1].targets == 9
    assert calls[1][-1].cascade
    robust_rows.eval_robust(ctx, None, x, y, robust_rows.AttackRequest(apgd_targets=0, **kw), key=None,
                            memo_key=("run", "none", 0))  # not the memo of the APGD-T rows
    assert len(calls) == 3 and [a.name for a in calls[2]] == ["FGSM", "PGD-5-CE", "APGD-CE", "APGD-DLR"]
    assert robustness.SETTINGS["full"]["apgd_targets"] == 9
    assert robust_rows.attacks_text(9) == "FGSM, PGD, APGD-CE, APGD-DLR, APGD-T (9 targets)"


def test_apgd_t_can_only_lower_a_real_rows_worst_case(tmp_path):
    """On a real (linear) classifier, adding APGD-T keeps every other attack's keys and results, so
    the images right under the worst case with it are a subset of those without it."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(4 * 4 * 3, 10)).astype(np.float32))
    x = rng.uniform(0.2, 0.8, size=(32, 4, 4, 3)).astype(np.float32)
    logits = lambda v: v.reshape(v.shape[0], -1) @ w  # noqa: E731
    y = np.asarray(jnp.argmax(logits(jnp.asarray(x)), -1)).astype(np.int32)
    ctx = common.Context(dataset="synthetic", scale="tiny", out=tmp_path, progress=False)
    key = jax.random.key(3)
    kw = dict(steps=2, apgd_steps=3, batch_size=16, checks=False, escalate=0)
    rows = {}
    for t in (0, 3):
        d = tmp_path / f"t{t}"
        d.mkdir()
        request = robust_rows.AttackRequest(eps=(0.05,), apgd_targets=t, **kw)
        rows[t] = robust_rows.eval_robust(ctx, logits, x, y, request, key=key, model_id="lin", per_example_dir=d)
    import json

    per = {t: json.loads((tmp_path / f"t{t}" / "lin_eps0.05.json").read_text()) for t in (0, 3)}
    assert per[3]["attacks"][-1] == "APGD-T" and "APGD-T" not in per[0]["attacks"]
    assert rows[0]["clean"] == rows[3]["clean"] == 1.0
    assert rows[0]["FGSM 0.05"] == rows[3]["FGSM 0.05"] and rows[0]["PGD 0.05"] == rows[3]["PGD 0.05"]
    assert rows[3]["worst 0.05"] <= rows[0]["worst 0.05"]
    for name in per[0]["attacks"]:
        assert per[3]["robust_acc_per_attack"][name] == per[0]["robust_acc_per_attack"][name]
    kept = [[e["robust_correct"] for e in per[t]["examples"]] for t in (0, 3)]
    assert all(a or not b for a, b in zip(kept[0], kept[1]))  # right with APGD-T => right without


def test_row_with_accelerator_loops_forced_equals_the_cpu_form(tmp_path, monkeypatch):
    """A real row (no scripted attacks): FGSM, PGD, APGD-CE, APGD-DLR and APGD-T over 2 targets
    with every check, once with the attack loops unrolled (the CPU form) and once rolled as on a
    GPU (``JAXHFC_LOOPS=accelerator``): the same row to float tolerance."""
    from jax.tree_util import Partial

    import attack_models as am
    import jax

    logits = Partial(am.conv_apply, am.conv_params(k=5, seed=1))
    x = np.random.default_rng(0).uniform(0, 1, (24, am.H, am.W, am.C)).astype(np.float32)
    y = np.asarray(np.argmax(np.asarray(logits(x)), axis=1), np.int32)  # clean accuracy 1: attacks have work
    rows = {}
    for form in ("cpu", "accelerator"):
        monkeypatch.setenv("JAXHFC_LOOPS", form)
        assert robust_rows.UNROLL() == (form == "cpu")
        ctx = common.Context(dataset="synthetic", scale="tiny", out=tmp_path / form, progress=False)
        request = robust_rows.AttackRequest(eps=(0.05,), steps=3, apgd_steps=4, batch_size=24, check_n=24,
                                            apgd_targets=2)
        rows[form] = robust_rows.eval_robust(ctx, logits, x, y, request, key=jax.random.key(0))
    a, b = rows["cpu"], rows["accelerator"]
    assert a["clean"] == 1.0 and a["worst 0.05"] < 1.0  # the attacks broke some images
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, float):
            assert b[k] == pytest.approx(v, abs=1.5 / 24), k  # at most one image flips
        else:
            assert b[k] == v, k


def test_an_attack_request_from_settings_and_its_memo_key():
    s = dict(eps=(0.03, 0.09), pgd_steps=5, batch_size=10, apgd_steps=10, apgd_targets=0, cascade=True, check_n=8,
             escalate=1)
    q = robust_rows.AttackRequest.from_settings(s)
    assert q.eps == (0.03, 0.09) and q.steps == 5 and q.check_n == 8 and q.escalate == 1 and q.search is None
    assert [a.name for a in q.attacks()] == ["FGSM", "PGD-5-CE", "APGD-CE", "APGD-DLR"]
    assert robust_rows.AttackRequest.from_settings(s, eps=(0.5,)).eps == (0.5,)
    # the memo key names the model, the eps, the images and every setting that changes the result
    assert q.memo_key("m", 0.03, 10) != q.memo_key("m", 0.09, 10) != q.memo_key("m", 0.09, 11)
    assert q.memo_key("m", 0.03, 10) != dataclasses.replace(q, check_n=9).memo_key("m", 0.03, 10)
    assert q.memo_key("m", 0.03, 10) == robust_rows.AttackRequest.from_settings(s, search={"x": 1}).memo_key("m", 0.03, 10)
    for bad in ((), (0.0,), (-0.1, 0.03)):
        with pytest.raises(ValueError, match="eps > 0"):
            robust_rows.AttackRequest(eps=bad, steps=5, batch_size=10)
