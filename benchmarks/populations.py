"""Training engine v2: populations (K models in one program) and the on-device loop.

Two measurements of :func:`jaxhfc.train.make_train_loop` on random data (the throughput
does not depend on what the models learn), side by side in one run:

* **populations**: K = 1, 2, 4, 8 models with their own parameters, optimizer states, keys
  and batch order (shared images, as for seeds), vmapped in one data-parallel program,
  against the *same models one after the other* (the single-model loop, K times). Reported:
  images/s of the population (all models), images/s per model, and the ratio
  ``population img/s / single-model img/s`` (> 1: the population is faster than training
  its models one after the other).
* **loop**: one model three ways: ``per_step_sync`` (one step per call, metrics fetched after
  every step: the old ``fit``), ``per_step_pipelined`` (one step per call, metrics fetched
  every 8 steps: ``fit`` on CPU) and ``on_device`` (``--steps-per-call`` steps scanned in one
  call: ``fit`` on accelerators).

Compile time (first call) is reported apart; medians over ``--repeats`` runs of ``--steps``
steps. On a CPU host the fake devices share the cores, so a population's gain there is from
batching work into larger kernels only.

Usage::

    python -m benchmarks.populations [--quick] [--model small_cnn|resnet18] [--width W]
        [--batch 100] [--dtypes float32 bfloat16] [--populations 1 2 4 8] [--steps 20]
        [--steps-per-call 10] [--repeats 3] [--num-devices N] [--out DIR]

The paper setting on a GPU: ``--model resnet18 --batch 100 --dtypes float32 bfloat16``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np

from benchmarks import common


def _setup(model_name: str, width: int | None, dtype: str, batch: int, k: int | None, num_devices: int | None,
           input_shape: tuple[int, int, int] = (32, 32, 3), norm: str | None = None):
    import jax
    import jax.numpy as jnp

    from jaxhfc import models, parallel
    from jaxhfc.step import create_train_state, make_optimizer, make_train_loop, named_keys

    mesh = parallel.make_mesh(num_devices)
    model = models.get_model(model_name, width=width, dtype=dtype, norm=norm)
    tx = make_optimizer(optimizer="adam", learning_rate=1e-4)
    loop = make_train_loop(model, tx, mesh, global_batch=batch, num_classes=10, population=k)
    members = [create_train_state(model, tx, jax.random.key(i), input_shape, mesh=mesh) for i in range(k or 1)]
    if k is None:
        state = members[0]
        keys = {n: v for n, v in named_keys(0).items() if n != "init"}
    else:
        state = jax.jit(lambda s: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *s),
                        out_shardings=parallel.replicated(mesh))(members)
        keys = {n: jax.random.wrap_key_data(jnp.stack([jax.random.key_data(named_keys(i)[n])
                                                       for i in range(k)])) for n in ("data", "dropout", "attack")}
    rng = np.random.default_rng(0)
    n_images = 4 * batch
    images = parallel.global_from_full(mesh, rng.random((n_images, *input_shape), dtype=np.float32))
    labels = parallel.global_from_full(mesh, rng.integers(0, 10, n_images).astype(np.int32))
    shape = (batch,) if k is None else (k, batch)
    idx = rng.integers(0, n_images, (64,) + shape).astype(np.int32)
    return mesh, loop, state, images, labels, parallel.global_from_full(mesh, keys), idx


def _run(mesh, loop, state, images, labels, keys, idx, *, steps: int, per_call: int, fetch_every: int,
         repeats: int) -> tuple[dict, Any]:
    """Time ``steps`` steps in calls of ``per_call`` steps, metrics fetched every ``fetch_every`` calls."""
    from jaxhfc import parallel

    calls = [parallel.global_from_full(mesh, idx[i:i + per_call], sharded=True, batch_axis=idx.ndim - 1)
             for i in range(0, steps, per_call) if i + per_call <= steps]
    if not calls:
        raise ValueError(f"--steps ({steps}) must be at least --steps-per-call ({per_call})")

    def run(state):
        pending = []
        for c in calls:
            state, m = loop(state, images, labels, c, keys)
            pending.append(m)
            if len(pending) >= fetch_every:
                parallel.to_host(pending)
                pending = []
        parallel.to_host(pending)
        common.block(state)
        return state

    t0 = time.perf_counter()
    state = run(state)  # first run: compiles
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = run(state)
        times.append(time.perf_counter() - t0)
    n_steps = len(calls) * per_call
    med = statistics.median(times)
    return {"first_s": first, "median_s": med, "times_s": times, "steps": n_steps,
            "step_s": med / n_steps}, state


def bench(*, model_name: str, width: int | None, dtype: str, batch: int, populations: list[int], steps: int,
          steps_per_call: int, repeats: int, num_devices: int | None) -> dict:
    import jax

    out: dict[str, Any] = {"model": model_name, "width": width, "dtype": dtype, "batch": batch,
                           "backend": jax.default_backend()}
    # one model, three loops
    mesh, loop, state, images, labels, keys, idx = _setup(model_name, width, dtype, batch, None, num_devices)
    out["devices"] = int(mesh.devices.size)
    loops = {}
    for name, per_call, fetch in (("per_step_sync", 1, 1), ("per_step_pipelined", 1, 8),
                                  ("on_device", steps_per_call, 1)):
        r, state = _run(mesh, loop, state, images, labels, keys, idx, steps=steps, per_call=per_call,
                        fetch_every=fetch, repeats=repeats)
        loops[name] = {**r, "steps_per_call": per_call, "fetch_every_calls": fetch, "img_per_s": batch / r["step_s"]}
        print(f"{dtype:>8} loop {name:>19}: {loops[name]['img_per_s']:9.1f} img/s "
              f"(first run {r['first_s']:.1f} s)", flush=True)
    base = loops["per_step_sync"]["img_per_s"]
    for r in loops.values():
        r["vs_per_step_sync"] = r["img_per_s"] / base
    out["loop"] = loops
    # populations vs the same models one after the other (the single-model loop, best of the loops)
    single_name = max(loops, key=lambda n: loops[n]["img_per_s"])
    single = loops[single_name]
    per_call = single["steps_per_call"]
    del state
    rows = []
    for k in populations:
        mesh, loop, state, images, labels, keys, idx = _setup(model_name, width, dtype, batch, k, num_devices)
        r, state = _run(mesh, loop, state, images, labels, keys, idx, steps=steps, per_call=per_call,
                        fetch_every=single["fetch_every_calls"], repeats=repeats)
        del state
        total = k * batch / r["step_s"]
        rows.append({"k": k, **r, "img_per_s_total": total, "img_per_s_per_model": total / k,
                     "vs_sequential": total / single["img_per_s"]})
        print(f"{dtype:>8} population {k}: {total:9.1f} img/s total, {total / k:9.1f} per model, "
              f"{total / single['img_per_s']:.2f}x the same models one after the other "
              f"(first run {r['first_s']:.1f} s)", flush=True)
    out["sequential"] = {"loop": single_name, "img_per_s": single["img_per_s"]}
    out["populations"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small CNN (width 16), batch 64, 8 steps, 2 repeats")
    p.add_argument("--model", default=None, help="small_cnn (default) or resnet18 (GPU: the paper's model)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="global batch per model (default 64; paper: 100)")
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--populations", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 20; --quick: 8)")
    p.add_argument("--steps-per-call", type=int, default=None,
                   help="steps scanned per call by the on-device loop (default 10; --quick: 4)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--num-devices", type=int, default=None)
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results)")
    args = p.parse_args(argv)
    model = args.model or "small_cnn"
    width = args.width if args.width is not None else (16 if model == "small_cnn" else None)
    batch = args.batch or 64
    steps = args.steps or (8 if args.quick else 20)
    per_call = args.steps_per_call or (4 if args.quick else 10)
    repeats = args.repeats or (2 if args.quick else 3)
    results = [bench(model_name=model, width=width, dtype=d, batch=batch, populations=args.populations, steps=steps,
                     steps_per_call=min(per_call, steps), repeats=repeats, num_devices=args.num_devices)
               for d in args.dtypes]
    path = common.save("populations", {"quick": args.quick, "model": model, "width": width, "batch": batch,
                                       "steps": steps, "results": results}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
