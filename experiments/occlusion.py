"""Beyond the paper: occlusion sensitivity (Zeiler and Fergus 2014). The probability of the
true class as a grey patch slides over the image, one map per image, for the vanilla and the
adversarially trained model; all positions of a batch in one compiled call.

    python -m experiments.occlusion [--quick] [--dataset synthetic|cifar10]
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import Context, main_for
from experiments.reporting import save_figure, write_artefact
from jaxhfc import analysis

NAME = "occlusion"


def run(ctx: Context) -> dict:


    models = {"vanilla": ctx.models.vanilla(), "adversarial": ctx.models.adversarial()}
    x, y = ctx.models.test_arrays(models["vanilla"].config)
    n_show = 6
    x, y = x[:n_show], y[:n_show]
    patch, stride = 8, 2
    maps, rows = {}, []
    for name, t in models.items():
        m = analysis.occlusion_map(t.logits_fn(), x, y, patch=patch, stride=stride,
                                   mesh=ctx.models.mesh(), batch_size=8)
        maps[name] = m
        np.save(ctx.artefact_dir(NAME) / f"occlusion_{name}.npy", m)
        for i in range(n_show):
            rows.append({"model": name, "image": i, "label": int(y[i]), "min p(true)": float(m[i].min()),
                         "max p(true)": float(m[i].max()), "spread": float(m[i].max() - m[i].min())})
    fig, axes = plt.subplots(len(maps) + 1, n_show, figsize=(1.7 * n_show, 1.8 * (len(maps) + 1)), squeeze=False)
    for i in range(n_show):
        axes[0, i].imshow(np.clip(x[i], 0, 1))
        for k, (name, m) in enumerate(maps.items()):
            im = axes[k + 1, i].imshow(m[i], vmin=0, vmax=1, cmap="magma")
            if i == 0:
                axes[k + 1, i].set_ylabel(name, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="p(true class)")
    figs = [save_figure(fig, ctx.artefact_dir(NAME) / "occlusion.png")]
    write_artefact(ctx, NAME, title="Beyond the paper: occlusion sensitivity maps", rows=rows, models=models,
                   figures=figs, settings={"patch": patch, "stride": stride, "fill": 0.5})
    return {"rows": rows, "claims": []}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
