"""``folder:PATH`` datasets: ``PATH/train/<class>/*.png|jpg|...`` and ``PATH/test/<class>/...``
(``val``/``validation`` when there is no ``test``): one sub-folder per class, named after the
class; the classes are the train sub-folders in sorted order. 16-bit and float images are
brought to 8 bits on their own scale (:func:`image_array`), and EXIF-rotated photos are read
upright.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from jaxhfc.datasets.specs import corrupt, not_found, resize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def _split_dir(root: str, split: str) -> str:
    candidates = ("train",) if split == "train" else ("test", "val", "validation")
    for c in candidates:
        d = os.path.join(root, c)
        if os.path.isdir(d):
            return d
    raise not_found(
        f"{os.path.join(root, candidates[0])}: no such folder; expected {root}/train/ and {root}/test/, "
        "each with one sub-folder of images per class"
    )


def _class_dirs(split_dir: str) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def read(root: str, split: str, channels: int, size: Optional[int]):
    if not os.path.isdir(root):
        raise not_found(f"{root}: no such folder; expected {root}/train/<class>/ and {root}/test/<class>/ image folders")
    train_dir = _split_dir(root, "train")
    classes = _class_dirs(train_dir)
    if not classes:
        raise corrupt(f"{train_dir}: no class sub-folders; expected one sub-folder of images per class")
    split_dir = train_dir if split == "train" else _split_dir(root, split)
    present = _class_dirs(split_dir)
    extra = sorted(set(present) - set(classes))
    if extra:
        raise corrupt(f"{split_dir}: class folders {extra} are not in {train_dir} (classes {classes})")
    from PIL import Image, UnidentifiedImageError

    images, labels, shape, first = [], [], None, None
    for label, cls in enumerate(classes):
        d = os.path.join(split_dir, cls)
        if not os.path.isdir(d):
            continue  # a class without test images
        files = sorted(f for f in os.listdir(d) if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."))
        if not files:
            raise corrupt(f"{d}: empty class folder; expected image files ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            p = os.path.join(d, f)
            try:
                with Image.open(p) as im:
                    arr = np.clip(np.rint(image_array(im, channels)), 0, 255).astype(np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as err:
                raise corrupt(f"{p}: cannot read as an image ({err})") from None
            if size is not None:
                arr = resize(arr, size)
            if shape is None:
                shape, first = arr.shape, p
            elif arr.shape != shape:
                raise corrupt(
                    f"{p}: image is {arr.shape[1]}x{arr.shape[0]} but {first} is {shape[1]}x{shape[0]}; "
                    "expected one size for all images (or add ?size=N to the spec to resize)"
                )
            images.append(arr)
            labels.append(label)
    if not images:
        raise corrupt(f"{split_dir}: no images; expected one sub-folder of images per class")
    return np.stack(images), np.asarray(labels, np.int64), classes, split_dir


# ---- TFDS -----------------------------------------------------------------------------
