"""Spectra of adversarial perturbations: their radial energy and the share outside a radius.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc import fourier, parallel
from jaxhfc.parallel import join_callable
from jaxhfc.analysis.base import LogitsFn, _CACHE_SIZE, _body, _check_batch_size, _check_labels, _check_mesh, _check_nhwc
from jaxhfc.analysis.radius import _check_radii, _default_radii


def perturbation_spectrum(delta, *, reduce: str = "mean", batch_size: int = 2000) -> np.ndarray:
    """Radial power spectrum of perturbations, averaged over images.

    Args:
      delta: ``(N, H, W, C)`` float perturbations (e.g. ``x_adv - x``).
      reduce: ``"mean"`` (radially averaged: power per frequency in each ring) or ``"sum"``
        (power per ring; the rings add up to the mean energy ``mean_n sum(delta_n**2)``).
      batch_size: images per FFT call.

    Returns:
      ``(K,)`` float64, ``K = floor(corner) + 1`` rings ``k <= distance < k + 1``
      (:func:`jaxhfc.fourier.radial_power_spectrum`).
    """
    delta = _check_nhwc(delta, "delta", float_only=True)
    bs = _check_batch_size(batch_size)
    total = None
    for start in range(0, delta.shape[0], bs):
        s = np.asarray(fourier.radial_power_spectrum(delta[start:start + bs], reduce=reduce), np.float64)
        s = s.sum(axis=0)
        total = s if total is None else total + s
    return total / delta.shape[0]


@jax.jit
def _power_outside(delta, radii):
    h, w = delta.shape[-3], delta.shape[-2]
    spec = jnp.fft.fft2(jnp.moveaxis(delta, -1, -3), axes=(-2, -1))
    power = (jnp.abs(spec) ** 2).sum(axis=-3) / (h * w)  # (B, H, W), unshifted
    dist = jnp.asarray(np.fft.ifftshift(fourier.distance_grid(h, w)).astype(np.float32))
    outside = (dist[None] >= radii[:, None, None]).astype(jnp.float32)  # (R, H, W)
    return jnp.einsum("bhw,rhw->rb", power, outside), power.sum(axis=(-2, -1))


def energy_share_outside(delta, radii=None, *, batch_size: int = 2000) -> dict[str, np.ndarray]:
    """Share of perturbation energy at frequencies with ``distance >= r`` (the HFC at ``r``).

    Args:
      delta: ``(N, H, W, C)`` float perturbations.
      radii: 1-D radii (default ``0, 1, ..., ceil(corner)``).
      batch_size: images per FFT call.

    Returns:
      ``{"radii": (R,), "share_mean": (R,)`` mean over images of each image's share (an
      all-zero perturbation counts as 0), ``"share_pooled": (R,)`` energy outside ``r`` of
      all images over their total energy, ``"energy_mean": float`` mean ``sum(delta**2)``,
      ``"outside": (R, N)`` each image's energy outside each radius, ``"energy": (N,)`` its total}.
    """
    delta = _check_nhwc(delta, "delta", float_only=True)
    radii = _default_radii(*delta.shape[1:3]) if radii is None else _check_radii(radii)
    bs = _check_batch_size(batch_size)
    share_sum = np.zeros(len(radii))
    out_sum = np.zeros(len(radii))
    energy_sum = 0.0
    per_out, per_energy = [], []
    r_dev = jnp.asarray(radii)
    for start in range(0, delta.shape[0], bs):
        outside, energy = _power_outside(jnp.asarray(delta[start:start + bs]), r_dev)
        outside, energy = np.asarray(outside, np.float64), np.asarray(energy, np.float64)
        share_sum += np.where(energy > 0, outside / np.where(energy > 0, energy, 1.0), 0.0).sum(axis=1)
        out_sum += outside.sum(axis=1)
        energy_sum += energy.sum()
        per_out.append(outside)
        per_energy.append(energy)
    n = delta.shape[0]
    return {
        "radii": radii,
        "share_mean": share_sum / n,
        "share_pooled": out_sum / energy_sum if energy_sum > 0 else np.zeros(len(radii)),
        "outside": np.concatenate(per_out, axis=1) if per_out else np.zeros((len(radii), 0)),
        "energy": np.concatenate(per_energy) if per_energy else np.zeros(0),
        "energy_mean": energy_sum / n,
    }


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _pgd_fn(spec, eps, step_size, steps, norm, random_start) -> Callable:
    from jaxhfc import attacks  # lazy: only this wrapper needs it

    def body(arrays, k, xb, yb, idx):
        logits_fn = join_callable(spec, arrays)
        keys = jax.vmap(lambda i: jax.random.fold_in(k, i))(idx)
        x_adv, success = attacks.pgd(logits_fn, xb, yb, keys, eps=eps, step_size=step_size, steps=steps,
                                     norm=norm, random_start=random_start)
        return x_adv - xb, success

    return body


def pgd_perturbations(
    logits_fn: LogitsFn,
    x,
    y,
    key: jax.Array,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    batch_size: int = 500,
    mesh: Optional[Mesh] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """PGD perturbations ``delta = x_adv - x`` of a whole array (for :func:`perturbation_spectrum`).

    Calls :func:`jaxhfc.attacks.pgd` per chunk with per-example keys
    ``fold_in(key, image_index)``, so the result does not depend on chunking or sharding.

    Args:
      logits_fn: jittable logits function.
      x: ``(N, H, W, C)`` float unit-scale images; ``y``: ``(N,)`` int labels.
      key: PRNG key; eps, step_size, steps, norm, random_start: as in ``attacks.pgd``.
      batch_size, mesh: as elsewhere in this module.

    Returns:
      ``(delta (N, H, W, C) float32, success (N,) bool)``.
    """
    x = _check_nhwc(x, "x", float_only=True)
    n = x.shape[0]
    yv = _check_labels(y, n, "y")

    fn, arrays = _body(_pgd_fn, logits_fn, float(eps), float(step_size), int(steps), norm, bool(random_start))
    return parallel.sweep(fn, (x, yv), (arrays, key), batch_size=_check_batch_size(batch_size),
                          mesh=_check_mesh(mesh), with_index=True)
