"""Datasets that are not jaxhfc's: any TFDS image dataset, ``.npz`` files, image folders.

:func:`jaxhfc.data.load_dataset` hands every name with one of these prefixes to
:func:`load_split`; the experiment drivers and the ``jaxhfc`` command take the same names
(``--dataset npz:digits.npz``).

Spec syntax (``KIND:TARGET[?OPTIONS]``)
  * ``tfds:NAME`` — a TFDS image-classification dataset (``tfds:cifar100``,
    ``tfds:svhn_cropped``, ``tfds:imagenette/160px-v2``) from a *prepared* TFDS data dir
    (``data_dir``, default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), read through
    ``tfds.data_source`` (``array_record`` files: no TensorFlow needed). The image and label
    features are the builder's ``supervised_keys`` (else ``image``/``label``); class names
    are the ``ClassLabel`` names. A dataset without a ``test`` split uses ``validation``.
  * ``npz:PATH`` — a numpy ``.npz`` with the keras keys ``x_train``, ``y_train``,
    ``x_test``, ``y_test``: images ``uint8`` ``(N, H, W)`` or ``(N, H, W, C)`` with C in
    {1, 3}, labels integer ``(N,)`` or ``(N, 1)`` in ``[0, K)``. An optional ``class_names``
    key (``K`` strings) names the classes; without it they are ``"0"``, ``"1"``, ...
  * ``folder:PATH`` — ``PATH/train/<class>/*.png|jpg|...`` and ``PATH/test/<class>/...``
    (``val``/``validation`` when there is no ``test``): one sub-folder per class, named
    after the class; the classes are the train sub-folders in sorted order. 16-bit and
    float images are brought to 8 bits on their own scale (:func:`image_array`).

Options (after ``?``, joined by ``&``):
  * ``channels=3`` (default): grey images are repeated to 3 channels, so every jaxhfc model
    and the CIFAR-10 input normalisation work. ``channels=1`` keeps one channel (colour
    images become luminance, ITU-R 601); the jaxhfc models take any channel count when
    ``normalize=False``.
  * ``size=N``: resize every image to ``N x N`` (PIL bicubic). Without it all images of a
    source must share one size; any size works (the model input and the analyses' radius
    defaults follow the image size).

Bad data raises :class:`jaxhfc.data.DatasetNotFoundError` (nothing at the path) or
:class:`jaxhfc.data.CorruptDatasetError` (wrong keys, dtype or shape, labels out of range,
empty class folders, unreadable images), each a one-line message naming the file and what
was expected. Loading only reads; it writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import zipfile
from typing import Optional
from urllib.parse import parse_qsl

import numpy as np

__all__ = [
    "BUILTIN",
    "KINDS",
    "Spec",
    "dataset_arg",
    "dataset_slug",
    "image_array",
    "is_spec",
    "load_split",
    "parse_spec",
]

logger = logging.getLogger(__name__)

#: Dataset names built into jaxhfc (handled by :func:`jaxhfc.data.load_dataset` itself).
BUILTIN = ("synthetic", "cifar10", "fashion_mnist", "mnist")
#: Spec prefixes handled here.
KINDS = ("tfds", "npz", "folder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
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


def dataset_arg(text: str) -> str:
    """``argparse`` type of a ``--dataset`` flag: a built-in name or a valid spec. The path
    of an ``npz:``/``folder:`` spec is made absolute, so a run's recorded config finds its
    data from any working directory (``jaxhfc eval``, ``jaxhfc analyze``)."""
    if text in BUILTIN:
        return text
    try:
        spec = parse_spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if spec.kind == "tfds":
        return text
    _, _, query = text.partition("?")
    return f"{spec.kind}:{os.path.abspath(spec.target)}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_split(
    name: str,
    *,
    split: str,
    data_dir: Optional[str] = None,
    source: str = "auto",
    seed: int = 0,
    num_train: Optional[int] = None,
    num_test: Optional[int] = None,
):
    """One split of a spec dataset as a :class:`jaxhfc.data.Dataset` (uint8 NHWC).

    Arguments as :func:`jaxhfc.data.load_dataset`; ``data_dir`` is the TFDS data dir of
    ``tfds:`` specs (ignored by ``npz:``/``folder:``, whose spec holds the path); ``source``
    must be ``"auto"`` (or ``"tfds"`` for ``tfds:``); ``num_train``/``num_test`` draw a
    class-balanced subset with ``seed`` (a size beyond the split's keeps the whole split, so
    the drivers' quick sizes work on small datasets).

    Raises:
      ValueError: a bad spec, split, source or size.
      DatasetNotFoundError / CorruptDatasetError: see the module docstring.
    """
    from jaxhfc import data

    spec = parse_spec(name)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if source not in ("auto", spec.kind):
        raise ValueError(f"dataset {name!r} has no source {source!r}; use 'auto'")
    n = num_train if split == "train" else num_test
    if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
        raise ValueError(f"num_{split} must be a positive int or None, got {n!r}")
    if spec.kind == "npz":
        images, labels, names, where = _read_npz(spec.target, split)
    elif spec.kind == "folder":
        images, labels, names, where = _read_folder(spec.target, split, spec.channels, spec.size)
    else:
        images, labels, names, where = _read_tfds(spec.target, split, data_dir, spec.size)
    images = _adapt(images, spec, where)
    ds = data.Dataset(np.ascontiguousarray(images), labels.astype(np.int32), len(names), dataset_slug(name),
                      tuple(names))
    logger.info("read %s %s: %d images %s, %d classes", name, split, len(ds), images.shape[1:], len(names))
    if n is not None and n < len(ds):
        ds = data.balanced_subset(ds, int(n), seed=seed)
    elif n is not None and n > len(ds):
        logger.warning("%s: num_%s=%d but the %s split has %d images; using all of them", name, split, n, split, len(ds))
    return ds


def _corrupt(msg: str):
    from jaxhfc import data

    return data.CorruptDatasetError(msg)


def _not_found(msg: str):
    from jaxhfc import data

    return data.DatasetNotFoundError(msg)


def _adapt(images: np.ndarray, spec: Spec, where: str) -> np.ndarray:
    """NHWC uint8 with ``spec.channels`` channels and ``spec.size`` (when given)."""
    if images.ndim == 3:
        images = images[..., None]
    c = images.shape[-1]
    if c not in (1, 3):
        raise _corrupt(f"{where}: images must have 1 (grey) or 3 (RGB) channels, got shape {images.shape[1:]}")
    if spec.channels == 3 and c == 1:
        images = np.repeat(images, 3, axis=-1)
    elif spec.channels == 1 and c == 3:
        images = np.clip(np.rint(images.astype(np.float64) @ _LUMA), 0, 255).astype(np.uint8)[..., None]
    if spec.size is not None and images.shape[1:3] != (spec.size, spec.size):
        images = np.stack([_resize(im, spec.size) for im in images])
    return images


#: PIL modes of one high-bit-depth channel, and the value that means full intensity.
_WIDE_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}


def image_array(image, channels: int = 3) -> np.ndarray:
    """A PIL image as a float32 ``(H, W, channels)`` array on the 0..255 scale of the paper's filters.

    8-bit images (grey, RGB, RGBA without its alpha, palette, CMYK, ...) keep their values.
    16-bit grey images (PNG/TIFF ``I;16``) are scaled by 255/65535, not clipped at 255 (PIL's
    ``convert("L")`` clips them); 32-bit integer (``I``) and float (``F``) images keep values
    already in 0..255, scale 0..1 floats and 0..65535 integers, and anything else is an error.
    ``channels`` is 3 (grey repeated) or 1 (colour to ITU-R 601 luminance, as PIL's ``"L"``).
    An EXIF orientation tag (photos from phones and cameras) is applied first, so the array is
    the picture as viewers show it, the same way up as untagged images of the same scene.

    Raises:
        ValueError: values a 32-bit or float image cannot hold on a known scale (negative,
            NaN, or above 65535), naming the range found.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    from PIL import ImageOps

    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation (exif_transpose copies even when upright)
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in _WIDE_MODES or mode in ("I", "F"):
        arr = np.asarray(image).astype(np.float64)
        if mode in _WIDE_MODES:
            arr = arr * (255.0 / _WIDE_MODES[mode])
        else:  # 32-bit integer or float: the scale follows from the values
            lo, hi = (float(np.min(arr)), float(np.max(arr))) if arr.size else (0.0, 0.0)
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 65535:
                raise ValueError(f"a {mode!r} ({'float' if mode == 'F' else '32-bit integer'}) image with values "
                                 f"in [{lo:.6g}, {hi:.6g}]; expected 0..1, 0..255 or 0..65535")
            if mode == "F" and hi <= 1.0:
                arr = arr * 255.0
            elif hi > 255:
                arr = arr * (255.0 / 65535.0)
        arr = arr[..., None]
        return np.repeat(arr, 3, axis=-1).astype(np.float32) if channels == 3 else arr.astype(np.float32)
    arr = np.asarray(image.convert("L" if channels == 1 else "RGB"), np.float32)
    return arr[..., None] if channels == 1 else arr


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """One uint8 image ``(H, W)`` or ``(H, W, C)`` resized to ``size x size`` (PIL bicubic)."""
    from PIL import Image

    grey = image.ndim == 2 or image.shape[-1] == 1
    pil = Image.fromarray(image.reshape(image.shape[:2]) if grey else image)
    out = np.asarray(pil.resize((size, size), Image.BICUBIC), np.uint8)
    return out.reshape(size, size, *image.shape[2:]) if image.ndim == 3 else out


def _check_labels(y: np.ndarray, n_images: int, num_classes: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise _corrupt(f"{where}: labels must be integers of shape (N,) or (N, 1), got {y.dtype} {y.shape}")
    if y.shape[0] != n_images:
        raise _corrupt(f"{where}: {n_images} images but {y.shape[0]} labels; expected one label per image")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise _corrupt(f"{where}: labels must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


# ---- npz ------------------------------------------------------------------------------


def _read_npz(path: str, split: str):
    from jaxhfc import data

    if not os.path.isfile(path):
        raise _not_found(
            f"{path}: no such .npz file; expected a numpy .npz with keys {', '.join(_NPZ_KEYS)} (keras convention)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in _NPZ_KEYS if k not in keys]
            if missing:
                raise _corrupt(
                    f"{path}: missing keys {missing} (has {sorted(keys)}); expected {', '.join(_NPZ_KEYS)} "
                    "(keras .npz convention), optionally class_names"
                )
            x = z[f"x_{split}"]
            y = z[f"y_{split}"]
            y_all = [z["y_train"], z["y_test"]]
            names = z["class_names"] if "class_names" in keys else None
    except data.CorruptDatasetError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise _corrupt(f"{path}: cannot read as a numpy .npz of plain arrays ({type(err).__name__}: {err})") from None
    where = f"{path}[x_{split}]"
    if x.dtype != np.uint8:
        raise _corrupt(f"{where}: images must be uint8 (0..255), got dtype {x.dtype}")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise _corrupt(f"{where}: images must have shape (N, H, W) or (N, H, W, C) with C in (1, 3), got {x.shape}")
    if x.shape[0] == 0:
        raise _corrupt(f"{where}: the {split} split is empty")
    for k, yy in zip(("y_train", "y_test"), y_all):
        yy = np.asarray(yy)
        if yy.size and not np.issubdtype(yy.dtype, np.integer):
            raise _corrupt(f"{path}[{k}]: labels must be integers, got dtype {yy.dtype}")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US" or names.size == 0:
            raise _corrupt(f"{path}[class_names]: expected a 1-D array of strings, got {names.dtype} {names.shape}")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        k = len(names)
    else:
        k = int(max(int(np.max(yy)) if np.size(yy) else 0 for yy in y_all)) + 1
        names = [str(i) for i in range(k)]
    labels = _check_labels(y, x.shape[0], k, f"{path}[y_{split}]")
    return x, labels, names, where


# ---- image folders ----------------------------------------------------------------------


def _split_dir(root: str, split: str) -> str:
    candidates = ("train",) if split == "train" else ("test", "val", "validation")
    for c in candidates:
        d = os.path.join(root, c)
        if os.path.isdir(d):
            return d
    raise _not_found(
        f"{os.path.join(root, candidates[0])}: no such folder; expected {root}/train/ and {root}/test/, "
        "each with one sub-folder of images per class"
    )


def _class_dirs(split_dir: str) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _read_folder(root: str, split: str, channels: int, size: Optional[int]):
    if not os.path.isdir(root):
        raise _not_found(f"{root}: no such folder; expected {root}/train/<class>/ and {root}/test/<class>/ image folders")
    train_dir = _split_dir(root, "train")
    classes = _class_dirs(train_dir)
    if not classes:
        raise _corrupt(f"{train_dir}: no class sub-folders; expected one sub-folder of images per class")
    split_dir = train_dir if split == "train" else _split_dir(root, split)
    present = _class_dirs(split_dir)
    extra = sorted(set(present) - set(classes))
    if extra:
        raise _corrupt(f"{split_dir}: class folders {extra} are not in {train_dir} (classes {classes})")
    from PIL import Image, UnidentifiedImageError

    images, labels, shape, first = [], [], None, None
    for label, cls in enumerate(classes):
        d = os.path.join(split_dir, cls)
        if not os.path.isdir(d):
            continue  # a class without test images
        files = sorted(f for f in os.listdir(d) if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."))
        if not files:
            raise _corrupt(f"{d}: empty class folder; expected image files ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            p = os.path.join(d, f)
            try:
                with Image.open(p) as im:
                    arr = np.clip(np.rint(image_array(im, channels)), 0, 255).astype(np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as err:
                raise _corrupt(f"{p}: cannot read as an image ({err})") from None
            if size is not None:
                arr = _resize(arr, size)
            if shape is None:
                shape, first = arr.shape, p
            elif arr.shape != shape:
                raise _corrupt(
                    f"{p}: image is {arr.shape[1]}x{arr.shape[0]} but {first} is {shape[1]}x{shape[0]}; "
                    "expected one size for all images (or add ?size=N to the spec to resize)"
                )
            images.append(arr)
            labels.append(label)
    if not images:
        raise _corrupt(f"{split_dir}: no images; expected one sub-folder of images per class")
    return np.stack(images), np.asarray(labels, np.int64), classes, split_dir


# ---- TFDS -----------------------------------------------------------------------------


def _read_tfds(name: str, split: str, data_dir: Optional[str], size: Optional[int]):
    from jaxhfc import data

    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("reading tfds: datasets needs tensorflow-datasets: pip install jaxhfc") from err
    data_dir = os.path.expanduser(str(data_dir)) if data_dir is not None else data.default_data_dir()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # tfds raises its own DatasetNotFoundError/ValueError/KeyError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _not_found(f"tfds:{name}: no such TFDS dataset ({first}); expected a registered TFDS name") from None
    feats = builder.info.features
    keys = builder.info.supervised_keys
    img_key, lab_key = keys if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys) \
        else ("image", "label")
    if img_key not in feats or lab_key not in feats or not isinstance(feats[img_key], tfds.features.Image) \
            or not isinstance(feats[lab_key], tfds.features.ClassLabel):
        raise _corrupt(
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
            raise _not_found(
                f"{where}: not prepared; prepare it once where there is a network with "
                f"`pip install jaxhfc[tf]` and `python -c \"import tensorflow_datasets as tfds; "
                f"tfds.builder('{name}', data_dir='{data_dir}', file_format='array_record').download_and_prepare()\"`"
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _corrupt(f"{where}: cannot read split {tfds_split!r} ({first}); expected array_record files "
                       f"(splits {splits})") from None
    n = len(src)
    if n == 0:
        raise _corrupt(f"{where}: split {tfds_split!r} is empty")
    try:  # one batched read where the source supports it (tfds' mock does not)
        examples = list(src.__getitems__(list(range(n))))
    except (AttributeError, TypeError, NotImplementedError):
        examples = [src[i] for i in range(n)]
    try:
        imgs = [np.asarray(e[img_key]) for e in examples]
        if size is not None:
            imgs = [_resize(a, size) for a in imgs]
        labels = np.asarray([int(e[lab_key]) for e in examples], np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise _corrupt(f"{where}: unexpected examples ({err}); expected {img_key!r} and {lab_key!r} features") from None
    shapes = {a.shape for a in imgs}
    if len(shapes) != 1:
        raise _corrupt(f"{where}: images have {len(shapes)} different shapes (e.g. {sorted(shapes)[:2]}); "
                       "add ?size=N to the spec to resize them to N x N")
    images = np.stack(imgs)
    if images.dtype != np.uint8:
        raise _corrupt(f"{where}: images must be uint8, got {images.dtype}")
    # TFDS shuffles examples when preparing; a string `id` feature restores the source order.
    ids = [e.get("id") if hasattr(e, "get") else None for e in examples]
    if all(isinstance(i, (str, bytes)) for i in ids):
        order = np.argsort(np.asarray([i.decode() if isinstance(i, bytes) else i for i in ids]), kind="stable")
        images, labels = images[order], labels[order]
    names = list(feats[lab_key].names)
    labels = _check_labels(labels, len(images), len(names), where)
    return images, labels, names, where


