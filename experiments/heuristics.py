"""Fig. 4-6: training heuristics and the HFC they make a model use. Vanilla, mixup, small and
large batches, dropout, BatchNorm and adversarial training; after each evaluation, accuracy on
the original test set and on its LFC / HFC copies at r = 4, 8, 12, 16. Fig. 6: models trained
on LFC only (r = 12), with and without BatchNorm, tested on original and LFC data.

Paper claims: BatchNorm makes a model use much more HFC (its HFC-test accuracy is far higher);
bigger batches give a smaller generalisation gap and more invariance to HFC; adversarial
training makes a model rely less on HFC.

    python -m experiments.heuristics [--quick] [--seeds N] [--dataset ...]
"""

from __future__ import annotations

import math

import numpy as np

from experiments.claims import claim, combine_seeds, image_se, outcome_records, paired_terms
from experiments.common import Context, main_for
from experiments.reporting import save_figure, write_artefact
from experiments.training import final, seed_curve
from jaxhfc import evidence as E
from jaxhfc import plotting
from jaxhfc.evaluation import eval_set_name

NAME = "heuristics"
#: Everything this artefact changes by scale (base recipes: experiments/recipes.py).
#: ``min_test``: precondition, test accuracy of every model compared; ``adv_min``: of
#: M_adversarial; ``hfc_min``: the mean HFC-test accuracy of M_adversarial's clean twin (same
#: recipe without the attack; it must use HFC at all for "relies less on HFC" to mean anything);
#: ``fit_min``: the eval-mode clean training accuracy both batch-size models need before their
#: generalisation gaps are compared (an under-fitting model has a small gap for the wrong reason).
#: ``fig6``: also train Fig. 6's LFC-only models with and without BatchNorm (no claim is judged on
#: them; left out at quick scale to fit the 2-core CPU budget).
#: The batch-size claim compares the small batch with the large batch at equal epochs and a
#: learning rate scaled by ``sqrt(large / small)`` (the square-root rule for Adam; fixed before
#: any run, not tuned): at the small batch's rate the large batch takes ``large / small`` times
#: fewer steps and under-fits, which makes its gap small for the wrong reason. The large batch at
#: the small batch's rate (the paper's figure) stays in the table.
SETTINGS = {
    "full": dict(batches=(32, 512), lfc_radius=12, min_test=0.5, adv_min=0.5, hfc_min=0.2, fit_min=0.8, fig6=True),
    "quick": dict(batches=(32, 512), lfc_radius=12, min_test=0.5, adv_min=0.6, hfc_min=0.2, fit_min=0.8, fig6=False),
    "tiny": dict(batches=(32, 128), lfc_radius=4, min_test=0.0, adv_min=0.0, hfc_min=0.0, fit_min=0.0, fig6=True),
}


def variants(settings: dict) -> dict:
    small, large = settings["batches"]
    return {
        "vanilla": {},
        "mixup": {"augment": {"mixup_alpha": 1.0}},  # the code's Beta(1, 1); the paper's text says alpha 0.5
        f"batch {small}": {"optim": {"batch_size": small}},
        f"batch {large}": {"optim": {"batch_size": large}},
        scaled_lr_label(settings): "scaled_lr",  # the batch-size claim's large batch (:func:`scaled_lr_overrides`)
        "dropout 0.5": {"net": {"dropout": 0.5}},
        "batchnorm": {"net": {"norm": "batch"}},
        "adversarial": "adversarial",
        "adversarial twin": "twin",  # M_adversarial's recipe without the attack: the baseline of its claim
    }


def lr_factor(settings: dict) -> float:
    """The large batch's learning-rate factor: ``sqrt(large / small)`` (the square-root rule)."""
    small, large = settings["batches"]
    return math.sqrt(large / small)


def scaled_lr_label(settings: dict) -> str:
    return f"batch {settings['batches'][1]}, lr x{lr_factor(settings):g}"


def scaled_lr_overrides(settings: dict, learning_rate: float) -> dict:
    """The large batch at equal epochs with its learning rate ``learning_rate * sqrt(large / small)``."""
    return {"optim": {"batch_size": settings["batches"][1],
                      "learning_rate": round(float(learning_rate) * lr_factor(settings), 10)}}


def _excess_terms(m: dict, variant: str, sets) -> np.ndarray | None:
    """Per image: the mean over ``sets`` of ``1[right] - f(label)``, the accuracy in excess of a
    label-blind classifier with the same predictions (:func:`jaxhfc.evidence.label_blind_terms`);
    None when the seed's metrics keep no predictions."""
    p = m.get("pred")
    if not p:
        return None
    return np.mean([E.label_blind_terms(p[variant][k], m["labels"][k]) for k in sets], axis=0)


def _excess(m: dict, variant: str, sets, chance: float) -> float:
    """Mean over ``sets`` of the accuracy in excess of the label-blind baseline; from the
    predictions when kept, else accuracy minus ``chance`` (balanced classes)."""
    t = _excess_terms(m, variant, sets)
    if t is not None:
        return float(t.mean())
    return float(np.mean([m[variant][k] for k in sets])) - chance


def _gap_terms(m: dict, small: str, large: str, split: str) -> np.ndarray | None:
    """Per image of ``split`` (``"train"``: the evaluated training subset, ``"test"``): its term
    of ``|gap(small)| - |gap(large)|`` linearised at the seed's gaps (gap = train - test acc)."""
    c = m.get("correct")
    if not c:
        return None
    sign = 1.0 if split == "train" else -1.0
    s_small = np.sign(m[small]["train"] - m[small]["test"]) or 1.0
    s_large = np.sign(m[large]["train"] - m[large]["test"]) or 1.0
    return sign * paired_terms(s_small * c[small][split].astype(float), s_large * c[large][split].astype(float))


def _mean_hfc(m: dict, radii) -> float:
    return float(np.mean([m[f"test_high_{r}"] for r in radii]))


def judge_claims(per_seed: list[dict], settings: dict, *, radii, n_test: int, num_classes: int,
                 n_train: int | None = None) -> list:
    """Claims from per-seed metrics ``{variant: {"train": eval-mode acc on clean training data,
    "test": .., "test_high_<r>": ..}}`` (variants as in :func:`variants`, with
    :func:`scaled_lr_label`). With ``"pred": {variant: {set: (N,) predicted labels}}`` and
    ``"labels": {set: (N,)}`` (per-example predictions on the shared evaluation sets) "uses HFC"
    is measured against the label-blind baseline and per-image errors are paired over seeds;
    without them accuracies minus chance and binomial errors are used. ``"correct": {variant:
    {"train" | "test": (N,) bool}}`` serves the batch gap's paired error.

    ``settings["running_arm"]`` (optional): the variant that is the vanilla model with BatchNorm
    and running statistics at test time (at quick scale M_adversarial's clean twin): the
    BatchNorm claim is then judged under running statistics too."""
    small, large_epochs = (f"batch {b}" for b in settings["batches"])
    large = scaled_lr_label(settings)
    chance = 1.0 / num_classes
    high_sets = [f"test_high_{r}" for r in radii]
    trained = lambda v: E.precondition(f"{v} test acc", [m[v]["test"] for m in per_seed],  # noqa: E731
                                       minimum=settings["min_test"])
    claims = []

    def bn_claim(arm: str, stats: str):
        values = [_excess(m, arm, high_sets, chance) - _excess(m, "vanilla", high_sets, chance) for m in per_seed]
        se = image_se(per_seed, lambda m: None if not m.get("pred") else paired_terms(
            _excess_terms(m, arm, high_sets), _excess_terms(m, "vanilla", high_sets)),
            lambda m: float(np.mean([E.diff_se(m[arm][k], n_test, m["vanilla"][k], n_test) for k in high_sets])))
        return claim(NAME, f"BatchNorm makes the model use more HFC (higher accuracy on HFC test images beyond the "
                           f"label-blind baseline; BN with {stats} statistics at test time)", values, se=se,
                     bounds=(-1, 1), effect=f"BN ({stats} statistics) minus vanilla HFC-test accuracy in excess of the "
                                            "label-blind baseline, mean over radii",
                     preconditions=[trained("vanilla"), trained(arm)],
                     evidence=f"mean HFC-test acc: BN {np.mean([_mean_hfc(m[arm], radii) for m in per_seed]):.3f}, "
                              f"vanilla {np.mean([_mean_hfc(m['vanilla'], radii) for m in per_seed]):.3f}")

    claims.append(bn_claim("batchnorm", "current-batch"))
    if settings.get("running_arm"):
        claims.append(bn_claim(settings["running_arm"], "running"))
    gap = lambda m, v: m[v]["train"] - m[v]["test"]  # noqa: E731
    n_tr = n_train or n_test
    gap_se = lambda m, v: E.diff_se(m[v]["train"], n_tr, m[v]["test"], n_test)  # noqa: E731
    # an under-fitted model's gap is off for the wrong reason, and in either direction (small when
    # train and test are both low, large in absolute value when its training accuracy falls below
    # its test accuracy): these gates guard both verdicts
    fitted = lambda v: E.precondition(f"{v} train acc (eval mode, clean)",  # noqa: E731
                                      [m[v]["train"] for m in per_seed], minimum=settings["fit_min"])
    # per-image error: training-subset and test terms paired over seeds, added in quadrature (else binomial)
    if all(m.get("correct") for m in per_seed):
        paired = [image_se(per_seed, lambda m: _gap_terms(m, small, large, split), lambda m: math.nan)
                  for split in ("train", "test")]
        gap_ses = list(map(math.hypot, *paired))
    else:
        gap_ses = [math.hypot(gap_se(m, small), gap_se(m, large)) for m in per_seed]
    claims.append(claim(NAME, "a larger batch gives a smaller generalisation gap (equal epochs, the large batch's "
                              "learning rate scaled by the square root of the batch ratio)",
                        [abs(gap(m, small)) - abs(gap(m, large)) for m in per_seed],
                        se=gap_ses, bounds=(-1, 1),
                        effect=f"abs gap({small}) minus abs gap({large}); gap = eval-mode clean train acc minus test acc",
                        preconditions=[trained(small), trained(large), fitted(small), fitted(large)],
                        evidence=f"gap {small} {np.mean([gap(m, small) for m in per_seed]):.3f}, "
                                 f"{large} {np.mean([gap(m, large) for m in per_seed]):.3f}"
                                 + (f" ({large_epochs} at the small batch's learning rate: "
                                    f"{np.mean([gap(m, large_epochs) for m in per_seed]):.3f})"
                                    if all(large_epochs in m for m in per_seed) else "")))

    twin, adv = "adversarial twin", "adversarial"

    def rel(m, v):
        """Share of the model's above-baseline clean accuracy that survives on HFC images
        (None: clean accuracy at the baseline)."""
        above = _excess(m, v, ["test"], chance)
        return None if above < 0.02 else _excess(m, v, high_sets, chance) / above

    def rel_terms(m, v):
        """Per image: the delta-method term of :func:`rel` (its mean over images is 0; its spread
        is rel's per-image error): ``(h_i - rel * a_i) / above``."""
        r, above = rel(m, v), _excess(m, v, ["test"], chance)
        return (_excess_terms(m, v, high_sets) - r * _excess_terms(m, v, ["test"])) / above

    def rel_diff(m):
        a, b = rel(m, twin), rel(m, adv)
        return None if a is None or b is None else a - b

    values = [rel_diff(m) for m in per_seed]
    rel_se = None
    if all(v is not None for v in values) and all(m.get("pred") for m in per_seed):
        rel_se = image_se(per_seed, lambda m: paired_terms(rel_terms(m, twin), rel_terms(m, adv)), lambda m: math.nan)
    mean_rel = lambda v: np.mean([x for x in (rel(m, v) for m in per_seed) if x is not None] or [np.nan])  # noqa: E731
    claims.append(claim(NAME, "adversarial training makes the model rely less on HFC", values, se=rel_se,
                        effect="twin minus adversarial: HFC-test accuracy over clean accuracy, each in excess of the "
                               "label-blind baseline; twin = the same recipe without the attack",
                        preconditions=[trained(twin),
                                       E.precondition("adversarial test acc", [m[adv]["test"] for m in per_seed],
                                                      minimum=settings["adv_min"]),
                                       # a twin that uses no HFC leaves no reliance to reduce: that can stop a
                                       # false "holds", but cannot make M_adversarial rely more on HFC than it
                                       E.precondition("twin mean HFC-test acc", [_mean_hfc(m[twin], radii)
                                                                                 for m in per_seed],
                                                      minimum=settings["hfc_min"], guards="holds")],
                        evidence=f"relative HFC acc: twin {mean_rel(twin):.3f}, adversarial {mean_rel(adv):.3f}"))
    return claims


def run(ctx: Context) -> dict:

    settings = ctx.models.chance_floors(ctx.setup.settings(SETTINGS))
    radii = ctx.setup.config().evaluation.radii
    # at a scale where M_adversarial's clean twin is the vanilla model with BatchNorm and running
    # statistics at test time, the BatchNorm claim is judged under those statistics too
    bn_running = ctx.setup.config(net={"norm": "batch", "bn_eval": "running"})
    settings["running_arm"] = "adversarial twin" if ctx.setup.config(**ctx.setup.twin_overrides()) == bn_running else None
    labels = list(variants(settings))
    named, keys = [], []
    for label, over in variants(settings).items():
        name = label.replace(" ", "_")
        if over == "adversarial":
            over = ctx.setup.adversarial_overrides()
        elif over == "scaled_lr":
            name, over = f"batch_{settings['batches'][1]}_lr_scaled", scaled_lr_overrides(
                settings, ctx.setup.config().optim.learning_rate)
        elif over == "twin":
            name, over = "adv_twin", ctx.setup.twin_overrides()
        for s in ctx.setup.seed_list:
            named.append((name, ctx.setup.config(seed=s, **over)))
            keys.append((label, s))
    r6 = ctx.setup.radius(settings["lfc_radius"])
    for norm in (("none", "batch") if settings.get("fig6", True) else ()):
        for s in ctx.setup.seed_list:
            named.append((f"lfc{r6}_{norm}", ctx.setup.config(seed=s, data={"train_filter": "low", "train_radius": float(r6)},
                                                        net={"norm": norm}, evaluation={"radii": (r6,)})))
            keys.append((f"lfc_{norm}", s))
    trained = dict(zip(keys, ctx.models.train_many(named)))
    small = f"batch {settings['batches'][0]}"
    eq = scaled_lr_label(settings)
    models = {label: [trained[(label, s)] for s in ctx.setup.seed_list] for label in labels}
    fig6 = {norm: [trained[(f"lfc_{norm}", s)] for s in ctx.setup.seed_list]
            for norm in (("none", "batch") if settings.get("fig6", True) else ())}

    per_seed_metrics, per_seed_rows = [], []
    for i, s in enumerate(ctx.setup.seed_list):
        metrics, rows = {}, []
        for label in labels:
            t = models[label][i]
            m = {"train": final(t, "train"), "test": final(t, "test")}
            row = {"variant": label, "train acc": m["train"], "test": m["test"]}
            for r in radii:
                m[f"test_low_{r}"] = row[f"LFC {r}"] = final(t, eval_set_name("test_low", r))
                m[f"test_high_{r}"] = row[f"HFC {r}"] = final(t, eval_set_name("test_high", r))
            row["gap"] = None if m["train"] is None or m["test"] is None else m["train"] - m["test"]
            metrics[label] = m
            rows.append(row)
        sets = {"test": "test", **{f"test_high_{r}": eval_set_name("test_high", r) for r in radii}}
        metrics["pred"], metrics["labels"] = {}, {}
        for variant in ("vanilla", "batchnorm", "adversarial twin", "adversarial"):
            p = ctx.models.predictions(models[variant][i], list(sets.values()))
            metrics["pred"][variant] = {k: p[v][0] for k, v in sets.items()}
            metrics["labels"] = {k: p[v][1] for k, v in sets.items()}
        metrics["correct"] = {small: ctx.models.outcomes(models[small][i], ["train", "test"]),
                              eq: ctx.models.outcomes(models[eq][i], ["train", "test"])}
        for norm, ts in fig6.items():
            rows.append({"variant": f"trained on LFC r={r6}, norm={norm}", "train acc": ts[i].history[-1]["train_accuracy"],
                         "test": final(ts[i], "test"), f"LFC {r6}": final(ts[i], eval_set_name("test_low", r6))})
        per_seed_metrics.append(metrics)
        per_seed_rows.append(rows)
    _, test = ctx.models.datasets(named[0][1])
    n_train = named[0][1].evaluation.train_subset
    claims = judge_claims(per_seed_metrics, settings, radii=radii, n_test=len(test), num_classes=test.num_classes,
                          n_train=n_train)

    figs = []
    for label, ts in models.items():
        curves = {"test": seed_curve(ts, "test")}
        for r in radii:
            curves[f"LFC {r}"] = seed_curve(ts, eval_set_name("test_low", r))
            curves[f"HFC {r}"] = seed_curve(ts, eval_set_name("test_high", r))
        styles = {"test": "k-", **{f"HFC {r}": "--" for r in radii}}
        fig = plotting.curves_figure(curves, title=f"{label} ({len(ts)} seeds, band: 95% interval)", styles=styles)
        figs.append(save_figure(fig, ctx.artefact_dir(NAME) / f"{label.replace(', ', '_').replace(' ', '_').replace('.', '')}.png"))
    if fig6:
        fig = plotting.curves_figure(
            {f"{n}: {k}": seed_curve(ts, key) for n, ts in fig6.items()
             for k, key in (("original", "test"), (f"LFC {r6}", eval_set_name("test_low", r6)))},
            title=f"Fig. 6: trained on LFC r={r6}, with/without BN")
        figs.append(save_figure(fig, ctx.artefact_dir(NAME) / "fig6_lfc_bn.png"))

    cols = ["variant", "train acc", "test", "gap"] + [f"{k} {r}" for r in radii for k in ("LFC", "HFC")]
    if f"LFC {r6}" not in cols:
        cols.append(f"LFC {r6}")
    rows = combine_seeds(per_seed_rows)
    write_artefact(ctx, NAME, title="Fig. 4-6: heuristics, accuracy on original / LFC / HFC test data", rows=rows,
                   per_seed=per_seed_rows, columns=cols, claims=claims,
                   outcomes={**outcome_records(per_seed_metrics, ctx.setup.seed_list),
                             **{f"pred|{k}": v for k, v in outcome_records(per_seed_metrics, ctx.setup.seed_list, "pred").items()}},
                   models={**models, **{f"lfc_{k}": v for k, v in fig6.items()}}, figures=figs,
                   settings={**settings, "radii": list(radii)},
                   notes="Last-evaluation accuracies; 'train acc' is measured in eval mode on clean training data "
                         "(for the Fig. 6 rows: the running accuracy over the LFC training batches). Curves per epoch "
                         "in the figures (dashed: HFC). The paper reports these as figures only, so there is no paper "
                         f"column. '{eq}': the large batch at the same epochs with its learning rate scaled by the "
                         f"square root of the batch ratio (the batch-size claim's comparison with {small}). outcomes.npz: per "
                         "seed, variant and evaluation set behind a claim, whether each image was classified right (and under "
                         "'pred|seed <s>|<variant>|<set>' the predicted labels behind the label-blind baselines).")
    return {"rows": rows, "claims": claims}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
