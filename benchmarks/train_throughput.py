"""ResNet18 training throughput: images/s, step time, compile time, FLOPs and MFU.

For each compute dtype (float32, bfloat16) and global batch size, the data-parallel step of
:func:`jaxhfc.train.make_train_step` (SGD + momentum + weight decay, crop + flip augmentation
on device, synchronised BatchNorm, state donated) is

* lowered and compiled once: ``compile_s`` (reported separately, never in the throughput);
* asked for its FLOPs through XLA's cost analysis (``compiled.cost_analysis()``), per device
  program, giving ``flops_per_image`` of one training step (forward + backward + update);
  the forward pass alone is analysed too (``forward_flops_per_image``) as a cross-check
  (training ~ 3x forward);
* timed over ``--steps`` steps in two ways: ``sync`` fetches the metrics after every step
  (what :func:`jaxhfc.train.fit` did before it pipelined its steps) and ``pipelined`` dispatches the steps and blocks at
  the end (at most 8 in flight); median step time, images/s, and the implied CIFAR-10
  epoch (50,000 images) and 200-epoch times;
* model FLOPs utilisation ``mfu = flops_per_image * img/s / (peak * devices)`` where the peak
  of the device is known (H100/H200/A100: bf16 dense, TF32 for float32).

If PyTorch is importable, the same run measures the usual PyTorch reference (kuangliu-style
CIFAR ResNet18, SGD momentum, channels_last, AMP bf16 autocast on CUDA, eager) at the same
batch sizes and reports the ratio; otherwise it says so. Random data and weights: the
throughput does not depend on what the model learns.

Usage: ``python -m benchmarks.train_throughput [--quick] [--batch-sizes 128 256 512]
[--dtypes float32 bfloat16] [--steps 20] [--num-devices N] [--no-torch] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np

from benchmarks import common

CIFAR_TRAIN = 50_000


def _flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def bench_jax(*, model_name: str, width: int | None, dtype: str, batch: int, steps: int,
              num_devices: int | None) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxhfc import models, parallel
    from jaxhfc.step import create_train_state, make_optimizer, make_train_step, named_keys

    mesh = parallel.make_mesh(num_devices)
    n_dev = mesh.devices.size
    if batch % n_dev:
        return {"dtype": dtype, "batch": batch, "skipped": f"batch not divisible by {n_dev} devices"}
    model = models.get_model(model_name, width=width, dtype=dtype)
    tx = make_optimizer(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
                              schedule="cosine", total_steps=1000)
    keys = named_keys(0)
    state = create_train_state(model, tx, keys["init"], (32, 32, 3), mesh=mesh)
    n_params = models.count_params(state.params)
    step = make_train_step(model, tx, mesh, global_batch=batch, num_classes=10, crop_pad=4, flip=True)
    rng = np.random.default_rng(0)
    n_images = 4 * batch
    images = parallel.global_from_full(mesh, rng.random((n_images, 32, 32, 3), dtype=np.float32))
    labels = parallel.global_from_full(mesh, rng.integers(0, 10, n_images).astype(np.int32))
    idx = [parallel.global_from_full(mesh, rng.permutation(n_images)[:batch].astype(np.int32), sharded=True)
           for _ in range(4)]
    step_keys = parallel.global_from_full(mesh, {k: keys[k] for k in ("data", "dropout", "attack")})

    t0 = time.perf_counter()
    lowered = step.lower(state, (images, labels, idx[0]), step_keys)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    flops_step = _flops(compiled)

    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
    x_local = jnp.zeros((max(batch // n_dev, 1), 32, 32, 3), jnp.float32)
    variables = jax.device_get(state.variables())
    flops_fwd = _flops(fwd.lower(variables, x_local).compile())
    local_b = batch // n_dev

    # warm-up (first run after compile)
    state, m = compiled(state, (images, labels, idx[0]), step_keys)
    jax.block_until_ready(m)

    sync_times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, (images, labels, idx[i % 4]), step_keys)
        jax.device_get(m)
        sync_times.append(time.perf_counter() - t0)

    pipelined = []
    done = 0
    while done < steps:
        chunk = min(8, steps - done)
        t0 = time.perf_counter()
        for i in range(chunk):
            state, m = compiled(state, (images, labels, idx[i % 4]), step_keys)
        jax.block_until_ready((state, m))
        pipelined.append((time.perf_counter() - t0) / chunk)
        done += chunk

    step_s = statistics.median(sync_times)
    step_pipe_s = statistics.median(pipelined)
    kind = mesh.devices.reshape(-1)[0].device_kind
    peaks = common.known_peak(kind, common.PEAK_FLOPS)
    peak = None
    if peaks:
        peak = peaks["bfloat16"] if dtype in ("bfloat16", "bf16") else peaks.get("tf32", peaks["float32"])
    out = {
        "model": model_name, "width": width, "params": n_params, "dtype": dtype, "batch": batch,
        "devices": n_dev, "device_kind": kind,
        "lower_s": lower_s, "compile_s": compile_s,
        "step_s_sync": step_s, "step_s_pipelined": step_pipe_s,
        "step_times_sync_s": sync_times,
        "img_per_s_sync": batch / step_s, "img_per_s_pipelined": batch / step_pipe_s,
        "flops_per_image": flops_step / local_b if flops_step else None,
        "forward_flops_per_image": flops_fwd / x_local.shape[0] if flops_fwd else None,
        "epoch_s": CIFAR_TRAIN / (batch / step_pipe_s),
        "epochs200_min": 200 * CIFAR_TRAIN / (batch / step_pipe_s) / 60,
        "peak_flops_per_device": peak,
    }
    if peak and out["flops_per_image"]:
        out["mfu"] = out["flops_per_image"] * out["img_per_s_pipelined"] / (peak * n_dev)
    return out


_TORCH_SRC = '''
import torch, torch.nn as nn, torch.nn.functional as F

class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); self.b2 = nn.BatchNorm2d(cout)
        self.sc = nn.Sequential()
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.sc(x))

class ResNet18(nn.Module):
    def __init__(self, width=64, num_classes=10):
        super().__init__()
        self.c = nn.Conv2d(3, width, 3, 1, 1, bias=False); self.b = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, n in enumerate((2, 2, 2, 2)):
            for j in range(n):
                cout = width * 2 ** i
                layers.append(Block(cin, cout, 2 if (i > 0 and j == 0) else 1)); cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
    def forward(self, x):
        x = self.layers(F.relu(self.b(self.c(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
'''


def bench_torch(*, width: int, batch: int, steps: int, dtype: str) -> dict:
    import torch

    ns: dict[str, Any] = {}
    exec(_TORCH_SRC, ns)  # noqa: S102 - the reference model source above
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = ns["ResNet18"](width=width).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 3, 32, 32, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)
    amp = dtype in ("bfloat16", "bf16")
    if amp and dev == "cpu":
        return {"dtype": dtype, "batch": batch, "skipped": "AMP reference only on CUDA"}

    def one() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()  # syncs, like fetching the metrics

    one()
    one()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {"dtype": dtype, "batch": batch, "device": dev, "step_s": step_s, "img_per_s": batch / step_s,
            "torch": torch.__version__, "amp": amp, "channels_last": True}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny: width-8 ResNet18, batches 16/32, 3 steps")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--width", type=int, default=None, help="base width (default: the model's; --quick: 8)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--num-devices", type=int, default=None)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results)")
    args = p.parse_args(argv)
    width = args.width if args.width is not None else (8 if args.quick else None)
    batches = args.batch_sizes or ([16, 32] if args.quick else [128, 256, 512, 1024])
    steps = args.steps or (3 if args.quick else 20)

    rows = []
    for dtype in args.dtypes:
        for b in batches:
            r = bench_jax(model_name=args.model, width=width, dtype=dtype, batch=b, steps=steps,
                          num_devices=args.num_devices)
            rows.append(r)
            if "skipped" in r:
                print(f"jax {dtype:>8} batch {b:>5}: skipped ({r['skipped']})")
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a (peak unknown)"
            fpi = f"{r['flops_per_image'] / 1e9:.2f}" if r["flops_per_image"] else "n/a"
            print(f"jax {dtype:>8} batch {b:>5}: {r['img_per_s_pipelined']:9.1f} img/s pipelined, "
                  f"{r['img_per_s_sync']:9.1f} synced; step {1e3 * r['step_s_pipelined']:8.1f} ms; "
                  f"compile {r['compile_s']:.1f} s; {fpi} GFLOP/img; MFU {mfu}; "
                  f"epoch {r['epoch_s']:.1f} s, 200 epochs {r['epochs200_min']:.1f} min", flush=True)

    torch_rows: list[dict] | str
    if args.no_torch:
        torch_rows = "skipped (--no-torch)"
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch_rows = "PyTorch not installed (pip install 'jaxhfc[bench]' for the reference)"
        else:
            torch_rows = []
            for dtype in args.dtypes:
                for b in batches:
                    tr = bench_torch(width=width or 64, batch=b, steps=steps, dtype=dtype)
                    jr = next((r for r in rows if r.get("batch") == b and r.get("dtype") == dtype
                               and "skipped" not in r), None)
                    if "skipped" not in tr and jr:
                        tr["jax_over_torch"] = jr["img_per_s_sync"] / tr["img_per_s"]
                    torch_rows.append(tr)
                    if "skipped" in tr:
                        print(f"torch {dtype:>8} batch {b:>5}: skipped ({tr['skipped']})")
                    else:
                        print(f"torch {dtype:>8} batch {b:>5}: {tr['img_per_s']:9.1f} img/s; "
                              f"jax/torch (synced) = {tr.get('jax_over_torch', float('nan')):.2f}x", flush=True)
    if isinstance(torch_rows, str):
        print(f"torch reference: {torch_rows}")
    path = common.save("train_throughput", {"quick": args.quick, "model": args.model, "width": width,
                                            "steps": steps, "jax": rows, "torch": torch_rows}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
