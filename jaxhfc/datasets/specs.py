"""Names of datasets that are not built in: ``KIND:TARGET[?OPTIONS]`` specs, their parsing,
folder-safe slugs, and the checks and adaptations their readers share.

Spec syntax
  * ``tfds:NAME`` -- a prepared TFDS image-classification dataset (:mod:`jaxhfc.datasets.tfds`).
  * ``npz:PATH`` -- a numpy ``.npz`` with the keras keys (:mod:`jaxhfc.datasets.npz`).
  * ``folder:PATH`` -- one sub-folder per class (:mod:`jaxhfc.datasets.folder`).

Options (after ``?``, joined by ``&``): ``channels=3`` (default: grey images repeated to 3
channels) or ``channels=1`` (colour images become luminance, ITU-R 601); ``size=N`` resizes
every image to ``N x N`` (PIL bicubic).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from typing import Optional
from urllib.parse import parse_qsl

import numpy as np

from jaxhfc.datasets.core import CorruptDatasetError, DatasetNotFoundError

#: Dataset names built into jaxhfc.
BUILTIN = ("synthetic", "cifar10", "fashion_mnist", "mnist")
#: Spec prefixes handled here.
KINDS = ("tfds", "npz", "folder")
_SPLITS = ("train", "test")
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float64)


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed dataset spec: ``kind`` in :data:`KINDS`, ``target`` (TFDS name or path),
    ``channels`` (1 or 3) and ``size`` (None: keep the source's size)."""

    kind: str
    target: str
    channels: int = 3
    size: Optional[int] = None


def is_spec(name) -> bool:
    """True when ``name`` is ``tfds:...``, ``npz:...`` or ``folder:...``."""
    return isinstance(name, str) and name.partition(":")[0] in KINDS and ":" in name


def parse_spec(name: str) -> Spec:
    """Parse ``KIND:TARGET[?channels=1|3&size=N]``.

    Raises:
      ValueError: not a spec, an empty target or an unknown/invalid option.
    """
    if not is_spec(name):
        raise ValueError(
            f"dataset must be one of {BUILTIN} or a spec tfds:NAME, npz:PATH or folder:PATH; got {name!r}"
        )
    kind, _, rest = name.partition(":")
    target, _, query = rest.partition("?")
    if not target:
        raise ValueError(f"dataset spec {name!r} has no {'NAME' if kind == 'tfds' else 'PATH'} after '{kind}:'")
    options = dict(channels=3, size=None)
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False) if query else ():
        if key == "channels" and value in ("1", "3"):
            options["channels"] = int(value)
        elif key == "size" and value.isdigit() and int(value) >= 1:
            options["size"] = int(value)
        else:
            raise ValueError(
                f"dataset spec {name!r}: unknown option {key}={value!r}; expected channels=1|3 or size=N (N >= 1)"
            )
    if kind != "tfds":
        target = os.path.expanduser(target)
    return Spec(kind, target, **options)


def dataset_slug(name: str) -> str:
    """A folder-name-safe short name of a dataset: ``"cifar10"`` -> ``"cifar10"``,
    ``"npz:/x/digits.npz"`` -> ``"npz-digits"``, ``"folder:~/pets/"`` -> ``"folder-pets"``,
    ``"tfds:imagenette/160px-v2"`` -> ``"tfds-imagenette-160px-v2"``; options are appended
    (``"npz:d.npz?channels=1&size=32"`` -> ``"npz-d-c1-s32"``)."""
    if not is_spec(name):
        return re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-") or "dataset"
    spec = parse_spec(name)
    if spec.kind == "tfds":
        base = spec.target
    else:
        path = spec.target.rstrip("/\\") or spec.target
        base = os.path.basename(path)
        if spec.kind == "npz" and base.lower().endswith(".npz"):
            base = base[:-4]
    slug = f"{spec.kind}-{base}"
    if spec.channels != 3:
        slug += f"-c{spec.channels}"
    if spec.size is not None:
        slug += f"-s{spec.size}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", slug).strip("-")


def spec_arg(text: str, names: tuple = BUILTIN) -> str:
    """``argparse`` check of a ``--dataset`` spec (``names``: the datasets known by name, for the
    message). The path of an ``npz:``/``folder:`` spec is made absolute."""
    try:
        spec = parse_spec(text)
    except ValueError as err:
        msg = str(err).replace(f"one of {BUILTIN}", f"one of {names}")
        raise argparse.ArgumentTypeError(msg) from None
    if spec.kind == "tfds":
        return text
    _, _, query = text.partition("?")
    return f"{spec.kind}:{os.path.abspath(spec.target)}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def corrupt(msg: str):

    return CorruptDatasetError(msg)


def not_found(msg: str):

    return DatasetNotFoundError(msg)


def adapt(images: np.ndarray, spec: Spec, where: str) -> np.ndarray:
    """NHWC uint8 with ``spec.channels`` channels and ``spec.size`` (when given)."""
    if images.ndim == 3:
        images = images[..., None]
    c = images.shape[-1]
    if c not in (1, 3):
        raise corrupt(f"{where}: images must have 1 (grey) or 3 (RGB) channels, got shape {images.shape[1:]}")
    if spec.channels == 3 and c == 1:
        images = np.repeat(images, 3, axis=-1)
    elif spec.channels == 1 and c == 3:
        images = np.clip(np.rint(images.astype(np.float64) @ _LUMA), 0, 255).astype(np.uint8)[..., None]
    if spec.size is not None and images.shape[1:3] != (spec.size, spec.size):
        images = np.stack([resize(im, spec.size) for im in images])
    return images


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """One uint8 image ``(H, W)`` or ``(H, W, C)`` resized to ``size x size`` (PIL bicubic)."""
    from PIL import Image

    grey = image.ndim == 2 or image.shape[-1] == 1
    pil = Image.fromarray(image.reshape(image.shape[:2]) if grey else image)
    out = np.asarray(pil.resize((size, size), Image.BICUBIC), np.uint8)
    return out.reshape(size, size, *image.shape[2:]) if image.ndim == 3 else out


def check_labels(y: np.ndarray, n_images: int, num_classes: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise corrupt(f"{where}: labels must be integers of shape (N,) or (N, 1), got {y.dtype} {y.shape}")
    if y.shape[0] != n_images:
        raise corrupt(f"{where}: {n_images} images but {y.shape[0]} labels; expected one label per image")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise corrupt(f"{where}: labels must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


# ---- npz ------------------------------------------------------------------------------
