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
    """Line plot of named curves; ``styles`` maps a name to a matplotlib format.

    A curve is ``(x, y)``, or ``(x, y, low, high)`` to draw a band (e.g. a 95% interval over
    seeds) around the line.
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for name, curve in curves.items():
        xs, ys = curve[0], curve[1]
        fmt = (styles or {}).get(name, "-")
        (line,) = ax.plot(xs, ys, fmt, label=name, lw=1.5, ms=3)
        if len(curve) == 4 and len(xs):
            lo, hi = np.asarray(curve[2], float), np.asarray(curve[3], float)
            if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
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


# --------------------------------------------------------------------------------------
# Figures of jaxhfc.analysis (beyond the paper: prediction counts, accuracy vs radius,
# occlusion maps, spectra of perturbations)
# --------------------------------------------------------------------------------------

__all__ += [
    "prediction_counts_figure",
    "accuracy_radius_figure",
    "ring_accuracy_figure",
    "occlusion_figure",
    "perturbation_spectrum_figure",
]

_COUNT_STYLES = (
    ("low_right_high_wrong", "LFC right, HFC wrong", "-o"),
    ("low_wrong_high_right", "LFC wrong, HFC right", "-s"),
    ("both_right", "both right", "-^"),
    ("both_wrong", "both wrong", "-v"),
    ("low_right", "LFC right (total)", "--"),
    ("high_right", "HFC right (total)", ":"),
)


def prediction_counts_figure(radii: Sequence[float], counts: Mapping[str, Sequence[float]], *, title: str = "",
                             totals: bool = True):
    """The four cells of ``analysis.prediction_counts`` (and the LFC/HFC totals) over radius.

    Args:
      radii: ``(R,)`` radii.
      counts: the dict of :func:`jaxhfc.analysis.prediction_counts` for ``(R, N)`` predictions.
      totals: also draw the dashed "LFC right" / "HFC right" totals.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    r = np.asarray(radii, np.float64)
    for key, label, fmt in _COUNT_STYLES:
        if key not in counts or (not totals and key in ("low_right", "high_right")):
            continue
        ax.plot(r, np.asarray(counts[key], np.float64), fmt, label=label, lw=1.5, ms=3)
    ax.set_xlabel("radius r")
    ax.set_ylabel(f"images (of {counts['n']})" if "n" in counts else "images")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_radius_figure(radii: Sequence[float], acc_low: Sequence[float], acc_high: Sequence[float], *,
                           crossing: float | None = None, acc_orig: float | None = None, title: str = "",
                           ax=None):
    """Accuracy on LFC and HFC versions over radius, the crossing point marked.

    Args:
      radii, acc_low, acc_high: ``(R,)`` (e.g. from ``analysis.accuracy_vs_radius``).
      crossing: radius where the curves cross (a vertical line and a dot), or None.
      acc_orig: accuracy on the original images (a horizontal line), or None.
      ax: draw into this axes instead of a new figure.
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.0))
    r = np.asarray(radii, np.float64)
    lo, hi = np.asarray(acc_low, np.float64), np.asarray(acc_high, np.float64)
    ax.plot(r, lo, "-o", ms=3, label="LFC")
    ax.plot(r, hi, "-s", ms=3, label="HFC")
    if acc_orig is not None:
        ax.axhline(acc_orig, color="gray", ls=":", lw=1, label=f"original {acc_orig:.3f}")
    if crossing is not None:
        y = float(np.interp(crossing, r, lo))
        ax.axvline(crossing, color="k", ls="--", lw=0.8)
        ax.plot([crossing], [y], "ko", ms=5, label=f"crossing r={crossing:.2f}")
    ax.set_xlabel("radius r")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def ring_accuracy_figure(r_in: Sequence[float], r_out: Sequence[float], acc: Sequence[float], *,
                         acc_orig: float | None = None, title: str = ""):
    """Bar chart of accuracy on band-pass rings ``[r_in, r_out)`` (``analysis.ring_accuracy``)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    a, b = np.asarray(r_in, np.float64), np.asarray(r_out, np.float64)
    ax.bar((a + b) / 2, np.asarray(acc, np.float64), width=(b - a) * 0.9, color="tab:purple", alpha=0.8)
    if acc_orig is not None:
        ax.axhline(acc_orig, color="gray", ls=":", lw=1, label=f"original {acc_orig:.3f}")
        ax.legend(fontsize=7)
    ax.set_xlabel("ring (radius)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _occlusion_pixels(occ: np.ndarray, h: int, w: int, patch, stride) -> np.ndarray:
    """Per pixel: mean probability over the patch positions covering it (NaN if none)."""
    ph, pw = (patch, patch) if np.ndim(patch) == 0 else tuple(patch)
    sh, sw = (stride, stride) if np.ndim(stride) == 0 else tuple(stride)
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for a in range(occ.shape[0]):
        for b in range(occ.shape[1]):
            total[a * sh:a * sh + ph, b * sw:b * sw + pw] += occ[a, b]
            count[a * sh:a * sh + ph, b * sw:b * sw + pw] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def occlusion_figure(images: np.ndarray, maps: np.ndarray, *, patch, stride, titles: Sequence[str] | None = None,
                     cmap: str = "jet", alpha: float = 0.5):
    """Images (top row) and their occlusion maps overlaid (bottom row).

    Args:
      images: ``(N, H, W, C)`` unit-scale images.
      maps: ``(N, nh, nw)`` true-class probabilities from ``analysis.occlusion_map``; each
        pixel shows the mean over the patch positions that cover it (low = important).
      patch, stride: as passed to ``occlusion_map``.
      titles: optional per-image titles.
    """
    images = np.asarray(images, np.float64)
    maps = np.asarray(maps, np.float64)
    n, h, w = images.shape[:3]
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n + 0.8, 4.0), squeeze=False)
    im = None
    for k in range(n):
        img = np.clip(images[k], 0.0, 1.0)
        img = img[..., 0] if img.shape[-1] == 1 else img
        gray = img.ndim == 2
        axes[0, k].imshow(img, cmap="gray" if gray else None, vmin=0, vmax=1)
        axes[1, k].imshow(img, cmap="gray" if gray else None, vmin=0, vmax=1)
        im = axes[1, k].imshow(_occlusion_pixels(maps[k], h, w, patch, stride), cmap=cmap, alpha=alpha,
                               vmin=0.0, vmax=1.0)
        if titles:
            axes[0, k].set_title(titles[k], fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 0].set_ylabel("p(true class)", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes[1].tolist(), shrink=0.8)
    return fig


def perturbation_spectrum_figure(spectra: Mapping[str, np.ndarray],
                                 shares: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None, *,
                                 title: str = "", log: bool = True):
    """Radially averaged power spectra of perturbations and, optionally, energy share outside r.

    Args:
      spectra: name -> ``(K,)`` spectrum (``analysis.perturbation_spectrum``), ring k at k.
      shares: name -> ``(radii, share)`` (``analysis.energy_share_outside``).
      log: log-scale power axis.
    """
    ncols = 2 if shares else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.0 * ncols, 3.8), squeeze=False)
    ax = axes[0, 0]
    for name, s in spectra.items():
        s = np.asarray(s, np.float64)
        ax.plot(np.arange(s.size), s, "-o", ms=3, label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("frequency ring k (k <= distance < k+1)")
    ax.set_ylabel("power")
    ax.set_title("radial power spectrum")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if shares:
        ax = axes[0, 1]
        for name, (r, sh) in shares.items():
            ax.plot(np.asarray(r, np.float64), np.asarray(sh, np.float64), "-o", ms=3, label=name)
        ax.set_xlabel("radius r")
        ax.set_ylabel("share of energy at distance >= r")
        ax.set_ylim(0.0, 1.02)
        ax.set_title("energy outside r")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
