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

from experiments.claims import claim, combine_seeds, outcome_records
from experiments.common import Context, main_for
from experiments.reporting import save_figure, write_artefact
from jaxhfc import analysis, fourier, plotting
from jaxhfc import evidence as E

NAME = "prediction_counts"
#: Public reproduction (docs/paper.md), counts out of 10,000:
#: r: (LFC right HFC wrong, LFC wrong HFC right, both right, both wrong).
REFERENCE = {
    0: (118, 8651, 882, 349), 2: (486, 4785, 1072, 3657), 4: (1113, 2543, 796, 5548),
    5: (1469, 1502, 689, 6340), 6: (1961, 728, 611, 6700), 8: (3909, 384, 620, 5087),
    12: (7547, 229, 774, 1450), 16: (8437, 150, 850, 563),
}
CELLS = ("low_right_high_wrong", "low_wrong_high_right", "both_right", "both_wrong")
SHORT = {"low_right_high_wrong": "L+H-", "low_wrong_high_right": "L-H+", "both_right": "L+H+", "both_wrong": "L-H-"}


#: Everything this artefact changes by scale. ``claimed``: the radii (the paper's, written for
#: 32x32) at which the "L- H+" claim is judged, each on its own; ``select``: radii searched on
#: the validation split for the example figure's radius; ``counter``: radii of the counterpoint
#: claim (pre-set); ``min_test``: precondition, M_natural's test accuracy.
SETTINGS = {
    "full": dict(batch_size=1000, claimed=(4, 8, 12, 16), select=tuple(range(4, 17)), counter=(8, 12, 16), min_test=0.5),
    "quick": dict(batch_size=256, claimed=(4, 8, 12, 16), select=tuple(range(4, 17)), counter=(8, 12, 16), min_test=0.5),
    "tiny": dict(batch_size=64, claimed=(4, 8), select=(4, 8), counter=(8, 12, 16), min_test=0.0),
}


def select_radius(val_low_right, val_high_pred, val_labels, radii) -> float:
    """The radius (of ``radii``, rows of the prediction arrays) where "LFC wrong, HFC right"
    exceeds its label-blind baseline the most on the *validation* split."""
    ex = [E.cell_excess(val_low_right[k], val_high_pred[k], val_labels)[0] for k in range(len(radii))]
    return float(radii[int(np.argmax(ex))])


def judge_claims(per_seed: list[dict], settings: dict) -> list:
    """Claims from per-seed ``{"test_acc", "excess": {r: value}, "excess_se": {r: value},
    "counter", "counter_se", "cells": {r: {cell: share}}}`` (see :func:`run`): the L-H+ excess
    at every radius of ``settings["radii_claimed"]`` (no selection: one claim per radius, the
    paper's radii, in one Holm family with the counterpoint), each with its per-image error
    (``"excess_terms": {r: (N,)}`` paired over seeds when kept, else ``excess_se``)."""
    trained = E.precondition("M_natural test acc", [m["test_acc"] for m in per_seed], minimum=settings["min_test"])

    def se(name: str, r=None) -> list:  # paired over seeds on the same test images when the terms are there
        get = (lambda m, k: m[k]) if r is None else (lambda m, k: m[k][r])  # noqa: E731
        if all(f"{name}_terms" in m for m in per_seed):
            return E.seeds_paired_se(np.stack([get(m, f"{name}_terms") for m in per_seed]))
        return [get(m, f"{name}_se") for m in per_seed]

    claims = []
    for i, r in enumerate(settings["radii_claimed"]):
        claims.append(claim(
            NAME, f"some test images are classified right from their HFC and wrong from their LFC, more often than "
                  f"label-blind HFC predictions would be (r={r:g}; paper: about 6% of CIFAR-10)",
            [m["excess"][r] for m in per_seed], se=se("excess", r), bounds=(-1, 1), primary=i == 0,
            effect=f"share of L-H+ test images minus its label-blind baseline (shares within the LFC-wrong images), "
                   f"at r={r:g}",
            preconditions=[trained],
            evidence=f"L-H+ share {np.mean([m['cells'][r]['low_wrong_high_right'] for m in per_seed]):.3f}"))
    claims.append(claim(NAME, "(public reproduction's counterpoint) 'LFC right, HFC wrong' is more common than 'LFC "
                              f"wrong, HFC right' for r >= {settings['counter'][0]}",
                        [m["counter"] for m in per_seed], se=se("counter"), bounds=(-1, 1),
                        effect=f"share L+H- minus share L-H+, mean over r in {list(settings['counter'])}",
                        preconditions=[trained]))
    return claims


def run(ctx: Context) -> dict:

    st = ctx.models.chance_floors(ctx.setup.settings(SETTINGS))
    st["select"] = tuple(ctx.setup.radius(r) for r in st["select"])
    st["radii_claimed"] = tuple(float(ctx.setup.radius(r)) for r in st["claimed"])
    st["counter"] = tuple(ctx.setup.radius(r) for r in st["counter"])
    models = ctx.models.vanillas()
    cfg = models[0].config
    _, test = ctx.models.datasets(cfg)
    h, w = test.images.shape[1:3]
    corner = math.ceil(fourier.corner_radius(h, w) + 1e-9)
    # 0..16 at 32x32 (scaled to other sizes), and beyond the corner (the LFC is the image)
    radii = np.array(sorted({float(ctx.setup.radius(r)) for r in range(17)}) + [corner], np.float32)
    folder = ctx.artefact_dir(NAME)
    per_seed_metrics, per_seed_rows, all_counts, saved = [], [], [], {}
    for model in models:
        preds = analysis.radius_predictions(model.logits_fn(), test.images, radii, scaling=cfg.data.scaling,
                                            batch_size=st["batch_size"], mesh=ctx.models.mesh())
        counts = analysis.prediction_counts(preds["pred_low"], preds["pred_high"], test.labels,
                                            pred_orig=preds["pred_orig"])
        n = counts["n"]
        all_counts.append(counts)
        val = ctx.models.validation(model.config)  # this seed's own held-out images
        sel = np.asarray(st["select"], np.float32)
        vp = analysis.radius_predictions(model.logits_fn(), val.images, sel, scaling=cfg.data.scaling,
                                         batch_size=st["batch_size"], mesh=ctx.models.mesh())
        r_star = select_radius(vp["pred_low"] == val.labels, vp["pred_high"], val.labels, sel)
        low_right = preds["pred_low"] == test.labels
        high_right = preds["pred_high"] == test.labels
        k_of = {r: int(np.flatnonzero(radii == np.float32(r))[0]) for r in st["radii_claimed"]}
        terms = {r: E.cell_excess_terms(low_right[k], preds["pred_high"][k], test.labels) for r, k in k_of.items()}
        ks = [int(np.flatnonzero(radii == r)[0]) for r in st["counter"] if r in radii]
        d = np.mean([(low_right[k] & ~high_right[k]).astype(float) - (~low_right[k] & high_right[k]) for k in ks], axis=0)
        per_seed_metrics.append({
            "test_acc": float(np.mean(preds["pred_orig"] == test.labels)), "r_star": r_star,
            "excess": {r: float(t.mean()) for r, t in terms.items()},
            "excess_se": {r: float(np.std(t, ddof=1) / math.sqrt(n)) for r, t in terms.items()},
            "counter": float(d.mean()), "counter_se": float(np.std(d, ddof=1) / math.sqrt(n)),
            "excess_terms": terms, "counter_terms": d,
            "outcomes": {f"r={r:g}": {"LFC right": low_right[k], "HFC prediction": preds["pred_high"][k]}
                         for r, k in k_of.items()},
            "cells": {r: {c: float(counts[c][k]) / n for c in CELLS} for r, k in k_of.items()}})
        rows = []
        for k, r in enumerate(radii):
            row = {"r": int(r) if float(r).is_integer() else float(r)}
            ref = REFERENCE.get(int(r)) if ctx.setup.image_size == 32 and float(r).is_integer() else None
            for c, v in zip(CELLS, ref or (None,) * 4):
                row[f"{SHORT[c]} ours %"] = 100.0 * float(counts[c][k]) / n
                row[f"{SHORT[c]} repro %"] = None if v is None else 100.0 * v / 10000
            row["LFC acc"] = float(counts["low_right"][k]) / n
            row["HFC acc"] = float(counts["high_right"][k]) / n
            row["L-H+ excess %"] = 100.0 * E.cell_excess(low_right[k], preds["pred_high"][k], test.labels)[0]
            rows.append(row)
        per_seed_rows.append(rows)
        if not saved:
            saved = {**preds, "labels": test.labels, "r_star": r_star}
    claims = judge_claims(per_seed_metrics, st)

    figs = []
    long = {"low_right_high_wrong": "LFC right, HFC wrong", "low_wrong_high_right": "LFC wrong, HFC right",
            "both_right": "both right", "both_wrong": "both wrong"}
    curves = {}
    for c in CELLS:
        per = np.stack([cnt[c] / cnt["n"] for cnt in all_counts])
        ivs = [E.interval(per[:, k]) for k in range(len(radii))]
        curves[long[c]] = (radii.tolist(), [iv.mean for iv in ivs], [iv.low for iv in ivs], [iv.high for iv in ivs])
    fig = plotting.curves_figure(curves, title=f"prediction counts vs radius (n={n}, {len(models)} seeds)",
                                 xlabel="radius r", ylabel="fraction of test images")
    figs.append(save_figure(fig, folder / "counts.png"))
    # examples (first seed): HFC right, LFC wrong, at the radius chosen on validation
    preds, r_best = saved, saved["r_star"]
    k_best = int(np.flatnonzero(radii == r_best)[0])
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
    np.savez_compressed(folder / "predictions.npz", **{k: v for k, v in saved.items()})
    cols = ["r"] + [f"{SHORT[c]} {s}" for c in CELLS for s in ("ours %", "repro %")] + ["LFC acc", "HFC acc",
                                                                                         "L-H+ excess %"]
    rows = combine_seeds(per_seed_rows)
    write_artefact(ctx, NAME, title="Fig. 1/2: test images classified right/wrong from their LFC (L) and HFC (H)",
                   rows=rows, per_seed=per_seed_rows, columns=cols, claims=claims, models={"vanilla": models},
                   figures=figs, digits=2, outcomes={
                       **outcome_records(per_seed_metrics, ctx.setup.seed_list, key="outcomes"),
                       **{f"seed {s}|excess terms|r={r:g}": t for s, m in zip(ctx.setup.seed_list, per_seed_metrics)
                          for r, t in m["excess_terms"].items()},
                       **{f"seed {s}|counter terms": m["counter_terms"] for s, m in zip(ctx.setup.seed_list, per_seed_metrics)}},
                   settings={**st, "radii": radii.tolist(), "scaling": cfg.data.scaling, "n_test": n, "n_val": len(val)},
                   notes=f"L+H- = LFC right and HFC wrong, L-H+ = LFC wrong and HFC right, etc.; percentages of the {n} "
                         f"test images (the four cells add up to 100% at every radius). 'L-H+ excess' is the L-H+ share "
                         f"minus what label-blind HFC predictions (the same predictions shuffled across images) would "
                         f"give. 'repro %' is the public reproduction on CIFAR-10 (docs/paper.md). r={corner} is beyond the "
                         f"corner: the LFC is the image. The claims are made at the paper's radii "
                         f"({', '.join(f'{r:g}' for r in st['radii_claimed'])}), each with its own interval, no radius "
                         "chosen; the example figure uses the radius where the excess was largest on this seed's "
                         "validation images. predictions.npz holds the first seed's predictions; outcomes.npz every "
                         "seed's per-image outcomes at the claimed radii and the claims' per-image terms.")
    return {"rows": rows, "claims": claims, "counts": all_counts}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
