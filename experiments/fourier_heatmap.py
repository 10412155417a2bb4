"""Beyond the paper: Fourier sensitivity heat maps (Yin et al. 2019, "A Fourier Perspective on
Model Robustness in Computer Vision") of the vanilla, BatchNorm and adversarially trained
models. For each frequency (u, v), the error rate when a Fourier basis image of L2 norm eps
(random sign per image and channel) is added to every test image (clipped to [0, 1]).

The paper's account predicts: models that use HFC (vanilla, and more so BatchNorm) are
sensitive to high-frequency perturbations (the outside of the map), adversarial training
moves the sensitivity to low frequencies (the centre).

    python -m experiments.fourier_heatmap [--quick] [--dataset synthetic|cifar10]
"""

from __future__ import annotations

import jax
import numpy as np

from experiments.common import Claim, Context, main_for, save_figure, write_artefact

NAME = "fourier_heatmap"


def run(ctx: Context) -> dict:
    from jaxhfc import analysis, fourier, plotting, train

    eps = ctx.pick(full=4.0, quick=4.0)
    models = {"vanilla": ctx.vanilla(), "batchnorm": ctx.train("batchnorm", ctx.config(norm="batch")),
              "adversarial": ctx.adversarial()}
    x, y = ctx.test_arrays(models["vanilla"].config)
    n = ctx.pick(full=1000, quick=256, tiny=32)
    x, y = x[:n], y[:n]
    h, w = x.shape[1:3]
    dist = fourier.distance_grid(h, w)
    maps, rows = {}, []
    for name, t in models.items():
        m = analysis.fourier_heatmap(t.logits_fn(), x, y, jax.random.key(ctx.seed + 3),
                                     eps=eps, mesh=ctx.mesh(), freq_chunk=ctx.pick(full=32, quick=16, tiny=64),
                                     batch_size=ctx.pick(full=200, quick=128, tiny=32))
        maps[name] = m
        np.save(ctx.artefact_dir(NAME) / f"heatmap_{name}.npy", m)
        rows.append({"model": name, "mean error": float(m.mean()),
                     "error, low freq (d < 8)": float(m[dist < 8].mean()),
                     "error, high freq (d >= 8)": float(m[dist >= 8].mean()),
                     "clean error": 1.0 - train.evaluate(t.state, t.model, ctx.mesh(), x, y)["accuracy"]})
    fig = plotting.heatmap_figure(maps, title=f"Fourier sensitivity: error rate, L2 eps={eps:g} (centre = low frequencies)")
    figs = [save_figure(fig, ctx.artefact_dir(NAME) / "heatmaps.png")]
    hi = {r["model"]: r["error, high freq (d >= 8)"] for r in rows}
    lo = {r["model"]: r["error, low freq (d < 8)"] for r in rows}
    claims = [
        Claim(NAME, "adversarial training lowers the sensitivity to high-frequency perturbations",
              hi["adversarial"] < hi["vanilla"], f"high-freq error: adversarial {hi['adversarial']:.3f}, vanilla {hi['vanilla']:.3f}"),
        Claim(NAME, "adversarially trained models are relatively more sensitive to low than high frequencies",
              lo["adversarial"] - hi["adversarial"] > lo["vanilla"] - hi["vanilla"],
              f"low-high error: adversarial {lo['adversarial'] - hi['adversarial']:.3f}, vanilla {lo['vanilla'] - hi['vanilla']:.3f}"),
    ]
    write_artefact(ctx, NAME, title="Beyond the paper: Fourier sensitivity heat maps", rows=rows, claims=claims,
                   models=models, figures=figs, settings={"eps_l2_per_channel": eps, "n_images": int(n)},
                   notes="Yin et al. 2019's method on our models; heat maps saved as heatmap_<model>.npy "
                         "(indexed like the shifted spectrum, zero frequency at the centre).")
    return {"rows": rows, "claims": claims, "maps": maps}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
