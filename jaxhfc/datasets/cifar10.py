"""CIFAR-10 from the standard ``cifar-10-python.tar.gz`` archive or its extracted
``cifar-10-batches-py`` folder (standard library ``tarfile``/``pickle`` and numpy only; the
pickles are read with a restricted unpickler that only rebuilds numpy arrays), or from a
prepared TFDS data dir (:mod:`jaxhfc.datasets.tfds`). Both routes give identical arrays.

The archive's layout: pickled dicts ``data_batch_1..5`` and ``test_batch`` (``b'data'`` an
``(N, 3072)`` uint8 array, each row channel-first and row-major; ``b'labels'`` a list of ints;
``b'batch_label'``; ``b'filenames'``) and ``batches.meta`` (``b'label_names'``,
``b'num_cases_per_batch'``, ``b'num_vis'``). :func:`write_archive` writes that layout from
arrays, and :func:`write_generated_archive` a full-size one of generated images (smoke runs
and benchmarks of the full-scale path where the real archive is absent).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import tarfile
import zlib
from typing import Optional, Sequence

import numpy as np

from jaxhfc.datasets import tfds as tfds_reader
from jaxhfc.datasets.core import (CIFAR10_ARCHIVE, CIFAR10_FOLDER, CorruptDatasetError, Dataset,
                                  DatasetNotFoundError, missing_cifar10_message)

_CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
SOURCES = ("auto", "tfds", "archive")

logger = logging.getLogger(__name__)


def load(data_dir: str, split: str, source: str = "auto") -> Dataset:
    """One CIFAR-10 split from ``data_dir`` (see :func:`jaxhfc.datasets.load_dataset`)."""
    if source == "archive":
        return _load_cifar10_archive(data_dir, split)
    if source == "tfds":
        return tfds_reader.load_cifar10(data_dir, split, download=True)
    if _find_cifar10_archive(data_dir) is not None:
        return _load_cifar10_archive(data_dir, split)
    if tfds_reader.prepared(data_dir):
        return tfds_reader.load_cifar10(data_dir, split, download=False)
    raise DatasetNotFoundError(missing_cifar10_message(data_dir))


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
        raise DatasetNotFoundError(missing_cifar10_message(data_dir))
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


def _batch_dict(images: np.ndarray, labels: np.ndarray, label: str) -> dict:
    data = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": np.ascontiguousarray(data),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))],
    }


def archive_files(train: Dataset, test: Dataset) -> dict[str, bytes]:
    """The pickled files of the standard archive holding ``train`` (split into 5 equal batches)
    and ``test``, as ``{file name: bytes}``. Images must be uint8 ``(N, 32, 32, 3)``."""
    for what, ds in (("train", train), ("test", test)):
        if ds.images.dtype != np.uint8 or ds.images.shape[1:] != (32, 32, 3):
            raise ValueError(f"CIFAR-10 {what} images must be uint8 (N, 32, 32, 3), got {ds.images.dtype} "
                             f"{ds.images.shape}")
    if len(train) % 5:
        raise ValueError(f"the training images are split into 5 equal batches; got {len(train)}, not a multiple of 5")
    n = len(train) // 5
    files = {f"data_batch_{b + 1}": pickle.dumps(
        _batch_dict(train.images[b * n:(b + 1) * n], train.labels[b * n:(b + 1) * n], f"training batch {b + 1} of 5"),
        protocol=2) for b in range(5)}
    files["test_batch"] = pickle.dumps(_batch_dict(test.images, test.labels, "testing batch 1 of 1"), protocol=2)
    files["batches.meta"] = pickle.dumps({b"num_cases_per_batch": n, b"num_vis": 3 * 32 * 32,
                                          b"label_names": [c.encode() for c in train.class_names]}, protocol=2)
    return files


def write_archive_files(data_dir: str, files: dict[str, bytes], *, extracted: bool = False,
                        compresslevel: int = 9) -> str:
    """Write ``files`` as ``<data_dir>/cifar-10-python.tar.gz`` (or the extracted
    ``cifar-10-batches-py`` folder); returns the path written. The archive is written to a
    temporary name and renamed, so a killed write leaves no partial archive behind."""
    os.makedirs(data_dir, exist_ok=True)
    if extracted:
        folder = os.path.join(data_dir, CIFAR10_FOLDER)
        os.makedirs(folder, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        return folder
    path = os.path.join(data_dir, CIFAR10_ARCHIVE)
    tmp = path + ".partial"
    with tarfile.open(tmp, "w:gz", compresslevel=compresslevel) as tar:
        info = tarfile.TarInfo(CIFAR10_FOLDER)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{CIFAR10_FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
    return path


def write_archive(data_dir: str, train: Dataset, test: Dataset, *, extracted: bool = False) -> str:
    """``train`` and ``test`` as the standard archive in ``data_dir`` (:func:`archive_files`)."""
    return write_archive_files(data_dir, archive_files(train, test), extracted=extracted)


GENERATED_MARKER = "generated.json"


def write_generated_archive(data_dir: str, *, num_train: int = 50_000, num_test: int = 10_000,
                            seed: int = 0) -> str:
    """A CIFAR-10 archive of generated images in ``data_dir`` (default: full size, 50,000 +
    10,000): the built-in synthetic data (:func:`jaxhfc.datasets.make_synthetic`), 32x32 RGB with
    10 classes, under CIFAR-10's class names, in the standard format. For runs that exercise the
    full-scale shapes and code paths without the real archive; its numbers mean nothing about
    CIFAR-10. An archive this function wrote with the same sizes and seed (``generated.json``
    beside it) is reused; any other archive in ``data_dir`` is never overwritten.

    Returns:
      The archive's path.
    """
    from jaxhfc.datasets.core import CIFAR10_CLASSES
    from jaxhfc.datasets.synthetic import make_synthetic

    want = {"num_train": int(num_train), "num_test": int(num_test), "seed": int(seed), "images": "synthetic"}
    path, marker = os.path.join(data_dir, CIFAR10_ARCHIVE), os.path.join(data_dir, GENERATED_MARKER)
    if os.path.exists(path):
        try:
            with open(marker) as f:
                same = json.load(f) == want
        except (OSError, ValueError):
            same = False
        if same:
            return path
        raise FileExistsError(f"{path} exists and was not generated with {want}; pass another folder "
                              "(a real or other archive is never overwritten)")
    train, test = make_synthetic(num_train=num_train, num_test=num_test, seed=seed)
    named = [Dataset(d.images, d.labels, 10, "cifar10", CIFAR10_CLASSES) for d in (train, test)]
    out = write_archive_files(data_dir, archive_files(*named), compresslevel=1)
    with open(marker, "w") as f:
        json.dump(want, f)
    return out
