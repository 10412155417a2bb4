"""Makes docs/synthetic_spectrum.png: the radial power spectrum of the built-in synthetic data
(and of the previous generator) beside the natural-image law P(f) ~ f^-2, plus sample images
and their LFC/HFC at r = 8.

    python docs/make_synthetic_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxhfc import datasets, fourier  # noqa: E402
from jaxhfc.datasets import synthetic  # noqa: E402


def main(out: Path = Path(__file__).with_name("synthetic_spectrum.png")) -> None:
    new = datasets.load_dataset("synthetic", split="train", num_train=2000, seed=0).images
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw=dict(width_ratios=(1.1, 1)))
    ax = axes[0]
    radii, power = synthetic.radial_power_spectrum(new)
    ax.loglog(radii, power, "-o", ms=3, label=f"synthetic: slope {synthetic.spectrum_slope(new):.2f}")
    r = np.arange(1, 17)
    ref = power[1] * (r / 2.0) ** -synthetic.NATURAL_SLOPE
    ax.loglog(r, ref, "k:", label="natural images: $f^{-2}$")
    for rr in (4, 8, 12, 16):
        ax.axvline(rr, color="grey", lw=0.5)
    ax.axvspan(12.5, 15.5, color="C3", alpha=0.12, label="high-frequency class cue band")
    ax.set_xlabel("radius (cycles per image)")
    ax.set_ylabel("mean power")
    ax.set_title("Radial power spectrum (2,000 training images)")
    ax.legend(fontsize=8)

    ax = axes[1]
    x = new[:4].astype(np.float32)
    low = np.asarray(fourier.low_pass(x, 8))
    high = np.asarray(fourier.high_pass(x, 8))
    rows = [x / 255, np.clip(low / 255, 0, 1), np.clip(high / np.abs(high).max() * 0.5 + 0.5, 0, 1)]
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([16, 48, 80])
    ax.set_yticklabels(["image", "LFC r=8", "HFC r=8"])
    ax.set_title("Samples")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
