"""Matplotlib figures. Only drivers import this module; each function returns a Figure and
never shows or saves it (the caller saves with ``fig.savefig``)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "to_display",
    "filter_figure",
    "curves_figure",
    "image_grid",
    "kernel_figure",
    "heatmap_figure",
]


def to_display(img: np.ndarray, *, mode: str = "clip") -> np.ndarray:
    """Map an image to [0, 1] for imshow.

    ``mode="clip"``: 0..255 scale clipped (for originals and LFC); ``"minmax"``: per-image
    min-max stretch (for HFC, which has zero mean and negatives).
    """
    img = np.asarray(img, np.float64)
    if mode == "clip":
        out = np.clip(img / 255.0, 0.0, 1.0)
    elif mode == "minmax":
        lo, hi = img.min(), img.max()
        out = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    else:
        raise ValueError(f"mode must be 'clip' or 'minmax', got {mode!r}")
    return out[..., 0] if out.shape[-1] == 1 else out


def filter_figure(image: np.ndarray, lows: np.ndarray, highs: np.ndarray, radii: Sequence[float]):
    """Original, its log-magnitude spectrum with each mask circle, and LFC / HFC per radius.

    Args:
      image: ``(H, W, C)`` float in 0..255.
      lows, highs: ``(R, H, W, C)``.
      radii: the R radii.
    """
    h, w = image.shape[:2]
    n = len(radii)
    fig, axes = plt.subplots(2, n + 1, figsize=(2.4 * (n + 1), 5.0), squeeze=False)
    gray = image.shape[-1] == 1
    cmap = "gray" if gray else None
    axes[0, 0].imshow(to_display(image), cmap=cmap)
    axes[0, 0].set_title(f"original {h}x{w}")
    spec = np.fft.fftshift(np.fft.fft2(np.asarray(image, np.float64).mean(-1)))
    axes[1, 0].imshow(np.log1p(np.abs(spec)), cmap="magma")
    axes[1, 0].set_title("log |F| and masks")
    for r in radii:
        axes[1, 0].add_patch(plt.Circle((w // 2, h // 2), r, fill=False, color="cyan", lw=0.8))
    for k, r in enumerate(radii):
        axes[0, k + 1].imshow(to_display(lows[k]), cmap=cmap)
        axes[0, k + 1].set_title(f"LFC r={r:g}")
        axes[1, k + 1].imshow(to_display(highs[k], mode="minmax"), cmap=cmap)
        axes[1, k + 1].set_title(f"HFC r={r:g} (stretched)")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def curves_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "accuracy",
    styles: Mapping[str, str] | None = None,
    ylim: tuple[float, float] | None = (0.0, 1.0),
    ax=None,
):
    """Line plot of named ``(x, y)`` curves; ``styles`` maps a name to a matplotlib format."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for name, (xs, ys) in curves.items():
        fmt = (styles or {}).get(name, "-")
        ax.plot(xs, ys, fmt, label=name, lw=1.5, ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def image_grid(rows: Sequence[Sequence[np.ndarray]], *, row_titles=None, col_titles=None, modes=None):
    """A grid of images; ``modes[c]`` is the :func:`to_display` mode of column ``c``."""
    nr, nc = len(rows), max(len(r) for r in rows) if rows else 0
    fig, axes = plt.subplots(max(nr, 1), max(nc, 1), figsize=(1.6 * max(nc, 1), 1.6 * max(nr, 1)), squeeze=False)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            mode = modes[j] if modes else "clip"
            axes[i, j].imshow(to_display(img, mode=mode), cmap="gray" if img.shape[-1] == 1 else None)
            if i == 0 and col_titles:
                axes[i, j].set_title(col_titles[j], fontsize=8)
        if row_titles:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def kernel_figure(kernels: Mapping[str, np.ndarray], *, max_kernels: int = 16, spectra: bool = True):
    """First-layer kernels (``(kh, kw, in, out)``) of several models, one row each, shown as
    RGB patches (min-max per kernel), optionally with each kernel's magnitude spectrum below."""
    names = list(kernels)
    nrows = len(names) * (2 if spectra else 1)
    fig, axes = plt.subplots(nrows, max_kernels, figsize=(0.8 * max_kernels, 0.9 * nrows + 0.4), squeeze=False)
    for m, name in enumerate(names):
        k = np.asarray(kernels[name], np.float64)
        n_out = min(k.shape[-1], max_kernels)
        for o in range(max_kernels):
            ax = axes[m * (2 if spectra else 1), o]
            ax.set_xticks([])
            ax.set_yticks([])
            if o >= n_out:
                ax.axis("off")
                continue
            kern = k[..., o]
            kern_img = kern if kern.shape[-1] == 3 else kern.mean(-1, keepdims=True)
            ax.imshow(to_display(kern_img, mode="minmax"), cmap="gray" if kern_img.shape[-1] == 1 else None)
            if o == 0:
                ax.set_ylabel(name, fontsize=7)
            if spectra:
                sax = axes[m * 2 + 1, o]
                spec = np.abs(np.fft.fftshift(np.fft.fft2(kern.mean(-1))))
                sax.imshow(spec, cmap="magma")
                sax.set_xticks([])
                sax.set_yticks([])
                if o == 0:
                    sax.set_ylabel("|F|", fontsize=7)
    fig.tight_layout()
    return fig


def heatmap_figure(maps: Mapping[str, np.ndarray], *, title: str = "", vmin=0.0, vmax=1.0, cmap="viridis"):
    """Side-by-side heat maps (e.g. Fourier sensitivity error rates), one colour scale."""
    names = list(maps)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    im = None
    for ax, name in zip(axes[0], names):
        im = ax.imshow(np.asarray(maps[name]), vmin=vmin, vmax=vmax, cmap=cmap)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig
