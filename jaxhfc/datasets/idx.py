"""MNIST-family datasets from the standard IDX files: ``fashion_mnist`` and ``mnist``.

Each dataset is four files, gzip-compressed (``.gz``) or raw::

    train-images-idx3-ubyte   train-labels-idx1-ubyte   (60,000 images)
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte    (10,000 images)

An IDX file is a big-endian header, ``0x00 0x00 <type> <ndim>`` then one ``uint32`` per
dimension, followed by the values in C order. Images are type ``0x08`` (unsigned byte) with
3 dimensions ``(N, 28, 28)``; labels are type ``0x08`` with 1 dimension ``(N,)``.

Where the files are looked for, in order (the first folder holding all four files of the
split wins):

1. ``data_dir`` and ``data_dir/<folder>`` (``<folder>`` is ``fashion-mnist`` or ``mnist``);
2. ``/usr/share/datasets/<folder>`` (Debian's ``dataset-fashion-mnist`` package:
   ``apt-get install dataset-fashion-mnist``);
3. keras' cache, ``~/.keras/datasets/<folder>``.

Images come as ``uint8`` ``(N, 28, 28, 1)``: one grey channel, as recorded. The jaxhfc models
take any channel count, and the Fourier filters work per channel.

A missing file raises :class:`jaxhfc.DatasetNotFoundError` listing where it was looked
for and how to get it; a truncated or malformed file (wrong magic number, header, length, a
label out of range, image and label counts that differ) raises
:class:`jaxhfc.CorruptDatasetError` naming the file. Reading writes nothing.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from typing import Optional

import numpy as np

from jaxhfc.datasets.core import CorruptDatasetError, Dataset, DatasetNotFoundError
from jaxhfc.datasets.transforms import balanced_subset

__all__ = ["NAMES", "CLASS_NAMES", "IMAGE_SHAPE", "read_idx", "find_files", "load_split", "search_dirs",
           "write_idx"]

logger = logging.getLogger(__name__)

#: The datasets this module reads, and the folder name each is installed under.
NAMES = {"fashion_mnist": "fashion-mnist", "mnist": "mnist"}

CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
    "mnist": tuple(str(d) for d in range(10)),
}

IMAGE_SHAPE = (28, 28)
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_SIZES = {"train": 60_000, "test": 10_000}
_UBYTE = 0x08


def search_dirs(name: str, data_dir: Optional[str] = None) -> list[str]:
    """The folders searched for ``name``'s files, in order (see the module docstring)."""
    folder = NAMES[name]
    dirs = []
    if data_dir:
        base = os.path.expanduser(str(data_dir))
        dirs += [base, os.path.join(base, folder)]
    dirs += [os.path.join("/usr/share/datasets", folder), os.path.join(os.path.expanduser("~/.keras/datasets"), folder)]
    return dirs


def _in_dir(d: str, stem: str) -> Optional[str]:
    for candidate in (stem + ".gz", stem):
        path = os.path.join(d, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_files(name: str, split: str, data_dir: Optional[str] = None) -> tuple[str, str]:
    """``(images_path, labels_path)`` of one split: the first searched folder that holds both.

    Raises:
      DatasetNotFoundError: no searched folder holds both files.
    """
    stems = _FILES[split]
    dirs = search_dirs(name, data_dir)
    for d in dirs:
        paths = [_in_dir(d, s) for s in stems]
        if all(paths):
            return paths[0], paths[1]
    how = ("`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or download them from "
           "https://github.com/zalandoresearch/fashion-mnist" if name == "fashion_mnist"
           else "download them from the MNIST database (http://yann.lecun.com/exdb/mnist/)")
    raise DatasetNotFoundError(
        f"{name} {split} files ({stems[0]}[.gz], {stems[1]}[.gz]) not found in {', '.join(dirs)}; "
        f"{how}, then pass their folder as data_dir (--data-dir)")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDatasetError(f"{path}: cannot read it as an IDX file, gzip or raw ({err})") from None


def read_idx(path: str, *, ndim: int) -> np.ndarray:
    """The unsigned-byte array of an IDX file with ``ndim`` dimensions (``.gz`` or raw).

    Raises:
      CorruptDatasetError: unreadable, wrong magic number, type or rank, or a length that
        does not match the header.
    """
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or raw[3] != ndim:
        got = raw[:4].hex() if len(raw) >= 4 else f"{len(raw)} bytes"
        raise CorruptDatasetError(
            f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s): magic number 0x{got}, "
            f"expected 0x0000080{ndim}")
    if len(raw) < header:
        raise CorruptDatasetError(f"{path}: truncated header ({len(raw)} bytes, expected at least {header})")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise CorruptDatasetError(
            f"{path}: {len(raw)} bytes but its header {shape} needs {expected}; the file is truncated or corrupt, "
            "download it again")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_split(name: str, split: str, data_dir: Optional[str] = None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images (N, 28, 28, 1) uint8, labels (N,) int32, folder)`` of one split, checked."""
    img_path, lab_path = find_files(name, split, data_dir)
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lab_path, ndim=1)
    if images.shape[1:] != IMAGE_SHAPE:
        raise CorruptDatasetError(f"{img_path}: images of shape {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise CorruptDatasetError(
            f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels; expected one label "
            "per image (files of different splits or datasets?)")
    if len(labels) and labels.max() >= len(CLASS_NAMES[name]):
        raise CorruptDatasetError(
            f"{lab_path}: label {int(labels.max())} out of range, expected 0..{len(CLASS_NAMES[name]) - 1}")
    if len(images) != _SIZES[split]:
        logger.warning("%s: %d images, the standard %s split has %d", img_path, len(images), split, _SIZES[split])
    return images[..., None].copy(), labels.astype(np.int32), os.path.dirname(img_path)


def load_split(name: str, *, split: str, data_dir: Optional[str] = None, seed: int = 0,
               n: Optional[int] = None):
    """One split of ``fashion_mnist`` or ``mnist`` as a :class:`jaxhfc.datasets.Dataset`.

    Args:
      name: a key of :data:`NAMES`.
      split: ``"train"`` or ``"test"``.
      data_dir: folder searched first (see the module docstring).
      seed: seed of the class-balanced subset drawn when ``n`` is given.
      n: size of a class-balanced random subset (None: the whole split).
    """
    if name not in NAMES:
        raise ValueError(f"IDX datasets are {tuple(NAMES)}, got {name!r}")
    if split not in _FILES:
        raise ValueError(f"split must be one of {tuple(_FILES)}, got {split!r}")
    images, labels, where = read_split(name, split, data_dir)
    ds = Dataset(images, labels, len(CLASS_NAMES[name]), name, CLASS_NAMES[name])
    logger.info("read %s %s from %s: %d images", name, split, where, len(ds))
    if n is not None and n < len(ds):
        ds = balanced_subset(ds, int(n), seed=seed)
    return ds


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``):
    for tests and for users who make their own MNIST-format data."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.tobytes()
    with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
        f.write(payload)
