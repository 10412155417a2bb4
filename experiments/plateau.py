"""Does the full-scale M_natural leave the ln 10 plateau? (issue 13, item 5)

Trains the paper-setting vanilla model (``recipes.BASE["full"]``: no BatchNorm, Adam 1e-4,
batch 100, no augmentation, paper input scaling) for a few hundred steps on CIFAR-shaped
(32x32x3) built-in data and records the loss of every step, the running training accuracy
and, every ``--eval-every`` steps, the accuracy on held-out test images.

"Left the plateau" is judged on the last ``--window`` steps: their mean loss is below
``ln 10 - 0.1`` and their training accuracy is above chance + 0.1 (chance 0.1).

Usage::

    python -m experiments.plateau --steps 300                       # ResNet18, He init (default)
    python -m experiments.plateau --steps 300 --model paper_resnet  # the code's 32-layer ResNet

Writes ``<out>/<model>/{config.json, metrics.jsonl, summary.json, loss.png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import numpy as np
from tqdm.auto import tqdm

from experiments import recipes
from jaxhfc import datasets, parallel, pipeline
from jaxhfc import results as R
from jaxhfc.config import TrainConfig
from jaxhfc.config import merge_sections
from jaxhfc.evaluation import evaluate
from jaxhfc.prepare import load_splits
from jaxhfc.step import build_model, create_train_state, make_optimizer, make_train_step, named_keys

PLATEAU = math.log(10.0)


def left_plateau(losses: np.ndarray, correct: np.ndarray, count: int, *, window: int) -> dict:
    """The rule: over the last ``window`` steps, mean loss < ln 10 - 0.1 and training
    accuracy > 0.2 (chance 0.1 + 0.1)."""
    tail_loss = float(np.mean(losses[-window:]))
    tail_acc = float(np.sum(correct[-window:]) / (count * min(window, len(correct))))
    return {"tail_loss": tail_loss, "tail_train_accuracy": tail_acc, "window": int(window),
            "left_plateau": bool(tail_loss < PLATEAU - 0.1 and tail_acc > 0.2)}


def run(*, model: str, steps: int, seed: int, eval_every: int, num_test: int, window: int,
        out: pathlib.Path) -> dict:

    full = recipes.BASE["full"]
    config = TrainConfig(**merge_sections(full, {
        "net": {"name": model}, "data": {"name": "synthetic", "num_train": steps * full["optim"]["batch_size"],
                                         "num_test": num_test},
        "optim": {"epochs": 1}, "run": {"seed": seed, "num_devices": 1}}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
    t0 = time.perf_counter()
    train_ds, test_ds = load_splits(config)
    x = np.asarray(datasets.to_model_input(train_ds, scaling=config.data.scaling), np.float32)
    y = np.asarray(train_ds.labels, np.int32)
    xt = np.asarray(datasets.to_model_input(test_ds, scaling=config.data.scaling), np.float32)
    yt = np.asarray(test_ds.labels, np.int32)
    mesh = parallel.make_mesh(1)
    net = build_model(config, int(train_ds.num_classes))
    tx = make_optimizer(optimizer=config.optim.name, learning_rate=config.optim.learning_rate, total_steps=steps)
    keys = named_keys(seed)
    state = create_train_state(net, tx, keys["init"], x.shape[1:], mesh=mesh)
    step = make_train_step(net, tx, mesh, global_batch=config.optim.batch_size, num_classes=int(train_ds.num_classes))
    images = parallel.global_from_full(mesh, x)
    labels = parallel.global_from_full(mesh, y)
    order = np.asarray(pipeline.epoch_indices(keys["data"], len(y), config.optim.batch_size))
    losses, correct = [], []
    rows = []
    with open(out / "metrics.jsonl", "w") as f:
        for i in tqdm(range(steps), desc=f"{model} steps", unit="step"):
            idx = parallel.global_from_full(mesh, order[i].astype(np.int32), sharded=True)
            state, m = step(state, (images, labels, idx), keys)
            loss = float(m["loss_sum"]) / float(m["count"])
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {i + 1}; expected a finite number")
            losses.append(loss)
            correct.append(int(m["correct"]))
            row = {"step": i + 1, "loss": loss, "train_accuracy": int(m["correct"]) / int(m["count"]),
                   "seconds": time.perf_counter() - t0}
            if (i + 1) % eval_every == 0 or i + 1 == steps:
                row["test_accuracy"] = float(evaluate(state, net, mesh, xt, yt, batch_size=num_test)["accuracy"])
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
    summary = {"model": model, "steps": steps, "seed": seed, "first_loss": losses[0],
               "final_test_accuracy": rows[-1]["test_accuracy"], "seconds": time.perf_counter() - t0,
               "hardware": R.environment_info(),
               **left_plateau(np.asarray(losses), np.asarray(correct), config.optim.batch_size, window=window)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(rows, out / "loss.png", title=f"{model}, paper setting (no BN, Adam 1e-4, batch 100)")
    return summary


def _plot(rows: list[dict], path: pathlib.Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    k = min(20, len(loss))
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, loss, lw=0.5, alpha=0.4, label="loss per step")
    ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k} steps")
    ax.axhline(PLATEAU, color="k", ls="--", lw=0.8, label="ln 10")
    ax.set_xlabel("step")
    ax.set_ylabel("training cross entropy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18", choices=("resnet18", "paper_resnet"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--num-test", type=int, default=500)
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/synthetic/plateau"))
    a = p.parse_args(argv)
    if a.steps < 1 or a.window < 1:
        p.error(f"--steps and --window must be >= 1; got {a.steps}, {a.window}")
    summary = run(model=a.model, steps=a.steps, seed=a.seed, eval_every=a.eval_every, num_test=a.num_test,
                  window=min(a.window, a.steps), out=a.out / a.model)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
