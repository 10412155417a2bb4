"""Cost of the quick reproduction: where its time goes, and what would make the CPU go faster.

Four parts, written to one JSON (``benchmarks/results/cost-<host>-<date>.json``):

* ``reproduction`` (read from a results folder written by ``python -m experiments.reproduce_all``;
  nothing is run): per artefact, its wall time (``timings.json``) and the part spent compiling jax
  programs (``compile_seconds.json``; it overlaps the other parts, since trainings compile too);
  per model role (the run folder's name before ``-s<seed>-<hash>``), the trainings, their
  optimizer steps and image passes (from the run configs each artefact's ``config.json``
  lists) and, where ``runs/*/done.json`` or ``training_seconds.json`` (kept when ``runs/`` is not) exist,
  their measured seconds. A run is charged to the
  first artefact (in :data:`experiments.reporting.ARTEFACTS` order) that lists it: the artefact
  that trained it in a run from an empty folder. An artefact's wall time less its trainings is
  its own work: attacks for the artefacts whose settings attack (``eps``), evaluation for the
  others. Evaluation during training is inside the trainings' seconds (the run files do not
  split it out). Without ``runs/`` (it is not committed), training seconds per role are
  estimated from the measured step throughput (image passes / img/s), and marked so.
* ``throughput``: training images/s of the quick recipe's network (``small_cnn``, the recipe's
  width, batch and Adam learning rate; 28x28x1 input, as Fashion-MNIST) through
  :func:`jaxhfc.step.make_train_step` (images on the device, indices per step, metrics fetched
  every 8 steps as ``fit`` does on a CPU), beside a PyTorch reference of the same layers (same
  batch, Adam, same thread count), in the same process, interleaved round by round: each round
  times every variant for ``--steps`` steps, and ratios are taken within a round (their median
  is reported), so load from other processes on the machine hits both sides alike. Variants:
  ``jax_f32``, ``jax_bf16`` (the whole network computing in bfloat16: an upper bound on what
  bf16 can give, since the input, first convolution and attacks would stay f32),
  ``jax_host_fed`` (each step's batch gathered on the host and transferred, instead of the whole
  training set on the device), ``torch_f32`` and ``torch_bf16`` (CPU autocast).
* ``settings``: one short worker process per XLA/thread setting (XLA reads its flags when it
  starts), the default first, in ``--setting-rounds`` rounds run one after the other: 2 XLA CPU
  devices (the reproduction's default, ``jaxhfc.parallel.request_cpu_devices``) or 1, Eigen's
  intra-op threads on or off (``--xla_cpu_multi_thread_eigen``), oneDNN (``--xla_cpu_use_onednn``),
  and one core for both JAX and PyTorch (``taskset``, torch 1 thread). ``vs_default``: the median
  over rounds of the setting's JAX img/s over the default's in the same round; each worker also
  pairs JAX with PyTorch at that setting's thread count (``jax_over_torch``).
* ``convolutions``: the share of XLA's op time spent in convolutions, from a ``jax.profiler``
  trace of the training step (the CPU runtime records one event per executed thunk, named by
  its HLO instruction): thunks whose instruction is, or fuses, an HLO ``convolution`` (forward,
  input-gradient and weight-gradient convolutions) against all thunks of the step's program.
* ``populations``: K models vmapped in one program (``fit_population``'s form) against the same
  models one after the other, interleaved round by round (reuses ``benchmarks.populations``).

Each part reports a ``decision`` (keep / switch off) from its measured ratio. Benchmarks never
fail on a slow machine and assert nothing about speed.

Usage::

    python -m benchmarks.cost [--results results/fashion_mnist] [--tiny] [--rounds 5] [--steps 16]
        [--skip throughput settings convolutions populations] [--no-torch] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORKER_TAG = "COST-WORKER-RESULT:"
DEVICE_FLAG = "--xla_force_host_platform_device_count"
#: A ratio must be at least this far above 1 to count as a win (paired medians on a shared CPU).
WIN_MARGIN = 1.05
#: Driver settings that mark an artefact whose own work is attacks (PGD/APGD/attack steps).
ATTACK_SETTINGS = ("pgd_steps", "apgd_steps", "steps")

#: XLA/thread settings, each measured in its own worker: (name, XLA devices, extra XLA flags,
#: pinned cores or None, torch threads or None = all cores). The first is the reproduction's default.
SETTINGS = (
    ("default_2dev", 2, [], None, None),
    ("1dev", 1, [], None, None),
    ("2dev_eigen_single_thread", 2, ["--xla_cpu_multi_thread_eigen=false"], None, None),
    ("1dev_eigen_single_thread", 1, ["--xla_cpu_multi_thread_eigen=false"], None, None),
    ("2dev_onednn", 2, ["--xla_cpu_use_onednn=true"], None, None),
    ("1core_both", 1, [], 1, 1),
)


def quick_recipe() -> dict:
    """The quick Fashion-MNIST recipe's network and step (experiments/recipes.py and its profile)."""
    from experiments import profiles, recipes

    base = recipes.BASE["quick"]
    fm = profiles.profile("fashion_mnist").recipe("quick")
    net = {**base["net"], **fm.get("net", {})}
    optim = {**base["optim"], **fm.get("optim", {})}
    return {"model": net["name"], "width": net["width"], "norm": net["norm"], "batch": optim["batch_size"],
            "optimizer": optim.get("name", "adam"), "learning_rate": optim["learning_rate"],
            "input_shape": [28, 28, 1], "num_classes": 10}


# ----------------------------------------------------------------------------- (a) the reproduction's files


def _role(run_dir: str) -> str:
    name = Path(run_dir).name
    head, sep, _ = name.rpartition("-s")
    return head if sep else name


def _steps(config: dict) -> dict:
    data, optim, adv = config.get("data", {}), config.get("optim", {}), config.get("adversary", {})
    n_train = int(data.get("num_train", 0)) - int(data.get("num_val", 0) or 0)
    if data.get("train_subset"):
        n_train = min(n_train, int(data["train_subset"]))
    batch, epochs = int(optim.get("batch_size", 1)), int(optim.get("epochs", 0))
    steps = epochs * (n_train // batch)
    passes = 1 + (int(adv.get("steps", 0)) if float(adv.get("eps", 0) or 0) > 0 else 0)
    every = int(config.get("evaluation", {}).get("every", 1) or 1)
    return {"epochs": epochs, "batch": batch, "steps": steps, "image_passes": steps * batch * passes,
            "evaluations": math.ceil(epochs / every) if epochs else 0}


def reproduction(results_dir: str | os.PathLike, img_per_s: float | None = None) -> dict:
    """Per-artefact and per-role time of a reproduction's results folder (see the module doc).

    ``img_per_s``: the measured training throughput (forward + backward image passes per
    second) used to estimate training seconds where neither ``runs/*/done.json`` nor
    ``training_seconds.json`` is there.

    Raises:
      FileNotFoundError: no such folder, or no ``timings.json`` in it (a one-line message).
    """
    from experiments.budget import invocation_trained, training_seconds
    from experiments.reporting import ARTEFACTS

    folder = Path(results_dir)
    if not (folder / "timings.json").is_file():
        raise FileNotFoundError(f"{folder}: no timings.json (not a results folder written by "
                                "python -m experiments.reproduce_all)")
    timings = json.loads((folder / "timings.json").read_text())
    compiling = json.loads((folder / "compile_seconds.json").read_text()) if (folder / "compile_seconds.json").is_file() else {}
    done = {}
    for f in sorted((folder / "runs").glob("*/done.json")):
        try:
            done[f.parent.name] = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
    order = [m for m, _, _ in ARTEFACTS if m in timings] + [m for m in timings if m not in {a for a, _, _ in ARTEFACTS}]
    charged: dict[str, str] = {}  # run folder name -> artefact that trained it
    runs: dict[str, dict] = {}
    for art in order:
        cfg_path = folder / art / "config.json"
        if not cfg_path.is_file():
            continue
        models = json.loads(cfg_path.read_text()).get("models", {})
        for entries in models.values():
            for e in entries if isinstance(entries, list) else [entries]:
                if not isinstance(e, dict) or "run_dir" not in e:
                    continue
                name = Path(e["run_dir"]).name
                if name not in runs:
                    runs[name] = {"role": _role(name), "artefact": art, **_steps(e.get("config", {}))}
                    charged[name] = art
    for name, d in done.items():  # finished runs no config.json lists (an artefact re-made since)
        runs.setdefault(name, {"role": d.get("name", _role(name)), "artefact": None})
    # each training's seconds: its done.json, or where runs/ is not kept, training_seconds.json
    seconds = training_seconds(folder)
    for name, r in runs.items():
        d = done.get(name)
        r["seconds"] = seconds.get(name)
        r["population"] = d.get("population") if d else None
        r["estimated_seconds"] = (r["image_passes"] / img_per_s) if img_per_s and r.get("image_passes") else None

    attacking = set()
    for art in order:
        cfg_path = folder / art / "config.json"
        settings = json.loads(cfg_path.read_text()).get("settings", {}) if cfg_path.is_file() else {}
        if any(k in settings for k in ATTACK_SETTINGS):
            attacking.add(art)
    have_runs = bool(seconds)
    trained_now, trained_all = invocation_trained(folder) or (None, None)
    # the artefacts' wall times hold their trainings only when the run trained every model it lists
    from_empty = trained_now is None or trained_now >= trained_all
    artefacts = []
    for art in order:
        mine = [r for r in runs.values() if r["artefact"] == art]
        train_s = sum(r["seconds"] for r in mine if r["seconds"] is not None) if have_runs else None
        est = sum(r["estimated_seconds"] or 0.0 for r in mine) if img_per_s else None
        wall = float(timings[art])
        basis = train_s if train_s is not None else est
        own = max(wall - basis, 0.0) if (basis is not None and from_empty) else None
        artefacts.append({
            "artefact": art, "wall_s": wall, "compile_s": compiling.get(art),
            "trainings": len(mine), "training_s": train_s, "training_s_estimated": est,
            "own_work": "attacks" if art in attacking else "evaluation",
            "own_work_s": own,
            "own_work_basis": None if own is None else ("done.json" if train_s is not None else "estimate"),
        })
    roles: dict[str, dict] = {}
    for r in runs.values():
        g = roles.setdefault(r["role"], {"role": r["role"], "trainings": 0, "artefact": r["artefact"], "steps": 0,
                                         "image_passes": 0, "seconds": 0.0 if have_runs else None,
                                         "estimated_seconds": 0.0 if img_per_s else None, "epochs": r.get("epochs"),
                                         "batch": r.get("batch")})
        g["trainings"] += 1
        g["steps"] += r.get("steps") or 0
        g["image_passes"] += r.get("image_passes") or 0
        if have_runs and r["seconds"] is not None:
            g["seconds"] += r["seconds"]
        if img_per_s and r["estimated_seconds"] is not None:
            g["estimated_seconds"] += r["estimated_seconds"]
    total = sum(a["wall_s"] for a in artefacts)
    comp = [a["compile_s"] for a in artefacts if a["compile_s"] is not None]
    return {
        "results_dir": str(folder), "runs_present": have_runs, "run_folders": len(done),
        "from_empty_folder": from_empty, "invocation_trained": trained_now, "models_in_runs": trained_all,
        "total_wall_s": total, "total_compile_s": sum(comp) if comp else None,
        "total_training_s": sum(r["seconds"] for r in runs.values() if r["seconds"] is not None) if have_runs else None,
        "estimate_img_per_s": img_per_s,
        "artefacts": artefacts,
        "roles": sorted(roles.values(), key=lambda g: -(g["seconds"] or g["estimated_seconds"] or g["image_passes"])),
        "notes": ("compile_s overlaps training_s and own_work_s (trainings compile too); evaluation during training "
                  "is inside training_s; own_work_s = wall_s - training_s (or its estimate), only for a run that "
                  "trained every model it lists (from_empty_folder); estimated seconds = image passes (forward + "
                  "backward, PGD steps included) / the measured batch-64 img/s"),
    }


# ----------------------------------------------------------------------------- (b) the paired step measurement


def _torch_net(width: int, num_classes: int, in_ch: int):
    import torch.nn as nn

    class SmallCNN(nn.Module):
        """jaxhfc.models.SmallCNN (norm none): conv3x3 w, then 3 x conv3x3 stride 2 (2w, 4w, 8w), relu after
        each, no bias; global average pool; Dense."""

        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
            self.c2 = nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False)
            self.c3 = nn.Conv2d(2 * width, 4 * width, 3, 2, 1, bias=False)
            self.c4 = nn.Conv2d(4 * width, 8 * width, 3, 2, 1, bias=False)
            self.fc = nn.Linear(8 * width, num_classes)

        def forward(self, x):
            for c in (self.c1, self.c2, self.c3, self.c4):
                x = c(x).relu()
            return self.fc(x.mean(dim=(2, 3)))

    return SmallCNN()


class _Jax:
    """One JAX variant of the quick step, ready to time ``steps`` steps."""

    def __init__(self, recipe: dict, *, dtype: str, host_fed: bool, n_images: int, seed: int = 0):
        import jax

        from jaxhfc import models, parallel
        from jaxhfc.step import create_train_state, make_optimizer, make_train_step, named_keys

        self.jax, self.parallel = jax, parallel
        self.mesh = parallel.make_mesh()
        b, shape = recipe["batch"], tuple(recipe["input_shape"])
        self.batch, self.host_fed = b, host_fed
        model = models.get_model(recipe["model"], width=recipe["width"], norm=recipe["norm"], dtype=dtype,
                                 num_classes=recipe["num_classes"])
        tx = make_optimizer(optimizer=recipe["optimizer"], learning_rate=recipe["learning_rate"])
        keys = named_keys(seed)
        self.state = create_train_state(model, tx, keys["init"], shape, mesh=self.mesh)
        self.step = make_train_step(model, tx, self.mesh, global_batch=b, num_classes=recipe["num_classes"])
        rng = np.random.default_rng(seed)
        self.x = rng.random((n_images, *shape), dtype=np.float32)
        self.y = rng.integers(0, recipe["num_classes"], n_images).astype(np.int32)
        self.rng = rng
        self.keys = parallel.global_from_full(self.mesh, {k: keys[k] for k in ("data", "dropout", "attack")})
        if host_fed:
            self.local_idx = parallel.global_from_full(self.mesh, np.arange(b, dtype=np.int32), sharded=True)
        else:
            self.images = parallel.global_from_full(self.mesh, self.x)
            self.labels = parallel.global_from_full(self.mesh, self.y)
        t0 = time.perf_counter()
        self.run(2)
        self.first_s = time.perf_counter() - t0  # trace + compile + 2 steps

    def run(self, steps: int) -> None:
        pending = []
        for _ in range(steps):
            idx = self.rng.integers(0, len(self.x), self.batch).astype(np.int32)
            if self.host_fed:
                batch = (self.parallel.global_from_full(self.mesh, self.x[idx]),
                         self.parallel.global_from_full(self.mesh, self.y[idx]), self.local_idx)
            else:
                batch = (self.images, self.labels, self.parallel.global_from_full(self.mesh, idx, sharded=True))
            self.state, m = self.step(self.state, batch, self.keys)
            pending.append(m)
            if len(pending) >= 8:  # fit on a CPU: metrics fetched a few calls later
                self.jax.device_get(pending.pop(0))
        self.jax.device_get(pending)
        self.jax.block_until_ready(self.state)


class _Torch:
    def __init__(self, recipe: dict, *, bf16: bool, n_images: int, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        self.torch, self.bf16, self.batch = torch, bf16, recipe["batch"]
        h, w, c = recipe["input_shape"]
        self.model = _torch_net(recipe["width"], recipe["num_classes"], c)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=recipe["learning_rate"])
        self.x = torch.rand(n_images, c, h, w)
        self.y = torch.randint(0, recipe["num_classes"], (n_images,))
        t0 = time.perf_counter()
        self.run(2)
        self.first_s = time.perf_counter() - t0

    def run(self, steps: int) -> None:
        torch = self.torch
        losses = []
        for _ in range(steps):
            idx = torch.randint(0, len(self.x), (self.batch,))
            xb, yb = self.x[idx], self.y[idx]
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss = torch.nn.functional.cross_entropy(self.model(xb), yb)
            loss.backward()
            self.opt.step()
            losses.append(loss.detach())
        float(torch.stack(losses).sum())


def paired(recipe: dict, variants: list[str], *, rounds: int, steps: int, n_images: int) -> dict:
    """Time every variant for ``steps`` steps per round, ``rounds`` rounds, interleaved."""
    runners: dict[str, Any] = {}
    errors = {}
    for v in variants:
        try:
            if v.startswith("jax"):
                runners[v] = _Jax(recipe, dtype="bfloat16" if v == "jax_bf16" else "float32",
                                  host_fed=v == "jax_host_fed", n_images=n_images)
            else:
                runners[v] = _Torch(recipe, bf16=v == "torch_bf16", n_images=n_images)
        except Exception as err:  # noqa: BLE001 - one variant failing (e.g. no torch) must not end the run
            errors[v] = f"{type(err).__name__}: {err}"
    times: dict[str, list[float]] = {v: [] for v in runners}
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))  # alternate who goes first
        for v in order:
            t0 = time.perf_counter()
            runners[v].run(steps)
            times[v].append(time.perf_counter() - t0)
    b = recipe["batch"]
    out: dict[str, Any] = {"rounds": rounds, "steps_per_round": steps, "variants": {}, "errors": errors}
    for v, ts in times.items():
        ips = [steps * b / t for t in ts]
        out["variants"][v] = {"img_per_s": statistics.median(ips), "img_per_s_rounds": ips,
                              "step_ms": 1e3 * statistics.median(ts) / steps, "first_s": runners[v].first_s}

    def ratio(a: str, c: str) -> float | None:
        if a not in times or c not in times:
            return None
        return statistics.median(tc / ta for ta, tc in zip(times[a], times[c]))  # img/s(a) / img/s(c)

    out["ratios"] = {k: ratio(a, c) for k, (a, c) in {
        "jax_over_torch": ("jax_f32", "torch_f32"),
        "jax_bf16_over_f32": ("jax_bf16", "jax_f32"),
        "jax_on_device_over_host_fed": ("jax_f32", "jax_host_fed"),
        "torch_bf16_over_f32": ("torch_bf16", "torch_f32"),
    }.items() if a in times and c in times}
    return out


# ----------------------------------------------------------------------------- (c) convolutions' share


def _conv_ops(hlo_text: str) -> set[str]:
    """Names of the HLO instructions that are a ``convolution`` or call a computation holding one
    (a fusion, a custom YNN/oneDNN fusion), from the compiled module's text."""
    ref = re.compile(r"%([\w.\-]+)")
    comps: dict[str, list[str]] = {}
    current = None
    for line in hlo_text.splitlines():
        s = line.strip()
        head = re.match(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(.*\{$", s)
        if head and " = " not in s.split("(")[0]:
            current = head.group(1)
            comps[current] = []
        elif s == "}":
            current = None
        elif current is not None:
            comps[current].append(s)
    has_conv = {c for c, body in comps.items() if any(" convolution(" in b for b in body)}
    calls = {c: {m for b in body for m in ref.findall(b.split(" = ", 1)[1] if " = " in b else "") if m in comps}
             for c, body in comps.items()}
    changed = True
    while changed:  # computations that call a computation holding a convolution
        changed = False
        for c in comps:
            if c not in has_conv and calls[c] & has_conv:
                has_conv.add(c)
                changed = True
    ops = set()
    for body in comps.values():
        for b in body:
            b = b[5:] if b.startswith("ROOT ") else b
            if " = " not in b:
                continue
            name, rhs = b.split(" = ", 1)
            called = {m for m in ref.findall(rhs) if m in comps}
            if " convolution(" in b or called & has_conv:
                ops.add(name.strip().lstrip("%"))
    return ops


def conv_share(recipe: dict, *, steps: int, trace_dir: str) -> dict:
    """Share of the step's XLA op time spent in convolution thunks (jax.profiler trace)."""
    import glob
    import gzip

    import jax

    j = _Jax(recipe, dtype="float32", host_fed=False, n_images=4 * recipe["batch"])
    idx = j.parallel.global_from_full(j.mesh, np.arange(recipe["batch"], dtype=np.int32), sharded=True)
    compiled = j.step.lower(j.state, (j.images, j.labels, idx), j.keys).compile()
    hlo = compiled.as_text()
    module = hlo.split("HloModule ", 1)[1].split(",", 1)[0].strip() if "HloModule " in hlo else None
    conv = _conv_ops(hlo)
    j.run(4)
    t0 = time.perf_counter()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        j.run(steps)
    wall = time.perf_counter() - t0
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))
    if not files:
        return {"error": "the profiler wrote no perfetto trace"}
    with gzip.open(files[-1]) as fh:
        data = json.load(fh)
    events = data["traceEvents"] if isinstance(data, dict) else data
    per_op: dict[str, float] = {}
    for e in events:
        a = e.get("args") or {}
        if e.get("ph") != "X" or "hlo_op" not in a or (module and a.get("hlo_module") != module):
            continue
        per_op[a["hlo_op"]] = per_op.get(a["hlo_op"], 0.0) + float(e.get("dur", 0.0)) * 1e-6
    total = sum(per_op.values())
    conv_s = sum(v for k, v in per_op.items() if k in conv)
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:12]
    return {
        "method": "jax.profiler trace of the training step: XLA:CPU thunk events (summed over threads) whose HLO "
                  "instruction is or fuses a convolution, over all thunk events of the step's program",
        "hlo_module": module, "steps": steps, "wall_s": wall, "devices": int(j.mesh.devices.size),
        "op_s": total, "conv_op_s": conv_s, "conv_share": conv_s / total if total else None,
        "op_s_per_step": total / steps, "conv_ms_per_step": 1e3 * conv_s / steps,
        "conv_instructions": sorted(conv),
        "top_ops": [{"op": k, "s": v, "share": v / total if total else None, "conv": k in conv} for k, v in top],
    }


# ----------------------------------------------------------------------------- (3) populations


def populations_paired(recipe: dict, ks: list[int], *, rounds: int, steps: int) -> dict:
    """K models in one vmapped program vs one model, the form ``fit``/``fit_population`` use on a
    CPU (one step per call, metrics fetched 8 calls later), interleaved round by round."""
    from benchmarks import populations as P
    from jaxhfc import parallel

    shape = tuple(recipe["input_shape"])
    setups = {}
    for k in [None] + list(ks):
        mesh, loop, state, images, labels, keys, idx = P._setup(recipe["model"], recipe["width"], "float32",
                                                                recipe["batch"], k, None, input_shape=shape)
        calls = [parallel.global_from_full(mesh, idx[i:i + 1], sharded=True, batch_axis=idx.ndim - 1)
                 for i in range(min(steps, len(idx)))]
        setups[k] = [loop, state, images, labels, keys, calls]

    def run(k) -> float:
        loop, state, images, labels, keys, calls = setups[k]
        t0 = time.perf_counter()
        pending = []
        for c in calls:
            state, m = loop(state, images, labels, c, keys)
            pending.append(m)
            if len(pending) >= 8:
                parallel.to_host(pending.pop(0))
        parallel.to_host(pending)
        import jax

        jax.block_until_ready(state)
        setups[k][1] = state
        return time.perf_counter() - t0

    first = {str(k): run(k) for k in setups}
    times: dict[Any, list[float]] = {k: [] for k in setups}
    for r in range(rounds):
        for k in (list(setups) if r % 2 == 0 else list(reversed(list(setups)))):
            times[k].append(run(k))
    b = recipe["batch"]
    n = len(setups[None][5])
    single = [n * b / t for t in times[None]]
    rows = []
    for k in ks:
        tot = [k * n * b / t for t in times[k]]
        rows.append({"k": k, "img_per_s_total": statistics.median(tot), "img_per_s_per_model": statistics.median(tot) / k,
                     "vs_sequential": statistics.median(t1 / tk * k for t1, tk in zip(times[None], times[k])),
                     "vs_sequential_rounds": [t1 / tk * k for t1, tk in zip(times[None], times[k])],
                     "first_s": first[str(k)]})
    return {"steps_per_round": n, "rounds": rounds, "single_img_per_s": statistics.median(single),
            "single_first_s": first["None"], "populations": rows}


# ----------------------------------------------------------------------------- workers


def _worker(spec: dict) -> dict:
    out: dict[str, Any] = {"setting": spec["name"]}
    import jax

    out["jax_devices"] = jax.device_count()
    out["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    out["affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    recipe = spec["recipe"]
    if spec.get("torch_threads"):
        try:
            import torch

            torch.set_num_threads(int(spec["torch_threads"]))
            out["torch_threads"] = torch.get_num_threads()
        except ImportError:
            pass
    out["paired"] = paired(recipe, spec["variants"], rounds=spec["rounds"], steps=spec["steps"],
                           n_images=spec["n_images"])
    if spec.get("convolutions"):
        try:
            out["convolutions"] = conv_share(recipe, steps=spec["steps"], trace_dir=spec["trace_dir"])
        except Exception as err:  # noqa: BLE001
            out["convolutions"] = {"error": f"{type(err).__name__}: {err}"}
    if spec.get("populations"):
        try:
            out["populations"] = populations_paired(recipe, spec["populations"], rounds=spec["rounds"],
                                                    steps=spec["steps"])
        except Exception as err:  # noqa: BLE001
            out["populations"] = {"error": f"{type(err).__name__}: {err}"}
    return out


def run_worker(spec: dict, *, timeout: float) -> dict:
    """Run one setting in a fresh process (XLA reads its flags at start); never raises."""
    env = dict(os.environ)
    flags = " ".join(f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG))
    extra = list(spec["xla_flags"])
    if spec["devices"] > 1:
        extra.append(f"{DEVICE_FLAG}={spec['devices']}")
    env["XLA_FLAGS"] = " ".join([flags] + extra).strip()
    threads = spec.get("torch_threads") or os.cpu_count() or 1
    spec = {**spec, "torch_threads": threads}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, "-m", "benchmarks.cost", "--worker", json.dumps(spec)]
    if spec.get("cores"):
        cmd = ["taskset", "-c", ",".join(str(c) for c in range(spec["cores"]))] + cmd
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"setting": spec["name"], "error": f"timed out after {timeout:.0f} s"}
    except OSError as err:
        return {"setting": spec["name"], "error": f"{type(err).__name__}: {err}"}
    for line in proc.stdout.splitlines():
        if line.startswith(WORKER_TAG):
            res = json.loads(line[len(WORKER_TAG):])
            res["worker_wall_s"] = time.perf_counter() - t0
            return res
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"setting": spec["name"], "error": f"worker exited {proc.returncode}: {tail[0][:300]}"}


# ----------------------------------------------------------------------------- decisions and main


#: A win also needs this share of the paired rounds above 1 (one noisy round cannot decide).
WIN_ROUNDS = 0.75


def decide(ratio: float | None, *, on: str, off: str, rounds: list[float] | None = None) -> str:
    """``ratio`` (a median of paired ratios) as a decision: a win needs ``ratio >= WIN_MARGIN`` and,
    when the per-round ratios are given, at least ``WIN_ROUNDS`` of them above 1."""
    if ratio is None:
        return "not measured"
    spread = ""
    steady = True
    if rounds:
        above = sum(r > 1 for r in rounds) / len(rounds)
        steady = above >= WIN_ROUNDS
        spread = f" (rounds {min(rounds):.2f}-{max(rounds):.2f}, {above:.0%} above 1)"
    if ratio >= WIN_MARGIN and steady:
        verdict = on
    elif ratio >= WIN_MARGIN:
        verdict = f"not a steady win: {off}"
    else:
        verdict = off
    return f"{ratio:.2f}x{spread} -> {verdict}"


def round_ratios(paired_: dict, a: str, c: str) -> list[float]:
    """Per-round img/s ratios of variant ``a`` over ``c`` (same rounds)."""
    v = (paired_ or {}).get("variants", {})
    if a not in v or c not in v:
        return []
    return [x / y for x, y in zip(v[a]["img_per_s_rounds"], v[c]["img_per_s_rounds"])]


def summarise(default: dict, setting_rounds: list[list[dict]]) -> dict:
    """Settings table and decisions. ``setting_rounds``: per round, one short worker per setting
    (the default first), run one after the other; a setting's ``vs_default`` is the median over
    rounds of its JAX img/s over the default's in the same round."""
    names = [w["setting"] for w in setting_rounds[0]] if setting_rounds else []
    rows = []
    for name in names:
        ws = [next(w for w in rnd if w["setting"] == name) for rnd in setting_rounds]
        base = [next(w for w in rnd if w["setting"] == SETTINGS[0][0]) for rnd in setting_rounds]

        def ips(w, v="jax_f32"):
            return ((w.get("paired") or {}).get("variants", {}).get(v) or {}).get("img_per_s")

        pairs = [(ips(w), ips(d)) for w, d in zip(ws, base) if ips(w) and ips(d)]
        jt = [((w.get("paired") or {}).get("ratios") or {}).get("jax_over_torch") for w in ws]
        jt = [r for r in jt if r]
        j = [ips(w) for w in ws if ips(w)]
        t = [ips(w, "torch_f32") for w in ws if ips(w, "torch_f32")]
        rows.append({"setting": name, "jax_devices": ws[0].get("jax_devices"), "xla_flags": ws[0].get("xla_flags"),
                     "torch_threads": ws[0].get("torch_threads"), "affinity": ws[0].get("affinity"),
                     "rounds": len(pairs), "jax_img_per_s": statistics.median(j) if j else None,
                     "torch_img_per_s": statistics.median(t) if t else None,
                     "jax_over_torch": statistics.median(jt) if jt else None,
                     "vs_default": statistics.median(a / b for a, b in pairs) if pairs else None,
                     "vs_default_rounds": [a / b for a, b in pairs],
                     "error": next((w["error"] for w in ws if w.get("error")), None)})
    return {"settings": rows, "decisions": decisions_of(default.get("paired"), rows, default.get("populations"))}


def decisions_of(paired_: dict | None, rows: list[dict], pop: dict | None) -> dict:
    """The decision each measurement implies (see :func:`decide`)."""
    d = (paired_ or {}).get("ratios", {})
    decisions = {
        "bf16 (whole network, upper bound)": decide(
            d.get("jax_bf16_over_f32"), rounds=round_ratios(paired_, "jax_bf16", "jax_f32"),
            on="worth a bf16 recipe (input, first conv and attacks in f32)", off="keep float32 on this CPU"),
        "data on device (vs host-fed batches)": decide(
            d.get("jax_on_device_over_host_fed"), rounds=round_ratios(paired_, "jax_f32", "jax_host_fed"),
            on="keep it (fit already holds each run's data on the device)",
            off="no clear gain at this size; fit already holds each run's data on the device, keep it"),
    }
    for row in rows[1:]:
        if row["vs_default"] is not None:
            decisions[f"setting {row['setting']} (vs default_2dev)"] = decide(
                row["vs_default"], rounds=row.get("vs_default_rounds"), on="switch to it", off="keep the default")
    pop = pop or {}
    if pop.get("populations"):
        best = max(pop["populations"], key=lambda p: p["vs_sequential"])
        decisions["populations (best K vs one after another)"] = decide(
            best["vs_sequential"], rounds=best.get("vs_sequential_rounds"),
            on="keep populations on the CPU", off="switch populations off on the CPU")
    return decisions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(ROOT / "results" / "fashion_mnist"),
                   help="a results folder written by python -m experiments.reproduce_all")
    p.add_argument("--tiny", action="store_true", help="smoke sizes: tiny network, 1 round of 2 steps")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per measurement (default 5)")
    p.add_argument("--steps", type=int, default=None, help="training steps per variant per round (default 16)")
    p.add_argument("--setting-rounds", type=int, default=None,
                   help="rounds of one short worker per setting, run in turn (default 3; --tiny 1)")
    p.add_argument("--populations", type=int, nargs="+", default=None, help="population sizes (default 2 4)")
    p.add_argument("--settings", nargs="+", default=None, choices=[s[0] for s in SETTINGS],
                   help="settings compared with the default (default: all)")
    p.add_argument("--skip", nargs="+", default=[], choices=("settings", "convolutions", "populations"))
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per worker process")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results)")
    p.add_argument("--update-doc", action="store_true", help="fill the cost block of docs/performance.md")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="only fill docs/performance.md's cost block from this cost JSON (measures nothing)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.render:
        print(f"updated {update_doc(Path(args.render))}")
        return 0
    if args.worker:
        print(WORKER_TAG + json.dumps(_worker(json.loads(args.worker)), default=float), flush=True)
        return 0
    results = Path(args.results)
    if not (results / "timings.json").is_file():
        print(f"error: {results}: no timings.json (not a results folder written by python -m "
              "experiments.reproduce_all)", file=sys.stderr)
        return 2
    import tempfile

    from benchmarks import common

    recipe = quick_recipe()
    if args.tiny:
        recipe = {**recipe, "width": 4, "batch": 8}
    rounds = args.rounds or (1 if args.tiny else 5)
    steps = args.steps or (2 if args.tiny else 16)
    ks = args.populations or ([2] if args.tiny else [2, 4])
    n_setting_rounds = args.setting_rounds or (1 if args.tiny else 3)
    torch_variants = [] if args.no_torch else ["torch_f32", "torch_bf16"]
    table = {s[0]: s for s in SETTINGS}

    def spec(name: str, *, full: bool, trace_dir: str) -> dict:
        _, devices, flags, cores, tthreads = table[name]
        variants = ["jax_f32"] + (["jax_bf16", "jax_host_fed"] + torch_variants if full else torch_variants[:1])
        return {"name": name, "devices": devices, "xla_flags": flags, "cores": cores, "torch_threads": tthreads,
                "recipe": recipe, "variants": variants, "rounds": rounds if full else max(1, rounds // 2),
                "steps": steps, "n_images": 16 * recipe["batch"], "trace_dir": trace_dir,
                "convolutions": full and "convolutions" not in args.skip,
                "populations": ks if (full and "populations" not in args.skip) else None}

    with tempfile.TemporaryDirectory() as trace_dir:
        print(f"== {SETTINGS[0][0]}: paired throughput, convolutions, populations", flush=True)
        default = run_worker(spec(SETTINGS[0][0], full=True, trace_dir=trace_dir), timeout=args.timeout)
        pr = (default.get("paired") or {}).get("ratios", {})
        print("   " + (json.dumps({k: round(v, 3) for k, v in pr.items() if v is not None}) if pr
                       else str(default.get("error"))), flush=True)
        setting_rounds: list[list[dict]] = []
        if "settings" not in args.skip:
            others = [n for n in (args.settings or [s[0] for s in SETTINGS[1:]]) if n != SETTINGS[0][0]]
            for r in range(n_setting_rounds):
                rnd = []
                for name in [SETTINGS[0][0]] + others:
                    w = run_worker(spec(name, full=False, trace_dir=trace_dir), timeout=args.timeout)
                    rnd.append(w)
                    v = (w.get("paired") or {}).get("variants", {}).get("jax_f32", {})
                    print(f"   round {r + 1} {name}: " + (f"jax {v['img_per_s']:.0f} img/s" if v else str(w.get("error"))),
                          flush=True)
                setting_rounds.append(rnd)
    summary = summarise(default, setting_rounds)
    jv = (default.get("paired") or {}).get("variants", {}).get("jax_f32", {})
    try:
        repro = reproduction(results, img_per_s=jv.get("img_per_s"))
    except (OSError, ValueError) as err:
        repro = {"error": f"{type(err).__name__}: {err}"}
    payload = {"tiny": args.tiny, "recipe": recipe, "win_margin": WIN_MARGIN,
               "cpu_flags": _cpu_flags(), "reproduction": repro,
               "throughput": default.get("paired"), "convolutions": default.get("convolutions"),
               "populations": default.get("populations"), "settings": summary["settings"],
               "decisions": summary["decisions"], "default_worker": {k: v for k, v in default.items() if k not in
                                                                      ("paired", "convolutions", "populations")},
               "setting_workers": setting_rounds}
    path = common.save("cost", payload, args.out)
    for k, v in summary["decisions"].items():
        print(f"{k}: {v}")
    print(f"wrote {path}")
    if args.update_doc:
        print(f"updated {update_doc(path)}")
    return 0


DOC_START, DOC_END = "<!-- cost:start -->", "<!-- cost:end -->"


def _n(v, fmt="{:,.0f}"):
    return "—" if v is None else fmt.format(v)


def markdown(rec: dict, name: str = "") -> str:
    """The profile section of docs/performance.md from a cost JSON (no number typed by hand)."""
    hw, fl, rc = rec["hardware"], rec.get("cpu_flags", {}), rec["recipe"]
    v = hw.get("versions", {})
    have = [f for f in ("avx512_bf16", "amx_bf16") if fl.get(f)]
    lines = [f"Measured {rec['time']} on **{hw['cpu']}** ({hw['cpu_cores']} cores; bf16 instructions: "
             f"{', '.join(have) if have else 'none (no avx512_bf16, no amx_bf16)'}), jax {v.get('jax')}, "
             f"torch {v.get('torch') or 'not installed'}. The quick recipe's step: {rc['model']} width {rc['width']} "
             f"(norm {rc['norm']}), batch {rc['batch']}, {rc['optimizer']} {rc['learning_rate']}, input "
             f"{'x'.join(map(str, rc['input_shape']))}. Ratios are medians of per-round ratios (variants interleaved "
             "in one process); a setting wins only at >= " + f"{rec['win_margin']:.2f}x.", ""]
    tp = rec.get("throughput") or {}
    if tp.get("variants"):
        lines += [f"**Training step, paired** ({tp['rounds']} rounds of {tp['steps_per_round']} steps per variant, "
                  "2 XLA devices as the reproduction runs, PyTorch at as many threads as cores):", "",
                  "| variant | img/s | ms/step | first call s |", "|---|---|---|---|"]
        lines += [f"| {k} | {_n(x['img_per_s'])} | {x['step_ms']:.1f} | {x['first_s']:.1f} |" for k, x in tp["variants"].items()]
        r = tp.get("ratios", {})
        lines += ["", "Paired ratios: " + ", ".join(f"{k} **{x:.2f}x**" for k, x in r.items() if x is not None) + ".", ""]
    st = rec.get("settings") or []
    if st:
        lines += ["**XLA / thread settings** (short worker processes, the default first, in rounds run one after "
                  "the other; `vs default` = median over rounds of JAX img/s over the default's in the same round; "
                  "`jax/torch` = paired with PyTorch at that setting's thread count):", "",
                  "| setting | XLA devices | extra XLA flags | cores | JAX img/s | PyTorch img/s | jax/torch | vs default |",
                  "|---|---|---|---|---|---|---|---|"]
        for s_ in st:
            flags = " ".join(f for f in (s_.get("xla_flags") or "").split() if "device_count" not in f) or "—"
            cores = len(s_["affinity"]) if s_.get("affinity") else "—"
            lines.append(f"| {s_['setting']} | {s_.get('jax_devices')} | `{flags}` | {cores} | {_n(s_['jax_img_per_s'])} | "
                         f"{_n(s_['torch_img_per_s'])} | {_n(s_['jax_over_torch'], '{:.2f}x')} | "
                         f"{_n(s_['vs_default'], '{:.2f}x')} |" + (f" error: {s_['error']}" if s_.get("error") else ""))
        lines.append("")
    cv = rec.get("convolutions") or {}
    if cv.get("conv_share") is not None:
        lines += [f"**Convolutions**: {100 * cv['conv_share']:.0f}% of XLA's op time in the training step "
                  f"({cv['conv_ms_per_step']:.1f} of {1e3 * cv['op_s_per_step']:.1f} ms of thunk time per step, summed over "
                  f"threads, {cv['devices']} devices). Method: {cv['method']}. Largest ops:", "",
                  "| op | share | convolution |", "|---|---|---|"]
        lines += [f"| `{t['op']}` | {100 * t['share']:.0f}% | {'yes' if t['conv'] else 'no'} |" for t in cv["top_ops"][:8]]
        lines.append("")
    po = rec.get("populations") or {}
    if po.get("populations"):
        lines += [f"**Populations** (K models vmapped in one program vs one model, one step per call as `fit` runs on "
                  f"a CPU; one model {_n(po['single_img_per_s'])} img/s):", "",
                  "| K | img/s, all models | vs one after another |", "|---|---|---|"]
        lines += [f"| {x['k']} | {_n(x['img_per_s_total'])} | {x['vs_sequential']:.2f}x |" for x in po["populations"]]
        lines.append("")
    rp = rec.get("reproduction") or {}
    if rp.get("artefacts"):
        src = "each run's done.json (training_seconds.json)" if rp["runs_present"] else f"estimated at {_n(rp['estimate_img_per_s'])} img/s (no runs/ folder)"
        lines += [f"**Quick reproduction** (`{Path(rp['results_dir']).name}`): {rp['total_wall_s'] / 60:.1f} min of "
                  f"artefact wall time, {_n(rp['total_compile_s'])} s compiling. "
                  + ("" if rp["from_empty_folder"] else f"That invocation trained {rp['invocation_trained']} of its "
                     f"{rp['models_in_runs']} models and loaded the others, so the wall times are not those of a run "
                     "from an empty folder (own work not split). ") + f"Training seconds: {src}.", "",
                  "| artefact | wall s | compiling s | trainings | training s | own work | own work s |",
                  "|---|---|---|---|---|---|---|"]
        for a_ in rp["artefacts"]:
            tr = a_["training_s"] if a_["training_s"] is not None else a_["training_s_estimated"]
            est = "" if a_["training_s"] is not None else " (est.)"
            lines.append(f"| {a_['artefact']} | {a_['wall_s']:.0f} | {_n(a_['compile_s'])} | {a_['trainings']} | "
                         f"{_n(tr)}{est if tr is not None else ''} | {a_['own_work']} | {_n(a_['own_work_s'])} |")
        lines += ["", "| model role | trainings | epochs | batch | optimizer steps | image passes | training s |",
                  "|---|---|---|---|---|---|---|"]
        for g in rp["roles"]:
            sec = g["seconds"] if g["seconds"] is not None else g["estimated_seconds"]
            lines.append(f"| {g['role']} | {g['trainings']} | {g.get('epochs')} | {g.get('batch')} | {g['steps']:,} | "
                         f"{g['image_passes']:,} | {_n(sec)}{'' if g['seconds'] is not None else ' (est.)'} |")
        lines.append("")
    if rec.get("decisions"):
        lines += ["**Decisions**:", ""] + [f"- {k}: {x}" for k, x in rec["decisions"].items()] + [""]
    lines.append(f"(Generated by `benchmarks/cost.py` from `benchmarks/results/{name}`.)" if name else "")
    return "\n".join(lines) + "\n"


def update_doc(json_path: Path, doc: Path | None = None) -> Path:
    """Fill the cost block of docs/performance.md (between DOC_START and DOC_END) from a cost JSON."""
    from experiments.readme_blocks import fill_block

    doc = Path(doc) if doc else ROOT / "docs" / "performance.md"
    rec = json.loads(Path(json_path).read_text())
    rec["decisions"] = decisions_of(rec.get("throughput"), rec.get("settings") or [], rec.get("populations"))
    if not fill_block(doc, DOC_START, DOC_END, markdown(rec, Path(json_path).name)):
        raise ValueError(f"{doc} has no {DOC_START} ... {DOC_END} block to fill")
    return doc


def _cpu_flags() -> dict:
    """Whether the CPU has the bf16 instructions (AVX512-BF16, AMX-BF16), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"avx512_bf16": None, "amx_bf16": None}
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    return {f: f in flags for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")}


if __name__ == "__main__":
    sys.exit(main())
