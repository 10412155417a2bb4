"""Datasets as arrays: one reader per source, whole-dataset transforms, and ``load_dataset``.

Every experiment gets its data from here, as a :class:`Dataset` (NHWC images plus int32
labels); nothing downstream knows where the arrays came from.

Modules
  * :mod:`~jaxhfc.datasets.core` -- :class:`Dataset`, the errors, the built-in class names.
  * readers -- :mod:`~jaxhfc.datasets.cifar10` (the standard archive),
    :mod:`~jaxhfc.datasets.tfds` (prepared TFDS dirs), :mod:`~jaxhfc.datasets.idx`
    (Fashion-MNIST / MNIST), :mod:`~jaxhfc.datasets.npz`, :mod:`~jaxhfc.datasets.folder`,
    :mod:`~jaxhfc.datasets.synthetic` (the built-in generator).
  * :mod:`~jaxhfc.datasets.specs` -- ``tfds:``/``npz:``/``folder:`` names and their options.
  * :mod:`~jaxhfc.datasets.transforms` -- subsets, label shuffling, LFC/HFC copies, model input.
  * :mod:`~jaxhfc.datasets.registry` -- :func:`load_dataset`.

The device-side input pipeline (permutation, crop/flip, mixup, normalisation) is
:mod:`jaxhfc.pipeline`.
"""

from jaxhfc.datasets.core import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, SYNTHETIC_CLASSES, CorruptDatasetError,
                                  Dataset, DatasetNotFoundError, default_data_dir)
from jaxhfc.datasets.folder import image_array
from jaxhfc.datasets.registry import READERS, dataset_arg, load_dataset, load_spec, register_reader
from jaxhfc.datasets.specs import BUILTIN, KINDS, Spec, dataset_slug, is_spec, parse_spec
from jaxhfc.datasets.synthetic import make_synthetic
from jaxhfc.datasets.transforms import (EMPTY_IMAGE_MAX, balanced_indices, balanced_subset, filter_dataset,
                                        shuffle_labels, to_model_input)

__all__ = [
    "BUILTIN", "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "EMPTY_IMAGE_MAX", "KINDS", "SYNTHETIC_CLASSES",
    "CorruptDatasetError", "Dataset", "DatasetNotFoundError", "READERS", "Spec", "balanced_indices", "balanced_subset",
    "dataset_arg", "dataset_slug", "default_data_dir", "filter_dataset", "image_array", "is_spec", "load_dataset",
    "load_spec", "make_synthetic", "parse_spec", "register_reader", "shuffle_labels", "to_model_input",
]
