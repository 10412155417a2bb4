"""The built-in synthetic dataset: a generative model of what makes the paper's phenomena occur.

Every image is the sum of three parts, in 0..255 grey levels (docs/synthetic.md has the
figure and the measured numbers):

1. **Semantic low-frequency cue** (what a human would call the image's content). Each class
   ``k`` has one smooth colour *template*: a class base colour plus a sum of Fourier
   components at integer frequencies ``1 <= |f| < lf_radius`` (default 4) with random phases,
   amplitudes falling as ``1/|f|`` and standard deviation ``lf_std``. An image shows its
   template with its contrast scaled by ``U(0.85, 1.15)`` and a small brightness offset.
   Every image of a class shares this low-frequency content, so ``low_pass(x, 4)`` tells
   the template apart but not the images: labels shuffled at random cannot be memorised
   through the LFC alone.
2. **Per-image texture** (natural-image statistics). A Gaussian random field per image with
   power spectrum ``|f|^-slope`` (default 2, the natural-image law) for
   ``|f| >= lf_radius``: a luminance field shared by the three channels plus a weaker,
   independent colour field; standard deviation ``texture_std``. Together with the
   templates it gives a radial power spectrum that falls like natural images', so radii 4,
   8, 12 and 16 each remove a real share of the energy; and it makes every image unique, so
   a network can memorise shuffled labels through its texture (as in the paper, mostly
   through frequencies above the LFC's).
3. **High-frequency class cue** (the label-correlated signal humans barely see). Each class
   owns ``hf_components`` integer frequencies in the band ``hf_band`` (default 12.5..15.5
   cycles per image: kept whole by ``high_pass(x, 12)``, removed by ``low_pass(x, 12)``),
   disjoint between classes; an image adds cosines at its class's frequencies with random
   phases and a peak amplitude of ``hf_amplitude`` grey levels per cosine (x ``U(0.8, 1.2)``).

**Conflicts.** For a share ``conflict`` of the images (default 0.35), the template comes from
another class (uniformly at random): an atypical image whose overall look resembles another
class while its fine texture still carries its own class. Without conflicts the template
alone fits the training set and a network never needs the faint cue (the issue that led to
this model); with them it must use the high-frequency cue to fit the training set, as the
paper argues CNNs do on natural data. The test split uses ``test_conflict`` (default: the
same share, so both splits come from one distribution).

Finally Gaussian pixel noise of std ``noise_std``, rounding and clipping to uint8.

Everything is deterministic from ``seed``; class definitions depend only on ``seed``, the
train and test images use separate random streams. 60,000 images take a few seconds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from jaxhfc.datasets.core import Dataset

__all__ = [
    "DEFAULTS",
    "NATURAL_SLOPE",
    "SyntheticModel",
    "class_model",
    "generate_split",
    "make_synthetic",
    "radial_power_spectrum",
    "spectrum_slope",
]

#: The slope of a natural image's radial power spectrum, ``P(f) ~ |f|^-2`` (van der Schaaf
#: and van Hateren 1996; Torralba and Oliva 2003): amplitude falls as ``1/|f|``.
NATURAL_SLOPE: float = 2.0

#: Default knobs of :func:`make_synthetic` (see the module docstring).
DEFAULTS: dict = dict(
    size=32,
    num_classes=10,
    lf_radius=4.0,
    lf_std=32.0,
    colour_std=18.0,
    brightness_std=8.0,
    texture_std=30.0,
    texture_colour=0.35,
    slope=NATURAL_SLOPE,
    hf_band=(12.5, 15.5),
    hf_components=3,
    hf_amplitude=8.0,
    hf_phase_jitter=0.0,
    conflict=0.4,
    test_conflict=0.1,
    noise_std=2.0,
)

_CLASS_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


@dataclasses.dataclass(frozen=True)
class SyntheticModel:
    """The class-level part of the generative model (depends only on the seed and knobs).

    Attributes:
      templates: ``(K, S, S, 3)`` float32, zero-mean-per-class low-frequency patterns plus the
        class base colour offsets (grey levels, to be added to 128).
      hf_frequencies: ``(K, J, 2)`` int, the ``(u, v)`` cycles per image of each class's
        high-frequency cue (``u`` along rows, ``v`` along columns).
      hf_cos, hf_sin: ``(K, J, S, S)`` float32, ``cos`` and ``sin`` of ``2 pi (u y + v x) / S``.
      hf_phases: ``(K, J)`` float32, the class phase of each cosine (an image adds
        ``hf_phase_jitter * U(-pi, pi)`` to it).
      texture_filter: ``(S, S // 2 + 1)`` float32, the amplitude ``|f|^(-slope / 2)`` of the
        texture for ``|f| >= lf_radius`` (0 below), on the ``rfft2`` grid, unnormalised.
      knobs: the knobs used.
    """

    templates: np.ndarray
    hf_frequencies: np.ndarray
    hf_cos: np.ndarray
    hf_sin: np.ndarray
    hf_phases: np.ndarray
    texture_filter: np.ndarray
    knobs: dict


def _freq_grid(size: int, rfft: bool) -> tuple[np.ndarray, np.ndarray]:
    u = np.fft.fftfreq(size) * size
    v = np.fft.rfftfreq(size) * size if rfft else u
    return np.meshgrid(u, v, indexing="ij")


def _check_knobs(k: dict) -> dict:
    k = dict(k)
    for name in ("size", "num_classes", "hf_components"):
        v = k[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
        k[name] = int(v)
    if k["size"] < 8:
        raise ValueError(f"size must be an int >= 8, got {k['size']!r}")
    if k["num_classes"] < 2:
        raise ValueError(f"num_classes must be >= 2 (conflicts need another class), got {k['num_classes']}")
    for name in ("lf_radius", "lf_std", "colour_std", "brightness_std", "texture_std", "texture_colour",
                 "slope", "hf_amplitude", "hf_phase_jitter", "noise_std"):
        v = k[name]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        k[name] = float(v)
    if not 1.0 < k["lf_radius"] <= k["size"] / 2:
        raise ValueError(f"lf_radius must be in (1, size/2], got {k['lf_radius']}")
    for name in ("conflict", "test_conflict"):
        v = k[name]
        if name == "test_conflict" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {v!r}")
        k[name] = float(v)
    band = k["hf_band"]
    if len(band) != 2 or not 0 <= float(band[0]) <= float(band[1]):
        raise ValueError(f"hf_band must be (min_radius, max_radius) with 0 <= min <= max, got {band!r}")
    k["hf_band"] = (float(band[0]), float(band[1]))
    return k


def class_model(seed: int = 0, **knobs) -> SyntheticModel:
    """The class templates, high-frequency cue frequencies and texture filter for ``seed``.

    ``knobs`` override :data:`DEFAULTS`; unknown names raise ``ValueError``.
    """
    unknown = set(knobs) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown synthetic knobs {sorted(unknown)}; expected a subset of {sorted(DEFAULTS)}")
    k = _check_knobs(dict(DEFAULTS, **knobs))
    s, n_cls, j = k["size"], k["num_classes"], k["hf_components"]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))

    # 1. templates: Fourier components with 1 <= |f| < lf_radius, amplitude ~ 1/|f|.
    fu, fv = _freq_grid(s, rfft=True)
    d = np.hypot(fu, fv)
    band = (d >= 1) & (d < k["lf_radius"])
    amp = np.where(band, 1.0 / np.maximum(d, 1.0), 0.0)
    coef = (rng.standard_normal((n_cls, 3) + d.shape) + 1j * rng.standard_normal((n_cls, 3) + d.shape)) * amp
    tmpl = np.fft.irfft2(coef, s=(s, s), axes=(-2, -1))  # (K, 3, S, S), real, zero mean
    # Mix channels so that templates are mostly luminance with some colour, like natural images.
    lum = tmpl[:, :1]
    tmpl = 0.8 * lum + 0.6 * tmpl
    tmpl = tmpl / tmpl.std(axis=(1, 2, 3), keepdims=True) * k["lf_std"]
    base = rng.standard_normal((n_cls, 3, 1, 1)) * k["colour_std"]
    templates = np.moveaxis(tmpl + base, 1, -1).astype(np.float32)

    # 2. high-frequency cue: disjoint integer frequencies in the band, one of each +-f pair.
    lim = s // 2 - 1
    u, v = np.meshgrid(np.arange(-lim, lim + 1), np.arange(-lim, lim + 1), indexing="ij")
    dist = np.hypot(u, v)
    half = (u > 0) | ((u == 0) & (v > 0))
    keep = half & (dist >= k["hf_band"][0]) & (dist <= k["hf_band"][1])
    cand = np.stack([u[keep], v[keep]], axis=-1)
    if len(cand) < n_cls * j:
        raise ValueError(
            f"hf_band {k['hf_band']} holds {len(cand)} frequencies at size {s}; "
            f"{n_cls} classes x {j} components need {n_cls * j}"
        )
    freqs = cand[rng.permutation(len(cand))[: n_cls * j]].reshape(n_cls, j, 2)
    yy, xx = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    arg = 2 * np.pi * (freqs[..., 0, None, None] * yy + freqs[..., 1, None, None] * xx) / s

    # 3. texture amplitude filter |f|^(-slope/2) above lf_radius.
    tex = np.where(d >= k["lf_radius"], np.maximum(d, 1.0) ** (-k["slope"] / 2), 0.0)
    return SyntheticModel(
        templates=templates,
        hf_frequencies=freqs.astype(np.int64),
        hf_cos=np.cos(arg).astype(np.float32),
        hf_sin=np.sin(arg).astype(np.float32),
        hf_phases=rng.uniform(-np.pi, np.pi, size=(n_cls, j)).astype(np.float32),
        texture_filter=tex.astype(np.float32),
        knobs=k,
    )


def _texture(model: SyntheticModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, S, S, 3)`` float32 Gaussian texture with the model's spectrum, std ``texture_std``."""
    k = model.knobs
    s = k["size"]
    filt = model.texture_filter
    # Per-pixel std of irfft2(filter * complex white noise), for normalising.
    full = np.concatenate([filt, filt[:, 1:s - s // 2][:, ::-1]], axis=1) if s > 2 else filt
    unit = math.sqrt(2.0) * np.sqrt(np.sum(full.astype(np.float64) ** 2)) / (s * s)  # re + im: variance 2
    shape = (n, 4) + filt.shape
    noise = rng.standard_normal(shape, dtype=np.float32) + 1j * rng.standard_normal(shape, dtype=np.float32)
    fields = np.fft.irfft2(noise * filt, s=(s, s), axes=(-2, -1)).astype(np.float32)
    fields *= np.float32(1.0 / unit)
    lum, col = fields[:, :1], fields[:, 1:]
    c = k["texture_colour"]
    out = (lum + c * col) * np.float32(k["texture_std"] / math.sqrt(1 + c * c))
    return np.moveaxis(out, 1, -1)


def _render(model: SyntheticModel, labels: np.ndarray, cue_of_template: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    k = model.knobs
    n = len(labels)
    img = np.full((n, k["size"], k["size"], 3), 128.0, np.float32)
    contrast = rng.uniform(0.85, 1.15, size=(n, 1, 1, 1)).astype(np.float32)
    img += contrast * model.templates[cue_of_template]
    img += (rng.standard_normal((n, 1, 1, 1)) * k["brightness_std"]).astype(np.float32)
    img += _texture(model, n, rng)
    j = model.hf_frequencies.shape[1]
    phase = model.hf_phases[labels] + np.float32(k["hf_phase_jitter"]) * rng.uniform(
        -np.pi, np.pi, size=(n, j)).astype(np.float32)
    amp = (k["hf_amplitude"] * rng.uniform(0.8, 1.2, size=(n, 1))).astype(np.float32)
    a, b = amp * np.cos(phase), -amp * np.sin(phase)  # cos(t + p) = cos t cos p - sin t sin p
    cue = np.einsum("nj,njyx->nyx", a, model.hf_cos[labels]) + np.einsum("nj,njyx->nyx", b, model.hf_sin[labels])
    img += cue[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(k["noise_std"])
    np.rint(img, out=img)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def generate_split(split: str, n: int, *, seed: int = 0, chunk: int = 8192, return_templates: bool = False,
                   **knobs):
    """One split of the synthetic data: ``(images uint8 (n, S, S, 3), labels int32 (n,), class names)``.

    With ``return_templates=True`` also the ``(n,)`` int32 class whose template each image
    shows (equal to its label except on the conflict images).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"split size must be a positive int, got {n!r}")
    model = class_model(seed, **knobs)
    k = model.knobs
    share = k["conflict"] if split == "train" or k["test_conflict"] is None else k["test_conflict"]
    n_cls = k["num_classes"]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1 if split == "train" else 2]))
    labels = rng.permutation(np.arange(n) % n_cls).astype(np.int32)  # balanced classes
    shown = labels.copy()
    m = int(round(share * n))
    if m:
        idx = rng.choice(n, size=m, replace=False)
        shown[idx] = (labels[idx] + rng.integers(1, n_cls, size=m)) % n_cls  # another class, uniformly
    images = np.empty((n, k["size"], k["size"], 3), np.uint8)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        images[sl] = _render(model, labels[sl], shown[sl], rng)
    names = _CLASS_NAMES if n_cls == len(_CLASS_NAMES) else tuple(f"class_{i}" for i in range(n_cls))
    if return_templates:
        return images, labels, names, shown.astype(np.int32)
    return images, labels, names


def make_synthetic(*, num_train: int = 50_000, num_test: int = 10_000, seed: int = 0, **knobs):
    """The built-in synthetic dataset ``(train, test)`` as :class:`jaxhfc.datasets.Dataset` s.

    Args:
      num_train, num_test: split sizes (default 50,000 / 10,000, as CIFAR-10).
      seed: the one seed; same seed, same arrays.
      **knobs: any of :data:`DEFAULTS` (see the module docstring and docs/synthetic.md).

    Returns:
      ``(train, test)`` uint8 ``(N, size, size, 3)`` datasets named ``"synthetic"``.

    Raises:
      ValueError: non-positive sizes, unknown knobs or out-of-range knob values.
    """
    out = []
    for split, n in (("train", num_train), ("test", num_test)):
        images, labels, names = generate_split(split, n, seed=seed, **knobs)
        out.append(Dataset(images, labels, len(names), "synthetic", names))
    return tuple(out)


def radial_power_spectrum(images: np.ndarray, *, max_radius: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean power per integer radius of the centred spectrum, over images and channels.

    Args:
      images: ``(N, S, S, C)`` numbers; each image's per-channel mean is removed first.
      max_radius: largest radius bin (default ``S // 2``).

    Returns:
      ``(radii (R,), power (R,))``: ``power[i]`` is the mean of ``|F(u, v)|^2`` over the
      frequencies with ``round(sqrt(u^2 + v^2)) == radii[i]``, ``radii = 1..max_radius``.
    """
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise ValueError(f"images must be (N, S, S, C) with square images, got shape {x.shape}")
    s = x.shape[1]
    x = x - x.mean(axis=(1, 2), keepdims=True)
    p = np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2
    p = p.mean(axis=(0, 3))
    fu, fv = _freq_grid(s, rfft=False)
    rad = np.rint(np.hypot(fu, fv)).astype(int)
    rmax = s // 2 if max_radius is None else int(max_radius)
    radii = np.arange(1, rmax + 1)
    power = np.array([p[rad == r].mean() for r in radii])
    return radii, power


def spectrum_slope(images: np.ndarray, *, r_min: int = 2, r_max: int = 14) -> float:
    """Least-squares slope of ``log power`` against ``log radius`` for radii ``r_min..r_max``
    (natural images: about ``-NATURAL_SLOPE``)."""
    radii, power = radial_power_spectrum(images)
    sel = (radii >= r_min) & (radii <= r_max)
    return float(np.polyfit(np.log(radii[sel]), np.log(power[sel]), 1)[0])
