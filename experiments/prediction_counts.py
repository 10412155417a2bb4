"""Fig. 1/2: for a trained model, how many test images are classified right from their LFC
and from their HFC, at every radius 0..16 and the corner distance.

Paper claim: there are test images whose HFC alone is classified right while their LFC (which
looks like the image to a person) is classified wrong (about 600 of 10,000 on CIFAR-10). A
public reproduction (common ResNet18, 95.33%) found the opposite cell ("LFC right, HFC
wrong") far more common for r >= 8; both are shown beside ours, as fractions of the test set.

    python -m experiments.prediction_counts [--quick] [--dataset synthetic|cifar10]
"""

from __future__ import annotations

import math

import numpy as np

from experiments.common import Claim, Context, main_for, save_figure, write_artefact

NAME = "prediction_counts"
#: Public reproduction (PAPER.md), counts out of 10,000:
#: r: (LFC right HFC wrong, LFC wrong HFC right, both right, both wrong).
REFERENCE = {
    0: (118, 8651, 882, 349), 2: (486, 4785, 1072, 3657), 4: (1113, 2543, 796, 5548),
    5: (1469, 1502, 689, 6340), 6: (1961, 728, 611, 6700), 8: (3909, 384, 620, 5087),
    12: (7547, 229, 774, 1450), 16: (8437, 150, 850, 563),
}
CELLS = ("low_right_high_wrong", "low_wrong_high_right", "both_right", "both_wrong")
SHORT = {"low_right_high_wrong": "L+H-", "low_wrong_high_right": "L-H+", "both_right": "L+H+", "both_wrong": "L-H-"}


def run(ctx: Context) -> dict:
    from jaxhfc import analysis, fourier, plotting

    model = ctx.vanilla()
    cfg = model.config
    _, test = ctx.datasets(cfg)
    h, w = test.images.shape[1:3]
    corner = math.ceil(fourier.corner_radius(h, w) + 1e-9)
    radii = np.array(list(range(0, 17)) + [corner], np.float32)
    preds = analysis.radius_predictions(model.logits_fn(), test.images, radii,
                                        scaling=cfg.scaling, batch_size=ctx.pick(full=1000, quick=256, tiny=64),
                                        mesh=ctx.mesh())
    counts = analysis.prediction_counts(preds["pred_low"], preds["pred_high"], test.labels, pred_orig=preds["pred_orig"])
    n = counts["n"]
    rows = []
    for k, r in enumerate(radii):
        row = {"r": int(r)}
        for c in CELLS:
            row[f"{SHORT[c]} ours"] = int(counts[c][k])
        row["LFC acc"] = float(counts["low_right"][k]) / n
        row["HFC acc"] = float(counts["high_right"][k]) / n
        ref = REFERENCE.get(int(r))
        for c, v in zip(CELLS, ref or (None,) * 4):
            row[f"{SHORT[c]} repro %"] = None if v is None else 100.0 * v / 10000
        for c in CELLS:
            row[f"{SHORT[c]} ours %"] = 100.0 * row[f"{SHORT[c]} ours"] / n
        row["agree with original (LFC)"] = int(counts["low_agree"][k])
        row["agree with original (HFC)"] = int(counts["high_agree"][k])
        rows.append(row)

    folder = ctx.artefact_dir(NAME)
    figs = []
    long = {"low_right_high_wrong": "LFC right, HFC wrong", "low_wrong_high_right": "LFC wrong, HFC right",
            "both_right": "both right", "both_wrong": "both wrong"}
    curves = {long[c]: (radii.tolist(), (counts[c] / n).tolist()) for c in CELLS}
    fig = plotting.curves_figure(curves, title=f"prediction counts vs radius (n={n})", xlabel="radius r",
                                 ylabel="fraction of test images")
    figs.append(save_figure(fig, folder / "counts.png"))
    # examples: HFC right, LFC wrong, at the radius where that cell is largest (r in 4..16)
    mid = [k for k, r in enumerate(radii) if 4 <= r <= 16]
    k_best = max(mid, key=lambda k: counts["low_wrong_high_right"][k])
    r_best = float(radii[k_best])
    idx = analysis.cell_indices(preds["pred_low"][k_best], preds["pred_high"][k_best], test.labels)[:8]
    if len(idx):
        imgs = test.images[idx].astype(np.float32)
        low, high = (np.asarray(a) for a in fourier.split(imgs, r_best))
        names = test.class_names
        grid = [[imgs[i], low[i], high[i]] for i in range(len(idx))]
        titles = [f"{names[test.labels[j]]}: L->{names[preds['pred_low'][k_best][j]]}, H->{names[preds['pred_high'][k_best][j]]}"
                  for j in idx]
        fig = plotting.image_grid(grid, row_titles=titles, col_titles=["original", f"LFC r={r_best:g}", f"HFC r={r_best:g}"],
                                  modes=["clip", "clip", "minmax"])
        figs.append(save_figure(fig, folder / "examples_hfc_right_lfc_wrong.png"))
    best = int(counts["low_wrong_high_right"][k_best])
    claims = [
        Claim(NAME, "some test images are classified right from their HFC and wrong from their LFC "
                    "(paper: about 6% on CIFAR-10)", best > 0,
              f"max over r in 4..16: {best}/{n} ({100 * best / n:.1f}%) at r={r_best:g}"),
        Claim(NAME, "(public reproduction's counterpoint) 'LFC right, HFC wrong' is the more common cell for r >= 8",
              all(counts["low_right_high_wrong"][k] >= counts["low_wrong_high_right"][k] for k, r in enumerate(radii) if r >= 8),
              "compare the L+H- and L-H+ columns for r >= 8"),
    ]
    np.savez_compressed(folder / "predictions.npz", **{k: v for k, v in preds.items()}, labels=test.labels)
    cols = ["r"] + [f"{SHORT[c]} {s}" for c in CELLS for s in ("ours", "ours %", "repro %")] + ["LFC acc", "HFC acc"]
    write_artefact(ctx, NAME, title="Fig. 1/2: test images classified right/wrong from their LFC (L) and HFC (H)",
                   rows=rows, columns=cols, claims=claims, models={"vanilla": model}, figures=figs, digits=2,
                   settings={"radii": radii.tolist(), "scaling": cfg.scaling, "n_test": n},
                   notes=f"L+H- = LFC right and HFC wrong, L-H+ = LFC wrong and HFC right, etc. The four cells add up to "
                         f"the {n} test images at every radius. 'repro %' is the public reproduction on CIFAR-10 "
                         f"(counts out of 10,000, PAPER.md). r={corner} is beyond the corner: the LFC is the image.")
    return {"rows": rows, "claims": claims, "counts": counts}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
