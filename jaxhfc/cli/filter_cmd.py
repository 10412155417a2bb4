"""``jaxhfc filter``: LFC/HFC images of a picture or an .npy batch at several radii, plus a figure.

Driver code: it parses arguments, reads and writes files and prints.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from jaxhfc.cli._errors import CLIError

log = logging.getLogger("jaxhfc")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# --------------------------------------------------------------------------------------
# filter
# --------------------------------------------------------------------------------------


def default_photo() -> Path:
    """A real photograph shipped with matplotlib's sample data (Grace Hopper, 600x512)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.exists():
        raise CLIError(f"matplotlib's sample photo is missing ({path}); pass an image path instead")
    return path


def read_images(path: Path) -> np.ndarray:
    """Read an image file (PNG/JPEG/...) or an .npy array as float32 ``(N, H, W, C)`` in 0..255.

    An .npy file may hold ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``; uint8 values are taken
    as 0..255, float values in [0, 1] are scaled to 0..255, other floats are used as they are.
    """
    if not path.exists():
        raise CLIError(f"input file not found: {path} (expected a PNG/JPEG image or an .npy array)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
            raise CLIError(f"could not read {path} as a numpy .npy array: {err}") from None
        if arr.dtype.kind not in "uif":
            raise CLIError(f"{path}: expected a numeric image array, got dtype {arr.dtype}")
        if arr.ndim == 2:
            arr = arr[None, :, :, None]
        elif arr.ndim == 3:
            arr = arr[None]
        elif arr.ndim != 4:
            raise CLIError(f"{path}: expected shape (H, W), (H, W, C) or (N, H, W, C), got {arr.shape}")
        if arr.dtype.kind == "f" and arr.size and float(np.nanmax(arr)) <= 1.0 and float(np.nanmin(arr)) >= 0.0:
            arr = arr * 255.0
        if not np.all(np.isfinite(arr)):
            raise CLIError(f"{path}: the array contains NaN or infinite values")
        return arr.astype(np.float32)
    if suffix not in IMAGE_SUFFIXES:
        raise CLIError(f"{path}: unsupported file type {suffix!r}; expected .npy or one of {sorted(IMAGE_SUFFIXES)}")
    from PIL import Image, UnidentifiedImageError

    from jaxhfc.datasets import image_array

    try:
        with Image.open(path) as img:
            arr = image_array(img, 3)
    except (UnidentifiedImageError, OSError) as err:
        raise CLIError(f"could not read {path} as an image: {err}") from None
    except ValueError as err:
        raise CLIError(f"{path}: {err}") from None
    return arr[None]


def _auto_radii(h: int, w: int) -> list[float]:
    scale = min(h, w) / 32.0
    return [float(round(r * scale, 2)) for r in (4, 8, 12, 16)]


def _save_png(path: Path, img: np.ndarray, mode: str) -> None:
    from PIL import Image

    from jaxhfc.plotting import to_display

    disp = to_display(img, mode=mode)
    Image.fromarray((np.clip(disp, 0, 1) * 255).round().astype(np.uint8)).save(path)


def cmd_filter(args: argparse.Namespace) -> int:
    from jaxhfc import fourier
    from jaxhfc.results import write_json

    path = Path(args.input) if args.input else default_photo()
    images = read_images(path)
    if args.resize:
        from PIL import Image

        images = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).resize((args.resize, args.resize), Image.BICUBIC),
                    np.float32,
                )
                for im in images
            ]
        )
    n, h, w, c = images.shape
    radii = args.radius or _auto_radii(h, w)
    for r in radii:
        if not np.isfinite(r) or r < 0:
            raise CLIError(f"--radius must be finite and >= 0, got {r}")
    low, high = fourier.split(images, np.asarray(radii, np.float32))
    low, high = np.asarray(low), np.asarray(high)  # (R, N, H, W, C)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "filtered.npz", images=images, low=low, high=high, radii=np.asarray(radii))
    for k, r in enumerate(radii):
        for i in range(min(n, args.max_png)):
            suffix = f"_{i}" if n > 1 else ""
            _save_png(out / f"lfc_r{r:g}{suffix}.png", low[k, i], "clip")
            _save_png(out / f"hfc_r{r:g}{suffix}.png", high[k, i], "minmax")
    from jaxhfc.plotting import filter_figure

    fig = filter_figure(images[0], low[:, 0], high[:, 0], radii)
    fig.savefig(out / "figure.png", dpi=110)
    kept = {f"{r:g}": fourier.kept_count(h, w, r) for r in radii}
    write_json(
        out / "summary.json",
        {
            "input": str(path),
            "shape": [n, h, w, c],
            "radii": radii,
            "frequencies_kept_per_channel": kept,
            "total_frequencies": h * w,
            "hfc_energy_share": {f"{r:g}": float(np.mean(np.asarray(fourier.energy_outside(images, r)))) for r in radii},
        },
    )
    print(f"filtered {n} image(s) of {h}x{w}x{c} from {path} at radii {', '.join(f'{r:g}' for r in radii)}")
    for r in radii:
        print(f"  r={r:g}: low pass keeps {kept[f'{r:g}']}/{h * w} frequencies per channel")
    print(f"wrote {out / 'figure.png'}, {out / 'filtered.npz'} and PNGs to {out}")
    return 0


def add_filter_parser(sub) -> None:
    p = sub.add_parser(
        "filter",
        help="split images into low- and high-frequency components and plot them",
        description="Split an image (PNG/JPEG) or an .npy batch into LFC and HFC at the given radii "
        "(the paper's filter), writing filtered.npz, PNGs, summary.json and figure.png.",
    )
    p.add_argument("input", nargs="?", help="image or .npy file (default: matplotlib's Grace Hopper photo)")
    p.add_argument("--radius", "-r", type=float, nargs="+", help="radii (default: 4 8 12 16 scaled to min(H, W)/32)")
    p.add_argument("--resize", type=int, default=None, help="resize images to SIZE x SIZE first (e.g. 32, CIFAR's size)")
    p.add_argument("--out", "-o", default="runs/filter", help="output folder (default: runs/filter)")
    p.add_argument("--max-png", type=int, default=8, help="write PNGs for at most this many images of a batch")
    p.set_defaults(func=cmd_filter)
