"""Shared benchmark helpers: honest timing (warm-up and compile excluded and reported
separately, block_until_ready, median and spread over repeats), hardware description and
JSON output. Benchmarks print and save; they never assert speed."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from jaxhfc.results import cpu_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Dense peak FLOP/s of known accelerators (vendor figures), for model FLOPs utilisation.
PEAK_FLOPS = {
    "H100": {"bfloat16": 989e12, "float32": 67e12, "tf32": 494e12},
    "H200": {"bfloat16": 989e12, "float32": 67e12, "tf32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12, "tf32": 156e12},
}
#: Peak memory bandwidth (bytes/s) of known accelerators.
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def block(x):
    import jax

    return jax.block_until_ready(x)


def time_call(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> dict:
    """Time ``fn()`` (which must return something to block on).

    The first call is timed separately as ``first_s`` (for a jitted function: trace + compile
    + one run); then ``warmup`` untimed calls; then ``repeats`` timed calls.

    Returns:
      ``{"first_s", "median_s", "min_s", "max_s", "stdev_s", "repeats", "times_s"}``.
    """
    t0 = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t0
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return {
        "first_s": first,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "repeats": len(times),
        "times_s": times,
    }


def hardware() -> dict:
    """CPU model and cores, accelerator name and count, versions."""
    from importlib import metadata

    import jax

    devs = jax.devices()
    info = {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "device_kind": devs[0].device_kind,
        "device_count": len(devs),
        "python": platform.python_version(),
        "versions": {},
    }
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
        try:
            info["versions"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["versions"][name] = None
    return info


def known_peak(kind: str, table: dict) -> Any:
    for name, value in table.items():
        if name.lower() in kind.lower():
            return value
    return None


def save(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` (plus hardware and time) to ``<out_dir>/<name>-<host>-<date>.json``."""
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d")
    record = {
        "benchmark": name,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(),
        **payload,
    }
    path = out / f"{name}-{platform.node() or 'host'}-{stamp}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path
