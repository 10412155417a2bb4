"""Tests for jaxhfc.attacks: exact optima on linear models, constraints, determinism,
data-parallel robust evaluation (8 fake devices == 1 device), sanity checks, defences."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.tree_util import Partial

from jaxhfc import attacks as A

H = W = 8
C = 3
D = H * W * C


# ----------------------------------------------------------------------------- models


def linear_apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def linear_params(k=2, seed=0, scale=1.0):
    # scale < 1 keeps the softmax away from saturation, where float32 p - onehot loses
    # relative precision (and with it the exact direction of the gradient)
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(D, k)) * scale, jnp.float32),
            "b": jnp.asarray(rng.normal(size=(k,)) * 0.1, jnp.float32)}


def conv_apply(params, x):
    h = jax.lax.conv_general_dilated(x, params["conv"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.tanh(h + params["cb"])
    return h.reshape(h.shape[0], -1) @ params["w"] + params["b"]


def conv_params(k=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"conv": jnp.asarray(rng.normal(size=(3, 3, C, 4)) * 0.5, jnp.float32),
            "cb": jnp.asarray(rng.normal(size=(4,)) * 0.1, jnp.float32),
            "w": jnp.asarray(rng.normal(size=(H * W * 4, k)) * 0.3, jnp.float32),
            "b": jnp.zeros((k,), jnp.float32)}


def images(n, seed=0, lo=0.0, hi=1.0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(lo, hi, size=(n, H, W, C)), jnp.float32)


def ce(logits_fn, x, y):
    logp = jax.nn.log_softmax(logits_fn(x), -1)
    return -np.asarray(jnp.take_along_axis(logp, y[:, None], -1)[:, 0])


# ----------------------------------------------------------------------------- pgd


@pytest.mark.parametrize("random_start", [False, True])
def test_linf_linear_optimum(random_start):
    p = linear_params(2)
    f = Partial(linear_apply, p)
    x = images(6, lo=0.3, hi=0.7)  # far from the box: the box never binds
    y = jnp.array([0, 1, 0, 1, 1, 0])
    eps = 0.03
    x_adv, succ = A.pgd(f, x, y, jax.random.key(0), eps=eps, step_size=0.01, steps=10,
                        random_start=random_start)
    w = np.asarray(p["w"])
    wy = w[:, np.asarray(y)].T  # (B, D)
    wo = w[:, 1 - np.asarray(y)].T
    expected = np.asarray(x).reshape(6, -1) - eps * np.sign(wy - wo)
    np.testing.assert_allclose(np.asarray(x_adv).reshape(6, -1), expected, atol=1e-6)
    pred = np.argmax(linear_apply(p, jnp.asarray(expected.reshape(x.shape))), -1)
    np.testing.assert_array_equal(np.asarray(succ), pred != np.asarray(y))


def test_l2_linear_optimum():
    p = linear_params(2, seed=1, scale=0.05)
    f = Partial(linear_apply, p)
    x = images(4, lo=0.3, hi=0.7)
    y = jnp.array([1, 0, 0, 1])
    eps = 0.5
    x_adv, _ = A.pgd(f, x, y, None, eps=eps, step_size=0.2, steps=5, norm="l2",
                     random_start=False)
    w = np.asarray(p["w"])
    d = (w[:, 1 - np.asarray(y)] - w[:, np.asarray(y)]).T
    expected = np.asarray(x).reshape(4, -1) + eps * d / np.linalg.norm(d, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(x_adv).reshape(4, -1), expected, atol=1e-5)


def test_fgsm_matches_analytic_gradient():
    p = linear_params(3, seed=2)
    x = images(5)
    y = jnp.array([0, 1, 2, 1, 0])
    eps = 0.05
    x_adv, _ = A.fgsm(Partial(linear_apply, p), x, y, eps=eps)
    xn = np.asarray(x, np.float64).reshape(5, -1)
    w, b = np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64)
    z = xn @ w + b
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    grad = (prob - np.eye(3)[np.asarray(y)]) @ w.T  # d CE / dx
    expected = np.clip(xn + eps * np.sign(grad), 0, 1)
    np.testing.assert_allclose(np.asarray(x_adv).reshape(5, -1), expected, atol=1e-6)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
@pytest.mark.parametrize("random_start", [False, True])
def test_constraints_exact(norm, eps, random_start):
    p = conv_params()
    x = images(16, seed=3)
    x = x.at[:, :2].set(0.0).at[:, -2:].set(1.0)  # many pixels on the box's faces
    y = jnp.arange(16) % 3
    x_adv, _ = jax.jit(lambda xx, yy, k: A.pgd(Partial(conv_apply, p), xx, yy, k, eps=eps,
                                               step_size=eps / 3, steps=7, norm=norm,
                                               random_start=random_start))(
        x, y, jax.random.key(1))
    x_adv = np.asarray(x_adv)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - np.asarray(x)).reshape(16, -1).astype(np.float64)
    if norm == "linf":
        assert np.abs(delta).max() <= eps * (1 + 1e-6)
        assert np.abs(delta).max() >= 0.99 * eps  # and the attack does use the budget
    else:
        norms = np.linalg.norm(delta, axis=1)
        assert norms.max() <= eps * (1 + 1e-5)
        assert norms.min() >= 0.5 * eps


def test_loss_increases_and_keep_best_monotone():
    # linear model, no box: each sign step raises the loss until the ball saturates
    p = linear_params(2, seed=4)
    f = Partial(linear_apply, p)
    x = images(8, lo=0.3, hi=0.7)
    y = jnp.arange(8) % 2
    losses = [ce(f, A.pgd(f, x, y, None, eps=0.05, step_size=0.01, steps=s,
                          random_start=False)[0], y) for s in range(3)]
    for a, b in zip(losses, losses[1:]):
        assert np.all(b > a)
    # nonlinear model, random start: best iterate never gets worse with more steps
    q = conv_params(seed=5)
    g = Partial(conv_apply, q)
    xs = images(12, seed=6)
    ys = jnp.arange(12) % 3
    key = jax.random.key(7)
    prev_s, prev_l = None, None
    for s in (0, 1, 4):
        xa, succ = A.pgd(g, xs, ys, key, eps=0.05, step_size=0.02, steps=s, keep_best=True)
        succ = np.asarray(succ)
        loss = ce(g, xa, ys)
        np.testing.assert_array_equal(succ, np.argmax(conv_apply(q, xa), -1) != np.asarray(ys))
        if prev_s is not None:
            assert np.all(succ >= prev_s)
            same = succ == prev_s
            assert np.all(loss[same] >= prev_l[same] - 1e-5)
        prev_s, prev_l = succ, loss
    clean = ce(g, xs, ys)
    assert np.mean(prev_l) > np.mean(clean) + 0.05


def test_determinism_per_key():
    p = conv_params(seed=8)
    f = Partial(conv_apply, p)
    x = images(6, seed=9)
    y = jnp.arange(6) % 3
    kw = dict(eps=0.05, step_size=0.01, steps=3)
    a1, s1 = A.pgd(f, x, y, jax.random.key(0), **kw)
    a2, s2 = A.pgd(f, x, y, jax.random.key(0), **kw)
    a3, _ = A.pgd(f, x, y, jax.random.key(1), **kw)
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    assert not np.array_equal(np.asarray(a1), np.asarray(a3))
    # raw uint32 keys work and per-example keys equal split(key, B)
    a4, _ = A.pgd(f, x, y, jax.random.split(jax.random.key(0), 6), **kw)
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a4))
    A.pgd(f, x, y, jax.random.PRNGKey(0), **kw)


def test_unroll_same_result():
    p = conv_params(seed=20)
    f = Partial(conv_apply, p)
    x = images(6, seed=21)
    y = jnp.arange(6) % 3
    kw = dict(eps=0.05, step_size=0.01, steps=4, norm="l2")
    a, _ = A.pgd(f, x, y, jax.random.key(0), **kw)
    b, _ = A.pgd(f, x, y, jax.random.key(0), unroll=True, **kw)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_more_steps_never_helps_the_model():
    p = conv_params(seed=22)
    f = Partial(conv_apply, p)
    x = images(16, seed=23)
    y = jnp.asarray(np.argmax(conv_apply(p, x), -1))
    short, long = A.more_steps_check(f, x, y, jax.random.key(1), factor=3, steps=2,
                                     batch_size=16, eps=0.03, checks=False)
    assert long.attack["steps"] == 6 and short.attack["steps"] == 2
    # keep_best with the same key: the long attack's iterates extend the short one's
    assert np.all(long.adv_correct <= short.adv_correct)
    assert long.adv_accuracy < 1.0


def test_targeted():
    # two classes: targeting the other class is the untargeted attack
    p = linear_params(2, seed=10)
    f = Partial(linear_apply, p)
    x = images(6, lo=0.3, hi=0.7)
    y = jnp.array([0, 1, 1, 0, 1, 0])
    kw = dict(eps=0.03, step_size=0.01, steps=5, random_start=False)
    untargeted, _ = A.pgd(f, x, y, None, **kw)
    targeted, _ = A.pgd(f, x, 1 - y, None, targeted=True, **kw)
    np.testing.assert_array_equal(np.asarray(untargeted), np.asarray(targeted))
    # three classes, a large budget: every target is reached, and the target's loss drops
    q = linear_params(3, seed=11)
    g = Partial(linear_apply, q)
    t = jnp.array([2, 2, 0, 1, 0, 1])
    xa, succ = A.pgd(g, x, t, jax.random.key(0), eps=0.3, step_size=0.05, steps=20,
                     targeted=True)
    assert np.all(np.asarray(succ))
    np.testing.assert_array_equal(np.argmax(linear_apply(q, xa), -1), np.asarray(t))
    assert np.all(ce(g, xa, t) < ce(g, x, t))


def test_bad_inputs():
    f = Partial(linear_apply, linear_params(2))
    x = images(2)
    with pytest.raises(ValueError, match="norm"):
        A.pgd(f, x, jnp.array([0, 1]), None, eps=0.1, step_size=0.1, steps=1, norm="l1")
    with pytest.raises(ValueError, match="y must have shape"):
        A.pgd(f, x, jnp.array([0, 1, 1]), None, eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="PRNG key"):
        A.pgd(f, x, jnp.array([0, 1]), None, eps=0.1, step_size=0.1, steps=1)


def test_madry_adversary_defaults():
    assert (A.PAPER_ADV_EPS, A.PAPER_ADV_STEP_SIZE, A.PAPER_ADV_STEPS) == (0.03, 0.003, 10)
    p = conv_params(seed=12)
    f = Partial(conv_apply, p)
    x = images(4, seed=13)
    y = jnp.arange(4) % 3
    adv = A.madry_adversary()
    xa = adv(f, x, y, jax.random.key(0))
    ref, _ = A.pgd(f, x, y, None, eps=0.03, step_size=0.003, steps=10, random_start=False)
    np.testing.assert_array_equal(np.asarray(xa), np.asarray(ref))
    # training sees no gradient through the attack: d/dparams loss(x_adv) uses x_adv fixed
    def loss(pp):
        xadv = adv(Partial(conv_apply, pp), x, y, jax.random.key(0))
        return jnp.sum(conv_apply(pp, xadv))
    def loss_fixed(pp):
        return jnp.sum(conv_apply(pp, ref))
    ga, gb = jax.grad(loss)(p), jax.grad(loss_fixed)(p)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           ga, gb)


# ----------------------------------------------------------------------------- evaluation


def _direct(f, x, y, key, **kw):
    """Reference: one pgd call over the whole set with the per-example keys of robust_accuracy."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
    xa, _ = A.pgd(f, x, y, keys, **kw)
    return (np.argmax(f(x), -1) == np.asarray(y), np.argmax(f(xa), -1) == np.asarray(y),
            np.abs(np.asarray(xa - x)).reshape(x.shape[0], -1).max(1))


def test_robust_accuracy_parallel_equals_single(n_devices):
    assert n_devices == 8
    p = conv_params(seed=14)
    f = Partial(conv_apply, p)
    n = 21  # 2 full batches of 8 (one example per device) and a partial one of 5
    x = images(n, seed=15)
    y = jnp.asarray(np.argmax(conv_apply(p, x), -1))  # mostly right: something to attack
    y = y.at[::5].set((y[::5] + 1) % 3)  # and some wrong
    key = jax.random.key(3)
    kw = dict(eps=0.05, step_size=0.02, steps=4)
    mesh8 = Mesh(np.array(jax.devices()), ("data",))
    r8 = A.robust_accuracy(f, x, y, key, batch_size=8, mesh=mesh8, **kw)
    r1 = A.robust_accuracy(f, np.asarray(x), np.asarray(y), key, batch_size=32, **kw)
    clean, adv, pert = _direct(f, x, y, key, keep_best=True, random_start=True, **kw)
    for r in (r8, r1):
        assert r.n == n and r.clean_correct.shape == (n,)
        np.testing.assert_array_equal(r.clean_correct, clean)
        np.testing.assert_array_equal(r.adv_correct, adv)
        np.testing.assert_allclose(r.perturbation, pert, atol=1e-6)
        np.testing.assert_array_equal(r.robust_correct, clean & adv)
        assert r.clean_accuracy == pytest.approx(clean.mean())
        assert r.adv_accuracy == pytest.approx(adv.mean())
        assert r.max_perturbation <= 0.05 + 1e-6
        assert r.adv_accuracy <= r.clean_accuracy
        assert r.warnings == ()
    assert r8.adv_accuracy < r8.clean_accuracy  # the attack does something
    with pytest.raises(ValueError, match="multiple"):
        A.robust_accuracy(f, x, y, key, batch_size=12, mesh=mesh8, **kw)
    with pytest.raises(ValueError, match="box"):
        A.robust_accuracy(f, x - 0.5, y, key, batch_size=8, **kw)


def test_masked_gradients_warn():
    p = conv_params(seed=16)
    f = Partial(lambda pp, x: jax.lax.stop_gradient(conv_apply(pp, x)), p)
    x = images(8, seed=17)
    y = jnp.asarray(np.argmax(conv_apply(p, x), -1))
    with pytest.warns(RuntimeWarning, match="zero input gradient"):
        r = A.robust_accuracy(f, x, y, jax.random.key(0), batch_size=8, eps=0.05, steps=3)
    assert r.zero_grad.all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r2 = A.robust_accuracy(Partial(conv_apply, p), x, y, jax.random.key(0), batch_size=8,
                               eps=0.05, steps=3)
    assert not r2.zero_grad.any()


def test_lowpass_defence_equals_filter_then_model():
    fourier = pytest.importorskip("jaxhfc.fourier")
    p = conv_params(seed=18)
    x = images(4, seed=19)
    r = 3.0
    defended = A.lowpass_defended(Partial(conv_apply, p), r)
    np.testing.assert_allclose(defended(x), conv_apply(p, fourier.low_pass(x, r)),
                               rtol=1e-5, atol=1e-5)
    # independent numpy reference of the paper's filter (fftshift'd mask, distance < r)
    xn = np.asarray(x, np.float64)
    i = np.arange(H)[:, None] - H // 2
    j = np.arange(W)[None, :] - W // 2
    m = (np.sqrt(i ** 2 + j ** 2) < r)[..., None]
    spec = np.fft.fftshift(np.fft.fft2(xn, axes=(1, 2)), axes=(1, 2))
    low = np.real(np.fft.ifft2(np.fft.ifftshift(spec * m, axes=(1, 2)), axes=(1, 2)))
    np.testing.assert_allclose(defended(x), conv_apply(p, jnp.asarray(low, jnp.float32)),
                               rtol=1e-4, atol=1e-4)
    # rescale option: per-image max scaling before the model
    d2 = A.lowpass_defended(Partial(conv_apply, p), r, rescale=True)
    lowr = low / low.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(d2(x), conv_apply(p, jnp.asarray(lowr, jnp.float32)),
                               rtol=1e-4, atol=1e-4)
    # the defended pipeline is attackable (gradients flow through the filter)
    y = jnp.asarray(np.argmax(defended(x), -1))
    res = A.robust_accuracy(defended, x, y, jax.random.key(0), batch_size=4, eps=0.1, steps=5)
    assert not res.zero_grad.any()
    assert res.max_perturbation <= 0.1 + 1e-6
