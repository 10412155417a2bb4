"""The types every reader returns and every consumer takes: :class:`Dataset` (NHWC images
plus int32 labels) and the two errors a reader raises; the class names and statistics of the
built-in datasets.

Value scales: ``Dataset.images`` is ``uint8`` 0..255 for original data, or ``float32`` in the same
0..255 scale for filtered copies (:func:`jaxhfc.datasets.filter_dataset`: LFC may ring outside
0..255, HFC has zero mean and negative values; never clipped).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

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

SPLITS = ("train", "test")
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"


class DatasetNotFoundError(FileNotFoundError):
    """The requested dataset is not on disk; the message says how to get it."""


class CorruptDatasetError(ValueError):
    """A dataset file exists but cannot be read (truncated, corrupt, wrong layout)."""




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


def default_data_dir() -> str:
    """TFDS's default data dir: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def missing_cifar10_message(data_dir: str) -> str:
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
