"""Choose a dataset's quick recipe for M_natural on held-out validation images only.

Each candidate (training-set size, epochs, width of the small CNN) trains M_natural on
selection seeds that no reproduction reports (``SELECTION_SEEDS``, far from the base seeds
0, 1009, 2018, ...), and is scored by its accuracy on that seed's validation split (held out
of the training images). No test image is evaluated. The rule, fixed before the run: the
cheapest candidate (fewest image-epochs times width) whose mean validation accuracy reaches
``--target``; when none does, the most accurate one.

    python -m experiments.select_recipe --dataset fashion_mnist

writes ``results/<dataset>/recipe_selection.md`` and ``.json``; the chosen settings are then
written by hand into the dataset's profile (``experiments/profiles.py``) (the record says which).
"""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from experiments.common import Context, context_from_args, parser, run_cli
from jaxhfc import results as R

#: Seeds used only for choosing recipes (no reproduction reports them).
SELECTION_SEEDS = (424242, 434343)

#: Candidates: (training images, epochs, small-CNN width).
CANDIDATES = ((5000, 6, 16), (10000, 6, 16), (10000, 12, 16), (20000, 6, 16), (20000, 10, 16), (10000, 8, 32),
              (20000, 8, 32))


def validation_accuracy(ctx: Context, trained) -> float:

    x, y = ctx.models.test_arrays(trained.config, split="val")
    fn = trained.logits_fn()
    preds = np.concatenate([np.asarray(fn(jnp.asarray(x[i:i + 512]))).argmax(-1) for i in range(0, len(x), 512)])
    return float(np.mean(preds == y))


def run(ctx: Context, *, target: float, candidates=CANDIDATES, seeds=SELECTION_SEEDS) -> dict:
    rows = []
    num_val = ctx.setup.config().data.num_val
    for n, epochs, width in candidates:
        accs, secs = [], []
        for s in seeds:
            cfg = ctx.setup.config(seed=s, net={"width": width}, data={"num_train": n + num_val}, optim={"epochs": epochs},
                             evaluation={"every": epochs, "radii": (), "train": False},
                             run={"checkpoint_every": epochs})
            t0 = time.perf_counter()
            t = ctx.models.train(f"select-n{n}-e{epochs}-w{width}", cfg)
            secs.append(time.perf_counter() - t0)
            accs.append(validation_accuracy(ctx, t))
        rows.append({"train images": n, "epochs": epochs, "width": width, "cost": n * epochs * width,
                     "val acc": float(np.mean(accs)), "val acc per seed": accs, "seconds per training": float(np.mean(secs))})
    ok = [r for r in rows if r["val acc"] >= target]
    chosen = min(ok, key=lambda r: r["cost"]) if ok else max(rows, key=lambda r: r["val acc"])
    out = {"dataset": ctx.setup.dataset, "scale": ctx.setup.scale, "target": target, "seeds": list(seeds),
           "validation images": num_val, "rule": __doc__.split("\n\n")[1].replace("\n", " "),
           "rows": rows, "chosen": chosen, "environment": R.environment_info()}
    R.write_json(ctx.out / "recipe_selection.json", out)
    md = [f"# Recipe selection for `{ctx.setup.dataset}` ({ctx.setup.scale} scale)", "",
          out["rule"], "", f"Target: mean validation accuracy >= {target}; selection seeds {list(seeds)}; "
          f"{num_val} validation images per seed.", "",
          R.markdown_table([{k: v for k, v in r.items() if k != "val acc per seed"} for r in rows], digits=3), "",
          f"Chosen: {chosen['train images']} training images, {chosen['epochs']} epochs, width {chosen['width']}."]
    R.write_text(ctx.out / "recipe_selection.md", "\n".join(md) + "\n")
    return out


def main(argv=None):
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--target", type=float, default=0.89, help="validation accuracy the chosen recipe must reach")
    args = p.parse_args(argv)
    if not (args.tiny or args.quick):
        args.quick = True
    ctx = context_from_args(args)
    out = run_cli(lambda: run(ctx, target=args.target))
    c = out["chosen"]
    print(f"chosen: {c['train images']} images, {c['epochs']} epochs, width {c['width']} "
          f"(validation accuracy {c['val acc']:.3f}); wrote {ctx.out / 'recipe_selection.md'}")


if __name__ == "__main__":
    main()
