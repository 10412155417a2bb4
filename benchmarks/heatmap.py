"""Fourier heat-map benchmark: the full frequency grid on N test images, two ways.

Measured in the same run on the same model and data:

* ``jaxhfc``: :func:`jaxhfc.analysis.fourier_heatmap`: each compiled call evaluates a chunk
  of frequencies on a chunk of images (``freq_chunk * batch_size`` model inputs), images
  sharded over every device of the ``"data"`` mesh; random signs generated on the device;
* ``per_frequency_loop``: the usual Python loop over the ``H * W`` frequencies, one jitted
  call per frequency on all N images (bases and signs precomputed on the device and not
  timed, which favours the loop), the error count fetched each time.

Both use the same signs (:func:`jaxhfc.analysis.heatmap_signs`), so the maps must agree
exactly; the JSON records the largest difference. The model is ``small_cnn`` from
``jaxhfc.models`` (random weights, eval mode; timing does not depend on training), the
images uniform noise in [0, 1].

Usage: ``python -m benchmarks.heatmap [--quick] [--images N] [--size S] [--out DIR]``
(default 1000 images of 32x32x3, the 1024-frequency grid; ``--quick``: 64 images of 8x8).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks import common


def build_model(size: int, num_classes: int = 10):
    """``logits_fn`` of jaxhfc's small_cnn (random init, eval mode)."""
    import jax
    import jax.numpy as jnp

    from jaxhfc import models

    model = models.get_model("small_cnn", num_classes=num_classes)
    variables = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
    return (lambda x: model.apply(variables, x, train=False)), sum(
        int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables["params"]))


def run(*, n_images: int, size: int, eps: float, freq_chunk: int, batch_size: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxhfc import analysis, fourier, parallel

    logits_fn, n_params = build_model(size)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n_images, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 10, n_images).astype(np.int32)
    key = jax.random.key(1)
    mesh = parallel.make_mesh()
    nf = size * size

    def ours():
        return analysis.fourier_heatmap(logits_fn, x, y, key, eps=eps, mesh=mesh, freq_chunk=freq_chunk,
                                        batch_size=batch_size)

    t_ours = common.time_call(ours, repeats=repeats, warmup=0)
    map_ours = ours()

    # per-frequency loop: one jitted call per frequency on all images
    freqs = np.arange(nf, dtype=np.int32)
    bases = jnp.asarray(fourier.fourier_basis(size, size, freqs // size, freqs % size, norm=eps))  # (F, H, W)
    signs = analysis.heatmap_signs(key, freqs, np.arange(n_images), 3)  # (F, N, C)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    jax.block_until_ready((bases, signs))

    @jax.jit
    def one_frequency(basis, sign):
        xp = jnp.clip(x_dev + basis[None, :, :, None] * sign[:, None, None, :], 0.0, 1.0)
        return jnp.sum(jnp.argmax(logits_fn(xp), -1) != y_dev)

    def loop():
        out = np.zeros(nf)
        for f in range(nf):
            out[f] = int(one_frequency(bases[f], signs[f]))  # blocks, as a user loop does
        return out

    t_loop = common.time_call(loop, repeats=repeats, warmup=0)
    map_loop = loop().reshape(size, size) / n_images
    evals = n_images * nf
    return {
        "n_images": n_images,
        "image_size": [size, size, 3],
        "n_frequencies": nf,
        "model": "small_cnn",
        "model_params": n_params,
        "eps": eps,
        "freq_chunk": freq_chunk,
        "batch_size": batch_size,
        "devices": len(jax.devices()),
        "jaxhfc": {**t_ours, "model_evals_per_s": evals / t_ours["median_s"],
                   "compiled_calls": -(-nf // freq_chunk) * -(-n_images // batch_size)},
        "per_frequency_loop": {**t_loop, "model_evals_per_s": evals / t_loop["median_s"], "compiled_calls": nf},
        "speedup": t_loop["median_s"] / t_ours["median_s"],
        "max_abs_map_difference": float(np.abs(map_ours - map_loop).max()),
        "mean_error_rate": float(map_ours.mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64 images of 8x8 (seconds on a CPU)")
    p.add_argument("--images", type=int, default=None, help="test images (default 1000; quick 64)")
    p.add_argument("--size", type=int, default=None, help="image height = width (default 32; quick 8)")
    p.add_argument("--eps", type=float, default=4.0, help="L2 norm per channel (Yin et al.: 4)")
    p.add_argument("--freq-chunk", type=int, default=None, help="frequencies per compiled call")
    p.add_argument("--batch-size", type=int, default=None, help="images per compiled call")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    import jax

    on_cpu = jax.default_backend() == "cpu"
    n = args.images or (64 if args.quick else 1000)
    size = args.size or (8 if args.quick else 32)
    fc = args.freq_chunk or (4 if on_cpu else 64)
    bs = args.batch_size or (min(n, 256) if on_cpu else n)
    t0 = time.perf_counter()
    res = run(n_images=n, size=size, eps=args.eps, freq_chunk=fc, batch_size=bs,
              repeats=args.repeats or (2 if args.quick else 3))
    res["quick"] = bool(args.quick)
    res["wall_s"] = time.perf_counter() - t0
    path = common.save("heatmap", res, args.out)
    o, l = res["jaxhfc"], res["per_frequency_loop"]
    print(f"Fourier heat map, {n} images of {size}x{size}x3, {res['n_frequencies']} frequencies, small_cnn, "
          f"{res['devices']} x {jax.devices()[0].device_kind}:")
    print(f"  jaxhfc (freq_chunk={fc}, batch={bs}, {o['compiled_calls']} calls): {o['median_s']:.3f} s median "
          f"[{o['min_s']:.3f}-{o['max_s']:.3f}], first call {o['first_s']:.2f} s, {o['model_evals_per_s']:.0f} evals/s")
    print(f"  per-frequency loop ({l['compiled_calls']} calls): {l['median_s']:.3f} s median, first call "
          f"{l['first_s']:.2f} s, {l['model_evals_per_s']:.0f} evals/s -> jaxhfc {res['speedup']:.1f}x faster")
    print(f"  max |map difference| = {res['max_abs_map_difference']:.2e}; wrote {path}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
