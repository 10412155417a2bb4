"""Datasets as arrays: loaders, whole-dataset transforms and the device-side input pipeline.

Every experiment gets its data from here, as a :class:`Dataset` (NHWC images plus int32
labels); nothing downstream knows where the arrays came from.

Loaders (:func:`load_dataset`)
  * ``"cifar10"`` from the standard ``cifar-10-python.tar.gz`` archive or its extracted
    ``cifar-10-batches-py`` folder (standard library ``tarfile``/``pickle`` and numpy only;
    the pickles are read with a restricted unpickler that only rebuilds numpy arrays), or
    from a TFDS data dir prepared by ``tensorflow_datasets`` (read through
    ``tfds.data_source``, which needs no TensorFlow when the dir is in ``array_record``
    format). Preparing a TFDS dir (``download_and_prepare``) needs TensorFlow, the optional
    extra ``pip install jaxhfc[tf]``. Both routes give identical arrays: TFDS stores the
    examples shuffled but keeps their archive position in the ``id`` feature
    (``train_00042``), and the reader restores that order.
  * ``"synthetic"``: the built-in default, generated in seconds, deterministic from a seed
    (generative model in :mod:`jaxhfc.synthetic`, docs/synthetic.md): natural-image-like
    power spectrum, a class template shared by the images of a class at low frequencies, a
    faint class cue at high frequencies, and a share of training images whose template
    belongs to another class, so that a network needs the high-frequency cue to fit them.
    ``"synthetic_blobs"``: the previous generator (:func:`make_synthetic_blobs`).

Value scales (``docs/architecture.md``)
  * ``Dataset.images`` is ``uint8`` 0..255 for original data, or ``float32`` in the same
    0..255 scale for filtered copies made by :func:`filter_dataset` (LFC may ring outside
    0..255; HFC has zero mean and negative values; never clipped).
  * Model input ("unit scale") is float32 made by :func:`to_model_input`: the paper code's
    per-image ``x / max(x)`` for filtered images and ``x / 255`` for originals
    (``scaling="paper"``), or ``x / 255`` for everything (``scaling="unit"``).
    :func:`normalize` applies the CIFAR-10 mean/std standardisation to unit-scale input.

Device-side input pipeline
  The whole split lives on the accelerator(s) as one unit-scale float32 array (CIFAR-10
  train: 50,000 x 32 x 32 x 3 x 4 B = 614 MB), *replicated* on every device, with its
  labels. Per epoch, :func:`epoch_indices` draws a permutation on device from a key and
  cuts it into ``(steps, global_batch)`` index batches (last partial batch dropped); the
  train engine shards each row of indices over the ``'data'`` mesh axis, and every device
  gathers its own rows (:func:`gather_batch`), augments them (:func:`augment`: pad-4
  random crop and horizontal flip, per example, from a key), optionally mixes them
  (:func:`mixup`) and normalises them (:func:`normalize`) inside the jitted step. No
  batch ever crosses the host. Evaluation uses :func:`eval_indices`: the last batch is
  padded with index 0 and a ``False`` mask, so every example is counted exactly once.
  ``global_batch`` must be a multiple of the device count (the engine checks that).

Randomness: host-side transforms take an integer ``seed`` (numpy ``default_rng``);
device-side functions take a JAX key and are pure: same key, same output.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import pickle
import tarfile
import zlib
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxhfc import fourier

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "SYNTHETIC_CLASSES",
    "CorruptDatasetError",
    "Dataset",
    "DatasetNotFoundError",
    "EMPTY_IMAGE_MAX",
    "augment",
    "balanced_indices",
    "balanced_subset",
    "dataset_slug",
    "default_data_dir",
    "epoch_indices",
    "eval_indices",
    "filter_dataset",
    "gather_batch",
    "load_dataset",
    "make_synthetic",
    "make_synthetic_blobs",
    "mixup",
    "normalize",
    "shuffle_labels",
    "synthetic_blobs_hfc_patterns",
    "to_model_input",
]

logger = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# Per-channel mean and standard deviation of the CIFAR-10 training images in [0, 1]
# (computed over all 50,000 x 32 x 32 pixels; the often-quoted 0.2023/0.1994/0.2010 are
# the means of per-image standard deviations, not the dataset's).
CIFAR10_MEAN: tuple[float, float, float] = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD: tuple[float, float, float] = (0.24703223, 0.24348513, 0.26158784)

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "alpha", "beta", "gamma", "delta", "epsilon",
    "zeta", "eta", "theta", "iota", "kappa",
)

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_SPLITS = ("train", "test")
_SOURCES = ("auto", "tfds", "archive")


class DatasetNotFoundError(FileNotFoundError):
    """The requested dataset is not on disk; the message says how to get it."""


class CorruptDatasetError(ValueError):
    """A dataset file exists but cannot be read (truncated, corrupt, wrong layout)."""


# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A split of an image classification dataset, as host (numpy) arrays.

    Attributes:
      images: ``(N, H, W, C)`` ``uint8`` in 0..255 (original images) or ``float32`` in the
        same 0..255 scale (filtered copies; may lie outside 0..255).
      labels: ``(N,)`` ``int32`` in ``[0, num_classes)`` (any integer dtype given is
        converted to int32).
      num_classes: number of classes, > 0.
      name: a short description, e.g. ``"cifar10"`` or ``"synthetic/high_r12"``.
      class_names: ``num_classes`` names, one per label value.

    Raises:
      ValueError: wrong rank, dtype, lengths, class count or label range.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    class_names: tuple[str, ...]

    def __post_init__(self):
        images = self.images
        if not isinstance(images, np.ndarray):
            images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(
                f"Dataset.images must have shape (N, H, W, C), got shape {tuple(images.shape)}"
            )
        if images.dtype not in (np.uint8, np.float32):
            raise ValueError(
                "Dataset.images must be uint8 (0..255) or float32 (0..255 scale, filtered), "
                f"got dtype {images.dtype}"
            )
        labels = np.asarray(self.labels)
        if labels.ndim != 1:
            raise ValueError(f"Dataset.labels must have shape (N,), got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"Dataset.labels must be integers, got dtype {labels.dtype}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"Dataset has {images.shape[0]} images but {labels.shape[0]} labels; "
                "expected one label per image"
            )
        if (
            not isinstance(self.num_classes, (int, np.integer))
            or isinstance(self.num_classes, bool)
            or self.num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got values in "
                f"[{labels.min()}, {labels.max()}]"
            )
        names = tuple(str(n) for n in self.class_names)
        if len(names) != self.num_classes:
            raise ValueError(
                f"class_names must have num_classes={self.num_classes} entries, got {len(names)}"
            )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))
        object.__setattr__(self, "num_classes", int(self.num_classes))
        object.__setattr__(self, "class_names", names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def is_filtered(self) -> bool:
        """True for float32 (filtered, 0..255-scale) images."""
        return self.images.dtype == np.float32

    def replace(self, **changes) -> "Dataset":
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def default_data_dir() -> str:
    """TFDS's default data dir: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def dataset_slug(name: str) -> str:
    """A folder-name-safe short name: ``"cifar10"``, ``"npz:/x/digits.npz"`` -> ``"npz-digits"``
    (see :func:`jaxhfc.sources.dataset_slug`)."""
    from jaxhfc import sources  # noqa: PLC0415

    return sources.dataset_slug(name)


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
      name: ``"synthetic"`` or ``"cifar10"``.
      split: ``"train"`` or ``"test"``.
      data_dir: folder holding the CIFAR-10 archive or a prepared TFDS data dir; default
        :func:`default_data_dir`. Ignored for ``"synthetic"``.
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
    class), with options ``?channels=1|3&size=N``; see :mod:`jaxhfc.sources`. Their images
    keep the source's size; grey images become 3 channels unless ``channels=1``.
    """
    if isinstance(name, str) and name.partition(":")[0] in ("tfds", "npz", "folder") and ":" in name:
        from jaxhfc import sources  # noqa: PLC0415

        return sources.load_split(name, split=split, data_dir=data_dir, source=source, seed=seed,
                                  num_train=num_train, num_test=num_test)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
    n = num_train if split == "train" else num_test
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"num_{split} must be a positive int or None, got {n!r}")
    if name in ("fashion_mnist", "mnist"):
        if source != "auto":
            raise ValueError(f"{name} has no source {source!r}; use 'auto'")
        from jaxhfc import idx  # noqa: PLC0415

        return idx.load_split(name, split=split, data_dir=data_dir, seed=seed, n=None if n is None else int(n))
    if name in ("synthetic", "synthetic_blobs"):
        if source != "auto":
            raise ValueError(f"the synthetic dataset has no source {source!r}; use 'auto'")
        default = 50_000 if split == "train" else 10_000
        size = int(n) if n is not None else default
        if name == "synthetic_blobs":
            return _synthetic_split(split, n=size, seed=seed)
        from jaxhfc import synthetic

        images, labels, names = synthetic.generate_split(split, size, seed=seed)
        return Dataset(images, labels, len(names), "synthetic", names)
    if name != "cifar10":
        raise ValueError(
            f"name must be 'synthetic', 'cifar10', 'fashion_mnist', 'mnist' or a spec tfds:NAME, npz:PATH, folder:PATH; got {name!r}"
        )

    data_dir = os.path.expanduser(str(data_dir)) if data_dir is not None else default_data_dir()
    if source == "archive":
        ds = _load_cifar10_archive(data_dir, split)
    elif source == "tfds":
        ds = _load_cifar10_tfds(data_dir, split, download=True)
    else:
        if _find_cifar10_archive(data_dir) is not None:
            ds = _load_cifar10_archive(data_dir, split)
        elif _tfds_prepared(data_dir):
            ds = _load_cifar10_tfds(data_dir, split, download=False)
        else:
            raise DatasetNotFoundError(_missing_cifar10_message(data_dir))
    if n is not None:
        ds = balanced_subset(ds, int(n), seed=seed)
    return ds


def _missing_cifar10_message(data_dir: str) -> str:
    return (
        f"CIFAR-10 not found in data dir {data_dir!r}. Either (a) put the standard archive "
        f"there: download https://www.cs.toronto.edu/~kriz/{CIFAR10_ARCHIVE} to "
        f"{os.path.join(data_dir, CIFAR10_ARCHIVE)} (or extract it to "
        f"{os.path.join(data_dir, CIFAR10_FOLDER)}/), then use source='archive' or 'auto'; "
        "or (b) prepare it with tensorflow-datasets: `pip install jaxhfc[tf]` (TFDS needs "
        "TensorFlow to prepare) and load with source='tfds' (downloads and prepares into the "
        "data dir), or point data_dir at an already prepared TFDS data dir (one holding "
        "cifar10/<version>/). The synthetic dataset (name='synthetic') needs no download."
    )


# ---- the standard python archive -----------------------------------------------------


def _find_cifar10_archive(data_dir: str) -> Optional[str]:
    folder = os.path.join(data_dir, CIFAR10_FOLDER)
    if os.path.isdir(folder):
        return folder
    path = os.path.join(data_dir, CIFAR10_ARCHIVE)
    if os.path.isfile(path):
        return path
    return None


def _numpy_reconstruct():
    try:  # numpy >= 2
        from numpy._core import multiarray  # noqa: PLC0415
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # noqa: PLC0415
    return multiarray


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and builtins (no arbitrary code)."""

    def find_class(self, module, name):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct", "scalar",
        ):
            return getattr(_numpy_reconstruct(), name)
        if module == "_codecs" and name == "encode":  # bytes as pickled by Python 3, protocol 2
            import codecs  # noqa: PLC0415

            return codecs.encode
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy.dtypes",) and name.endswith("DType"):
            return getattr(np.dtypes, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _unpickle(data: bytes, what: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure means a corrupt file
        raise CorruptDatasetError(f"cannot unpickle {what}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise CorruptDatasetError(f"{what} should hold a dict, found {type(obj).__name__}")
    return obj


def _read_archive_members(path: str, names: Sequence[str]) -> dict[str, bytes]:
    """Reads ``cifar-10-batches-py/<name>`` for each name from a folder or a .tar.gz."""
    out: dict[str, bytes] = {}
    if os.path.isdir(path):
        for n in names:
            p = os.path.join(path, n)
            if not os.path.isfile(p):
                raise CorruptDatasetError(
                    f"CIFAR-10 folder {path!r} lacks {n!r}; expected data_batch_1..5, "
                    "test_batch and batches.meta (re-extract the archive)"
                )
            with open(p, "rb") as f:
                out[n] = f.read()
        return out
    wanted = {f"{CIFAR10_FOLDER}/{n}": n for n in names}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                key = member.name.lstrip("./")
                if key in wanted and member.isfile():
                    f = tar.extractfile(member)
                    data = f.read() if f is not None else b""
                    if len(data) != member.size:
                        raise EOFError(f"{key}: read {len(data)} of {member.size} bytes")
                    out[wanted[key]] = data
                    if len(out) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise CorruptDatasetError(
            f"CIFAR-10 archive {path!r} is corrupt or truncated ({type(e).__name__}: {e}); "
            f"delete it and download {CIFAR10_ARCHIVE} again"
        ) from e
    missing = [m for m in wanted if wanted[m] not in out]
    if missing:
        raise CorruptDatasetError(
            f"CIFAR-10 archive {path!r} lacks {missing}; expected the standard "
            f"{CIFAR10_ARCHIVE} layout ({CIFAR10_FOLDER}/data_batch_1..5, test_batch, batches.meta)"
        )
    return out


def _decode_batch(obj: dict, what: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if b"data" not in obj or b"labels" not in obj:
        raise CorruptDatasetError(f"{what} lacks b'data' or b'labels' (keys: {list(obj)})")
    data = obj[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
        data.shape[1] != 3 * 32 * 32
    ):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise CorruptDatasetError(
            f"{what}: b'data' must be a uint8 array of shape (N, 3072), got shape {shape}, "
            f"dtype {dtype}"
        )
    labels = np.asarray(obj[b"labels"])
    if labels.shape != (data.shape[0],) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise CorruptDatasetError(
            f"{what}: b'labels' must be {data.shape[0]} integers, got shape {labels.shape}, "
            f"dtype {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDatasetError(
            f"{what}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    # Rows are channel-first, row-major: 1024 red, 1024 green, 1024 blue values.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _load_cifar10_archive(data_dir: str, split: str) -> Dataset:
    path = _find_cifar10_archive(data_dir)
    if path is None:
        raise DatasetNotFoundError(_missing_cifar10_message(data_dir))
    files = _CIFAR10_FILES[split]
    raw = _read_archive_members(path, ("batches.meta",) + files)
    meta = _unpickle(raw["batches.meta"], f"{path}:batches.meta")
    names = meta.get(b"label_names")
    if not isinstance(names, (list, tuple)) or len(names) != 10:
        raise CorruptDatasetError(f"{path}:batches.meta must list 10 b'label_names', got {names!r}")
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    images, labels = [], []
    for f in files:
        x, y = _decode_batch(_unpickle(raw[f], f"{path}:{f}"), f"{path}:{f}", 10)
        images.append(x)
        labels.append(y)
    logger.info("read CIFAR-10 %s split (%d images) from %s", split, sum(map(len, labels)), path)
    return Dataset(np.concatenate(images), np.concatenate(labels), 10, "cifar10", class_names)


# ---- tensorflow-datasets -------------------------------------------------------------


def _tfds():
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - heavy, imported on use
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ImportError(
            "reading CIFAR-10 through TFDS needs tensorflow-datasets: pip install jaxhfc"
        ) from e
    return tfds


def _tfds_prepared(data_dir: str) -> bool:
    """True if ``data_dir/cifar10/<version>/dataset_info.json`` exists (cheap, no TFDS import)."""
    root = os.path.join(data_dir, "cifar10")
    if not os.path.isdir(root):
        return False
    return any(
        os.path.isfile(os.path.join(root, v, "dataset_info.json")) for v in os.listdir(root)
    )


def _have_tensorflow() -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("tensorflow") is not None


def _download_and_prepare(tfds, data_dir: str) -> None:
    """``download_and_prepare`` TFDS cifar10 (array_record) into ``data_dir``, atomically.

    TFDS writes the prepared files into an ``incomplete.*`` folder and renames it when
    done (removing it on failure); on top of that, if this call fails, whichever of
    ``data_dir``, ``data_dir/cifar10`` and ``data_dir/downloads`` it created is removed,
    and so is whatever it added inside those two subfolders when they existed before; so
    a failed download leaves the data dir as it was.
    """
    watched = [data_dir, os.path.join(data_dir, "cifar10"), os.path.join(data_dir, "downloads")]
    before = {p: set(os.listdir(p)) for p in watched if os.path.isdir(p)}
    logger.info("downloading and preparing TFDS cifar10 into %s", data_dir)
    try:
        builder = tfds.builder("cifar10", data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare(file_format="array_record")
    except BaseException:
        import shutil  # noqa: PLC0415

        for p in reversed(watched):
            if p not in before:
                shutil.rmtree(p, ignore_errors=True)
            elif p != data_dir and os.path.isdir(p):  # entries this attempt added
                for name in set(os.listdir(p)) - before[p]:
                    q = os.path.join(p, name)
                    if os.path.isdir(q):
                        shutil.rmtree(q, ignore_errors=True)
                    else:
                        os.remove(q)
        raise


def _load_cifar10_tfds(data_dir: str, split: str, *, download: bool) -> Dataset:
    tfds = _tfds()
    if not _tfds_prepared(data_dir):
        if not download:
            raise DatasetNotFoundError(_missing_cifar10_message(data_dir))
        if not _have_tensorflow():
            raise ImportError(
                f"no prepared TFDS cifar10 in {data_dir!r}, and preparing one with "
                "tensorflow-datasets needs TensorFlow: `pip install jaxhfc[tf]` (or put "
                f"{CIFAR10_ARCHIVE} in the data dir and use source='archive')"
            )
        _download_and_prepare(tfds, data_dir)
    builder = tfds.builder("cifar10", data_dir=data_dir)
    if split not in builder.info.splits:
        raise CorruptDatasetError(
            f"prepared TFDS cifar10 in {builder.data_dir!r} has splits "
            f"{list(builder.info.splits)}, not {split!r}"
        )
    fmt = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    if fmt == "array_record":
        source = builder.as_data_source(split=split)
        examples = [source[i] for i in range(len(source))]
        return _examples_to_dataset(examples, builder, where=str(builder.data_dir))
    if not _have_tensorflow():
        raise ImportError(
            f"the TFDS dir {builder.data_dir!r} was prepared in {fmt!r} format, which needs "
            "TensorFlow to read: `pip install jaxhfc[tf]`, or prepare it again with "
            "file_format='array_record', or use the archive (source='archive')"
        )
    batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))  # pragma: no cover
    examples = [  # pragma: no cover
        {k: v[i] for k, v in batch.items()} for i in range(len(batch["label"]))
    ]
    return _examples_to_dataset(examples, builder, where=str(builder.data_dir))  # pragma: no cover


def _examples_to_dataset(examples: list, builder, *, where: str) -> Dataset:
    if not examples:
        raise CorruptDatasetError(f"TFDS cifar10 split in {where!r} is empty")
    try:
        images = np.stack([np.asarray(e["image"]) for e in examples])
        labels = np.asarray([int(e["label"]) for e in examples])
    except (KeyError, ValueError, TypeError) as e:
        raise CorruptDatasetError(
            f"TFDS cifar10 in {where!r} has unexpected examples ({e}); expected 'image' "
            "(32, 32, 3) uint8 and 'label' features"
        ) from e
    if images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise CorruptDatasetError(
            f"TFDS cifar10 in {where!r}: images must be (32, 32, 3) uint8, got "
            f"{images.shape[1:]} {images.dtype}"
        )
    if labels.min() < 0 or labels.max() >= 10:
        raise CorruptDatasetError(
            f"TFDS cifar10 in {where!r}: labels must lie in [0, 10), got "
            f"[{labels.min()}, {labels.max()}]"
        )
    # TFDS shuffles examples when preparing; its `id` ("train_00042") is the position in
    # the original archive, so sorting by it restores the archive order.
    ids = [e.get("id") for e in examples]
    if all(i is not None for i in ids):
        keys = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        order = np.argsort(np.asarray(keys), kind="stable")
        images, labels = images[order], labels[order]
    names = tuple(builder.info.features["label"].names)
    if len(names) != 10 or names == tuple(str(i) for i in range(10)):
        names = CIFAR10_CLASSES
    logger.info("read TFDS cifar10 (%d images) from %s", len(labels), where)
    return Dataset(np.ascontiguousarray(images), labels.astype(np.int32), 10, "cifar10", names)


# --------------------------------------------------------------------------------------
# Synthetic dataset
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _SyntheticRecipe:
    size: int
    noise_std: float
    hfc_amplitude: float
    position_jitter: float
    blob_centres: np.ndarray  # (K, B, 2) pixels (row, col)
    blob_sigmas: np.ndarray  # (K, B)
    blob_colours: np.ndarray  # (K, B, 3) grey levels, signed
    hfc_patterns: np.ndarray  # (K, S, S, 3) float32, max |.| = 1 per class
    hfc_frequencies: np.ndarray  # (K, F, 2) integer (u, v) cycles per image


def _hfc_candidates(size: int, r_min: float, r_max: float) -> np.ndarray:
    lim = size // 2 - 1  # stay below Nyquist so +-(u, v) both sit inside the shifted grid
    u, v = np.meshgrid(np.arange(-lim, lim + 1), np.arange(-lim, lim + 1), indexing="ij")
    d = np.hypot(u, v)
    half = (u > 0) | ((u == 0) & (v > 0))  # one of each (u, v), (-u, -v) pair
    keep = half & (d >= r_min) & (d <= r_max)
    return np.stack([u[keep], v[keep]], axis=-1)


def _recipe(
    seed: int,
    *,
    size: int,
    num_classes: int,
    blobs_per_class: int,
    hfc_amplitude: float,
    hfc_band: tuple[float, float],
    hfc_components: int,
    noise_std: float,
    position_jitter: float,
) -> _SyntheticRecipe:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    k, b = num_classes, blobs_per_class
    lo, hi = 0.28 * size, 0.72 * size
    centres = rng.uniform(lo, hi, size=(k, b, 2))
    sigmas = rng.uniform(0.11 * size, 0.19 * size, size=(k, b))
    colours = rng.normal(size=(k, b, 3))
    colours *= rng.uniform(55.0, 85.0, size=(k, b, 1)) / np.linalg.norm(colours, axis=-1, keepdims=True)

    cand = _hfc_candidates(size, *hfc_band)
    if len(cand) < hfc_components:
        raise ValueError(f"hfc_band {hfc_band} holds only {len(cand)} frequencies at size {size}")
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    patterns = np.zeros((k, size, size, 3))
    freqs = np.zeros((k, hfc_components, 2), dtype=np.int64)
    for c in range(k):
        pick = cand[rng.choice(len(cand), size=hfc_components, replace=False)]
        freqs[c] = pick
        phase = rng.uniform(0, 2 * np.pi, size=(hfc_components, 3))
        arg = 2 * np.pi * (pick[:, 0, None, None] * yy + pick[:, 1, None, None] * xx) / size
        patterns[c] = np.cos(arg[..., None] + phase[:, None, None, :]).sum(axis=0)
        patterns[c] /= np.abs(patterns[c]).max()
    return _SyntheticRecipe(
        size=size,
        noise_std=float(noise_std),
        hfc_amplitude=float(hfc_amplitude),
        position_jitter=float(position_jitter),
        blob_centres=centres,
        blob_sigmas=sigmas,
        blob_colours=colours,
        hfc_patterns=patterns.astype(np.float32),
        hfc_frequencies=freqs,
    )


def _render(recipe: _SyntheticRecipe, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Renders uint8 images ``(n, S, S, 3)`` for ``labels`` (vectorised over images)."""
    n, s = len(labels), recipe.size
    grid = np.arange(s, dtype=np.float32)
    centre = (s - 1) / 2
    # 1. background: a grey base colour per channel plus a smooth linear gradient.
    base = rng.uniform(70, 185, size=(n, 1, 1, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    slope = rng.uniform(0, 30, size=(n, 1, 1)) / (s / 2)
    ramp = slope * ((grid[:, None] - centre) * np.sin(theta) + (grid[None, :] - centre) * np.cos(theta))
    img = base + ramp[..., None].astype(np.float32)
    # 2. the class object: its Gaussian blobs, jittered in position, size and colour,
    #    plus one random clutter blob that carries no class information.
    centres = recipe.blob_centres[labels] + rng.uniform(
        -recipe.position_jitter, recipe.position_jitter, size=(n, 1, 2)
    )
    sigmas = recipe.blob_sigmas[labels] * rng.uniform(0.85, 1.15, size=(n, recipe.blob_sigmas.shape[1]))
    colours = recipe.blob_colours[labels] * rng.uniform(0.7, 1.3, size=(n, recipe.blob_colours.shape[1], 1))
    colours = colours + rng.normal(0, 12, size=colours.shape)
    clutter_c = rng.uniform(0.2 * s, 0.8 * s, size=(n, 1, 2))
    clutter_s = rng.uniform(0.11 * s, 0.19 * s, size=(n, 1))
    clutter_col = rng.normal(0, 35, size=(n, 1, 3))
    centres = np.concatenate([centres, clutter_c], axis=1)
    sigmas = np.concatenate([sigmas, clutter_s], axis=1)
    colours = np.concatenate([colours, clutter_col], axis=1)
    centres, sigmas = centres.astype(np.float32), sigmas.astype(np.float32)[..., None]
    gy = np.exp(-0.5 * ((grid[None, None, :] - centres[..., 0:1]) / sigmas) ** 2)
    gx = np.exp(-0.5 * ((grid[None, None, :] - centres[..., 1:2]) / sigmas) ** 2)
    # Separable Gaussians: sum over blobs b of gy[n,b,y] * gx[n,b,x] * colour[n,b,c].
    img += np.einsum("nby,nbx,nbc->nyxc", gy, gx, colours.astype(np.float32), optimize=True)
    # 3. the faint class-specific high-frequency pattern, amplitude jittered per image.
    amp = recipe.hfc_amplitude * rng.uniform(0.75, 1.25, size=(n, 1, 1, 1)).astype(np.float32)
    img += amp * recipe.hfc_patterns[labels]
    # 4. pixel noise, rounding and clipping to uint8.
    noise = rng.standard_normal(size=img.shape, dtype=np.float32)
    noise *= np.float32(recipe.noise_std)
    img += noise
    np.rint(img, out=img)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


_SYNTHETIC_DEFAULTS = dict(
    size=32,
    num_classes=10,
    blobs_per_class=2,
    hfc_amplitude=4.0,
    hfc_band=(13.0, 19.0),
    hfc_components=6,
    noise_std=2.0,
    position_jitter=4.0,
)


def _synthetic_split(split: str, *, n: int, seed: int, chunk: int = 8192, **kwargs) -> Dataset:
    params = dict(_SYNTHETIC_DEFAULTS, **kwargs)
    recipe = _recipe(seed, **params)
    k = params["num_classes"]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1 if split == "train" else 2]))
    labels = rng.permutation(np.arange(n) % k).astype(np.int32)  # balanced classes
    images = np.empty((n, recipe.size, recipe.size, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        images[start:start + chunk] = _render(recipe, labels[start:start + chunk], rng)
    names = SYNTHETIC_CLASSES if k == len(SYNTHETIC_CLASSES) else tuple(f"class_{i}" for i in range(k))
    return Dataset(images, labels, k, "synthetic", names)


def make_synthetic(*, num_train: int = 50_000, num_test: int = 10_000, seed: int = 0,
                   **knobs) -> tuple[Dataset, Dataset]:
    """The built-in synthetic dataset ``(train, test)``: :func:`jaxhfc.synthetic.make_synthetic`.

    ``knobs`` are those of :data:`jaxhfc.synthetic.DEFAULTS` (docs/synthetic.md).
    """
    from jaxhfc import synthetic

    return synthetic.make_synthetic(num_train=num_train, num_test=num_test, seed=seed, **knobs)


def make_synthetic_blobs(
    *,
    num_train: int = 50_000,
    num_test: int = 10_000,
    seed: int = 0,
    hfc_amplitude: float = 4.0,
    noise_std: float = 2.0,
    position_jitter: float = 4.0,
    hfc_band: tuple[float, float] = (13.0, 19.0),
    hfc_components: int = 6,
    num_classes: int = 10,
    size: int = 32,
) -> tuple[Dataset, Dataset]:
    """The previous synthetic dataset (``"synthetic_blobs"``): ``(train, test)``, uint8 ``(N, size, size, 3)``.

    Its low-frequency cue alone fits the training set, so networks trained on it never need
    its high-frequency pattern (kept for comparison; the default is :func:`make_synthetic`).

    Generative recipe. From ``seed``, each class ``k`` gets (i) an *object*: two Gaussian
    colour blobs with centres in the middle 44% of the image, widths sigma in
    [0.11, 0.19] x size pixels (3.5..6 px at 32: their spectrum lies almost entirely
    within radius ~4-6 of the centred spectrum) and signed RGB colours of norm 55..85 grey
    levels; and (ii) a *high-frequency pattern*: the sum of ``hfc_components`` cosines of
    integer frequencies ``(u, v)`` with ``hfc_band[0] <= sqrt(u^2 + v^2) <= hfc_band[1]``
    (default 13..19, i.e. entirely outside radius 12 of the centred spectrum; |u|, |v| < size/2),
    random phase per channel, scaled so that its peak ``max |.|`` is 1.
    Each image of class ``k`` is then, in 0..255 grey levels:

    1. a background: a uniform colour in [70, 185] per channel plus a linear gradient of
       random direction and slope up to 30 grey levels per half image;
    2. the class object, moved by a uniform shift in ``[-position_jitter, position_jitter]``
       pixels, blob widths scaled by U(0.85, 1.15), colours by U(0.7, 1.3) plus N(0, 12)
       per channel; plus one clutter blob of random position, width and colour (N(0, 35))
       that carries no class information;
    3. the class's high-frequency pattern times ``hfc_amplitude * U(0.75, 1.25)`` (peak
       4 grey levels by default: barely visible);
    4. Gaussian pixel noise of std ``noise_std``; rounded and clipped to uint8.

    So the label is carried by low frequencies (the object's layout and colour) and,
    independently, by a faint pattern that ``low_pass(x, 12)`` removes completely and
    ``high_pass(x, 12)`` keeps completely. Classes are balanced (exactly, up to
    ``N mod num_classes``) and shuffled. Class definitions depend only on ``seed``; the
    train and test images use separate random streams. 60,000 images take a few seconds.

    Args:
      num_train, num_test: split sizes (default 50,000 / 10,000, as CIFAR-10).
      seed: the one seed; same seed, same arrays.
      hfc_amplitude: peak of the high-frequency pattern, grey levels (>= 0).
      noise_std: pixel noise std, grey levels (>= 0).
      position_jitter: max object shift, pixels (>= 0).
      hfc_band: (min, max) radius of the pattern's frequencies.
      hfc_components: number of cosines per pattern.
      num_classes: number of classes (names from ``SYNTHETIC_CLASSES`` when 10).
      size: image height and width.

    Returns:
      ``(train, test)`` :class:`Dataset` s named ``"synthetic"``.

    Raises:
      ValueError: non-positive sizes or negative amplitudes.
    """
    for nm, v in (("num_train", num_train), ("num_test", num_test), ("num_classes", num_classes)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{nm} must be a positive int, got {v!r}")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    for nm, v in (("hfc_amplitude", hfc_amplitude), ("noise_std", noise_std), ("position_jitter", position_jitter)):
        if not (isinstance(v, (int, float, np.number)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{nm} must be a finite number >= 0, got {v!r}")
    if not isinstance(hfc_components, (int, np.integer)) or hfc_components < 1:
        raise ValueError(f"hfc_components must be a positive int, got {hfc_components!r}")
    if len(hfc_band) != 2 or not 0 <= hfc_band[0] <= hfc_band[1]:
        raise ValueError(f"hfc_band must be (min_radius, max_radius) with 0 <= min <= max, got {hfc_band!r}")
    kwargs = dict(
        size=int(size),
        num_classes=int(num_classes),
        hfc_amplitude=float(hfc_amplitude),
        noise_std=float(noise_std),
        position_jitter=float(position_jitter),
        hfc_band=(float(hfc_band[0]), float(hfc_band[1])),
        hfc_components=int(hfc_components),
    )
    train = _synthetic_split("train", n=int(num_train), seed=seed, **kwargs)
    test = _synthetic_split("test", n=int(num_test), seed=seed, **kwargs)
    return train, test


def synthetic_blobs_hfc_patterns(*, seed: int = 0, **kwargs) -> np.ndarray:
    """The class patterns of :func:`make_synthetic_blobs` (``(K, S, S, 3)`` float32, peak 1).

    ``kwargs`` are those of :func:`make_synthetic_blobs` that shape the recipe (``size``,
    ``num_classes``, ``hfc_band``, ``hfc_components``); useful for figures and tests.
    """
    params = dict(_SYNTHETIC_DEFAULTS, **kwargs)
    return _recipe(seed, **params).hfc_patterns


# --------------------------------------------------------------------------------------
# Whole-dataset transforms
# --------------------------------------------------------------------------------------


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


_SCALINGS = ("paper", "unit")
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
    if scaling not in _SCALINGS:
        raise ValueError(f"scaling must be one of {_SCALINGS}, got {scaling!r}")
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


def normalize(x, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD):
    """``(x - mean) / std`` per channel for unit-scale images (jittable).

    Args:
      x: ``(..., C)`` float images in [0, 1].
      mean, std: ``C`` values each.

    Returns:
      Same shape, ``x``'s float dtype.
    """
    x = jnp.asarray(x)
    mean = jnp.asarray(mean, dtype=x.dtype)
    std = jnp.asarray(std, dtype=x.dtype)
    return (x - mean) / std


# --------------------------------------------------------------------------------------
# Device-side pipeline (pure, jittable, from a key)
# --------------------------------------------------------------------------------------


def augment(key: jax.Array, x: jax.Array, *, crop_pad: int = 4, flip: bool = True) -> jax.Array:
    """Random crop after zero padding, and random horizontal flip, per example.

    Each example is zero-padded by ``crop_pad`` pixels on every side and a window of the
    original size is cut at a uniformly random offset in ``[0, 2 * crop_pad]`` per axis
    (the usual CIFAR "pad 4, crop 32"); then, if ``flip``, it is mirrored left-right with
    probability 1/2. Labels are untouched, so they stay aligned.

    Args:
      key: a JAX PRNG key (same key, same output).
      x: ``(B, H, W, C)`` float images.
      crop_pad: padding in pixels (0 disables cropping); static.
      flip: enable the horizontal flip; static.

    Returns:
      ``(B, H, W, C)``, ``x``'s dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"augment expects images (B, H, W, C), got shape {tuple(x.shape)}")
    if not isinstance(crop_pad, (int, np.integer)) or crop_pad < 0:
        raise ValueError(f"crop_pad must be an int >= 0, got {crop_pad!r}")
    b, h, w, c = x.shape
    k_crop, k_flip = jax.random.split(key)
    if crop_pad:
        p = int(crop_pad)
        xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * p + 1)
        x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(xp, offsets)
    if flip:
        mirror = jax.random.bernoulli(k_flip, 0.5, (b,))
        x = jnp.where(mirror[:, None, None, None], x[:, :, ::-1, :], x)
    return x


def mixup(key: jax.Array, x: jax.Array, y_onehot: jax.Array, *, alpha: float):
    """Mixup as in the paper's code: one ``lambda ~ Beta(alpha, alpha)`` per batch.

    ``x' = lam * x + (1 - lam) * x[perm]`` and ``y' = lam * y + (1 - lam) * y[perm]`` with
    a random permutation ``perm`` of the batch (the code used Beta(1, 1); the paper's text
    alpha = 0.5). Under ``shard_map`` the permutation is within each device's batch.

    Args:
      key: JAX PRNG key.
      x: ``(B, ...)`` float inputs.
      y_onehot: ``(B, K)`` float (one-hot or soft) targets.
      alpha: Beta parameter > 0 (static).

    Returns:
      ``(x_mixed, y_mixed)`` with the shapes and dtypes of the inputs.
    """
    if not isinstance(alpha, (int, float, np.number)) or not alpha > 0:
        raise ValueError(f"mixup alpha must be a number > 0, got {alpha!r}")
    if x.shape[0] != y_onehot.shape[0]:
        raise ValueError(f"mixup: x has {x.shape[0]} rows but y has {y_onehot.shape[0]}")
    k_lam, k_perm = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha)
    perm = jax.random.permutation(k_perm, x.shape[0])
    xm = lam.astype(x.dtype) * x + (1 - lam).astype(x.dtype) * x[perm]
    ym = lam.astype(y_onehot.dtype) * y_onehot + (1 - lam).astype(y_onehot.dtype) * y_onehot[perm]
    return xm, ym


def _check_batching(n, global_batch):
    for nm, v in (("n", n), ("global_batch", global_batch)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{nm} must be a positive int, got {v!r}")


def epoch_indices(key: jax.Array, n: int, global_batch: int) -> jax.Array:
    """One epoch of training index batches: a random permutation of ``range(n)``.

    Args:
      key: JAX PRNG key (e.g. ``fold_in(data_key, epoch)``).
      n: dataset size (static).
      global_batch: examples per step over all devices (static).

    Returns:
      ``(n // global_batch, global_batch)`` int32 on device; the last partial batch of
      the permutation (``n % global_batch`` examples) is dropped.

    Raises:
      ValueError: non-positive sizes, or ``global_batch > n`` (an epoch of zero steps).
    """
    _check_batching(n, global_batch)
    if global_batch > n:
        raise ValueError(f"global_batch={global_batch} exceeds the dataset size {n}")
    steps = n // global_batch
    perm = jax.random.permutation(key, n)[: steps * global_batch]
    return perm.reshape(steps, global_batch).astype(jnp.int32)


def eval_indices(n: int, global_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation index batches covering ``range(n)`` exactly once, in order.

    Returns:
      ``(idx, mask)``, both ``(ceil(n / global_batch), global_batch)``: ``idx`` int32, the
      positions ``0..n-1`` then index 0 as padding; ``mask`` bool, False on padding. Sum
      per-example metrics with the mask (and divide by ``n``).
    """
    _check_batching(n, global_batch)
    steps = -(-n // global_batch)
    flat = np.arange(steps * global_batch)
    mask = flat < n
    idx = np.where(mask, flat, 0).astype(np.int32)
    return idx.reshape(steps, global_batch), mask.reshape(steps, global_batch)


def gather_batch(images: jax.Array, labels: jax.Array, idx: jax.Array):
    """Rows ``idx`` of a device-resident split (jittable): ``(images[idx], labels[idx])``.

    Args:
      images: ``(N, H, W, C)`` unit-scale float32.
      labels: ``(N,)`` int32 (or ``(N, K)`` soft targets).
      idx: integer indices of any shape ``S``.

    Returns:
      ``(S + (H, W, C), S + labels.shape[1:])``.
    """
    return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)
