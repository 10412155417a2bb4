"""Beyond the paper: accuracy-vs-radius curves. Test accuracy on the LFC and HFC versions at
every radius 0..corner (one compiled sweep), with the crossing point marked, and accuracy on
band-pass rings (annuli of width 2), for the vanilla and the BatchNorm model.

    python -m experiments.radius_curves [--quick] [--dataset synthetic|cifar10]
"""

from __future__ import annotations

from experiments.common import Claim, Context, main_for, save_figure, write_artefact

NAME = "radius_curves"


def run(ctx: Context) -> dict:
    from jaxhfc import analysis, plotting

    models = {"vanilla": ctx.vanilla(), "batchnorm": ctx.train("batchnorm", ctx.config(norm="batch"))}
    cfg = models["vanilla"].config
    _, test = ctx.datasets(cfg)
    rows, curves, figs = [], {}, []
    crossings = {}
    for name, t in models.items():
        fn = t.logits_fn()
        res = analysis.accuracy_vs_radius(fn, test.images, test.labels, scaling=cfg.scaling, mesh=ctx.mesh(),
                                          batch_size=ctx.pick(full=1000, quick=256, tiny=64))
        crossings[name] = res["crossing"]
        curves[f"{name} LFC"] = (res["radii"].tolist(), res["acc_low"].tolist())
        curves[f"{name} HFC"] = (res["radii"].tolist(), res["acc_high"].tolist())
        rings = analysis.ring_accuracy(fn, test.images, test.labels, width=2.0, scaling=cfg.scaling, mesh=ctx.mesh(),
                                       batch_size=ctx.pick(full=1000, quick=256, tiny=64))
        for r, lo, hi in zip(res["radii"], res["acc_low"], res["acc_high"]):
            rows.append({"model": name, "r": float(r), "LFC acc": float(lo), "HFC acc": float(hi)})
        for a, b, acc in zip(rings["r_in"], rings["r_out"], rings["acc"]):
            rows.append({"model": name, "ring": f"[{a:g}, {b:g})", "ring acc": float(acc)})
    fig = plotting.curves_figure(curves, title="accuracy vs radius (crossing marked)", xlabel="radius r",
                                 styles={k: "--" if "HFC" in k else "-" for k in curves})
    ax = fig.axes[0]
    for name, c in crossings.items():
        if c is not None:
            ax.axvline(c, color="gray", lw=0.8, ls=":")
            ax.text(c, 0.95, f"{name}: {c:.1f}", fontsize=7, rotation=90, va="top")
    figs.append(save_figure(fig, ctx.artefact_dir(NAME) / "accuracy_vs_radius.png"))
    claims = [Claim(NAME, "the BatchNorm model keeps more accuracy on HFC images (its curves cross at a larger radius)",
                    None if None in crossings.values() else crossings["batchnorm"] > crossings["vanilla"],
                    "crossing radius: " + ", ".join(f"{k} {'none' if v is None else f'{v:.2f}'}" for k, v in crossings.items()))]
    write_artefact(ctx, NAME, title="Beyond the paper: accuracy vs radius and band-pass rings", rows=rows,
                   columns=["model", "r", "LFC acc", "HFC acc", "ring", "ring acc"], claims=claims, models=models,
                   figures=figs, settings={"ring_width": 2.0})
    return {"rows": rows, "claims": claims, "crossings": crossings}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
