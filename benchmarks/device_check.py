"""The first hour on a GPU in one command: five stages, each in its own process under a hard limit.

    PYTHONPATH=. python -m benchmarks.device_check --out $OUT          # on the GPU machine (8 min)
    PYTHONPATH=. python -m benchmarks.device_check --tiny --out /tmp/dc  # toy sizes on a CPU (tests)

Stages, in the order of the decisions they inform:

1. ``versions``: Python, jax and the packages beside it, the devices, :mod:`jaxhfc.compat`'s
   check (one line, ``INCOMPATIBLE: ...`` when the stack cannot run jaxhfc) and one jitted
   convolution, timed (about 30 s);
2. ``train_step``: the paper's vanilla training step (ResNet18 without BatchNorm, Adam 1e-4, no
   augmentation; the full-scale config of the reproduction) in float32 and bfloat16 at batch
   100 and 512: compile time, step time, images/s, FLOPs per image of the lowered program
   (XLA's cost analysis before optimisation: the model's FLOPs; the compiled program's beside
   it) and the MFU they give;
3. ``attacks``: attack gradients per second at batch 1,000 on that network in float32: rolled
   PGD (``lax.fori_loop``) and APGD-CE;
4. ``populations``: 8 models in one vmapped program against 1, and against the 8 trained one
   after the other (the grouped-convolution backward pass of vmapped convolutions is a known
   CUDA risk: a failure is recorded per row and the stage goes on);
5. ``fmnist_epoch``: one epoch of the full-scale Fashion-MNIST M_natural (ResNet18 on the
   28x28 grey images as they are, Adam 1e-4, batch 100, 55,000 training images) through
   :func:`jaxhfc.fit.fit`, with its evaluation (test set and its LFC/HFC copies at 4 radii,
   the training subset), from the IDX files in ``--data-dir`` (default ``.data``: carry it).

Each stage runs as ``python -m benchmarks.device_check --stage NAME`` in its own process group;
the driver kills the group when the stage's limit is reached (``min(cap, budget left)``) and
records ``"status": "timeout"``. A stage that raises (or calls ``sys.exit``) records
``"status": "error"``; one that dies without a record, ``"status": "crashed"`` with the end
of its output. The next stage runs either way. Each stage's record is written to
``<out>/<n>-<stage>.json`` the moment it ends, and ``<out>/device-check.json`` (every record
so far) after each stage. Nothing is written outside ``--out`` and ``--work`` (a temporary
folder by default, removed at the end). ``--tiny`` runs every stage at toy sizes on the CPU.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Stage -> its own time limit in seconds (full size); the driver gives each min(cap, budget left).
CAPS = {"versions": 60, "train_step": 200, "attacks": 120, "populations": 150, "fmnist_epoch": 240}
STAGES = tuple(CAPS)
TINY_CAP = 120
SUMMARY = "device-check.json"
START, END = "<!-- device-check:start -->", "<!-- device-check:end -->"


def _write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON through a temporary file and a rename (a killed writer leaves
    the old file or none, never half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def stage_path(out: Path, name: str) -> Path:
    return Path(out) / f"{STAGES.index(name) + 1}-{name}.json"


# ----------------------------------------------------------------------------- stages


def _peak(device_kind: str, dtype: str) -> float | None:
    from benchmarks import common

    peaks = common.known_peak(device_kind, common.PEAK_FLOPS)
    if not peaks:
        return None
    return peaks["bfloat16"] if dtype == "bfloat16" else peaks.get("tf32", peaks["float32"])


def _flops(stage_obj: Any) -> float | None:
    """FLOPs of a lowered or compiled program by XLA's cost analysis (None when it has none)."""
    try:
        cost = stage_obj.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and cost.get("flops") else None


def _paper_config(tiny: bool, work: Path, data_dir: str | None = None, dataset: str = "cifar10"):
    """The reproduction's vanilla M_natural config (full scale; tiny: the tiny recipe) and its
    context (results folder ``work``)."""
    from experiments.common import Context

    ctx = Context(dataset=dataset, scale="tiny" if tiny else "full", out=Path(work), data_dir=data_dir, seeds=1,
                  progress=False)
    return ctx, ctx.setup.config()


def _rows_status(record: dict) -> dict:
    """``record`` with ``status`` ``"error"`` when every one of its rows failed (the rows keep
    their own errors; a stage with some rows measured is ``"ok"``)."""
    rows = record.get("rows", [])
    if rows and all("error" in r for r in rows):
        record["status"] = "error"
        record["error"] = f"every row failed; first: {rows[0]['error']}"
    return record


def stage_versions(tiny: bool, **_) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxhfc import compat

    errors, notes = compat.problems()
    line = compat.summary(errors, notes)
    print(line, flush=True)
    devices = jax.devices()
    out: dict[str, Any] = {"versions": compat.versions(), "errors": errors, "notes": notes, "line": line,
                           "backend": jax.default_backend(), "device_count": len(devices),
                           "device_kind": devices[0].device_kind, "devices": [str(d) for d in devices]}
    n, c = (8, 8) if tiny else (256, 128)
    x = jnp.ones((n, 32, 32, c), jnp.float32)
    w = jnp.ones((3, 3, c, c), jnp.float32) / (9 * c)
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    t0 = time.perf_counter()
    y = jax.block_until_ready(conv(x, w))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(5):
        y = conv(x, w)
    jax.block_until_ready(y)
    out["conv"] = {"shape": [n, 32, 32, c], "first_call_s": first, "call_s": (time.perf_counter() - t0) / 5,
                   "value_ok": bool(abs(float(y[0, 16, 16, 0]) - 1.0) < 1e-2)}
    if errors:
        out["status"] = "error"
        out["error"] = line
    return out


def _timed_steps(step, state, batch, keys, steps: int):
    import jax

    state, m = step(state, batch, keys)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch, keys)
    jax.block_until_ready((state, m))
    return state, (time.perf_counter() - t0) / steps, float(m["loss_sum"]) / float(m["count"])


def stage_train_step(tiny: bool, work: Path, **_) -> dict:
    import jax
    import numpy as np

    from jaxhfc import parallel
    from jaxhfc.step import build_model, create_train_state, make_train_step, named_keys, optimizer_from_config

    _, config = _paper_config(tiny, work / "config")
    mesh = parallel.make_mesh(1)
    kind = jax.devices()[0].device_kind
    batches, steps = ((8, 16), 2) if tiny else ((100, 512), 20)
    rows = []
    for dtype in ("float32", "bfloat16"):
        for batch in batches:
            row: dict[str, Any] = {"dtype": dtype, "batch": batch}
            try:
                cfg = config.merged(net={"dtype": dtype})
                model = build_model(cfg, 10)
                tx = optimizer_from_config(cfg.optim, 1000)
                keys = named_keys(0)
                state = create_train_state(model, tx, keys["init"], (32, 32, 3), mesh=mesh)
                step = make_train_step(model, tx, mesh, global_batch=batch, num_classes=10)
                rng = np.random.default_rng(0)
                images = parallel.global_from_full(mesh, rng.random((batch, 32, 32, 3), dtype=np.float32))
                labels = parallel.global_from_full(mesh, rng.integers(0, 10, batch).astype(np.int32))
                idx = parallel.global_from_full(mesh, np.arange(batch, dtype=np.int32), sharded=True)
                step_keys = parallel.global_from_full(mesh, {k: keys[k] for k in ("data", "dropout", "attack")})
                t0 = time.perf_counter()
                lowered = step.lower(state, (images, labels, idx), step_keys)
                compiled = lowered.compile()
                row["compile_s"] = time.perf_counter() - t0
                # model FLOPs: the lowered program's count, before XLA's optimisations (the compiled
                # one, kept beside it, counts what the fused program runs)
                flops, source = _flops(lowered), "lowered"
                compiled_flops = _flops(compiled)
                if flops is None:
                    flops, source = compiled_flops, "compiled"
                row["compiled_flops_per_image"] = compiled_flops / batch if compiled_flops else None
                state, step_s, loss = _timed_steps(compiled, state, (images, labels, idx), step_keys, steps)
                row.update(step_s=step_s, img_per_s=batch / step_s, loss=loss, flops_source=source,
                           flops_per_image=flops / batch if flops else None, net=cfg.net.name, norm=cfg.net.norm,
                           optimizer=cfg.optim.name, learning_rate=cfg.optim.learning_rate)
                peak = _peak(kind, dtype)
                row["mfu"] = flops / step_s / peak if flops and peak else None
                del state
            except Exception as err:  # noqa: BLE001 - one failing row must not hide the others
                traceback.print_exc()
                row["error"] = f"{type(err).__name__}: {err}"
            mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") else "n/a"
            print(f"  {dtype} batch {batch}: " + (row["error"] if "error" in row else
                  f"{row['img_per_s']:,.0f} img/s, compile {row['compile_s']:.1f} s, MFU {mfu}"), flush=True)
            rows.append(row)
    return _rows_status({"device_kind": kind, "steps": steps, "rows": rows})


def stage_attacks(tiny: bool, work: Path, **_) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.tree_util import Partial

    from benchmarks import common
    from jaxhfc import attacks
    from jaxhfc.step import build_model

    _, config = _paper_config(tiny, work / "config")
    model = build_model(config, 10)
    batch, steps, repeats = (16, 3, 1) if tiny else (1000, 10, 2)
    variables = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(batch, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=(batch,)), jnp.int32)
    key = jax.random.key(1)

    def logits(v, xx):
        return model.apply(v, xx, train=False)

    @jax.jit
    def pgd(v, x, y, k):
        return attacks.pgd(Partial(logits, v), x, y, k, eps=8 / 255, step_size=2 / 255, steps=steps, unroll=1)[0]

    @jax.jit
    def apgd(v, x, y, k):
        return attacks.apgd(Partial(logits, v), x, y, k, eps=8 / 255, steps=steps, loss="ce", unroll=1)[0]

    rows = []
    for name, fn in (("pgd_rolled", pgd), ("apgd_ce", apgd)):
        row: dict[str, Any] = {"attack": name, "batch": batch, "steps": steps}
        try:
            t = common.time_call(lambda fn=fn: fn(variables, x, y, key), repeats=repeats, warmup=0)
            row.update(first_call_s=t["first_s"], call_s=t["median_s"],
                       gradients_per_s=batch * steps / t["median_s"], images_per_s=batch / t["median_s"])
            print(f"  {name}: {row['gradients_per_s']:,.0f} gradients/s (first call {t['first_s']:.1f} s)", flush=True)
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
    return _rows_status({"net": config.net.name, "norm": config.net.norm, "dtype": "float32", "rows": rows})


def stage_populations(tiny: bool, work: Path, **_) -> dict:
    from benchmarks import populations as P

    _, config = _paper_config(tiny, work / "config")
    net = config.net
    batch, steps, per_call = (16, 2, 2) if tiny else (100, 20, 10)
    k = 2 if tiny else 8
    rows: list[dict] = []

    def measure(label: str, population: int | None) -> dict:
        row: dict[str, Any] = {"run": label, "models": population or 1, "batch": batch}
        try:
            mesh, loop, state, images, labels, keys, idx = P._setup(net.name, net.width, "float32", batch,
                                                                    population, 1, norm=net.norm)
            r, state = P._run(mesh, loop, state, images, labels, keys, idx, steps=steps, per_call=per_call,
                              fetch_every=1, repeats=1)
            del state
            row.update(r, img_per_s_total=(population or 1) * batch / r["step_s"])
        except Exception as err:  # noqa: BLE001 - a grouped-convolution failure is a finding
            traceback.print_exc()
            row["error"] = f"{type(err).__name__}: {err}"
        print(f"  {label}: " + (row["error"] if "error" in row else f"{row['img_per_s_total']:,.0f} img/s "
                                f"(first run {row['first_s']:.1f} s)"), flush=True)
        rows.append(row)
        return row

    single = measure("one model", None)
    pop = measure(f"population of {k}", k)
    out: dict[str, Any] = {"net": net.name, "norm": net.norm, "rows": rows, "population": k}
    if "error" not in single:
        out["sequential_img_per_s"] = single["img_per_s_total"]  # k models one after the other: same rate
        if "error" not in pop:
            out["population_vs_sequential"] = pop["img_per_s_total"] / single["img_per_s_total"]
    out["population_failed"] = "error" in pop
    return _rows_status(out)


def stage_fmnist_epoch(tiny: bool, work: Path, data_dir: str | None = None, **_) -> dict:
    from jaxhfc.fit import fit

    ctx, _ = _paper_config(tiny, work / "fmnist", data_dir=data_dir, dataset="fashion_mnist")
    config = ctx.setup.config(optim={"epochs": 1}, run={"checkpoint_every": 0})
    t0 = time.perf_counter()
    datasets = ctx.models.datasets(config)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = fit(config, work / "fmnist" / "run", progress=False, datasets=datasets)
    wall = time.perf_counter() - t0
    last = res.history[-1]
    out = {"net": config.net.name, "norm": config.net.norm, "batch": config.optim.batch_size,
           "input_shape": list(datasets[0].images.shape[1:]), "train_images": len(datasets[0]),
           "test_images": len(datasets[1]), "load_s": load_s, "wall_s": wall,
           "epoch_time_s": last.get("epoch_time_s"), "img_per_s": last.get("img_per_s"),
           "train_loss": last.get("train_loss"), "accuracy": last.get("accuracy"),
           # an upper bound: every epoch counted at the first one's wall time, which includes compiling
           "upper_bound_100_epochs_min": 100 * wall / 60}
    print(f"  one epoch: {wall:.0f} s in all, {out['img_per_s'] or 0:,.0f} img/s training, "
          f"test accuracy {(out['accuracy'] or {}).get('test')}", flush=True)
    return out


STAGE_FUNCS = {"versions": stage_versions, "train_step": stage_train_step, "attacks": stage_attacks,
               "populations": stage_populations, "fmnist_epoch": stage_fmnist_epoch}


def run_stage(name: str, *, out: Path, tiny: bool, data_dir: str | None, work: Path | None) -> int:
    """Run one stage in this process and write its record; 0 when it ran, 1 when it failed."""
    t0 = time.perf_counter()
    own = tempfile.TemporaryDirectory(prefix="device-check-") if work is None else None
    try:
        record = STAGE_FUNCS[name](tiny=tiny, data_dir=data_dir, work=Path(own.name if own else work) / name)
        record.setdefault("status", "ok")
    except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are recorded too
        traceback.print_exc()
        record = {"status": "error", "error": f"{type(err).__name__}: {err}"}
    finally:
        if own is not None:
            own.cleanup()
    record.update(stage=name, stage_s=time.perf_counter() - t0, tiny=tiny)
    _write_json(stage_path(out, name), record)
    return 0 if record["status"] == "ok" else 1


# ----------------------------------------------------------------------------- driver


def _child(name: str, *, out: Path, tiny: bool, data_dir: str | None, work: Path, limit: float) -> dict:
    """Run a stage in its own process group; kill the group at ``limit`` seconds."""
    cmd = [sys.executable, "-m", "benchmarks.device_check", "--stage", name, "--out", str(out),
           "--work", str(work)] + (["--tiny"] if tiny else []) + (["--data-dir", data_dir] if data_dir else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    tail: collections.deque[str] = collections.deque(maxlen=40)
    t0 = time.perf_counter()
    # its own process group (not a new session, so whatever ends this driver's session ends it too)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            process_group=0)
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):  # the driver told to stop: take the stage down with it
        os.killpg(proc.pid, signal.SIGKILL)
        signal.signal(signal.SIGTERM, previous)
        raise SystemExit(f"device_check stopped by signal {signum} during stage {name}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            print(f"   | {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        try:
            rc = proc.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    reader.join(timeout=5)
    wall = time.perf_counter() - t0
    path = stage_path(out, name)
    if timed_out:
        record = {"stage": name, "status": "timeout", "limit_s": limit, "stage_s": wall, "tiny": tiny,
                  "output_tail": "\n".join(tail)}
        _write_json(path, record)
        return record
    if not path.exists():
        record = {"stage": name, "status": "crashed", "returncode": rc, "stage_s": wall, "tiny": tiny,
                  "output_tail": "\n".join(tail)}
        _write_json(path, record)
        return record
    record = json.loads(path.read_text())
    if record.get("status") != "ok":
        record["output_tail"] = "\n".join(tail)
        _write_json(path, record)
    record["process_s"] = wall
    return record


def run(*, out: Path, tiny: bool, budget_s: float, only: tuple[str, ...] = STAGES, data_dir: str | None = None,
        work: Path | None = None, caps: dict[str, float] | None = None) -> dict:
    """Run the stages (``only``) one process each, within ``budget_s`` in all; returns the summary
    that is also written to ``<out>/device-check.json`` after every stage."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    caps = {**({k: TINY_CAP for k in CAPS} if tiny else CAPS), **(caps or {})}
    own_work = work is None
    work = Path(work or tempfile.mkdtemp(prefix="device-check-"))
    summary: dict[str, Any] = {"tiny": tiny, "budget_s": budget_s, "host": platform.node(),
                               "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "stages": {}}
    t_start = time.perf_counter()
    try:
        for name in STAGES:
            if name not in only:
                continue
            left = budget_s - (time.perf_counter() - t_start)
            if left < 5:
                record = {"stage": name, "status": "skipped", "why": f"budget of {budget_s:.0f} s spent"}
                _write_json(stage_path(out, name), record)
            else:
                limit = min(caps[name], left)
                print(f"== {name} (limit {limit:.0f} s)", flush=True)
                record = _child(name, out=out, tiny=tiny, data_dir=data_dir, work=work, limit=limit)
            summary["stages"][name] = {k: v for k, v in record.items() if k != "output_tail"}
            summary["wall_s"] = time.perf_counter() - t_start
            _write_json(out / SUMMARY, summary)
            print(f"   {name}: {record['status']} ({record.get('stage_s', 0):.0f} s)"
                  + (f" {record.get('error', '')}" if record["status"] == "error" else ""), flush=True)
            if name == "versions" and record["status"] == "ok" and not tiny and record.get("backend") == "cpu":
                print("jaxhfc device check: jax sees no accelerator (backend cpu): the CUDA plugin did not load; "
                      "the remaining stages are skipped (--tiny runs them on a CPU)", flush=True)
                summary["aborted"] = "no accelerator"
                _write_json(out / SUMMARY, summary)
                break
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    return summary


def _what(name: str, st: dict) -> str:
    """One cell of the summary table: what a stage measured."""
    if st.get("status") != "ok":
        return f"**{st.get('status')}** {st.get('error') or st.get('why') or ''}".strip()
    if name == "versions":
        v = st["versions"]
        return f"{st['device_count']} x {st['device_kind']} ({st['backend']}), jax {v.get('jax')}, {st['line']}"
    if name == "fmnist_epoch":
        return (f"{st['net']} on {st['input_shape']} images, {st['train_images']:,} training images: one epoch "
                f"{st['wall_s']:.0f} s with evaluation, {st['img_per_s'] or 0:,.0f} img/s training")
    if name == "populations" and "population_vs_sequential" in st:
        return f"{st['population']} models in one program: {st['population_vs_sequential']:.2f}x one after the other"
    return "rows below"


def markdown(summary: dict) -> str:
    """The summary as the ``device-check`` block of docs/performance.md."""
    lines = [f"Measured by `python -m benchmarks.device_check{' --tiny' if summary['tiny'] else ''}` on "
             f"{summary['host']}, {summary['time']}; {summary.get('wall_s', 0):.0f} s in all."
             + (" **Tiny mode: toy sizes, numbers that only show the script runs.**" if summary["tiny"] else ""),
             "", "| stage | seconds | result |", "|---|---|---|"]
    stages = summary["stages"]
    for name, st in stages.items():
        lines.append(f"| {name} | {st.get('stage_s', 0):.0f} | {_what(name, st)} |")
    rows = [r for r in stages.get("train_step", {}).get("rows", []) if "error" not in r]
    if rows:
        lines += ["", "| training step | batch | img/s | compile s | GFLOP / image | MFU |", "|---|---|---|---|---|---|"]
        for r in rows:
            gf = f"{r['flops_per_image'] / 1e9:.2f}" if r.get("flops_per_image") else "n/a"
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
            lines.append(f"| {r['dtype']} | {r['batch']} | {r['img_per_s']:,.0f} | {r['compile_s']:.1f} | {gf} | {mfu} |")
    rows = [r for r in stages.get("attacks", {}).get("rows", []) if "error" not in r]
    if rows:
        lines += ["", "| attack | batch | gradients/s | first call s |", "|---|---|---|---|"]
        lines += [f"| {r['attack']} | {r['batch']} | {r['gradients_per_s']:,.0f} | {r['first_call_s']:.1f} |"
                  for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the stage records (created; nothing is written elsewhere)")
    p.add_argument("--tiny", action="store_true", help="toy sizes on a CPU: checks the stages run")
    p.add_argument("--budget-s", type=float, default=480.0, help="seconds for all stages (default 480: 8 minutes)")
    p.add_argument("--only", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--data-dir", default=None,
                   help="folder with the Fashion-MNIST IDX files (or its fashion-mnist/ sub-folder; default .data, "
                        "then /usr/share/datasets)")
    p.add_argument("--work", default=None, help="scratch folder for the epoch's run (default: a temporary one)")
    p.add_argument("--cap", nargs="+", default=[], metavar="STAGE=SECONDS",
                   help="a stage's own time limit instead of its default (e.g. fmnist_epoch=300)")
    p.add_argument("--doc", default=None, help="also fill the device-check block of this page (e.g. docs/performance.md)")
    p.add_argument("--stage", choices=STAGES, default=None, help=argparse.SUPPRESS)  # one stage, in this process
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        p.error(f"--budget-s must be positive, got {args.budget_s}")
    caps = {}
    for item in args.cap:
        name, _, value = item.partition("=")
        try:
            caps[name] = float(value)
        except ValueError:
            p.error(f"--cap takes STAGE=SECONDS, got {item!r}")
        if name not in STAGES or caps[name] <= 0:
            p.error(f"--cap takes STAGE=SECONDS with STAGE one of {', '.join(STAGES)} and SECONDS > 0, got {item!r}")
    data_dir = args.data_dir or (str(ROOT / ".data") if (ROOT / ".data").is_dir() else None)
    if args.stage:
        return run_stage(args.stage, out=Path(args.out), tiny=args.tiny, data_dir=data_dir,
                         work=Path(args.work) if args.work else None)
    summary = run(out=Path(args.out), tiny=args.tiny, budget_s=args.budget_s, only=tuple(args.only),
                  data_dir=data_dir, work=Path(args.work) if args.work else None, caps=caps)
    print(f"wrote {Path(args.out) / SUMMARY}")
    if args.doc:
        from experiments import readme_blocks

        if not readme_blocks.fill_block(Path(args.doc), START, END, markdown(summary) + "\n"):
            print(f"{args.doc} has no {START} ... {END} block; left as it is", file=sys.stderr)
        else:
            print(f"updated {args.doc}")
    return summary


if __name__ == "__main__":
    result = main(sys.argv[1:])
    sys.exit(result if isinstance(result, int) else 0)
