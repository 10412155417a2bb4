"""Run the whole benchmark suite and write one results file and a markdown report.

    python -m benchmarks.run_all [--quick] [--only filters attacks ...] [--update-readme]

Each benchmark runs in this process with its own ``--out`` folder; its JSON is collected into
``benchmarks/results/<host>-<date>.json`` (hardware, versions, every figure with its median,
spread and compile time) and ``benchmarks/results/<host>-<date>.md``. With
``--update-readme`` the performance section of ``docs/performance.md`` is regenerated from that JSON
(``benchmarks/report.py``), so the README never holds typed-in numbers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from jaxhfc.parallel import request_cpu_devices  # imports jax; its backends start later

request_cpu_devices(8)  # fake CPU devices (no effect on accelerators); before jax starts its backends

from benchmarks import common, report  # noqa: E402

#: (module, extra args in quick mode, extra args in full mode). Quick mode keeps the figures
#: the README reports representative on a CPU host: the full 50,000-image filtering split and
#: the full-width ResNet18 step (at one small batch), the rest at small sizes.
SUITE = (
    ("filters", ["--images", "50000", "--ref-images", "200"], []),
    ("input_pipeline", [], []),
    # all devices: on this 2-core CPU host, 8 fake devices ran the step 2.5x faster than 1 device
    ("train_throughput", ["--width", "64", "--batch-sizes", "64", "--steps", "3"], []),
    ("attacks", [], []),
    ("scaling", [], []),
    ("heatmap", [], []),
    # K models in one program vs one after the other, and the per-step vs the on-device loop
    # full mode: the paper's setting (ResNet18, batch 100 per model) in float32 and bfloat16
    ("populations", [], ["--model", "resnet18", "--batch", "100", "--dtypes", "float32", "bfloat16"]),
)


def run_suite(*, quick: bool, only=None, out_dir: Path | None = None, tiny: bool = False) -> Path:
    out_dir = Path(out_dir) if out_dir else common.RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    results, errors, wall = {}, {}, {}
    for name, quick_args, full_args in SUITE:
        if only and name not in only:
            continue
        print(f"== benchmark {name}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            argv = (["--quick"] + quick_args if quick else full_args) + ["--out", tmp]
            if tiny:
                argv += TINY_ARGS.get(name, [])
            t0 = time.perf_counter()
            try:
                importlib.import_module(f"benchmarks.{name}").main(argv)
            except Exception as err:  # noqa: BLE001 - one failing benchmark must not hide the others
                errors[name] = f"{type(err).__name__}: {err}"
                traceback.print_exc()
                continue
            finally:
                wall[name] = time.perf_counter() - t0
            files = sorted(Path(tmp).glob("*.json"))
            results[name] = [json.loads(f.read_text()) for f in files]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
    record = {"suite": "jaxhfc", "quick": quick, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "hardware": common.hardware(), "wall_s": wall, "errors": errors, "results": results}
    path = out_dir / f"{platform.node() or 'host'}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(report.markdown(record))
    return path


#: Extra-small sizes for the smoke test of the suite (one repeat, tiny sizes).
TINY_ARGS = {
    "filters": ["--images", "64", "--ref-images", "8", "--repeats", "1"],
    "input_pipeline": ["--images", "256", "--batch", "64", "--repeats", "1"],
    "train_throughput": ["--model", "small_cnn", "--width", "8", "--batch-sizes", "16", "--dtypes", "float32",
                         "--steps", "1", "--no-torch"],
    "attacks": ["--models", "small_cnn", "--repeats", "1", "--eval-images", "16"],
    "scaling": ["--batch", "16", "--steps", "1", "--devices", "1", "8"],
    "heatmap": ["--images", "16", "--repeats", "1"],
    "populations": ["--width", "4", "--batch", "16", "--steps", "2", "--steps-per-call", "2", "--repeats", "1",
                    "--populations", "1", "2"],
}


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes on a CPU")
    p.add_argument("--only", nargs="+", choices=[s[0] for s in SUITE])
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--update-readme", action="store_true", help="regenerate the performance section of docs/performance.md")
    args = p.parse_args(argv)
    path = run_suite(quick=args.quick, only=args.only, out_dir=args.out)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    if args.update_readme:
        readme = report.update_readme(path)
        print(f"updated {readme}")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
