"""Data-parallel scaling: training images/s of the same model and global batch on 1, 2, 4
and 8 devices (the same jitted shard_map step; only the mesh changes).

On a CPU host the devices are fake (``--xla_force_host_platform_device_count=8``) and share
the same cores, so this measures the overhead of the multi-device path, not a speed-up; on a
multi-GPU host it measures real scaling. Efficiency = img/s(k) / (k * img/s(1)).

Usage: ``python -m benchmarks.scaling [--quick] [--model small_cnn] [--batch 256]``.
"""

from __future__ import annotations

import argparse
import sys

from jaxhfc.parallel import request_cpu_devices  # imports jax; its backends start later

request_cpu_devices(8)  # fake CPU devices (no effect on accelerators); before jax starts its backends

from benchmarks import common  # noqa: E402
from benchmarks.train_throughput import bench_jax  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small CNN of width 8, few steps")
    p.add_argument("--model", default=None, help="model (default resnet18; quick small_cnn)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="global batch (default 256; quick 64)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8], help="device counts (default 1 2 4 8)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import jax

    model = args.model or ("small_cnn" if args.quick else "resnet18")
    width = args.width or (8 if args.quick else None)
    batch = args.batch or (64 if args.quick else 256)
    steps = args.steps or (3 if args.quick else 10)
    counts = [k for k in args.devices if k <= jax.device_count()]
    rows = []
    for k in counts:
        r = bench_jax(model_name=model, width=width, dtype=args.dtype, batch=batch, steps=steps, num_devices=k)
        rows.append({"devices": k, "img_per_s": r["img_per_s_pipelined"], "img_per_s_sync": r["img_per_s_sync"],
                     "compile_s": r["compile_s"], "step_s": r["step_s_pipelined"]})
    base = rows[0]["img_per_s"]
    for r in rows:
        r["speedup"] = r["img_per_s"] / base
        r["efficiency"] = r["speedup"] / r["devices"]
    res = {"quick": args.quick, "model": model, "width": width, "batch": batch, "dtype": args.dtype,
           "fake_devices": jax.default_backend() == "cpu", "rows": rows}
    path = common.save("scaling", res, args.out)
    kind = jax.devices()[0].device_kind
    print(f"scaling of {model} (width {width}), global batch {batch}, {args.dtype}, on {kind}"
          f"{' (fake CPU devices sharing the cores: overhead only)' if res['fake_devices'] else ''}:")
    for r in rows:
        print(f"  {r['devices']} device(s): {r['img_per_s']:.0f} img/s, speed-up {r['speedup']:.2f}, "
              f"efficiency {r['efficiency']:.2f}, compile {r['compile_s']:.1f} s")
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
