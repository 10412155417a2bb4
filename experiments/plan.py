"""The cost plan of a full-scale reproduction, before any GPU hour is spent
(``python -m experiments.reproduce_all --dataset cifar10 --plan``).

The plan comes from a smoke run (``--smoke``: the full-scale recipes, shapes and code paths with
every loop capped) metered by :mod:`jaxhfc.costs`: every training step and every evaluation call
reports its compiled program's FLOPs (XLA's cost analysis) and memory (XLA's memory analysis).
Each cost is then scaled from the capped run to the full one:

- training steps: exact. FLOPs per step of each program times the steps of the uncapped config
  (``epochs * (training images // batch)``), per model;
- evaluation during training: FLOPs per evaluated image times the images the uncapped config
  evaluates (every ``every`` epochs: the test set and its LFC/HFC copies, and the training subset
  and its LFC copies when ``evaluation.train``);
- evaluation after training (attacks, heat maps, sweeps over radii): each evaluation call of the
  capped run times :func:`record_factor`: the full image count over the capped one (the caps are
  distinct numbers, so a count names its setting), and for attacks the gradient evaluations per
  image and the (row, eps) pairs of the full settings over the capped ones. A smoke run attacks
  every image with the cascade attacks too (APGD-T; ``cascade="all"`` of
  :func:`jaxhfc.attacks.robust_accuracy`), so their count is an upper bound: the full run attacks
  only the images the other attacks left right (most of M_adversarial's, few of M_natural's).
  Re-runs of unconverged attacks are counted as often as the smoke run made them, and a call
  whose image count was not capped is counted once (``eval_unscaled_flops``).

Time is predicted as FLOPs / (peak x utilisation) for a named accelerator: a prediction, which
the first run on that accelerator replaces with a measurement (``benchmarks/device_check.py``).
Memory is XLA's analysis of the programs compiled where the plan ran (per device); another
backend compiles other programs, so it is an indication, not the GPU's number.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments import profiles
from experiments.recipes import SMOKE
from experiments.setup import VALIDATION
from jaxhfc import results as R

#: Dense peak FLOP/s of accelerators the plan can predict for (vendor data sheets, no sparsity).
#: Float32 convolutions and matmuls run as TF32 on these GPUs under jax's default precision.
ACCELERATORS: dict[str, dict[str, float]] = {
    "H200": {"tf32": 494.7e12, "bf16": 989.4e12, "fp32": 66.9e12, "memory_gib": 141 * 1e9 / 2**30},
    "H100": {"tf32": 494.7e12, "bf16": 989.4e12, "fp32": 66.9e12, "memory_gib": 80 * 1e9 / 2**30},
    "A100": {"tf32": 156e12, "bf16": 312e12, "fp32": 19.5e12, "memory_gib": 80 * 1e9 / 2**30},
}
DEFAULT_ACCELERATOR, DEFAULT_UTILISATION = "H200", 0.30
#: The full reproduction's goal per seed on one H200 (minutes).
GOAL_MINUTES_PER_SEED = 30


def _train_size(config) -> int:
    """Training images a config loads: ``data.num_train``, else its dataset's standard train
    split (its profile's ``train_size``; 50,000 when unknown)."""
    return config.data.num_train or profiles.profile(config.data.name).train_size or 50_000


def _eval_images(config) -> tuple[int, int]:
    """``(images evaluated per evaluation, evaluations)`` of a training config: the test set and
    its LFC/HFC copies at every radius, plus the training subset and its LFC copies when
    ``evaluation.train``; an evaluation every ``every`` epochs and after the last."""
    d, ev = config.data, config.evaluation
    n_test = d.num_test or 10_000
    n_train = _train_size(config) - (d.num_val or 0)
    per = n_test * (1 + 2 * len(ev.radii))
    if ev.train:
        per += min(ev.train_subset or n_train, n_train) * (1 + len(ev.radii))
    epochs = config.optim.epochs
    count = len({e for e in range(1, epochs + 1) if (ev.every and e % ev.every == 0) or e == epochs})
    return per, count


def _steps(config) -> int:
    n_train = _train_size(config) - (config.data.num_val or 0)
    return config.optim.epochs * (n_train // config.optim.batch_size)


def _attack_iterations(s: dict) -> float:
    """Gradient evaluations per image of one row's attacks: FGSM, PGD, APGD-CE, APGD-DLR, and
    APGD-T over its targets."""
    return 1 + s.get("pgd_steps", 0) + s.get("apgd_steps", 0) * (2 + s.get("apgd_targets", 0))


def _attack_rows(artefact: str, s: dict) -> int:
    """(row, eps) pairs an artefact attacks: undefended rows at every eps and defended rows at
    ``defended_eps`` (robustness: Eq. 3 and renormalised smoothing at every rho, a low-pass per
    kernel radius); input_defence: each defended model at every radius and eps."""
    if artefact == "robustness":
        models = 2 + bool(s.get("penalty"))
        per_defended = 2 * len(s.get("rhos", ())) + len(s.get("kernel_radii", ()))
        return models * len(s["eps"]) + len(s.get("defended", ())) * per_defended * len(s.get("defended_eps", ()))
    if artefact == "input_defence":
        return len(s.get("defended", ())) * len(s.get("radii", ())) * len(s.get("eps", ()))
    return 1


def _merged(pairs: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    return ({k: v for f, _ in pairs for k, v in f.items()}, {k: v for _, c in pairs for k, v in c.items()})


def image_map(pairs: list[tuple[dict, dict]]) -> dict[int, float]:
    """Capped image count -> full image count, for the counts a smoke run caps: the test and
    validation splits (``recipes.SMOKE``) and the image settings of an artefact (``n_eval``,
    ``check_n``, ``n_val``, ``n_images``; the caps are distinct numbers, so a count names its
    setting). ``n_eval`` None (every test image) is 10,000."""

    out = {SMOKE["num_test"]: 10_000.0, SMOKE["num_val"]: float(VALIDATION["full"])}
    full, capped = _merged(pairs)
    for k in ("n_eval", "check_n", "n_val", "n_images"):
        if capped.get(k) is not None:
            out[int(capped[k])] = float(full[k] if full.get(k) is not None else 10_000)
    return out


def record_factor(artefact: str, record, pairs: list[tuple[dict, dict]]) -> float | None:
    """How many times the full run repeats what one evaluation record of the smoke run did:
    its images (:func:`image_map`) times, for attacks, the gradient evaluations per image and
    the (row, eps) pairs of the full settings over the capped ones. None when the record's
    image count is not one the smoke run capped (counted once, and reported as unscaled)."""
    full, capped = _merged(pairs)
    images = image_map(pairs).get(int(record.detail.get("images", -1)))
    if images is None:
        return None
    factor = images / record.detail["images"]
    if record.name == "_batch_attacks" and "apgd_steps" in capped:
        factor *= _attack_iterations(full) / _attack_iterations(capped)
        factor *= _attack_rows(artefact, full) / max(1, _attack_rows(artefact, capped))
    elif artefact == "perturbation_spectra" and record.name != "rows" and capped.get("steps"):
        factor *= full["steps"] / capped["steps"]
    return factor


def build(ctx, meter) -> dict:
    """The plan of the full run a smoke context stands for, from the meter of its smoke run.

    Returns ``{"artefacts": [row], "total": row, "programs": [...], "accelerator": ...}``; a
    row has ``models``, ``steps`` (optimizer steps, all models), ``train_flops``,
    ``train_eval_flops``, ``eval_flops``, ``flops`` and ``max_train_peak_bytes``.
    """
    by_run: dict[str, Any] = {}
    for run_dir, trained in ctx.models._trained.items():
        by_run[str(run_dir)] = trained.config
    rows, programs = [], {}
    artefacts = []
    for r in meter.records:
        if r.labels and r.labels[0] not in artefacts:
            artefacts.append(r.labels[0])
    seen_runs: set[str] = set()
    for art in artefacts:
        recs = [r for r in meter.records if r.labels and r.labels[0] == art]
        models, steps, train_flops, train_eval, peak = 0, 0, 0.0, 0.0, 0
        per_step: dict[str, float] = {}
        per_img = _eval_flops_per_image(recs)
        for r in recs:
            if r.kind != "train":
                continue
            runs = r.detail.get("runs", [])
            k = max(1, r.detail.get("models", 1))
            flops_per_model_step = r.flops_per_call / max(1, r.rows) / k
            for run in runs:
                if run in seen_runs:
                    continue
                seen_runs.add(run)
                capped = by_run.get(run)
                full = ctx.setup.full_configs.get(capped.config_hash()) if capped is not None else None
                if full is None:
                    continue
                models += 1
                n = _steps(full)
                steps += n
                train_flops += flops_per_model_step * n
                per_step[Path(run).name.rsplit("-", 1)[0]] = flops_per_model_step
                full_per, full_count = _eval_images(full)
                train_eval += per_img * full_per * full_count
            if r.memory:
                peak = max(peak, r.memory["peak"])
                programs.setdefault((r.detail.get("net"), r.detail.get("batch"), k, r.flops_per_call), r.memory["peak"])
        pairs = ctx.setup.settings_log.get(art, [])
        eval_flops, unscaled = 0.0, 0.0
        for r in recs:
            if r.kind != "sweep" or "training" in r.labels:
                continue
            f = record_factor(art, r, pairs)
            eval_flops += r.flops * (1.0 if f is None else f)
            unscaled += r.flops if f is None else 0.0
        rows.append({"artefact": art, "models": models, "steps": steps,
                     "flops_per_step": (min(per_step.values()), max(per_step.values())) if per_step else None,
                     "train_flops": train_flops, "train_eval_flops": train_eval, "eval_flops": eval_flops,
                     "eval_unscaled_flops": unscaled, "flops": train_flops + train_eval + eval_flops,
                     "max_train_peak_bytes": peak})
    total = {k: sum(r[k] for r in rows) for k in ("models", "steps", "train_flops", "train_eval_flops", "eval_flops",
                                                   "flops")}
    total["max_train_peak_bytes"] = max((r["max_train_peak_bytes"] for r in rows), default=0)
    return {"artefacts": rows, "total": total, "seeds": len(ctx.setup.seed_list),
            "programs": [{"net": n, "batch": b, "models": k, "flops_per_call": f, "peak_bytes": p}
                         for (n, b, k, f), p in programs.items()]}


def _eval_flops_per_image(recs) -> float:
    """FLOPs per image of the evaluation programs that ran inside training (their mean)."""
    ev = [r for r in recs if r.kind == "sweep" and "training" in r.labels]
    images = sum(r.rows for r in ev)
    return sum(r.flops for r in ev) / images if images else 0.0


def predict_minutes(flops: float, *, accelerator: str = DEFAULT_ACCELERATOR, precision: str = "tf32",
                    utilisation: float = DEFAULT_UTILISATION) -> float:
    """Minutes for ``flops`` at ``utilisation`` of the accelerator's dense ``precision`` peak."""
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {sorted(ACCELERATORS)}, got {accelerator!r}")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must lie in (0, 1], got {utilisation!r}")
    return flops / (ACCELERATORS[accelerator][precision] * utilisation) / 60


def markdown(plan: dict, *, machine: str, accelerator: str = DEFAULT_ACCELERATOR,
             utilisation: float = DEFAULT_UTILISATION) -> str:
    """The plan as a markdown section: one row per artefact and the total, with the predicted
    time at ``utilisation`` of the accelerator's TF32 and BF16 peaks."""
    acc = ACCELERATORS[accelerator]
    pct = f"{utilisation:.0%}"

    def pf(x: float) -> str:
        return f"{x / 1e15:,.1f}"

    def fps(r: dict) -> str:
        v = r.get("flops_per_step")
        if not v:
            return ""
        lo, hi = v
        return f"{lo / 1e9:,.0f}" if math.isclose(lo, hi, rel_tol=0.01) else f"{lo / 1e9:,.0f}-{hi / 1e9:,.0f}"

    lines = [f"| artefact | models | steps | GFLOP / step | peak memory / program | training PFLOP | "
             f"eval in training PFLOP | eval after PFLOP | total PFLOP | {accelerator} min at {pct} TF32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in plan["artefacts"] + [dict(plan["total"], artefact="**total**", flops_per_step=None)]:
        mem = f"{r['max_train_peak_bytes'] / 2**30:.1f} GiB" if r.get("max_train_peak_bytes") else ""
        lines.append(f"| {r['artefact']} | {r['models']} | {r['steps']:,} | {fps(r)} | {mem} | {pf(r['train_flops'])} | "
                     f"{pf(r['train_eval_flops'])} | {pf(r['eval_flops'])} | {pf(r['flops'])} | "
                     f"{predict_minutes(r['flops'], accelerator=accelerator, utilisation=utilisation):,.0f} |")
    t = plan["total"]
    tf32 = predict_minutes(t["flops"], accelerator=accelerator, utilisation=utilisation)
    bf16 = predict_minutes(t["flops"], accelerator=accelerator, precision="bf16", utilisation=utilisation)
    seeds = plan["seeds"]
    lines += ["", f"**Prediction, not a measurement**: {pf(t['flops'])} PFLOP for {seeds} seed(s) take "
              f"{tf32:,.0f} min on one {accelerator} at {pct} of its dense TF32 peak "
              f"({acc['tf32'] / 1e12:,.0f} TFLOP/s; float32 convolutions run as TF32 under jax's default precision), "
              f"{bf16:,.0f} min at {pct} of its BF16 peak: {tf32 / seeds:,.0f} / {bf16 / seeds:,.0f} min per seed "
              f"against the goal of {GOAL_MINUTES_PER_SEED} min per seed. The largest training program needs "
              f"{t['max_train_peak_bytes'] / 2**30:.1f} GiB per device by XLA's memory analysis on {machine} "
              f"({acc['memory_gib']:.0f} GiB on the {accelerator}). Counted by the metered smoke run on {machine}: "
              "training exactly (FLOPs per step x steps of the uncapped configs), evaluation scaled from the capped run "
              "(experiments/plan.py says how; APGD-T is counted on every attacked image, an upper bound)."]
    return "\n".join(lines)


def write(ctx, meter, *, machine: str) -> tuple[dict, str]:
    """Build the plan, write ``plan.json`` and ``plan.md`` into the smoke run's folder."""
    plan = build(ctx, meter)
    md = markdown(plan, machine=machine)
    R.write_json(ctx.out / "plan.json", {**plan, "accelerators": ACCELERATORS, "machine": machine,
                                         "records": len(meter.records), "environment": R.environment_info()})
    R.write_text(ctx.out / "plan.md", "# Cost plan of the full reproduction\n\n" + md + "\n")
    return plan, md
