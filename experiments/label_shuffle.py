"""Fig. 3: label shuffling. M_natural (original labels) and M_shuffle (labels shuffled once),
with accuracy on the training set and on its LFC copies at r = 4, 8, 12, 16 after each epoch.

Paper claim: the natural model picks up low-frequency (semantic) signal first (about 40% on
LFC r=4 after one epoch), while the shuffled-label model fits its labels mostly through HFC
and barely learns LFC at r=4.

    python -m experiments.label_shuffle [--quick] [--seeds N] [--dataset ...]
"""

from __future__ import annotations

import numpy as np

from experiments.claims import claim, combine_seeds, image_se, outcome_records
from experiments.common import Context, main_for
from experiments.reporting import save_figure, write_artefact
from experiments.training import curve, final, seed_curve
from jaxhfc import evidence as E
from jaxhfc import plotting
from jaxhfc.config import merge_sections
from jaxhfc.evaluation import eval_set_name

NAME = "label_shuffle"
#: Everything this artefact changes by scale. Both models see the same training images; at
#: quick scale that is 512 images, so that the shuffled-label model can fit its labels within
#: minutes on a CPU; M_shuffle gets 3x the paper's ratio of epochs at full scale (100 vs 300) and
#: 75 at quick scale, where M_natural gets 40 (it needs them to fit its own labels on the conflict
#: images of the synthetic data). ``fit_min``: precondition, each model's accuracy on its own
#: training labels at the end.
SETTINGS = {
    "full": dict(radii=(4, 8, 12, 16), epochs=100, shuffle_epochs=300,
                 overrides=dict(evaluation=dict(train_subset=10000)),
                 natural_eval_every=1, shuffle_eval_every=1, fit_min=0.9),
    "quick": dict(radii=(4, 8, 12, 16), epochs=40, shuffle_epochs=75,
                  overrides=dict(data=dict(num_train=512, num_test=500, num_val=0), optim=dict(batch_size=64),
                                 evaluation=dict(train_subset=512)),
                  natural_eval_every=8, shuffle_eval_every=15, fit_min=0.8),
    "tiny": dict(radii=(4,), epochs=2, shuffle_epochs=2,
                 overrides=dict(data=dict(num_val=0), evaluation=dict(train_subset=128)),
                 natural_eval_every=1, shuffle_eval_every=1, fit_min=0.0),
}
#: Read off the authors' poster (approximate, docs/paper.md), at the last epoch.
REFERENCE = {
    "natural": {"train": 1.0, "train_low_16": 0.95, "train_low_12": 0.9, "train_low_8": 0.62, "train_low_4": 0.27},
    "shuffle": {"train": 1.0, "train_low_16": 0.95, "train_low_12": 0.9, "train_low_8": 0.55, "train_low_4": 0.15},
}


def judge_claims(per_seed: list[dict], settings: dict, n_eval: int) -> list:
    """Claim from per-seed ``{"natural": {"train": .., "train_low_<r>": ..}, "shuffle": {...}}``
    (last evaluation; M_shuffle's accuracies are against its shuffled labels). With
    ``"correct": {"natural": {key: (N,) bool}, "shuffle": {...}}`` (per training image of the
    evaluated subset) the per-image error is paired over seeds, else binomial."""
    r = settings["radii"][0]
    key = eval_set_name("train_low", r)
    effects = [m["natural"][key] - m["shuffle"][key] for m in per_seed]
    ses = image_se(per_seed,
                   lambda m: (m["correct"]["natural"][key].astype(float) - m["correct"]["shuffle"][key]
                              if "correct" in m else None),
                   lambda m: E.diff_se(m["natural"][key], n_eval, m["shuffle"][key], n_eval))
    pre = [E.precondition("M_natural train acc (its labels)", [m["natural"]["train"] for m in per_seed],
                          minimum=settings["fit_min"]),
           E.precondition("M_shuffle train acc (shuffled labels)", [m["shuffle"]["train"] for m in per_seed],
                          minimum=settings["fit_min"])]
    return [claim(NAME, f"M_natural learns the LFC (r={r}) of its training data better than M_shuffle", effects,
                  se=ses, bounds=(-1, 1),
                  effect=f"M_natural minus M_shuffle accuracy on LFC r={r} training images (last epoch)",
                  preconditions=pre,
                  evidence=f"{key}: natural {np.mean([m['natural'][key] for m in per_seed]):.3f}, "
                           f"shuffle {np.mean([m['shuffle'][key] for m in per_seed]):.3f}")]


def run(ctx: Context) -> dict:

    st = ctx.models.chance_floors(ctx.setup.settings(SETTINGS))
    st["radii"] = radii = tuple(ctx.setup.radius(r) for r in st["radii"])

    common = merge_sections({"evaluation": {"train": True, "radii": radii}}, st["overrides"])

    def cfg(seed: int, epochs: int, every: int, shuffle: float):
        return ctx.setup.config(seed=seed, **merge_sections(common, {"optim": {"epochs": epochs}, "evaluation": {"every": every},
                                                               "data": {"shuffle_labels": shuffle}}))

    named = [("natural", cfg(s, st["epochs"], st["natural_eval_every"], 0.0)) for s in ctx.setup.seed_list]
    named += [("shuffle", cfg(s, st["shuffle_epochs"], st["shuffle_eval_every"], 1.0)) for s in ctx.setup.seed_list]
    trained = ctx.models.train_many(named)
    n = len(ctx.setup.seed_list)
    models = {"natural": trained[:n], "shuffle": trained[n:]}
    keys = ["train"] + [eval_set_name("train_low", r) for r in radii] + ["test"]
    per_seed_metrics, per_seed_rows = [], []
    for i in range(n):
        metrics, rows = {}, []
        for name, ts in models.items():
            t = ts[i]
            metrics[name] = {k: final(t, k) for k in keys}
            for k in keys:
                ours, ref = metrics[name][k], REFERENCE[name].get(k)
                first = curve(t.history, k)[1][:1]
                rows.append({"model": f"M_{name}", "evaluated on": k, "first eval": first[0] if first else None,
                             "last epoch (poster)": ref, "last epoch (ours)": ours,
                             "difference": None if ref is None or ours is None else ours - ref})
        claim_key = eval_set_name("train_low", st["radii"][0])
        metrics["correct"] = {name: ctx.models.outcomes(ts[i], [claim_key]) for name, ts in models.items()}
        per_seed_metrics.append(metrics)
        per_seed_rows.append(rows)
    n_eval = min(st["overrides"].get("evaluation", {}).get("train_subset") or 10**9, len(ctx.models.datasets(named[0][1])[0]))
    claims = judge_claims(per_seed_metrics, st, n_eval)
    figs = []
    for name, ts in models.items():
        curves = {k: seed_curve(ts, k) for k in keys}
        fig = plotting.curves_figure(curves, title=f"M_{name}: accuracy over epochs ({n} seeds)",
                                     styles={"train": "k-", "test": "k:"})
        figs.append(save_figure(fig, ctx.artefact_dir(NAME) / f"{name}.png"))
    rows = combine_seeds(per_seed_rows)
    write_artefact(ctx, NAME, title="Fig. 3: label shuffling, accuracy on training data and its LFC copies", rows=rows,
                   per_seed=per_seed_rows, claims=claims, models=models, figures=figs,
                   settings={k: v for k, v in st.items()}, outcomes=outcome_records(per_seed_metrics, ctx.setup.seed_list),
                   notes="Accuracies of M_shuffle are against the shuffled labels it was trained on (measured in eval "
                         "mode). 'poster' values are approximate readings of the authors' poster (CIFAR-10). outcomes.npz: "
                         "per seed and model, whether each evaluated training image's LFC (the claim's radius) was "
                         "classified right.")
    return {"rows": rows, "claims": claims}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
