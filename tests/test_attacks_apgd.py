"""Losses and APGD / APGD-T: against numpy transcriptions of auto-attack, and against
torchattacks and auto-attack themselves when installed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.tree_util import Partial

from jaxhfc import attacks as A
from jaxhfc.attacks import base, losses

from attack_models import (H, W, C, D, linear_apply, linear_params, conv_apply, conv_params, images,
                           planted_linear, scaled_linear, numpy_apgd, torch_and_jax_conv)


# ----------------------------------------------------------------------------- losses, APGD


def test_margin_and_dlr_losses_against_numpy():
    rng = np.random.default_rng(30)
    z = rng.normal(size=(7, 5)).astype(np.float32) * 3
    y = rng.integers(0, 5, 7)
    zy = z[np.arange(7), y]
    other = np.where(np.eye(5, dtype=bool)[y], -np.inf, z).max(1)
    srt = np.sort(z, 1)[:, ::-1]
    np.testing.assert_allclose(A.margin_loss(jnp.asarray(z), jnp.asarray(y)), other - zy, rtol=1e-6)
    dlr = -(zy - other) / (srt[:, 0] - srt[:, 2] + 1e-12)
    np.testing.assert_allclose(A.dlr_loss(jnp.asarray(z), jnp.asarray(y)), dlr, rtol=1e-5)
    ce = -(zy - np.log(np.exp(z).sum(1)))
    np.testing.assert_allclose(A.cross_entropy_loss(jnp.asarray(z), jnp.asarray(y)), ce, rtol=1e-5)
    # DLR is invariant to shifting and positive scaling of the logits; CE is not
    np.testing.assert_allclose(A.dlr_loss(jnp.asarray(30 * z + 4), jnp.asarray(y)), dlr, rtol=1e-5)
    with pytest.raises(ValueError, match="K >= 3"):
        A.dlr_loss(jnp.zeros((2, 2)), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="loss must be one of"):
        A.pgd(Partial(linear_apply, linear_params(3)), images(2), jnp.array([0, 1]), None,
              eps=0.1, step_size=0.1, steps=1, random_start=False, loss="hinge")


def test_apgd_checkpoints_by_hand():
    # Croce & Hein: first window 0.22 N, each next 0.03 N shorter, at least 0.06 N
    assert A.apgd_checkpoints(100) == [(21, 22), (40, 19), (56, 16), (69, 13), (79, 10),
                                       (86, 7), (92, 6), (98, 6)]
    assert A.apgd_checkpoints(10) == [(1, 2), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1),
                                      (8, 1), (9, 1)]


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.3)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_follows_the_reference_implementation(norm, eps, loss):
    """Step sizes, momentum, checkpoints, resets and the first window's count of increases
    against a float64 numpy transcription of auto-attack's APGD (linear model, clean start):
    the same examples broken, the same best objective for the others. (The optional
    auto-attack package itself is compared in test_apgd_matches_autoattack.)"""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(D, 10)) * 0.05
    b = rng.normal(size=10) * 0.1
    x = rng.uniform(size=(64, H, W, C))
    y = (x.reshape(64, -1) @ w + b).argmax(1)  # all classified right at the start
    p = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    f = Partial(linear_apply, p)
    for steps in (10, 25):
        ref_x, ref_succ, ref_best = numpy_apgd(w, b, x, y, eps=eps, steps=steps, norm=norm,
                                               loss=loss)
        assert 0.1 < ref_succ.mean() < 0.9  # both kinds present
        ours, succ = A.apgd(f, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), None,
                            eps=eps, steps=steps, norm=norm, loss=loss, random_start=False)
        np.testing.assert_array_equal(np.asarray(succ), ref_succ)
        keep = ~ref_succ
        obj, _ = losses._objective(f, ours, jnp.asarray(y, jnp.int32), False, loss)
        np.testing.assert_allclose(np.asarray(obj)[keep], ref_best[keep], atol=2e-5, rtol=2e-5)
        np.testing.assert_allclose(np.asarray(ours)[keep], ref_x[keep], atol=2e-4)


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.3)])
def test_apgd_targeted_follows_the_reference_implementation(norm, eps):
    """APGD-T against the numpy transcription run once per target class (ranked 2nd, 3rd, 4th
    by the clean logits), an example broken by the first target that breaks it."""
    rng = np.random.default_rng(9)
    w = rng.normal(size=(D, 10)) * 0.05
    b = rng.normal(size=10) * 0.1
    x = rng.uniform(size=(64, H, W, C))
    z = x.reshape(64, -1) @ w + b
    y = z.argmax(1)
    order = np.argsort(z, 1)
    f = Partial(linear_apply, {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)})
    ref_succ = np.zeros(64, bool)
    ref_x = np.zeros_like(x)
    for rank in (2, 3, 4):
        rx, rs, _ = numpy_apgd(w, b, x, y, eps=eps, steps=10, norm=norm, loss="dlr-t",
                               target=order[:, -rank])
        new = (rs & ~ref_succ) | (rank == 2)  # unbroken examples keep the first target's best
        ref_x[new] = rx[new]
        ref_succ |= rs
        if rank == 2:
            first_x, first_succ = rx, rs
    assert 0.1 < first_succ.mean() <= ref_succ.mean() < 0.95
    if norm == "linf":  # there later targets break more (in L2 the 2nd class is the nearest here)
        assert first_succ.mean() < ref_succ.mean()
    ours, succ = A.apgd_targeted(f, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), None,
                                 eps=eps, steps=10, norm=norm, targets=3, random_start=False)
    np.testing.assert_array_equal(np.asarray(succ), ref_succ)

    def same(a, b):  # examples whose iterates agree (float32 vs float64 can part a near-tie)
        return np.mean(np.abs(np.asarray(a) - b).reshape(len(b), -1).max(1) < 2e-4)

    assert same(ours, ref_x) >= 0.95
    one, s1 = A.apgd_targeted(f, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), None,
                              eps=eps, steps=10, norm=norm, targets=1, random_start=False)
    np.testing.assert_array_equal(np.asarray(s1), first_succ)
    assert same(one, first_x) >= 0.95


def test_dlr_targeted_loss_and_apgd_t_attack():
    z = np.array([[3.0, 1.0, 2.0, -1.0, 0.5]])
    got = A.dlr_targeted_loss(jnp.asarray(z), jnp.array([0]), jnp.array([2]))
    np.testing.assert_allclose(np.asarray(got), [(2.0 - 3.0) / (3.0 - 0.5 * (1.0 + 0.5))], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(A.dlr_targeted_loss(jnp.asarray(7 * z + 4), jnp.array([0]),
                                                              jnp.array([2]))), np.asarray(got), rtol=1e-5)
    with pytest.raises(ValueError, match="K >= 4"):
        A.dlr_targeted_loss(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones(2, jnp.int32))
    with pytest.raises(ValueError, match="targeted DLR"):
        A.Attack("apgd-t", "ce")
    with pytest.raises(ValueError, match="targets"):
        A.Attack("apgd-t", "dlr", targets=0)
    assert [a.name for a in A.standard_attacks(20, targets=9)] == ["APGD-CE", "APGD-DLR", "APGD-T"]
    assert A.standard_attacks(20)[-1].name == "APGD-DLR"


def test_apgd_t_in_robust_accuracy_parallel_equals_direct():
    """APGD-T inside the data-parallel evaluation (8 devices, padded last batch) equals the
    direct call, and it breaks at least what APGD-DLR breaks on this model."""
    p = conv_params(k=6, seed=21)
    f = Partial(conv_apply, p)
    x = images(13, seed=22)
    y = jnp.asarray(np.argmax(conv_apply(p, x), -1))
    atk = A.Attack("apgd-t", "dlr", steps=6, targets=3)
    mesh8 = Mesh(np.array(jax.devices()), ("data",))
    r8 = A.robust_accuracy(f, x, y, jax.random.key(4), batch_size=8, mesh=mesh8, eps=0.008,
                           attacks=(atk,), logit_scale=None, more_steps=None)
    _, direct = A.apgd_targeted(f, x, y, None, eps=0.008, steps=6, targets=3, random_start=False)
    r_nors = A.robust_accuracy(f, x, y, jax.random.key(4), batch_size=8, mesh=mesh8, eps=0.008,
                               attacks=(A.Attack("apgd-t", "dlr", steps=6, targets=3,
                                                 random_start=False),),
                               logit_scale=None, more_steps=None)
    np.testing.assert_array_equal(r_nors.attack_correct["APGD-T"], ~np.asarray(direct))
    assert 0 < r8.robust_accuracy < r8.clean_accuracy
    r_dlr = A.robust_accuracy(f, x, y, jax.random.key(4), batch_size=8, mesh=mesh8, eps=0.008,
                              attacks=(A.Attack("apgd", "dlr", steps=6),), logit_scale=None,
                              more_steps=None)
    assert r8.robust_accuracy <= r_dlr.robust_accuracy


def test_cascade_keeps_every_examples_result_and_skips_what_is_broken():
    """APGD-T as a cascade attack (AutoAttack's order) runs only on the examples FGSM and
    PGD left right, with the keys it would have had, so robust and first-successful
    attack per example equal the run where it attacks every example; its own column is then
    the running robust accuracy. The logit-scale check re-runs the cascade too (the 2x-steps
    check goes through the same code; escalation keeps ``cascade``: tests/test_robust_rows.py)."""
    p = conv_params(k=6, seed=21)
    f = Partial(conv_apply, p)
    x = images(37, seed=23)
    y = jnp.asarray(np.argmax(conv_apply(p, x), -1))
    mesh8 = Mesh(np.array(jax.devices()), ("data",))
    head = (A.fgsm_attack(), A.pgd_attack(1))
    t_all = A.Attack("apgd-t", "dlr", steps=4, targets=3)
    t_cas = A.Attack("apgd-t", "dlr", steps=4, targets=3, cascade=True)
    kw = dict(batch_size=16, mesh=mesh8, eps=0.008, logit_scale=4.0, more_steps=None, check_examples=24)
    full = A.robust_accuracy(f, x, y, jax.random.key(9), attacks=head + (t_all,), **kw)
    cas = A.robust_accuracy(f, x, y, jax.random.key(9), attacks=head + (t_cas,), **kw)
    head_ok = full.clean_correct & full.attack_correct["FGSM"] & full.attack_correct["PGD-1-CE"]
    assert 0 < head_ok.sum() < len(y)  # some examples left to the cascade, some not
    assert (head_ok & ~full.attack_correct["APGD-T"]).any()  # and APGD-T breaks some of them
    np.testing.assert_array_equal(cas.robust_correct, full.robust_correct)
    np.testing.assert_array_equal(cas.successful_attack, full.successful_attack)
    np.testing.assert_array_equal(cas.attack_correct["APGD-T"], head_ok & full.attack_correct["APGD-T"])
    for name in ("FGSM", "PGD-1-CE"):
        np.testing.assert_array_equal(cas.attack_correct[name], full.attack_correct[name])
    np.testing.assert_allclose(cas.perturbation[~cas.robust_correct & cas.clean_correct],
                               full.perturbation[~full.robust_correct & full.clean_correct], rtol=1e-6)
    assert cas.robust_accuracy == full.robust_accuracy and cas.attack_accuracy["APGD-T"] == cas.robust_accuracy
    assert cas.checks["logit_scale"] == full.checks["logit_scale"] | {
        "delta_per_attack": cas.checks["logit_scale"]["delta_per_attack"]}  # APGD-T's own column is cumulative
    for name in ("FGSM", "PGD-1-CE"):
        assert cas.checks["logit_scale"]["delta_per_attack"][name] == full.checks["logit_scale"]["delta_per_attack"][name]
    # nothing left to attack: the cascade is skipped, its column is 0
    big = A.robust_accuracy(f, x, y, jax.random.key(9), attacks=head + (t_cas,), checks=False, logit_scale=None,
                            more_steps=None, batch_size=16, mesh=mesh8, eps=0.5)
    assert big.robust_accuracy == 0.0 and big.attack_accuracy["APGD-T"] == 0.0
    with pytest.raises(ValueError, match="cascade"):
        A.robust_accuracy(f, x, y, jax.random.key(9), attacks=(t_cas,) + head, batch_size=16, eps=0.008)
    assert A.standard_attacks(10, targets=9)[-1].cascade and not A.standard_attacks(10)[-1].cascade


def test_apgd_start_on_the_ball_boundary():
    # as auto-attack draws it: Linf eps * t / max|t| (t uniform), L2 eps * t / ||t|| (t normal)
    x = images(256, lo=0.3, hi=0.7)
    keys = jax.random.split(jax.random.key(3), 256)
    d = np.asarray(base._apgd_start(keys, x, 0.05, "linf")).reshape(256, -1)
    np.testing.assert_allclose(np.abs(d).max(1), 0.05, rtol=1e-6)
    assert abs(d.mean()) < 2e-3 and 0.3 < np.mean(np.abs(d) < 0.025) < 0.7  # uniform below
    d2 = np.asarray(base._apgd_start(keys, x, 0.5, "l2")).reshape(256, -1)
    np.testing.assert_allclose(np.linalg.norm(d2, axis=1), 0.5, rtol=1e-5)
    assert abs(np.mean(d2 / 0.5 * np.sqrt(D))) < 0.01  # isotropic: zero-mean coordinates
    assert not np.allclose(d[0], d[1])  # one draw per example


@pytest.mark.parametrize("loss", ["dlr", "margin", "ce"])
def test_apgd_reaches_linear_optimum(loss):
    p, x, y, eps, robust = planted_linear()
    assert 0.2 < robust.mean() < 0.8  # both kinds present
    f = Partial(scaled_linear, p)
    xa, succ = jax.jit(lambda xx, yy, k: A.apgd(f, xx, yy, k, eps=eps, steps=20, loss=loss))(
        x, y, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(succ), ~robust)
    d = np.abs(np.asarray(xa - x)).reshape(len(y), -1).max(1)
    assert d.max() <= eps + 1e-6
    np.testing.assert_array_equal(np.argmax(f(xa), -1) != np.asarray(y), np.asarray(succ))


@pytest.mark.skipif(__import__("importlib").util.find_spec("torchattacks") is None,
                    reason="torchattacks (optional reference) not installed")
def test_pgd_matches_torchattacks():
    import torch
    import torchattacks

    rng = np.random.default_rng(40)
    Net, f = torch_and_jax_conv(rng)
    x = rng.uniform(size=(8, H, W, C)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    eps, alpha, steps = 8 / 255, 2 / 255, 5
    net = Net().eval()
    atk = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False)
    ref = atk(torch.from_numpy(np.transpose(x, (0, 3, 1, 2))), torch.from_numpy(y)).numpy()
    ours, _ = A.pgd(f, jnp.asarray(x), jnp.asarray(y, jnp.int32), None,
                    eps=eps, step_size=alpha, steps=steps, random_start=False)
    ours = np.transpose(np.asarray(ours), (0, 3, 1, 2))
    # identical up to float rounding (a sign flip of a near-zero gradient moves one pixel)
    diff = np.abs(ours - ref)
    assert np.mean(diff > 1e-5) < 1e-3 and diff.max() <= 2 * eps + 1e-6


@pytest.mark.skipif(__import__("importlib").util.find_spec("autoattack") is None,
                    reason="auto-attack (optional reference, installed from its git repository) "
                           "not installed")
@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.3)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_matches_autoattack(norm, eps, loss):
    """APGD (and with DLR, APGD-T on one target) from the clean point against auto-attack's own
    APGDAttack (APGDAttack_targeted) on the same conv net (PyTorch copy): the same examples
    broken, the same best objective for the others.
    (Iterates can part where the objective is flat, e.g. DLR = 1 once the true class is
    third, and the direction of a zero gradient is float noise in either library.)"""
    import torch
    from autoattack.autopgd_base import APGDAttack
    from autoattack.autopgd_base import APGDAttack_targeted as APGDAttackTargeted

    rng = np.random.default_rng(40)
    Net, f = torch_and_jax_conv(rng)
    x = rng.uniform(size=(64, H, W, C)).astype(np.float32)
    y = np.asarray(jnp.argmax(f(jnp.asarray(x)), -1)).astype(np.int64)
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    for steps in (10, 100):
        atk = APGDAttack(Net().eval(), n_iter=steps, norm={"linf": "Linf", "l2": "L2"}[norm],
                         eps=eps, loss=loss, device="cpu")
        atk.init_hyperparam(xt)
        _, acc, ref_best, _ = atk.attack_single_run(xt, torch.from_numpy(y), x_init=xt.clone())
        ref_succ = ~acc.numpy().astype(bool)
        assert 0.1 < ref_succ.mean() < 0.95
        ours, succ = A.apgd(f, jnp.asarray(x), jnp.asarray(y, jnp.int32), None, eps=eps,
                            steps=steps, norm=norm, loss=loss, random_start=False)
        np.testing.assert_array_equal(np.asarray(succ), ref_succ)
        obj, _ = losses._objective(f, ours, jnp.asarray(y, jnp.int32), False, loss)
        gap = np.abs(np.asarray(obj) - ref_best.numpy())[~ref_succ]
        # measured: all within 1e-6 but for one tie-parted example in 9 (l2 ce 100) and 32
        # (linf dlr 10), 2e-3 apart; comparing the first count with the start's objective
        # instead (the paper's formula) agrees on 4 of 32 (l2 dlr 10)
        assert np.mean(gap < 1e-4) >= 0.85 and gap.max() < 0.01, gap
        if loss != "dlr":
            continue
        # APGD-T, one target (the class ranked 2nd by the clean logits), from the clean point
        atk_t = APGDAttackTargeted(Net().eval(), n_iter=steps, norm=atk.norm, eps=eps,
                                   device="cpu")
        atk_t.init_hyperparam(xt)
        with torch.no_grad():
            atk_t.y_target = Net().eval()(xt).sort(dim=1)[1][:, -2]
        _, acc, ref_best, _ = atk_t.attack_single_run(xt, torch.from_numpy(y), x_init=xt.clone())
        ref_succ = ~acc.numpy().astype(bool)
        ours, succ = A.apgd_targeted(f, jnp.asarray(x), jnp.asarray(y, jnp.int32), None, eps=eps,
                                     steps=steps, norm=norm, targets=1, random_start=False)
        np.testing.assert_array_equal(np.asarray(succ), ref_succ)
        obj = A.dlr_targeted_loss(f(ours), jnp.asarray(y, jnp.int32),
                                  jnp.asarray(atk_t.y_target.numpy(), jnp.int32))
        gap = np.abs(np.asarray(obj) - ref_best.numpy())[~ref_succ]
        assert np.mean(gap < 1e-4) >= 0.85 and gap.max() < 0.01, gap
