"""Beyond the paper: Fourier sensitivity heat maps (Yin et al. 2019, "A Fourier Perspective on
Model Robustness in Computer Vision") of the vanilla, BatchNorm and adversarially trained
models (and M_adversarial's twin: its recipe without the attack). For each frequency (u, v), the error rate when a Fourier basis image of L2 norm eps
(random sign per image and channel) is added to every test image (clipped to [0, 1]).

The paper's account predicts: models that use HFC (vanilla, and more so BatchNorm) are
sensitive to high-frequency perturbations (the outside of the map), adversarial training
moves the sensitivity to low frequencies (the centre).

    python -m experiments.fourier_heatmap [--quick] [--dataset synthetic|cifar10]
"""

from __future__ import annotations

import jax
import numpy as np

from experiments.claims import claim, combine_seeds, image_se, outcome_records
from experiments.common import Context, main_for
from experiments.reporting import save_figure, write_artefact
from experiments.robust_rows import attack_subset
from jaxhfc import analysis, fourier, plotting
from jaxhfc import evidence as E
from jaxhfc.evaluation import predict

NAME = "fourier_heatmap"
#: Everything this artefact changes by scale. ``cut``: the radius that splits the map into low
#: (d < cut) and high frequencies; ``min_test``/``adv_min``: preconditions (test accuracy of
#: M_natural / M_adversarial).
SETTINGS = {
    "full": dict(eps=4.0, n_images=1000, freq_chunk=32, batch_size=200, cut=8, min_test=0.5, adv_min=0.5),
    "quick": dict(eps=4.0, n_images=500, freq_chunk=32, batch_size=250, cut=8, min_test=0.5, adv_min=0.6),
    "tiny": dict(eps=4.0, n_images=16, freq_chunk=64, batch_size=16, cut=8, min_test=0.0, adv_min=0.0),
}


def judge_claims(per_seed: list[dict], settings: dict, n_images: int) -> list:
    """Claims from per-seed ``{model: {"clean", "low", "high"}}`` error rates (clean error, mean
    error of the low / high part of the heat map). Errors are compared with the model's clean
    error, so a model that is wrong anyway does not look "sensitive". With ``"per_image": {model:
    {"clean", "low", "high": (N,)}}`` (each image's clean error and its error rate over the low /
    high frequencies) the per-image errors are paired over seeds, else binomial."""
    pre = [E.precondition("twin test acc (heat-map images)", [1 - m["twin"]["clean"] for m in per_seed],
                          minimum=settings["min_test"]),
           E.precondition("adversarial test acc (heat-map images)", [1 - m["adversarial"]["clean"] for m in per_seed],
                          minimum=settings["adv_min"])]
    sens = lambda m, k, part: m[k][part] - m[k]["clean"]  # noqa: E731
    def terms(f):  # per-image terms from the per-image error rates, None when not kept
        return lambda m: f(m["per_image"]) if "per_image" in m else None

    se = image_se(per_seed, terms(lambda p: (p["twin"]["high"] - p["twin"]["clean"])
                                  - (p["adversarial"]["high"] - p["adversarial"]["clean"])),
                  lambda m: E.diff_se(m["twin"]["high"], n_images, m["adversarial"]["high"], n_images))
    mean = lambda f: float(np.mean([f(m) for m in per_seed]))  # noqa: E731
    return [
        claim(NAME, "adversarial training lowers the sensitivity to high-frequency perturbations",
              [sens(m, "twin", "high") - sens(m, "adversarial", "high") for m in per_seed], se=se, bounds=(-1, 1),
              effect="twin minus adversarial (high-freq error - clean error); twin = M_adversarial's recipe without "
                     "the attack", preconditions=pre,
              evidence=f"high-freq minus clean error: twin {mean(lambda m: sens(m, 'twin', 'high')):.3f}, "
                       f"adversarial {mean(lambda m: sens(m, 'adversarial', 'high')):.3f}"),
        claim(NAME, "adversarially trained models are more sensitive to low than to high frequencies",
              [m["adversarial"]["low"] - m["adversarial"]["high"] for m in per_seed],
              se=image_se(per_seed, terms(lambda p: p["adversarial"]["low"] - p["adversarial"]["high"]),
                          lambda m: E.diff_se(m["adversarial"]["low"], n_images, m["adversarial"]["high"], n_images)),
              bounds=(-1, 1), effect="M_adversarial's own error under low-frequency minus under high-frequency "
                                     "perturbations", preconditions=pre,
              evidence=f"low minus high error: adversarial {mean(lambda m: m['adversarial']['low'] - m['adversarial']['high']):.3f}, "
                       f"twin {mean(lambda m: m['twin']['low'] - m['twin']['high']):.3f}"),
    ]


def run(ctx: Context) -> dict:

    st = ctx.models.chance_floors(ctx.setup.settings(SETTINGS))
    st["cut"] = ctx.setup.radius(st["cut"])
    eps, n = st["eps"], st["n_images"]
    models = {"vanilla": ctx.models.vanillas(), "twin": ctx.models.twins(), "adversarial": ctx.models.adversarials()}
    x, y = attack_subset(*ctx.models.test_arrays(models["vanilla"][0].config), n)
    n = len(y)
    h, w = x.shape[1:3]
    dist = fourier.distance_grid(h, w)
    per_seed_metrics, per_seed_rows, first_maps = [], [], {}
    for i, seed in enumerate(ctx.setup.seed_list):
        metrics, rows = {"per_image": {}}, []
        for name, ts in models.items():
            if name == "vanilla" and i > 0:  # no claim uses M_natural's map: the first seed's, for the figure
                rows.append({"model": name, "mean error": None, f"error, low freq (d < {st['cut']})": None,
                             f"error, high freq (d >= {st['cut']})": None, "clean error": None,
                             "high-freq minus clean": None})
                continue
            t = ts[i]
            m, wrong = analysis.fourier_heatmap(t.logits_fn(), x, y, jax.random.key(seed + 3), eps=eps, mesh=ctx.models.mesh(),
                                                freq_chunk=st["freq_chunk"], batch_size=st["batch_size"],
                                                per_image=True)
            if i == 0:
                first_maps[name] = m
                np.save(ctx.artefact_dir(NAME) / f"heatmap_{name}.npy", m)
            clean_err = (np.asarray(predict(t.state, t.model, ctx.models.mesh(), x, batch_size=st["batch_size"])) != y)
            per_image = {"clean": clean_err.astype(np.float64), "low": wrong[:, dist < st["cut"]].mean(axis=1),
                         "high": wrong[:, dist >= st["cut"]].mean(axis=1)}
            clean, lo, hi = (float(per_image[k].mean()) for k in ("clean", "low", "high"))
            metrics[name] = {"clean": clean, "low": lo, "high": hi}
            metrics["per_image"][name] = per_image
            rows.append({"model": name, "mean error": float(m.mean()), f"error, low freq (d < {st['cut']})": lo,
                         f"error, high freq (d >= {st['cut']})": hi, "clean error": clean,
                         "high-freq minus clean": hi - clean})
        per_seed_metrics.append(metrics)
        per_seed_rows.append(rows)
    fig = plotting.heatmap_figure(first_maps, title=f"Fourier sensitivity (seed {ctx.setup.seed_list[0]}): error rate, "
                                                    f"L2 eps={eps:g} (centre = low frequencies)")
    figs = [save_figure(fig, ctx.artefact_dir(NAME) / "heatmaps.png")]
    claims = judge_claims(per_seed_metrics, st, n)
    rows = combine_seeds(per_seed_rows)
    write_artefact(ctx, NAME, title="Beyond the paper: Fourier sensitivity heat maps", rows=rows,
                   per_seed=per_seed_rows, claims=claims, models=models, figures=figs,
                   settings={**st, "eps_l2_per_channel": eps, "n_images": int(n)},
                   outcomes=outcome_records(per_seed_metrics, ctx.setup.seed_list, key="per_image"),
                   notes="Yin et al. 2019's method on our models; the first seed's heat maps are saved as "
                         "heatmap_<model>.npy (indexed like the shifted spectrum, zero frequency at the centre). "
                         "outcomes.npz: per seed, model and image, its clean error and its error rate over the low / "
                         "high frequencies.")
    return {"rows": rows, "claims": claims, "maps": first_maps}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
