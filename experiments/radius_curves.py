"""Beyond the paper: accuracy-vs-radius curves. Test accuracy on the LFC and HFC versions at
every radius 0..corner (one compiled sweep), with the crossing point marked, and accuracy on
band-pass rings (annuli of width 2), for the vanilla and the BatchNorm model.

    python -m experiments.radius_curves [--quick] [--seeds N] [--dataset ...]
"""

from __future__ import annotations

import numpy as np

from experiments.claims import claim, combine_seeds, image_se, outcome_records
from experiments.common import Context, main_for
from experiments.reporting import save_figure, write_artefact
from jaxhfc import analysis, plotting
from jaxhfc import evidence as E

NAME = "radius_curves"
#: Everything this artefact changes by scale; ``min_test``: precondition on both models.
SETTINGS = {
    "full": dict(batch_size=1000, ring_width=2.0, min_test=0.5),
    "quick": dict(batch_size=256, ring_width=2.0, min_test=0.5),
    "tiny": dict(batch_size=64, ring_width=2.0, min_test=0.0),
}


def judge_claims(per_seed: list[dict], settings: dict) -> list:
    """Claim from per-seed ``{"vanilla": {"test", "crossing", "hfc_area"}, "batchnorm": {...}}``:
    ``hfc_area`` is the mean HFC-test accuracy over the radius grid (the area under the HFC
    curve over the radius range), so the effect is the area between the two HFC curves, which
    uses the whole curve instead of one crossing of two nearly tied curves (crossing None when
    the curves do not cross; reported as evidence). With ``"per_image": {model: (N,)}`` (each test
    image's share of radii at which its HFC copy is classified right) the per-image error is
    paired over seeds."""
    pre = [E.precondition(f"{m} test acc", [s[m]["test"] for s in per_seed], minimum=settings["min_test"])
           for m in ("vanilla", "batchnorm")]
    vals = [s["batchnorm"]["hfc_area"] - s["vanilla"]["hfc_area"] for s in per_seed]
    fmt = lambda v: "none" if v is None else f"{v:.2f}"  # noqa: E731
    return [claim(NAME, "the BatchNorm model keeps more accuracy on HFC images (area between the HFC curves)",
                  vals, effect="mean over radii of BN minus vanilla HFC-test accuracy", preconditions=pre,
                  se=image_se(per_seed, lambda s: (s["per_image"]["batchnorm"] - s["per_image"]["vanilla"]
                                                   if "per_image" in s else None), lambda s: 0.0)
                  if all("per_image" in s for s in per_seed) else None,
                  bounds=(-1, 1),
                  evidence="crossing radius per seed: " + "; ".join(
                      f"vanilla {fmt(s['vanilla']['crossing'])}, BN {fmt(s['batchnorm']['crossing'])}" for s in per_seed))]


def run(ctx: Context) -> dict:

    st = ctx.models.chance_floors(ctx.setup.settings(SETTINGS))
    models = {"vanilla": ctx.models.vanillas(), "batchnorm": ctx.models.batchnorms()}
    cfg = models["vanilla"][0].config
    _, test = ctx.models.datasets(cfg)
    per_seed_metrics, per_seed_rows, per_seed_curves = [], [], []
    for i in range(len(ctx.setup.seed_list)):
        metrics, rows, curves = {"per_image": {}}, [], {}
        for name, ts in models.items():
            fn = ts[i].logits_fn()
            res = analysis.accuracy_vs_radius(fn, test.images, test.labels, scaling=cfg.data.scaling, mesh=ctx.models.mesh(),
                                              batch_size=st["batch_size"], return_predictions=True)
            metrics["per_image"][name] = np.mean(res["pred_high"] == np.asarray(test.labels), axis=0)
            rings = analysis.ring_accuracy(fn, test.images, test.labels, width=st["ring_width"], scaling=cfg.data.scaling,
                                           mesh=ctx.models.mesh(), batch_size=st["batch_size"])
            metrics[name] = {"test": float(res["acc_orig"]), "crossing": res["crossing"],
                             "hfc_area": float(np.mean(res["acc_high"]))}
            curves[name] = res
            for r, lo, hi in zip(res["radii"], res["acc_low"], res["acc_high"]):
                rows.append({"model": name, "r": float(r), "LFC acc": float(lo), "HFC acc": float(hi)})
            for a, b, acc in zip(rings["r_in"], rings["r_out"], rings["acc"]):
                rows.append({"model": name, "ring": f"[{a:g}, {b:g})", "ring acc": float(acc)})
        per_seed_metrics.append(metrics)
        per_seed_rows.append(rows)
        per_seed_curves.append(curves)
    claims = judge_claims(per_seed_metrics, st)
    bands = {}
    for name in models:
        radii = per_seed_curves[0][name]["radii"]
        for kind in ("low", "high"):
            per = np.stack([c[name][f"acc_{kind}"] for c in per_seed_curves])
            ivs = [E.interval(per[:, k]) for k in range(per.shape[1])]
            bands[f"{name} {'LFC' if kind == 'low' else 'HFC'}"] = (
                radii.tolist(), [iv.mean for iv in ivs], [iv.low for iv in ivs], [iv.high for iv in ivs])
    fig = plotting.curves_figure(bands, title=f"accuracy vs radius ({len(ctx.setup.seed_list)} seeds; crossings marked)",
                                 xlabel="radius r", styles={k: "--" if "HFC" in k else "-" for k in bands})
    ax = fig.axes[0]
    for name in models:
        cs = [m[name]["crossing"] for m in per_seed_metrics if m[name]["crossing"] is not None]
        if cs:
            c = float(np.mean(cs))
            ax.axvline(c, color="gray", lw=0.8, ls=":")
            ax.text(c, 0.95, f"{name}: {c:.1f}", fontsize=7, rotation=90, va="top")
    figs = [save_figure(fig, ctx.artefact_dir(NAME) / "accuracy_vs_radius.png")]
    rows = combine_seeds(per_seed_rows)
    write_artefact(ctx, NAME, title="Beyond the paper: accuracy vs radius and band-pass rings", rows=rows,
                   per_seed=per_seed_rows, columns=["model", "r", "LFC acc", "HFC acc", "ring", "ring acc"],
                   claims=claims, models=models, figures=figs, settings=st,
                   outcomes=outcome_records(per_seed_metrics, ctx.setup.seed_list, key="per_image"),
                   notes="outcomes.npz: per seed, model and test image, the share of the radii at which its HFC copy "
                         "is classified right (the claim's per-image terms).")
    return {"rows": rows, "claims": claims, "crossings": [{k: m[k]["crossing"] for k in models}
                                                          for m in per_seed_metrics]}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
