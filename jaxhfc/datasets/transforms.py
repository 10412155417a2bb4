"""Whole-dataset transforms on the host: class-balanced subsets, label shuffling, LFC/HFC
copies at a radius, and the scaling of images to model input.

Model input ("unit scale") is float32 made by :func:`to_model_input`: the paper code's per-image
``x / max(x)`` for filtered images and ``x / 255`` for originals (``scaling="paper"``), or
``x / 255`` for everything (``scaling="unit"``). Host-side transforms take an integer ``seed``
(numpy ``default_rng``).
"""

from __future__ import annotations

import logging
from typing import Optional, Union

import numpy as np

from jaxhfc import fourier
from jaxhfc.datasets.core import Dataset

logger = logging.getLogger(__name__)


def balanced_indices(ds: Dataset, n: int, *, seed: int) -> np.ndarray:
    """Sorted row indices of the class-balanced random subset :func:`balanced_subset` takes."""
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(ds):
        raise ValueError(f"subset size must be an int in [1, {len(ds)}], got {n!r}")
    k = ds.num_classes
    per_class = np.full(k, n // k)
    per_class[: n % k] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(k):
        idx = np.flatnonzero(ds.labels == c)
        if len(idx) < per_class[c]:
            raise ValueError(
                f"class {c} ({ds.class_names[c]!r}) has {len(idx)} examples, a balanced subset "
                f"of {n} needs {per_class[c]}"
            )
        chosen.append(rng.choice(idx, size=per_class[c], replace=False))
    return np.sort(np.concatenate(chosen))


def balanced_subset(ds: Dataset, n: int, *, seed: int) -> Dataset:
    """A class-balanced random subset of ``n`` examples (the paper's 5,000-image runs).

    Each class gets ``n // num_classes`` examples; the ``n % num_classes`` remaining ones
    go one each to the lowest class indices. Examples are drawn without replacement with
    ``numpy.random.default_rng(seed)`` and returned in their original order.

    Raises:
      ValueError: ``n`` not in ``[1, len(ds)]``, or a class with too few examples.
    """
    idx = balanced_indices(ds, n, seed=seed)
    return ds.replace(images=ds.images[idx], labels=ds.labels[idx])


def shuffle_labels(ds: Dataset, *, fraction: float = 1.0, seed: int) -> Dataset:
    """Randomises labels once, from a seed (the paper's label-shuffling experiment).

    ``fraction`` is exactly the share of examples whose label *changes*:
    ``m = round(fraction * N)`` examples are picked uniformly at random, and their labels
    are randomly permuted among themselves so that none of them keeps its own label value
    (a random permutation, then each example that drew its own class swaps with a random
    partner for which the swap changes both labels). Hence

    * the new labels are a permutation of the old ones (class histogram unchanged),
    * exactly ``m`` labels differ from the originals, the other ``N - m`` are untouched,
    * ``fraction=1`` makes every label wrong; ``fraction=0`` changes nothing.

    This differs from "shuffle a fraction of the labels", where some shuffled labels land
    on their own value by chance (about 1/num_classes of them for balanced data).

    Raises:
      ValueError: ``fraction`` outside [0, 1]; or no such permutation exists, which
        happens when one class holds more than half of the picked examples (e.g. a
        single-class dataset, or ``m == 1``).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number)) or not (
        0.0 <= float(fraction) <= 1.0
    ):
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    n = len(ds)
    m = int(round(float(fraction) * n))
    rng = np.random.default_rng(seed)
    labels = ds.labels.copy()
    if m == 0:
        return ds.replace(labels=labels)
    picked = rng.choice(n, size=m, replace=False)
    old = labels[picked]
    counts = np.bincount(old, minlength=ds.num_classes)
    if counts.max() * 2 > m:
        raise ValueError(
            f"cannot change all {m} picked labels by permuting them: class "
            f"{int(counts.argmax())} holds {int(counts.max())} of them (more than half); "
            "use a larger fraction or a dataset with more classes"
        )
    new = rng.permutation(old)
    for i in np.flatnonzero(new == old):
        if new[i] != old[i]:  # already repaired by an earlier swap
            continue
        c = old[i]
        for _ in range(32):  # random partner; the explicit candidate set below always works
            j = int(rng.integers(m))
            if new[j] != c and old[j] != c:
                break
        else:
            # Candidates exist when no class exceeds m/2: at most q-1 of the q labels c sit
            # at positions whose own label is not c, leaving >= m - 2q + 1 >= 1 of those.
            j = int(rng.choice(np.flatnonzero((new != c) & (old != c))))
        new[i], new[j] = new[j], new[i]
    labels[picked] = new
    return ds.replace(labels=labels)


_FILTER_KINDS = ("low", "high", "none", None)


def _check_kind_radius(kind, radius) -> Optional[float]:
    if kind not in _FILTER_KINDS:
        raise ValueError(f"filter kind must be one of {_FILTER_KINDS}, got {kind!r}")
    if kind in ("none", None):
        return None
    return fourier.check_radius(radius)


def filter_dataset(
    ds: Dataset, kind: Optional[str], radius: float, *, chunk_size: int = 4096
) -> Dataset:
    """Low- or high-pass filters every image at ``radius`` (``jaxhfc.fourier``).

    Args:
      ds: images uint8 (or float32 0..255 scale).
      kind: ``"low"`` (LFC: frequencies at distance < radius from the centre of the
        shifted spectrum), ``"high"`` (HFC: the rest), or ``"none"``/``None`` (returns
        ``ds`` itself, unchanged, uint8 stays uint8).
      radius: a number >= 0.
      chunk_size: images per jitted call (memory stays bounded; the last chunk is padded
        to the same shape so there is a single compilation).

    Returns:
      A :class:`Dataset` with float32 images in the 0..255 scale (not clipped), named
      ``f"{ds.name}/{kind}_r{radius:g}"``, same labels.

    Raises:
      ValueError: unknown kind, negative radius, non-positive chunk size.
    """
    r = _check_kind_radius(kind, radius)
    if r is None:
        return ds
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")

    fn = fourier.low_pass if kind == "low" else fourier.high_pass
    n = len(ds)
    size = min(int(chunk_size), n)
    out = np.empty(ds.images.shape, dtype=np.float32)
    for start in range(0, n, size):
        chunk = ds.images[start:start + size].astype(np.float32)
        m = len(chunk)
        if m < size:
            chunk = np.concatenate([chunk, np.zeros((size - m,) + chunk.shape[1:], np.float32)])
        out[start:start + m] = np.asarray(fn(chunk, r))[:m]
    return ds.replace(images=out, name=f"{ds.name}/{kind}_r{r:g}")


SCALINGS = ("paper", "unit")
# Per-image maxima at or below this (grey levels) mark an empty image (e.g. LFC at r=0,
# HFC beyond the corner radius, where only float rounding is left).
EMPTY_IMAGE_MAX = 1e-3


def to_model_input(
    ds_or_images: Union[Dataset, np.ndarray],
    *,
    scaling: str = "paper",
    filtered: Optional[bool] = None,
) -> np.ndarray:
    """Unit-scale float32 model input from 0..255 images.

    Args:
      ds_or_images: a :class:`Dataset` or images ``(N, H, W, C)`` uint8 / float 0..255.
      scaling: ``"paper"`` (the released code): filtered images are divided by their own
        maximum over (H, W, C), ``x / max(x)`` (max becomes 1; no min subtraction, no
        clipping; HFC keeps its negative values); original images are divided by 255.
        ``"unit"``: every image is divided by 255.
      filtered: whether the images are filtered copies; default: float dtype means
        filtered, uint8 means original.

    Returns:
      ``(N, H, W, C)`` float32 numpy array.

    Empty images: where the paper code would divide by ~0 (an image whose max is
    ``<= EMPTY_IMAGE_MAX`` = 1e-3 grey levels, e.g. LFC at r=0 or HFC at r beyond the
    corner, which hold only zeros or float rounding), the output is all zeros.

    Raises:
      ValueError: unknown scaling, wrong rank or dtype.
    """
    images = ds_or_images.images if isinstance(ds_or_images, Dataset) else np.asarray(ds_or_images)
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {tuple(images.shape)}")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float (0..255 scale), got dtype {images.dtype}")
    if filtered is None:
        filtered = images.dtype != np.uint8
    x = images.astype(np.float32)
    if scaling == "unit" or not filtered:
        x /= np.float32(255)
        return x
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    empty = peak <= EMPTY_IMAGE_MAX
    x /= np.where(empty, np.float32(1), peak)
    x[np.broadcast_to(empty, x.shape)] = 0.0
    return x
