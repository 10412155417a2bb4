"""Fourier filtering benchmark: a CIFAR-10-sized train split at 17 radii.

Three implementations of the same LFC computation, measured in the same run:

* ``jaxhfc``: ``fourier.low_pass(x, radii)`` jitted, one forward FFT for all radii, chunked
  over images so the (R, N, 32, 32, 3) output fits in memory;
* ``numpy_loop``: the paper's code style, per image and per channel
  ``fftshift(fft2)``, mask, ``ifft2(ifftshift)``, real part (timed on a subset, the rate
  extrapolated to the whole split, as it takes minutes);
* ``numpy_vectorised``: the same with numpy FFTs over the whole chunk.

Effective bandwidth counts the bytes read (the float32 input) and written (one float32
output per radius); on a GPU it is compared with the device's memory bandwidth.

Usage: ``python -m benchmarks.filters [--quick] [--images N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks import common


def paper_loop(images: np.ndarray, radii) -> np.ndarray:
    n, h, w, c = images.shape
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    dist = np.sqrt((ii - h // 2) ** 2 + (jj - w // 2) ** 2)
    out = np.empty((len(radii),) + images.shape, np.float32)
    for k, r in enumerate(radii):
        mask = dist < r
        for i in range(n):
            for ch in range(c):
                spec = np.fft.fftshift(np.fft.fft2(images[i, :, :, ch]))
                out[k, i, :, :, ch] = np.real(np.fft.ifft2(np.fft.ifftshift(spec * mask)))
    return out


def numpy_vectorised(images: np.ndarray, radii) -> np.ndarray:
    n, h, w, c = images.shape
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    dist = np.sqrt((ii - h // 2) ** 2 + (jj - w // 2) ** 2)
    spec = np.fft.fftshift(np.fft.fft2(images, axes=(1, 2)), axes=(1, 2))
    out = np.empty((len(radii),) + images.shape, np.float32)
    for k, r in enumerate(radii):
        mask = (dist < r)[None, :, :, None]
        out[k] = np.real(np.fft.ifft2(np.fft.ifftshift(spec * mask, axes=(1, 2)), axes=(1, 2)))
    return out


def run(*, n_images: int, n_ref: int, chunk: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxhfc import fourier

    radii = np.array(list(range(17)), np.float32)  # 0..16, the paper's sweep
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, 32, 32, 3)).astype(np.float32)
    r_dev = jnp.asarray(radii)
    chunks = [jax.device_put(images[i : i + chunk]) for i in range(0, n_images, chunk)]
    filt = jax.jit(lambda x, r: fourier.low_pass(x, r))

    def whole_split():
        # Reduce each chunk's output to a checksum so host memory stays bounded; the filter
        # output is fully materialised on the device.
        return [filt(c, r_dev) for c in chunks][-1]

    t_jax = common.time_call(whole_split, repeats=repeats)
    # correctness spot check against the paper loop
    sub = images[:4]
    err = float(np.abs(np.asarray(filt(jnp.asarray(sub), r_dev)) - paper_loop(sub, radii)).max())

    ref = images[:n_ref]
    t0 = time.perf_counter()
    paper_loop(ref, radii)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    numpy_vectorised(ref, radii)
    t_vec = time.perf_counter() - t0

    per_img_jax = t_jax["median_s"] / n_images
    per_img_loop = t_loop / n_ref
    per_img_vec = t_vec / n_ref
    bytes_moved = n_images * 32 * 32 * 3 * 4 * (1 + len(radii))
    hw = common.hardware()
    peak_bw = common.known_peak(hw["device_kind"], common.PEAK_BANDWIDTH)
    gbps = bytes_moved / t_jax["median_s"] / 1e9
    return {
        "n_images": n_images,
        "n_radii": len(radii),
        "chunk": chunk,
        "max_abs_error_vs_paper_loop": err,
        "jaxhfc": {**t_jax, "images_per_s": n_images / t_jax["median_s"], "effective_GBps": gbps,
                   "fraction_of_peak_bandwidth": (gbps * 1e9 / peak_bw) if peak_bw else None},
        "numpy_loop": {"measured_images": n_ref, "seconds": t_loop, "images_per_s": n_ref / t_loop,
                       "extrapolated_split_s": per_img_loop * n_images},
        "numpy_vectorised": {"measured_images": n_ref, "seconds": t_vec, "images_per_s": n_ref / t_vec,
                             "extrapolated_split_s": per_img_vec * n_images},
        "speedup_vs_numpy_loop": per_img_loop / per_img_jax,
        "speedup_vs_numpy_vectorised": per_img_vec / per_img_jax,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--images", type=int, default=None, help="images in the split (default 50000; quick 2000)")
    p.add_argument("--ref-images", type=int, default=None, help="images timed for the numpy loop (default 500; quick 50)")
    p.add_argument("--chunk", type=int, default=None, help="images per jitted call (default: 50000 on GPU, 2500 on CPU)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    import jax

    on_cpu = jax.default_backend() == "cpu"
    n = args.images or (2000 if args.quick else 50000)
    n_ref = args.ref_images or (50 if args.quick else 500)
    chunk = args.chunk or (n if not on_cpu else min(n, 2500))
    res = run(n_images=n, n_ref=min(n_ref, n), chunk=chunk, repeats=args.repeats or (2 if args.quick else 3))
    res["quick"] = bool(args.quick)
    path = common.save("filters", res, args.out)
    j = res["jaxhfc"]
    print(f"filtering {n} x 32x32x3 at {res['n_radii']} radii on {jax.devices()[0].device_kind}:")
    print(f"  jaxhfc (jit): {j['median_s']:.3f} s median [{j['min_s']:.3f}-{j['max_s']:.3f}], first call {j['first_s']:.2f} s, "
          f"{j['images_per_s']:.0f} img/s, {j['effective_GBps']:.2f} GB/s effective")
    print(f"  numpy per-image loop (paper style): {res['numpy_loop']['images_per_s']:.0f} img/s "
          f"-> {res['speedup_vs_numpy_loop']:.1f}x slower than jaxhfc")
    print(f"  numpy vectorised: {res['numpy_vectorised']['images_per_s']:.0f} img/s "
          f"-> {res['speedup_vs_numpy_vectorised']:.1f}x slower than jaxhfc")
    print(f"  max |jaxhfc - paper loop| = {res['max_abs_error_vs_paper_loop']:.2e} (0..255 scale); wrote {path}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
