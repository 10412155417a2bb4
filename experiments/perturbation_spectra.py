"""Beyond the paper: spectra of adversarial perturbations. The radially averaged power
spectrum of PGD perturbations (delta = x_adv - x) of the vanilla and the adversarially
trained model, and the share of perturbation energy outside radius r for every r.

The paper's account predicts that attacks on the vanilla model put more of their energy in
high frequencies (the HFC the model uses) than attacks on the adversarially trained model.

    python -m experiments.perturbation_spectra [--quick] [--dataset synthetic|cifar10]
"""

from __future__ import annotations

import jax
import numpy as np

from experiments.common import Claim, Context, main_for, save_figure, write_artefact

NAME = "perturbation_spectra"


def run(ctx: Context) -> dict:
    from jaxhfc import analysis, plotting

    models = {"vanilla": ctx.vanilla(), "adversarial": ctx.adversarial()}
    x, y = ctx.test_arrays(models["vanilla"].config)
    n = ctx.pick(full=2000, quick=256, tiny=32)
    x, y = x[:n], y[:n]
    eps, steps = 0.03, ctx.pick(full=20, quick=10, tiny=2)
    spectra, shares, rows = {}, {}, []
    for name, t in models.items():
        delta, success = analysis.pgd_perturbations(t.logits_fn(), x, y,
                                                    jax.random.key(ctx.seed + 5), eps=eps, step_size=2.5 * eps / steps,
                                                    steps=steps, mesh=ctx.mesh(), batch_size=ctx.pick(full=500, quick=128, tiny=32))
        spectra[name] = analysis.perturbation_spectrum(delta)
        share = analysis.energy_share_outside(delta)
        shares[name] = share
        np.savez_compressed(ctx.artefact_dir(NAME) / f"spectrum_{name}.npz", spectrum=spectra[name], **share)
        for r, s in zip(share["radii"], share["share_pooled"]):
            if r in (0, 4, 8, 12, 16):
                rows.append({"model": name, "r": int(r), "energy share outside r": float(s),
                             "attack success": float(np.mean(success))})
    curves = {k: (list(range(len(v))), (v / v.sum()).tolist()) for k, v in spectra.items()}
    fig = plotting.curves_figure(curves, title="PGD perturbation spectrum (normalised)", xlabel="radius (ring)",
                                 ylabel="share of power", ylim=None)
    figs = [save_figure(fig, ctx.artefact_dir(NAME) / "spectra.png")]
    curves = {k: (v["radii"].tolist(), v["share_pooled"].tolist()) for k, v in shares.items()}
    figs.append(save_figure(plotting.curves_figure(curves, title="energy share outside r", xlabel="radius r",
                                                   ylabel="share"), ctx.artefact_dir(NAME) / "energy_outside.png"))
    s8 = {k: float(v["share_pooled"][list(v["radii"]).index(8)]) for k, v in shares.items()}
    claims = [Claim(NAME, "attacks on the vanilla model use more high-frequency energy than attacks on the adversarial one",
                    s8["vanilla"] > s8["adversarial"],
                    f"energy share outside r=8: vanilla {s8['vanilla']:.3f}, adversarial {s8['adversarial']:.3f}")]
    write_artefact(ctx, NAME, title="Beyond the paper: spectra of PGD perturbations", rows=rows, claims=claims,
                   models=models, figures=figs, settings={"eps": eps, "steps": steps, "n_images": int(n)})
    return {"rows": rows, "claims": claims}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
