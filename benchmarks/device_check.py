"""Everything the first hour on a GPU must measure, in one command (at most 8 minutes on one GPU).

    python -m benchmarks.device_check              # on the GPU machine
    python -m benchmarks.device_check --tiny       # the same stages at toy sizes (tests, CPU)

Stages, in order (each timed; one that fails is recorded and the next runs; once the budget
``--budget-s`` is spent the remaining stages are skipped and say so):

1. ``throughput``: ResNet18 training steps in float32 and bfloat16 at batch 100 and 512, with
   compile times, FLOPs per image and MFU (``benchmarks/train_throughput.py``), beside PyTorch
   (channels_last, AMP) when it is installed;
2. ``populations``: 8 paper-setting models (ResNet18, batch 100, Adam) in one vmapped program
   against one model (``benchmarks/populations.py``);
3. ``pgd``: the PGD-10 Madry training step and a PGD-20 evaluation (``benchmarks/attacks.py``);
4. ``table1_epoch``: one epoch of the full-size table1 population (8 ResNet18 models on LFC/HFC
   images at 4 radii, 50,000 generated training images in the standard CIFAR-10 archive, every
   evaluation set) through ``jaxhfc.fit.fit_population``, as the reproduction runs it;
5. ``smoke``: ``reproduce_all --dataset cifar10 --smoke`` on that archive, with its time per
   artefact and the part spent compiling.

Writes ``<out>/device-check-<host>-<date>.json`` (default ``benchmarks/results``) and fills the
``device-check`` block of ``docs/performance.md`` (``--doc``; ``--no-doc`` leaves it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

START, END = "<!-- device-check:start -->", "<!-- device-check:end -->"
STAGES = ("throughput", "populations", "pgd", "table1_epoch", "smoke")

#: Arguments of the benchmark stages: (full, tiny).
ARGS = {
    "throughput": (["--batch-sizes", "100", "512", "--dtypes", "float32", "bfloat16", "--steps", "20"],
                   ["--model", "small_cnn", "--width", "8", "--batch-sizes", "16", "--dtypes", "float32",
                    "--steps", "1", "--no-torch"]),
    "populations": (["--model", "resnet18", "--batch", "100", "--dtypes", "float32", "--populations", "1", "8",
                     "--steps", "20", "--repeats", "2"],
                    ["--width", "4", "--batch", "16", "--steps", "2", "--steps-per-call", "2", "--repeats", "1",
                     "--populations", "1", "2"]),
    "pgd": (["--models", "resnet18", "--repeats", "2"],
            ["--models", "small_cnn", "--repeats", "1", "--eval-images", "16", "--quick"]),
}


def _benchmark(name: str, module: str, tiny: bool) -> dict:
    import importlib

    full, small = ARGS[name]
    with tempfile.TemporaryDirectory() as tmp:
        importlib.import_module(f"benchmarks.{module}").main((small if tiny else full) + ["--out", tmp])
        return {"results": [json.loads(f.read_text()) for f in sorted(Path(tmp).glob("*.json"))]}


def _table1_epoch(data_dir: str, work: Path, tiny: bool) -> dict:
    """One epoch of table1's population at its full-scale recipe (tiny: the tiny recipe)."""
    from experiments import table1
    from experiments.common import Context
    from jaxhfc.fit import fit_population

    ctx = Context(dataset="cifar10", scale="tiny" if tiny else "full", out=work / "table1", data_dir=data_dir,
                  seeds=1, progress=False)
    st = ctx.settings(table1.SETTINGS)
    configs = [ctx.config(data={"train_filter": kind, "train_radius": float(ctx.radius(r))},
                          evaluation={"train": True, "radii": ()}, optim={"epochs": 1}, run={"checkpoint_every": 0})
               for kind in ("low", "high") for r in st["radii"]]
    dirs = [work / "table1" / f"m{i}" for i in range(len(configs))]
    t0 = time.perf_counter()
    res = fit_population(configs, dirs, progress=False, datasets=ctx.datasets(configs[0]))
    wall = time.perf_counter() - t0
    last = [r.history[-1] for r in res]
    return {"models": len(configs), "wall_s": wall, "batch": configs[0].optim.batch_size,
            "net": configs[0].net.name, "train_images": int(configs[0].data.num_train or 50_000),
            "img_per_s_per_model": [h.get("img_per_s") for h in last], "epoch_time_s": [h.get("epoch_time_s") for h in last]}


def _smoke(data_dir: str, work: Path, tiny: bool) -> dict:
    from experiments import reproduce_all
    from experiments.common import compile_seconds

    out = work / "smoke"
    argv = ["--dataset", "cifar10", "--data-dir", data_dir, "--out", str(out), "--no-progress"]
    argv += ["--tiny", "--seeds", "1", "--only", "table1"] if tiny else ["--smoke"]
    c0, t0 = compile_seconds(), time.perf_counter()
    reproduce_all.main(argv)
    return {"wall_s": time.perf_counter() - t0, "compile_s": compile_seconds() - c0,
            "timings_s": json.loads((out / "timings.json").read_text()),
            "compile_seconds": json.loads((out / "compile_seconds.json").read_text())}


def run(*, tiny: bool, budget_s: float, work: Path, only: tuple[str, ...] = STAGES) -> dict:
    """Run the stages (``only``) and return the record (see the module docstring)."""
    from benchmarks import common
    from jaxhfc.datasets import cifar10

    t_start = time.perf_counter()
    data_dir = str(work / "generated-cifar10")
    t0 = time.perf_counter()
    sizes = dict(num_train=500, num_test=200) if tiny else {}
    cifar10.write_generated_archive(data_dir, **sizes)
    record: dict[str, Any] = {"tiny": tiny, "budget_s": budget_s, "hardware": common.hardware(),
                              "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                              "archive_s": time.perf_counter() - t0, "stages": {}}
    jobs: dict[str, Callable[[], dict]] = {
        "throughput": lambda: _benchmark("throughput", "train_throughput", tiny),
        "populations": lambda: _benchmark("populations", "populations", tiny),
        "pgd": lambda: _benchmark("pgd", "attacks", tiny),
        "table1_epoch": lambda: _table1_epoch(data_dir, work, tiny),
        "smoke": lambda: _smoke(data_dir, work, tiny),
    }
    for name in STAGES:
        if name not in only:
            continue
        spent = time.perf_counter() - t_start
        if spent > budget_s:
            record["stages"][name] = {"skipped": f"budget of {budget_s:.0f} s spent ({spent:.0f} s)"}
            print(f"== {name}: skipped, budget spent", flush=True)
            continue
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            out = jobs[name]()
            out["stage_s"] = time.perf_counter() - t0
        except Exception as err:  # noqa: BLE001 - a failing stage must not hide the others
            traceback.print_exc()
            out = {"error": f"{type(err).__name__}: {err}", "stage_s": time.perf_counter() - t0}
        record["stages"][name] = out
        print(f"   {out['stage_s']:.0f} s{'  ERROR ' + out['error'] if 'error' in out else ''}", flush=True)
    record["wall_s"] = time.perf_counter() - t_start
    return record


def _throughput_rows(stage: dict) -> list[str]:
    rows = []
    for res in stage.get("results", []):
        for r in res.get("jax", res.get("rows", [])) if isinstance(res, dict) else []:
            if not isinstance(r, dict) or "skipped" in r or "img_per_s_pipelined" not in r:
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
            rows.append(f"| jax {r['dtype']} | {r['batch']} | {r['img_per_s_pipelined']:,.0f} | "
                        f"{r['compile_s']:.1f} | {mfu} |")
        torch_rows = res.get("torch") if isinstance(res, dict) else None
        for r in torch_rows if isinstance(torch_rows, list) else []:
            if "skipped" not in r:
                rows.append(f"| PyTorch {r.get('dtype')} | {r.get('batch')} | {r.get('img_per_s', 0):,.0f} | | |")
    return rows


def markdown(record: dict) -> str:
    """The record as the ``device-check`` block of docs/performance.md."""
    hw = record["hardware"]
    lines = [f"Measured by `python -m benchmarks.device_check{' --tiny' if record['tiny'] else ''}` on "
             f"{hw['device_count']} x {hw['device_kind']} ({hw['backend']}; host CPU {hw['cpu']}), "
             f"jax {hw['versions'].get('jax')}, {record['time']}; {record['wall_s']:.0f} s in all."
             + (" **Tiny mode: toy sizes, numbers that only show the script runs.**" if record["tiny"] else ""),
             "", "| stage | seconds | result |", "|---|---|---|"]
    for name in STAGES:
        st = record["stages"].get(name)
        if st is None:
            continue
        if "skipped" in st or "error" in st:
            lines.append(f"| {name} | {st.get('stage_s', 0):.0f} | {st.get('skipped') or st.get('error')} |")
            continue
        if name == "table1_epoch":
            ips = [v for v in st["img_per_s_per_model"] if v]
            what = (f"{st['models']} x {st['net']} (batch {st['batch']}) one epoch in {st['wall_s']:.0f} s"
                    + (f", {sum(ips) / len(ips):,.0f} img/s per model" if ips else ""))
        elif name == "smoke":
            what = f"wall {st['wall_s']:.0f} s, of which {st['compile_s']:.0f} s compiling"
        else:
            what = "see below" if name == "throughput" else "in the JSON"
        lines.append(f"| {name} | {st['stage_s']:.0f} | {what} |")
    rows = _throughput_rows(record["stages"].get("throughput", {}))
    if rows:
        lines += ["", "| training step | batch | img/s | compile s | MFU |", "|---|---|---|---|---|"] + rows
    return "\n".join(lines)


def fill_doc(doc: Path, record: dict, json_name: str) -> Path:
    from experiments import reproduce_all

    text = doc.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{doc} has no {START} ... {END} block to fill")
    reproduce_all.fill_block(doc, START, END, markdown(record) + f"\n\n(From `benchmarks/results/{json_name}`.)\n")
    return doc


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes (seconds on a CPU): checks the script runs")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the stages left once this many seconds are spent (default 420: 8 minutes in all)")
    p.add_argument("--only", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--out", default=None, help="folder of the JSON (default benchmarks/results)")
    p.add_argument("--work", default=None, help="scratch folder (archive, runs; default a temporary one)")
    p.add_argument("--doc", default=None, help="page with the device-check block (default docs/performance.md)")
    p.add_argument("--no-doc", action="store_true", help="leave the page as it is")
    args = p.parse_args(argv)
    from benchmarks import common

    with tempfile.TemporaryDirectory() as tmp:
        record = run(tiny=args.tiny, budget_s=args.budget_s, work=Path(args.work or tmp), only=tuple(args.only))
    out = Path(args.out) if args.out else common.RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
    path = out / f"device-check-{platform.node() or 'host'}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    if not args.no_doc:
        doc = Path(args.doc) if args.doc else Path(__file__).resolve().parent.parent / "docs" / "performance.md"
        print(f"updated {fill_doc(doc, record, path.name)}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
