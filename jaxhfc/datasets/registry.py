"""``load_dataset``: one entry point from a dataset's name to a :class:`Dataset` split.

Names: ``"synthetic"`` (the built-in generator, :mod:`jaxhfc.datasets.synthetic`),
``"cifar10"`` (:mod:`jaxhfc.datasets.cifar10`), ``"fashion_mnist"`` and ``"mnist"``
(:mod:`jaxhfc.datasets.idx`), and the specs ``tfds:NAME``, ``npz:PATH``, ``folder:PATH``
(:mod:`jaxhfc.datasets.specs`). Bad data raises :class:`DatasetNotFoundError` (nothing at the
path; the message says how to get it) or :class:`CorruptDatasetError` (a one-line message naming
the file and what was expected). Loading only reads; it writes nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import numpy as np

from jaxhfc.datasets import cifar10, folder, idx, npz, specs, synthetic, tfds
from jaxhfc.datasets.core import SPLITS, Dataset, default_data_dir
from jaxhfc.datasets.transforms import balanced_subset

logger = logging.getLogger(__name__)

Reader = Callable[..., Dataset]


def load_dataset(
    name: str,
    *,
    split: str,
    data_dir: Optional[str] = None,
    source: str = "auto",
    seed: int = 0,
    num_train: Optional[int] = None,
    num_test: Optional[int] = None,
) -> Dataset:
    """Loads one split of a dataset.

    Args:
      name: ``"synthetic"``, ``"cifar10"``, ``"fashion_mnist"``, ``"mnist"`` or a spec (below).
      split: ``"train"`` or ``"test"``.
      data_dir: folder holding the CIFAR-10 archive or a prepared TFDS data dir (default
        :func:`default_data_dir`), or the IDX files of ``fashion_mnist``/``mnist`` (searched
        first, see :mod:`jaxhfc.datasets.idx`). Ignored for ``"synthetic"``.
      source: for ``"cifar10"``: ``"archive"`` reads ``data_dir/cifar-10-python.tar.gz``
        or the extracted ``data_dir/cifar-10-batches-py``; ``"tfds"`` reads a prepared
        TFDS dir (``data_dir/cifar10/<version>``), and when there is none runs
        ``download_and_prepare`` (needs network and ``pip install jaxhfc[tf]``);
        ``"auto"`` uses the archive if present, else a prepared TFDS dir, else raises
        :class:`DatasetNotFoundError` saying how to get the data (it never downloads).
        ``"synthetic"`` accepts only ``"auto"``.
      seed: synthetic data seed; for cifar10, the seed of the class-balanced subset drawn
        when ``num_train``/``num_test`` is given.
      num_train: size of the train split (synthetic: generated size, default 50,000;
        cifar10: a class-balanced subset, see :func:`balanced_subset`; default all).
      num_test: same for the test split (synthetic default 10,000).

    Returns:
      A :class:`Dataset` with uint8 images ``(N, 32, 32, 3)``.

    Raises:
      ValueError: unknown name/split/source, bad sizes.
      DatasetNotFoundError: cifar10 files are not where they were looked for.
      CorruptDatasetError: cifar10 files exist but are truncated, corrupt or malformed.
      ImportError: TFDS preparation needs TensorFlow and it is not installed.

    Other datasets: ``name`` may also be a spec ``tfds:NAME`` (any prepared TFDS image
    dataset, no TensorFlow needed), ``npz:PATH`` (keras keys ``x_train``, ``y_train``,
    ``x_test``, ``y_test``) or ``folder:PATH`` (``train/`` and ``test/``, one sub-folder per
    class), with options ``?channels=1|3&size=N``; see :mod:`jaxhfc.datasets.specs`. Their images
    keep the source's size; grey images become 3 channels unless ``channels=1``.
    """
    if specs.is_spec(name):
        return load_spec(name, split=split, data_dir=data_dir, source=source, seed=seed,
                         num_train=num_train, num_test=num_test)
    if name not in READERS:
        raise ValueError(f"name must be one of {tuple(READERS)} or a spec tfds:NAME, npz:PATH, folder:PATH; "
                         f"got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in cifar10.SOURCES:
        raise ValueError(f"source must be one of {cifar10.SOURCES}, got {source!r}")
    n = num_train if split == "train" else num_test
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"num_{split} must be a positive int or None, got {n!r}")
    return READERS[name](split, data_dir=data_dir, source=source, seed=seed, n=None if n is None else int(n))


def _auto_only(name: str, source: str) -> None:
    if source != "auto":
        raise ValueError(f"{name} has no source {source!r}; use 'auto'")


def read_synthetic(split: str, *, data_dir, source: str, seed: int, n: Optional[int]) -> Dataset:
    """The built-in generator's split (default sizes 50,000 / 10,000); ``data_dir`` is ignored."""
    _auto_only("the synthetic dataset", source)
    size = n if n is not None else (50_000 if split == "train" else 10_000)
    images, labels, names = synthetic.generate_split(split, size, seed=seed)
    return Dataset(images, labels, len(names), "synthetic", names)


def read_cifar10(split: str, *, data_dir, source: str, seed: int, n: Optional[int]) -> Dataset:
    """CIFAR-10 from the archive or a prepared TFDS copy; a class-balanced subset of ``n``."""
    data_dir = os.path.expanduser(str(data_dir)) if data_dir is not None else default_data_dir()
    ds = cifar10.load(data_dir, split, source)
    return balanced_subset(ds, n, seed=seed) if n is not None else ds


def idx_reader(name: str) -> Reader:
    """The reader of an IDX dataset (``fashion_mnist``, ``mnist``: :mod:`jaxhfc.datasets.idx`)."""
    def read(split: str, *, data_dir, source: str, seed: int, n: Optional[int]) -> Dataset:
        _auto_only(name, source)
        return idx.load_split(name, split=split, data_dir=data_dir, seed=seed, n=n)

    read.__name__ = f"read_{name}"
    return read


#: Readers of the datasets known by name: ``reader(split, *, data_dir, source, seed, n)`` returns
#: one split as a :class:`Dataset` (``n``: a class-balanced subset of that many images, or the
#: generated size; None: the whole split). :func:`load_dataset` checks the arguments they share.
READERS: dict[str, Reader] = {
    "synthetic": read_synthetic,
    "cifar10": read_cifar10,
    "fashion_mnist": idx_reader("fashion_mnist"),
    "mnist": idx_reader("mnist"),
}


def register_reader(name: str, reader: Reader) -> None:
    """Make ``name`` loadable by :func:`load_dataset` (and accepted by ``--dataset``) through
    ``reader`` (the signature of :data:`READERS`). A spec-like name (``KIND:...``) is refused."""
    if not isinstance(name, str) or not name or ":" in name or "/" in name:
        raise ValueError(f"a dataset name is a non-empty string without ':' or '/', got {name!r}")
    if not callable(reader):
        raise TypeError(f"reader of {name!r} must be callable, got {type(reader).__name__}")
    READERS[name] = reader


def dataset_arg(text: str) -> str:
    """``argparse`` type of a ``--dataset`` flag: a name of :data:`READERS` or a valid spec. The
    path of an ``npz:``/``folder:`` spec is made absolute, so a run's recorded config finds its
    data from any working directory (``jaxhfc eval``, ``jaxhfc analyze``)."""
    if text in READERS:
        return text
    return specs.spec_arg(text, names=tuple(READERS))


def load_spec(
    name: str,
    *,
    split: str,
    data_dir: Optional[str] = None,
    source: str = "auto",
    seed: int = 0,
    num_train: Optional[int] = None,
    num_test: Optional[int] = None,
):
    """One split of a spec dataset as a :class:`Dataset` (uint8 NHWC).

    Arguments as :func:`jaxhfc.datasets.load_dataset`; ``data_dir`` is the TFDS data dir of
    ``tfds:`` specs (ignored by ``npz:``/``folder:``, whose spec holds the path); ``source``
    must be ``"auto"`` (or ``"tfds"`` for ``tfds:``); ``num_train``/``num_test`` draw a
    class-balanced subset with ``seed`` (a size beyond the split's keeps the whole split, so
    the drivers' quick sizes work on small datasets).

    Raises:
      ValueError: a bad spec, split, source or size.
      DatasetNotFoundError / CorruptDatasetError: see the module docstring.
    """

    spec = specs.parse_spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in ("auto", spec.kind):
        raise ValueError(f"dataset {name!r} has no source {source!r}; use 'auto'")
    n = num_train if split == "train" else num_test
    if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
        raise ValueError(f"num_{split} must be a positive int or None, got {n!r}")
    if spec.kind == "npz":
        images, labels, names, where = npz.read(spec.target, split)
    elif spec.kind == "folder":
        images, labels, names, where = folder.read(spec.target, split, spec.channels, spec.size)
    else:
        images, labels, names, where = tfds.read(spec.target, split, data_dir, spec.size)
    images = specs.adapt(images, spec, where)
    ds = Dataset(np.ascontiguousarray(images), labels.astype(np.int32), len(names), specs.dataset_slug(name),
                 tuple(names))
    logger.info("read %s %s: %d images %s, %d classes", name, split, len(ds), images.shape[1:], len(names))
    if n is not None and n < len(ds):
        ds = balanced_subset(ds, int(n), seed=seed)
    elif n is not None and n > len(ds):
        logger.warning("%s: num_%s=%d but the %s split has %d images; using all of them", name, split, n, split, len(ds))
    return ds
