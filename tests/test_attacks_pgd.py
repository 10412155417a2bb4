"""PGD and FGSM: exact optima on linear models, constraints, determinism, the Madry
adversary, the minimal-eps search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from jaxhfc import attacks as A

from attack_models import (linear_apply, linear_params, conv_apply, conv_params, images, ce,
                           planted_linear, scaled_linear)


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


def test_unrolled_pgd_equals_a_hand_written_loop():
    """Linf PGD without random start, looped and unrolled, against the update written out here:
    x <- clip(x0 + clip(x + step * sign(grad CE) - x0, -eps, eps), 0, 1)."""
    p = conv_params(seed=20)
    f = Partial(conv_apply, p)
    x0 = images(6, seed=21)
    y = jnp.arange(6) % 3
    eps, step, steps = 0.05, 0.02, 4

    def ce(v):
        logits = f(v)
        return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    ref = x0
    for _ in range(steps):
        ref = jnp.clip(x0 + jnp.clip(ref + step * jnp.sign(jax.grad(ce)(ref)) - x0, -eps, eps), 0.0, 1.0)
    kw = dict(eps=eps, step_size=step, steps=steps, norm="linf", random_start=False)
    for unroll in (1, True):
        got, _ = A.pgd(f, x0, y, None, unroll=unroll, **kw)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-6)


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


def _planted_distances(p, x, y):
    """Each example's exact Linf distance to the nearest decision boundary of the planted linear
    model: min over other classes j of (z_y - z_j) / ||w_y - w_j||_1."""
    w = np.asarray(p["w"], np.float64)
    z = np.asarray(x, np.float64).reshape(len(y), -1) @ w + np.asarray(p["b"], np.float64)
    yn = np.asarray(y)
    dist = np.full(len(yn), np.inf)
    for j in range(3):
        l1 = np.abs(w[:, [j]].T - w[:, yn].T).sum(1)
        gap = z[np.arange(len(yn)), yn] - z[:, j]
        dist = np.minimum(dist, np.where(yn == j, np.inf, gap / np.where(yn == j, 1.0, l1)))
    return dist


def test_minimal_eps_on_planted_optimum():
    # linear model: example i is breakable at eps iff eps >= its exact Linf distance to the
    # nearest decision boundary, min_j (z_y - z_j) / ||w_y - w_j||_1
    p, x, y, _, _ = planted_linear()
    dist = _planted_distances(p, x, y)
    grid = (0.002, 0.004, 0.006, 0.008)
    keep = np.all(np.abs(dist[:, None] - np.asarray(grid)[None]) > 3e-4, axis=1)  # none on a grid point
    xs, ys, d = x[keep], y[keep], dist[keep]
    out = A.minimal_eps(Partial(scaled_linear, p), xs, ys, jax.random.key(0), eps_grid=grid,
                        batch_size=64, attacks=(A.Attack("apgd", "dlr", steps=10),), checks=False)
    expected = np.array([min([e for e in grid if e >= di], default=np.inf) for di in d], np.float32)
    np.testing.assert_array_equal(out["min_eps"], expected)
    np.testing.assert_allclose(out["accuracy"], [(expected > e).mean() for e in grid])
    assert np.all(np.diff(out["accuracy"]) <= 0) and 0 < out["accuracy"][0] and out["accuracy"][-1] < 1
    with pytest.raises(ValueError, match="increasing"):
        A.minimal_eps(Partial(scaled_linear, p), xs, ys, jax.random.key(0), eps_grid=(0.1, 0.05),
                      batch_size=8)


def test_ascending_minimal_eps_equals_the_planted_optimum_and_the_full_search():
    """Attacking each radius only on what smaller radii left gives the exact minimal eps of a
    linear model (as the full search does); an image wrong clean has minimal eps 0."""
    p, x, y, _, _ = planted_linear()
    dist = _planted_distances(p, x, y)
    grid = A.doubling_grid(0.008, 3)
    assert grid == (0.002, 0.004, 0.008)
    keep = np.all(np.abs(dist[:, None] - np.asarray(grid)[None]) > 3e-4, axis=1)
    xs, ys, d = x[keep], np.asarray(y)[keep].copy(), dist[keep]
    ys[:2] = (ys[:2] + 1) % 3  # two images wrong before any attack
    atk = (A.Attack("apgd", "dlr", steps=10),)
    out = A.ascending_minimal_eps(Partial(scaled_linear, p), xs, ys, jax.random.key(0), eps_grid=grid, batch_size=16,
                                  attacks=atk)
    expected = np.array([min([e for e in grid if e >= di], default=np.inf) for di in d], np.float32)
    expected[:2] = 0.0
    np.testing.assert_array_equal(out["min_eps"], expected)
    assert 0 < np.isinf(expected).sum() < len(expected) - 2  # the grid breaks some, not all
    full = A.minimal_eps(Partial(scaled_linear, p), xs, ys, jax.random.key(0), eps_grid=grid, batch_size=16,
                         attacks=atk, checks=False)
    np.testing.assert_array_equal(out["min_eps"], full["min_eps"])
    np.testing.assert_allclose(out["accuracy"], full["accuracy"])
    # the median: above-grid images count as the next radius; half wrong clean gives 0
    assert A.median_min_eps(np.array([0.0, 0.002, np.inf, np.inf, 0.004]), above=0.016) == 0.004
    assert A.median_min_eps(np.array([np.inf, np.inf, 0.002]), above=0.016) == 0.016
    assert A.median_min_eps(np.array([0.0, 0.0, 0.008]), above=0.016) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        A.median_min_eps(np.array([np.nan, 1.0]), above=2.0)
    with pytest.raises(ValueError, match="eps_max"):
        A.doubling_grid(0.0, 3)
