"""TFDS datasets: CIFAR-10 from a prepared TFDS data dir (``download_and_prepare`` when asked;
that needs TensorFlow, the optional extra ``pip install jaxhfc[tf]``), and any prepared TFDS
image-classification dataset (``tfds:NAME``), both read through ``tfds.data_source``, which
needs no TensorFlow when the dir is in ``array_record`` format. TFDS stores CIFAR-10 shuffled
but keeps each example's archive position in its ``id`` feature (``train_00042``); the reader
restores that order.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np

from jaxhfc.datasets.core import (CIFAR10_ARCHIVE, CIFAR10_CLASSES, CorruptDatasetError, Dataset,
                                  DatasetNotFoundError, default_data_dir, missing_cifar10_message)
from jaxhfc.datasets.specs import check_labels, corrupt, not_found, resize

logger = logging.getLogger(__name__)


def _tfds():
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - heavy, imported on use
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ImportError(
            "reading CIFAR-10 through TFDS needs tensorflow-datasets: pip install jaxhfc"
        ) from e
    return tfds


def prepared(data_dir: str) -> bool:
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


def load_cifar10(data_dir: str, split: str, *, download: bool) -> Dataset:
    tfds = _tfds()
    if not prepared(data_dir):
        if not download:
            raise DatasetNotFoundError(missing_cifar10_message(data_dir))
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


def read(name: str, split: str, data_dir: Optional[str], size: Optional[int]):

    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("reading tfds: datasets needs tensorflow-datasets: pip install jaxhfc") from err
    data_dir = os.path.expanduser(str(data_dir)) if data_dir is not None else default_data_dir()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # tfds raises its own DatasetNotFoundError/ValueError/KeyError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise not_found(f"tfds:{name}: no such TFDS dataset ({first}); expected a registered TFDS name") from None
    feats = builder.info.features
    keys = builder.info.supervised_keys
    img_key, lab_key = keys if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys) \
        else ("image", "label")
    if img_key not in feats or lab_key not in feats or not isinstance(feats[img_key], tfds.features.Image) \
            or not isinstance(feats[lab_key], tfds.features.ClassLabel):
        raise corrupt(
            f"tfds:{name}: not an image-classification dataset; expected an Image feature and a ClassLabel "
            f"feature (supervised keys {keys!r}, features {list(feats)})"
        )
    splits = list(builder.info.splits)
    tfds_split = split
    if split == "test" and splits and "test" not in splits and "validation" in splits:
        tfds_split = "validation"
    where = f"tfds:{name} in {os.path.join(data_dir, name)}"
    try:
        src = tfds.data_source(name, split=tfds_split, data_dir=data_dir, download=False)
    except Exception as err:
        if not builder.is_prepared():
            raise not_found(
                f"{where}: not prepared; prepare it once where there is a network with "
                f"`pip install jaxhfc[tf]` and `python -c \"import tensorflow_datasets as tfds; "
                f"tfds.builder('{name}', data_dir='{data_dir}', file_format='array_record').download_and_prepare()\"`"
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise corrupt(f"{where}: cannot read split {tfds_split!r} ({first}); expected array_record files "
                       f"(splits {splits})") from None
    n = len(src)
    if n == 0:
        raise corrupt(f"{where}: split {tfds_split!r} is empty")
    try:  # one batched read where the source supports it (tfds' mock does not)
        examples = list(src.__getitems__(list(range(n))))
    except (AttributeError, TypeError, NotImplementedError):
        examples = [src[i] for i in range(n)]
    try:
        imgs = [np.asarray(e[img_key]) for e in examples]
        if size is not None:
            imgs = [resize(a, size) for a in imgs]
        labels = np.asarray([int(e[lab_key]) for e in examples], np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise corrupt(f"{where}: unexpected examples ({err}); expected {img_key!r} and {lab_key!r} features") from None
    shapes = {a.shape for a in imgs}
    if len(shapes) != 1:
        raise corrupt(f"{where}: images have {len(shapes)} different shapes (e.g. {sorted(shapes)[:2]}); "
                       "add ?size=N to the spec to resize them to N x N")
    images = np.stack(imgs)
    if images.dtype != np.uint8:
        raise corrupt(f"{where}: images must be uint8, got {images.dtype}")
    # TFDS shuffles examples when preparing; a string `id` feature restores the source order.
    ids = [e.get("id") if hasattr(e, "get") else None for e in examples]
    if all(isinstance(i, (str, bytes)) for i in ids):
        order = np.argsort(np.asarray([i.decode() if isinstance(i, bytes) else i for i in ids]), kind="stable")
        images, labels = images[order], labels[order]
    names = list(feats[lab_key].names)
    labels = check_labels(labels, len(images), len(names), where)
    return images, labels, names, where
