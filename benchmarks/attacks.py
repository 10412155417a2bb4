"""Adversarial-attack benchmark: PGD throughput, a PGD-20 test-set evaluation, and the cost of
adversarial (Madry PGD-10) training relative to clean training.

Measured per model (``small_cnn`` and ``resnet18``; ``--quick`` uses narrow versions):

* ``pgd10`` / ``pgd10_unrolled``: images/s of one jitted Linf PGD-10 call (eps 8/255,
  random start) on a batch, with the step loop as a ``lax.fori_loop`` and fully unrolled
  (XLA:CPU runs convolutions inside while loops several times slower), compile time
  reported separately (first call minus a steady call);
* ``apgd10`` / ``apgd10_unrolled``: the same for APGD-DLR with 10 steps
  (:func:`jaxhfc.attacks.apgd`);
* ``torchattacks_pgd10`` (``small_cnn`` only, when PyTorch and torchattacks are installed):
  ``torchattacks.PGD`` with the same settings on a PyTorch copy of the model, same batch;
* ``pgd20_eval``: wall time of :func:`jaxhfc.attacks.robust_accuracy` (PGD-20, noise and
  gradient checks on, the logit-scale and more-steps re-runs off) over ``--eval-images``
  images on all devices, scaled to the 10,000 CIFAR-10 test images;
* ``train``: one step of :func:`jaxhfc.train.make_train_step` with and without the paper's
  Madry adversary (:func:`jaxhfc.attacks.madry_adversary`: PGD-10, eps 0.03, step 0.003), the
  ratio of step times, and the implied epoch times for 50,000 images.

The evaluation and training parts unroll the PGD loop on CPU (``--unroll auto``).
Timings use warm-up and ``block_until_ready``; the median of ``--repeats`` calls is reported.
Random weights and random images: throughput does not depend on what the model learnt.

Usage: ``python -m benchmarks.attacks [--quick] [--models small_cnn,resnet18] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks import common

TEST_IMAGES = 10_000
TRAIN_IMAGES = 50_000


def _model(name: str, quick: bool):
    from jaxhfc import models

    width = None
    if quick:
        width = 8
    return models.get_model(name, num_classes=10, width=width, normalize=True), width


def bench_model(name: str, *, quick: bool, batch: int, eval_images: int, train_batch: int,
                repeats: int, unroll) -> dict:
    import jax
    import jax.numpy as jnp
    from jax.tree_util import Partial

    from jaxhfc import attacks, parallel
    from jaxhfc.step import create_train_state, make_optimizer, make_train_step, named_keys

    model, width = _model(name, quick)
    key = jax.random.key(0)
    variables = model.init({"params": key}, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
    apply = Partial(lambda v, x: model.apply(v, x, train=False), variables)
    rng = np.random.default_rng(0)
    out: dict = {"model": name, "width": width,
                 "params": int(sum(np.size(a) for a in jax.tree_util.tree_leaves(variables["params"])))}

    # --- PGD-10 throughput (one device, one jitted call per batch)
    x = jnp.asarray(rng.uniform(size=(batch, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=(batch,)), jnp.int32)

    def make_pgd10(unroll):
        @jax.jit
        def pgd10(v, x, y, k):
            f = Partial(lambda vv, xx: model.apply(vv, xx, train=False), v)
            return attacks.pgd(f, x, y, k, eps=8 / 255, step_size=2 / 255, steps=10,
                               unroll=unroll)[0]
        return pgd10

    for label, u in (("pgd10", 1), ("pgd10_unrolled", True)):
        fn = make_pgd10(u)
        t = common.time_call(lambda: fn(variables, x, y, key), repeats=repeats)
        out[label] = {"batch": batch, "unroll": u, **t,
                      "compile_s": max(t["first_s"] - t["median_s"], 0.0),
                      "images_per_s": batch / t["median_s"]}

    # --- APGD-DLR, 10 steps (jaxhfc.attacks.apgd), same batch and eps
    for label, u in (("apgd10", 1), ("apgd10_unrolled", True)):
        @jax.jit
        def apgd10(v, x, y, k, u=u):
            f = Partial(lambda vv, xx: model.apply(vv, xx, train=False), v)
            return attacks.apgd(f, x, y, k, eps=8 / 255, steps=10, loss="dlr", unroll=u)[0]

        t = common.time_call(lambda: apgd10(variables, x, y, key), repeats=repeats)
        out[label] = {"batch": batch, "unroll": u, "loss": "dlr", **t,
                      "compile_s": max(t["first_s"] - t["median_s"], 0.0),
                      "images_per_s": batch / t["median_s"]}

    # --- torchattacks' PGD-10 on the same architecture in PyTorch (optional reference)
    if name == "small_cnn":
        out["torchattacks_pgd10"] = _torchattacks_pgd(width or 16, np.asarray(x), np.asarray(y),
                                                      repeats=repeats)

    # --- PGD-20 evaluation with robust_accuracy (all devices, sanity checks on)
    mesh = parallel.make_mesh()
    ndev = mesh.devices.size
    eval_bs = max(ndev, (min(batch, eval_images) // ndev) * ndev)
    xe = rng.uniform(size=(eval_images, 32, 32, 3)).astype(np.float32)
    ye = rng.integers(0, 10, size=(eval_images,)).astype(np.int32)
    kw = dict(batch_size=eval_bs, mesh=mesh, eps=8 / 255, step_size=2 / 255, steps=20,
              unroll=unroll, logit_scale=None, more_steps=None)  # the attack itself, no re-runs
    import warnings

    with warnings.catch_warnings():  # random weights trip the masking heuristics; not the point
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        attacks.robust_accuracy(apply, xe[:eval_bs], ye[:eval_bs], key, **kw)  # compile
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = attacks.robust_accuracy(apply, xe, ye, key, **kw)
        wall = time.perf_counter() - t0
    out["pgd20_eval"] = {
        "unroll": unroll, "images": eval_images, "batch": eval_bs, "devices": ndev, "wall_s": wall,
        "first_batch_s_incl_compile": first, "images_per_s": eval_images / wall,
        "scaled_to_10000_s": wall * TEST_IMAGES / eval_images,
        "max_perturbation": res.max_perturbation,
    }

    # --- adversarial vs clean training step (jaxhfc.train step, all devices)
    tb = max(ndev, (train_batch // ndev) * ndev)
    tx = make_optimizer(optimizer="adam", learning_rate=1e-4)
    xt = jnp.asarray(rng.uniform(size=(tb, 32, 32, 3)), jnp.float32)
    yt = jnp.asarray(rng.integers(0, 10, size=(tb,)), jnp.int32)
    batch_in = (xt, yt, jnp.arange(tb, dtype=jnp.int32))
    keys = named_keys(0)
    steps = {}
    for label, adversary in (("clean", None), ("adversarial", attacks.madry_adversary(unroll=unroll))):
        step = make_train_step(model, tx, mesh, global_batch=tb, num_classes=10,
                                     adversary=adversary)
        state = create_train_state(model, tx, key, (32, 32, 3), mesh=mesh)
        holder = {"state": state}

        def one():
            holder["state"], m = step(holder["state"], batch_in, keys)
            return m

        t = common.time_call(one, repeats=repeats)
        steps[label] = {**t, "compile_s": max(t["first_s"] - t["median_s"], 0.0),
                        "images_per_s": tb / t["median_s"],
                        "epoch_s_50000": t["median_s"] * TRAIN_IMAGES / tb}
    out["train"] = {"batch": tb, "devices": ndev, "unroll": unroll, **steps,
                    "adversarial_over_clean": steps["adversarial"]["median_s"]
                    / steps["clean"]["median_s"]}
    return out


def _torchattacks_pgd(width: int, x: np.ndarray, y: np.ndarray, *, repeats: int) -> dict | None:
    """images/s of ``torchattacks.PGD`` (eps 8/255, step 2/255, 10 steps, random start) on a
    PyTorch copy of ``small_cnn`` (same layers and shapes, eval-mode BatchNorm, the same input
    normalisation), on the CPU threads PyTorch uses by default; None when torch or
    torchattacks is not installed (``pip install torch==2.13.0`` and
    ``pip install --no-deps torchattacks``)."""
    try:
        import torch
        import torchattacks
    except ImportError:
        return None
    from jaxhfc import datasets

    mean = torch.tensor(np.asarray(datasets.CIFAR10_MEAN, np.float32)).view(1, 3, 1, 1)
    std = torch.tensor(np.asarray(datasets.CIFAR10_STD, np.float32)).view(1, 3, 1, 1)

    class SmallCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            chans = [3, width, 2 * width, 4 * width, 8 * width]
            layers = []
            for i in range(4):
                layers += [torch.nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2,
                                           padding=1, bias=False),
                           torch.nn.BatchNorm2d(chans[i + 1]), torch.nn.ReLU()]
            self.features = torch.nn.Sequential(*layers)
            self.head = torch.nn.Linear(8 * width, 10)

        def forward(self, xx):
            h = self.features((xx - mean) / std)
            return self.head(h.mean(dim=(2, 3)))

    net = SmallCNN().eval()
    atk = torchattacks.PGD(net, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    yt = torch.from_numpy(y.astype(np.int64))
    t = common.time_call(lambda: atk(xt, yt).numpy(), repeats=repeats)
    return {"batch": int(x.shape[0]), "torch": torch.__version__, "torchattacks": torchattacks.__version__,
            "threads": torch.get_num_threads(), **t, "images_per_s": x.shape[0] / t["median_s"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="narrow models, small sizes (a minute)")
    p.add_argument("--models", default="small_cnn,resnet18")
    p.add_argument("--batch", type=int, default=None, help="PGD-10 batch (default 128 GPU / 32 CPU; quick 16)")
    p.add_argument("--eval-images", type=int, default=None,
                   help="images of the PGD-20 evaluation (default 10000 GPU / 256 CPU; quick 32)")
    p.add_argument("--train-batch", type=int, default=None, help="default 128 GPU / 32 CPU; quick 16")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--unroll", choices=("auto", "yes", "no"), default="auto",
                   help="unroll the PGD loop for the eval and training parts (auto: on CPU only)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    import jax

    on_cpu = jax.default_backend() == "cpu"
    batch = args.batch or (16 if args.quick else (32 if on_cpu else 128))
    eval_images = args.eval_images or (32 if args.quick else (256 if on_cpu else TEST_IMAGES))
    train_batch = args.train_batch or (16 if args.quick else (32 if on_cpu else 128))
    repeats = args.repeats or (2 if args.quick else 3)
    # XLA:CPU runs convolutions inside while loops ~6x slower: unroll the PGD loop there
    unroll = {"auto": on_cpu, "yes": True, "no": 1}[args.unroll]
    results = []
    for name in [m for m in args.models.split(",") if m]:
        r = bench_model(name, quick=args.quick, batch=batch, eval_images=eval_images,
                        train_batch=train_batch, repeats=repeats, unroll=unroll)
        results.append(r)
        a, au, e, t = r["pgd10"], r["pgd10_unrolled"], r["pgd20_eval"], r["train"]
        print(f"{name} (width {r['width'] or 'default'}, {r['params']:,} params) on "
              f"{jax.devices()[0].device_kind}:")
        print(f"  PGD-10, batch {a['batch']}: {a['images_per_s']:.1f} img/s "
              f"(median {a['median_s']:.3f} s, compile {a['compile_s']:.1f} s); unrolled "
              f"{au['images_per_s']:.1f} img/s (compile {au['compile_s']:.1f} s)")
        ap, apu, ta = r["apgd10"], r["apgd10_unrolled"], r.get("torchattacks_pgd10")
        print(f"  APGD-DLR-10, batch {ap['batch']}: {ap['images_per_s']:.1f} img/s (compile "
              f"{ap['compile_s']:.1f} s); unrolled {apu['images_per_s']:.1f} img/s "
              f"(compile {apu['compile_s']:.1f} s)")
        if ta:
            print(f"  torchattacks PGD-10 (torch {ta['torch']}, {ta['threads']} threads), batch "
                  f"{ta['batch']}: {ta['images_per_s']:.1f} img/s")
        print(f"  PGD-20 eval of {e['images']} images on {e['devices']} device(s): {e['wall_s']:.2f} s "
              f"-> {e['scaled_to_10000_s']:.1f} s for 10,000 images")
        print(f"  train step, batch {t['batch']}: clean {t['clean']['median_s']:.3f} s, "
              f"Madry PGD-10 {t['adversarial']['median_s']:.3f} s "
              f"({t['adversarial_over_clean']:.1f}x); epoch of 50,000: clean "
              f"{t['clean']['epoch_s_50000']:.0f} s, adversarial {t['adversarial']['epoch_s_50000']:.0f} s")
    payload = {"quick": bool(args.quick), "results": results}
    path = common.save("attacks" + ("-quick" if args.quick else ""), payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
