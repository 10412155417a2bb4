"""Small models with known answers, shared by the attack tests: linear and conv logits
functions on 8x8x3 images, a planted linear model whose exact robustness is known, a float64
numpy transcription of auto-attack's APGD step, and a PyTorch/JAX conv-net pair."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

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


def planted_linear(n=48, eps=0.005, seed=31):
    """A 3-class linear model on images in [0.3, 0.7] (the Linf box never binds at this eps)
    whose exact Linf robustness is known: example i is breakable iff
    max_j z_j - z_y + eps * ||w_j - w_y||_1 > 0. Examples near that boundary are
    dropped (0.4 in logits) so that float rounding cannot decide them."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, 3)) * 1.2  # margins of a few units: x30 saturates the softmax
    x = rng.uniform(0.3, 0.7, size=(6 * n, D))
    b = -0.5 * w.sum(0)  # centred: the three classes are equally frequent
    z = x @ w + b
    y = z.argmax(1)
    gap = np.full(len(x), -np.inf)
    for j in range(3):
        l1 = np.abs(w[:, [j]].T - w[:, y].T).sum(1)
        gap = np.maximum(gap, np.where(y == j, -np.inf, z[:, j] - z[np.arange(len(x)), y] + eps * l1))
    keep = np.flatnonzero(np.abs(gap) > 0.4)[:n]
    p = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    xs = jnp.asarray(x[keep].reshape(n, H, W, C), jnp.float32)
    return p, xs, jnp.asarray(y[keep], jnp.int32), eps, gap[keep] <= 0


def scaled_linear(params, x, scale=1.0):
    return scale * linear_apply(params, x)


def numpy_apgd(w, b, x, y, *, eps, steps, norm, loss, target=None):
    """APGD as the reference implementation (auto-attack's APGDAttack.attack_single_run) runs
    it from the clean point, written out in float64 numpy for a linear model ``z = x w + b``
    with analytic gradients; ``loss='dlr-t'`` with ``target`` (B,) is APGD-T's targeted DLR.
    Returns ``(x_out, success, best_objective)``."""
    n = len(x)
    xf = x.reshape(n, -1).astype(np.float64)
    rows = np.arange(n)

    def obj_grad(xa):
        z = xa @ w + b
        if loss == "ce":
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            f = -np.log(p[rows, y])
            gz = p.copy()
            gz[rows, y] -= 1.0
        elif loss == "dlr-t":  # (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2)
            srt = np.argsort(z, 1)
            i1, i3, i4 = srt[:, -1], srt[:, -3], srt[:, -4]
            num = z[rows, target] - z[rows, y]
            den = z[rows, i1] - 0.5 * (z[rows, i3] + z[rows, i4]) + 1e-12
            f = num / den
            gz = np.zeros_like(z)
            gz[rows, target] += 1 / den
            gz[rows, y] -= 1 / den
            gz[rows, i1] -= num / den**2
            gz[rows, i3] += 0.5 * num / den**2
            gz[rows, i4] += 0.5 * num / den**2
        else:  # dlr = (max_{j != y} z_j - z_y) / (z_pi1 - z_pi3)
            zo = z.copy()
            zo[rows, y] = -np.inf
            o = zo.argmax(1)
            srt = np.argsort(z, 1)
            i1, i3 = srt[:, -1], srt[:, -3]
            num = z[rows, o] - z[rows, y]
            den = z[rows, i1] - z[rows, i3] + 1e-12
            f = num / den
            gz = np.zeros_like(z)
            gz[rows, o] += 1 / den
            gz[rows, y] -= 1 / den
            gz[rows, i1] -= num / den**2
            gz[rows, i3] += num / den**2
        return f, gz @ w.T, z.argmax(1) != y

    def proj(v):
        d = v - xf
        if norm == "linf":
            d = np.clip(d, -eps, eps)
        else:
            nrm = np.linalg.norm(d, axis=1, keepdims=True)
            d = d * np.minimum(1.0, eps / np.maximum(nrm, 1e-12))
        return np.clip(xf + d, 0.0, 1.0)

    def direction(g):
        if norm == "linf":
            return np.sign(g)
        return g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12)

    f, g, succ = obj_grad(xf)
    xa, x_old, x_best, g_best, f_best = xf, xf, xf.copy(), g.copy(), f.copy()
    x_adv = xf.copy()
    step = np.full((n, 1), 2.0 * eps)
    hist = np.zeros((steps + 1, n))  # hist[i] = objective after step i; hist[-1] stays 0
    k, counter = max(int(0.22 * steps), 1), 0
    k_min, k_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    f_best_last, reduced_last = f_best.copy(), np.ones(n, bool)
    for i in range(steps):
        a = 0.75 if i > 0 else 1.0
        mom, x_old = xa - x_old, xa
        z1 = proj(xa + step * direction(g))
        xa = proj(xa + a * (z1 - xa) + (1 - a) * mom)
        f, g, s = obj_grad(xa)
        succ |= s
        x_adv[s] = xa[s]
        hist[i] = f
        up = f > f_best
        x_best[up], g_best[up], f_best[up] = xa[up], g[up], f[up]
        counter += 1
        if counter == k:
            incr = sum(hist[i - c] > hist[i - c - 1] for c in range(k))  # i - c - 1 = -1 reads 0
            red = (incr <= 0.75 * k) | (~reduced_last & (f_best_last >= f_best))
            reduced_last, f_best_last = red, f_best.copy()
            step[red] /= 2.0
            xa, g = xa.copy(), g.copy()
            xa[red], g[red] = x_best[red], g_best[red]
            k, counter = max(k - k_decr, k_min), 0
    out = np.where(succ[:, None], x_adv, x_best)
    return out.reshape(x.shape), succ, f_best


def torch_and_jax_conv(rng):
    """A conv + tanh + linear net (10 classes) as a PyTorch module class (NCHW) and as the
    same JAX logits function (NHWC), with shared random weights."""
    import torch

    wc = rng.normal(size=(4, 3, 3, 3)).astype(np.float32) * 0.5  # OIHW
    wl = rng.normal(size=(10, 4 * H * W)).astype(np.float32) * 0.3

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.fc = torch.nn.Linear(4 * H * W, 10, bias=False)
            self.conv.weight.data = torch.from_numpy(wc)
            self.fc.weight.data = torch.from_numpy(wl)

        def forward(self, x):  # NCHW; flatten in NHWC order to match the JAX model
            return self.fc(torch.tanh(self.conv(x)).permute(0, 2, 3, 1).reshape(x.shape[0], -1))

    def jax_model(params, x):
        h = jax.lax.conv_general_dilated(x, params["conv"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(h).reshape(x.shape[0], -1) @ params["fc"]

    return Net, Partial(jax_model, {"conv": jnp.asarray(np.transpose(wc, (2, 3, 1, 0))),
                                    "fc": jnp.asarray(wl.T)})


TRACED = []


def counting_linear(params, x):
    TRACED.append(x.shape)  # a Python side effect: runs once per trace
    return linear_apply(params, x)
