"""Writing results: an artefact's folder (config.json, metrics.jsonl, table.json, table.md,
outcomes.npz) and a results root's README (the answer paragraph, the claims with their
verdicts, the deviations, the time, then each artefact's table and figures).

Layout of a results root (default ``results/<dataset>``)::

    runs/<model-name>-s<seed>-<config hash>/   one trained model (config.json, metrics.jsonl, checkpoints/)
    <artefact>/                               config.json, metrics.jsonl, table.md, table.json, *.png
    README.md, timings.json, compile_seconds.json, training_seconds.json, protocol.md
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt

from experiments import protocol, recipes
from experiments.claims import Claim, family
from experiments.training import Trained
from jaxhfc import results as R

#: (module, title, beyond the paper?)
ARTEFACTS = (
    ("prediction_counts", "Fig. 1/2: prediction counts on LFC / HFC", False),
    ("label_shuffle", "Fig. 3: label shuffling", False),
    ("table1", "Table 1: training on LFC / HFC data", False),
    ("heuristics", "Fig. 4-6: heuristics (mixup, batch size, dropout, BatchNorm, adversarial training)", False),
    ("robustness", "Table 2 / Fig. 7: robustness and kernel smoothness", False),
    ("input_defence", "Input-HFC removal defence", False),
    ("radius_curves", "Accuracy vs radius, band-pass rings", True),
    ("fourier_heatmap", "Fourier sensitivity heat maps", True),
    ("perturbation_spectra", "Spectra of adversarial perturbations", True),
    ("occlusion", "Occlusion sensitivity", True),
)


def write_readme(ctx, timings: dict, compiling: dict | None = None) -> Path:
    """``<out>/README.md`` from each artefact's table.md and table.json; ``timings`` and
    ``compiling`` are seconds per artefact (wall, and of it compiling jax programs)."""
    env = R.environment_info()
    seeds = list(ctx.setup.seed_list)
    flags = (f"{' --quick' if ctx.setup.scale == 'quick' else ''}{' --tiny' if ctx.setup.scale == 'tiny' else ''}"
             f"{' --plan' if ctx.setup.plan else ' --smoke' if ctx.setup.smoke else ''}")
    lines = [
        f"# jaxhfc reproduction: `{ctx.setup.dataset}` data, `{ctx.setup.scale}` scale",
        "",
        *answer_lines(ctx),
        f"Made by `python -m experiments.reproduce_all{flags} --dataset {ctx.setup.dataset} --seed {ctx.setup.seed} "
        f"--seeds {len(seeds)}` on {env['processor']} "
        f"({env['backend']}, {env['device_count']} device(s): {env['device_kind']}), jax {env['versions']['jax']}, "
        f"commit {env['git_commit']}, {env['time']}.",
        "",
    ]
    if ctx.setup.smoke:
        lines += [
            "**A smoke run**: the full-scale recipes, shapes and code paths (ResNet18, batch 100, every evaluation "
            "set, the full attack lists with APGD-T's targets, the full heat-map grid) with every loop capped to a few "
            "steps and images (`experiments/recipes.py: SMOKE`). It shows the full-scale path runs end to end; its "
            "numbers and verdicts mean nothing"
            + (" (the images are generated: `jaxhfc.datasets.cifar10.write_generated_archive`)."
               if "generated-cifar10" in str(ctx.setup.data_dir) else "."),
            "",
        ]
    if ctx.setup.profile.blurb:
        lines += [ctx.setup.profile.blurb, ""]
    if ctx.setup.scale != "full":
        lines += [f"Scale `{ctx.setup.scale}`: a small CNN, a few thousand images and a few epochs instead of the paper's "
                  "ResNet and 100 epochs; the recipes are in `experiments/recipes.py` and each artefact's settings in "
                  "the `SETTINGS` dict at the top of its driver (also in its config.json).", ""]
    lines += claims_section(ctx)
    present = [m for m, _, _ in ARTEFACTS if (ctx.out / m / "table.json").exists()]
    deviations = list(recipes.DEVIATIONS) + list(ctx.setup.profile.deviations)
    if deviations:
        lines += ["", "## Where we differ from the paper's code", ""] + [f"- {d}" for d in deviations]
    runs = [R.read_json(d) for d in sorted((ctx.out / "runs").glob("*/done.json"))]
    train_s = sum(r.get("seconds", 0.0) for r in runs)
    lines += ["", "## Time", "",
              f"{len(runs)} trained models in `runs/`, {train_s / 60:.1f} min of training in all (from each run's "
              f"done.json); this invocation trained {ctx.models.trainings} of them. Wall time of each artefact when it "
              "last ran (timings.json), including any trainings it ran then, and the part of it spent compiling jax "
              "programs (tracing, lowering and XLA; compile_seconds.json):", "",
              "| artefact | seconds | compiling |", "|---|---|---|"]
    compiling = compiling or {}
    lines += [f"| {k} | {v:.0f} | {compiling[k]:.0f} |" if k in compiling else f"| {k} | {v:.0f} | |"
              for k, v in timings.items()]
    lines.append("")
    for module, title, beyond in ARTEFACTS:
        if module not in present:
            continue
        md = (ctx.out / module / "table.md").read_text()
        body = md.split("\n", 1)[1] if md.startswith("# ") else md
        # figure links are relative to the artefact folder
        body = body.replace("](", f"]({module}/").replace(f"]({module}/http", "](http")
        lines += [f"## {title}{' (beyond the paper)' if beyond else ''}", "", body.strip(), ""]
    return R.write_text(ctx.out / "README.md", "\n".join(lines) + "\n")


def claims_section(ctx) -> list[str]:
    """The results README's claims: the count and the rule in a few lines, a table a person can
    scan (:func:`compact_claims`), then each claim's preconditions and evidence."""
    seeds = list(ctx.setup.seed_list)
    all_found = []
    for m, _, _ in ARTEFACTS:
        if (ctx.out / m / "table.json").exists():
            all_found.append([Claim.from_dict(c) for c in R.read_json(ctx.out / m / "table.json")["claims"]
                              if "judgement" in c])
    claims = [c for f in all_found for c in f if not c.check]
    checks = [c for f in all_found for c in f if c.check]
    n_families = sum(1 for f in all_found if any(not c.check for c in f))
    counts = tally_text(claims)
    rows = protocol.read(ctx.out)
    seeds_line = (f"Every trained artefact ran {len(seeds)} seed(s) {seeds}." if not rows else
                  f"Seeds per artefact as the protocol sets them (`protocol.md`: as many as the claims' minimum "
                  f"detectable effects need, at most {protocol.MAX_SEEDS}, at least {len(seeds)}), from base seed "
                  f"{ctx.setup.seed} by steps of 1009.")
    return [
        "## Claims",
        "",
        f"{len(claims)} claims in {n_families} families: {counts}"
        + (f"; and {len(checks)} sanity check(s): {tally_text(checks)}." if checks else "."),
        "",
        *(["Protocol fixed before the run, with each claim's arms, gates, selection, images, seeds and minimum "
           "detectable effect: [protocol.md](protocol.md).", ""] if rows else []),
        f"{seeds_line} A claim is a signed effect (its sign is the claim), "
        "with an interval: Student t over seeds, combined in quadrature with a per-image error where the effect is "
        "measured on images (from each seed's per-example outcomes, saved in `<artefact>/outcomes.npz`, paired "
        "image by image between the two arms and averaged over seeds, smoothed by one pseudo-image each way; the "
        "kernel-roughness, relative-HFC and perturbation-spectra claims have none), and clipped to the range the "
        "effect can take (`jaxhfc.evidence`). The claims of one artefact are one family: Holm's step-down procedure "
        "keeps its family-wise error at 5% (each claim's interval is shown at its Holm confidence); the first claim "
        "of an artefact is its primary one; sanity checks stay outside the families. **holds**: the interval "
        "excludes 0 in the claimed direction; **contradicted**: it excludes 0 the other way; **inconclusive**: it "
        "contains 0 (or has zero width); **no power**: it contains 0 and a floor or ceiling made the other sign "
        "impossible; **not tested**: a precondition failed that could have faked the verdict the interval gives "
        "(each gate says which verdict it guards; a failed gate that guards only the other direction leaves the "
        "verdict standing, with a note). Accuracy floors are relative to the dataset's chance level. **MDE**: the "
        "minimum detectable effect at 80% power from the protocol's pilot; *underpowered* marks an inconclusive "
        "claim whose MDE exceeds the effect it was sized for and whose interval holds both 0 and that effect (an "
        "interval that excludes the target shows the effect is smaller than the paper's, whatever the MDE). Selections are made on validation splits held out "
        "from the training data, never on the test set.",
        "",
        compact_claims(ctx).rstrip("\n"),
        "",
        "## Preconditions and evidence",
        "",
        claims_table([c for f in all_found for c in f]).rstrip("\n"),
    ]


def answer_lines(ctx) -> list[str]:
    """The answer paragraph a results README opens with (``<out>/answer.md``, written by a person
    who read the run's claims), or nothing."""
    answer = ctx.out / "answer.md"
    return [answer.read_text().strip(), ""] if answer.exists() else []


def rewrite_claims(ctx) -> Path:
    """Rewrite the answer paragraph and the claims sections of ``<out>/README.md`` from
    ``answer.md`` and the artefacts' table.json files, leaving the rest of it (the run line, the
    deviations, the time) as that run wrote it."""
    path = ctx.out / "README.md"
    text = path.read_text()
    head, rest = text.split("## Claims\n", 1)
    title, body = head.split("\n", 1)
    if body.lstrip("\n").startswith("**Does "):  # an earlier answer paragraph
        body = body.lstrip("\n").split("\n\n", 1)[1]
    head = "\n".join([title, "", *answer_lines(ctx)]) + "\n" + body.lstrip("\n")
    tail = rest[rest.index("\n## Where we differ"):] if "\n## Where we differ" in rest else ""
    path.write_text(head + "\n".join(claims_section(ctx)) + "\n" + tail)
    return path


def tally_text(claims) -> str:
    """``"3 holds, 1 contradicted, ..."`` of some claims' verdicts."""
    tally: dict[str, int] = {}
    for c in claims:
        tally[c.mark()] = tally.get(c.mark(), 0) + 1
    return ", ".join(f"{tally[v]} {v}" for v in ("holds", "contradicted", "inconclusive", "no power", "not tested")
                     if v in tally) or "none"


def compact_claims(ctx) -> str:
    """The claims of ``ctx.out`` as a table a person can scan: artefact, claim, verdict, effect
    with its 95% interval, seeds, and with a protocol its MDE (preconditions and evidence stay in
    the results README)."""
    rows = protocol.read(ctx.out)
    head = "| artefact | claim | verdict | effect [95% interval] | seeds |" + (" MDE |" if rows else "")
    lines = [head, "|---|---|---|---|---|" + ("---|" if rows else "")]
    for m, _, _ in ARTEFACTS:
        path = ctx.out / m / "table.json"
        if not path.exists():
            continue
        for d in R.read_json(path)["claims"]:
            if "judgement" not in d:
                continue
            c = Claim.from_dict(d)
            text = ("(check) " if c.check else "(primary) " if c.primary else "") + c.claim.replace("|", "/")
            line = f"| {m} | {text} | **{c.mark()}** | {c.effect_text()} | {c.judgement.effect.n} |"
            if rows:
                p = protocol.lookup(rows, m, c.claim)
                mde = p.get("mde_holm") if p else None
                # underpowered: the MDE exceeds the target and the interval cannot tell 0 from the target
                iv, target = c.judgement.effect, c.judgement.direction * p["target"] if p else 0.0
                under = (mde is not None and c.mark() in ("inconclusive", "no power") and mde > p["target"]
                         and iv.low <= target <= iv.high)
                line += (" n/a |" if mde is None else f" {mde:.3f}{' (*underpowered*)' if under else ''} |")
            lines.append(line)
    return "\n".join(lines) + "\n"


def cell_text(value: Any, digits: int = 3) -> Any:
    """A combined cell as ``mean ± half-width`` (95% interval over seeds) for markdown."""
    if isinstance(value, dict) and "mean" in value:
        if value["n"] < 2 or not math.isfinite(value["low"]):
            return f"{value['mean']:.{digits}f}"
        return f"{value['mean']:.{digits}f} ± {(value['high'] - value['low']) / 2:.{digits}f}"
    return value


def mean_of(value: Any) -> float | None:
    """The mean of a combined cell (or the number itself)."""
    if isinstance(value, dict):
        return value.get("mean")
    return value


def write_artefact(
    ctx,
    name: str,
    *,
    title: str,
    rows: Sequence[dict],
    columns: Sequence[str] | None = None,
    claims: Sequence[Claim] = (),
    models: dict[str, Any] | None = None,
    settings: dict | None = None,
    notes: str = "",
    figures: Sequence[str] = (),
    digits: int = 3,
    per_seed: Sequence[Sequence[dict]] | None = None,
    outcomes: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``metrics.jsonl`` (one line per row and seed), ``table.json`` and
    ``table.md`` of an artefact, from the same data.

    ``rows`` are combined rows (:func:`combine_seeds`: numeric cells are ``{mean, low, high,
    n, values}``) or plain rows; ``per_seed`` the rows of each seed (written to
    metrics.jsonl with their seed). ``models`` maps a label to a :class:`Trained` or to a list
    of them (one per seed). ``outcomes`` (``{name: (N,) array}``, e.g. from
    :func:`outcome_records`): the per-example outcomes of every seed behind the claims, written
    to ``outcomes.npz`` (:func:`jaxhfc.results.write_outcomes`).
    """
    folder = ctx.artefact_dir(name)
    claims = family(claims)

    def model_info(t: Trained) -> dict:
        return {"run_dir": str(t.run_dir), "seed": t.config.run.seed, "config": t.config.to_dict(),
                "config_hash": t.config.config_hash()}

    R.write_json(
        folder / "config.json",
        {
            "artefact": name,
            "dataset": ctx.setup.dataset,
            "scale": ctx.setup.scale,
            "seed": ctx.setup.seed,
            "seeds": list(ctx.setup.seed_list),
            "settings": settings or {},
            "models": {k: ([model_info(x) for x in t] if isinstance(t, (list, tuple)) else model_info(t))
                       for k, t in (models or {}).items()},
            "environment": R.environment_info(),
        },
    )
    if outcomes:
        R.write_outcomes(folder / "outcomes.npz", outcomes)
    metrics = folder / "metrics.jsonl"
    R.write_text(metrics, "")
    if per_seed is not None:
        for seed, seed_rows in zip(ctx.setup.seed_list, per_seed):
            for row in seed_rows:
                R.append_jsonl(metrics, {"seed": seed, **row})
    else:
        for row in rows:
            R.append_jsonl(metrics, row)
    R.write_json(folder / "table.json", {"title": title, "columns": list(columns or (rows[0].keys() if rows else [])),
                                         "rows": list(rows), "claims": [c.to_dict() for c in claims],
                                         "seeds": list(ctx.setup.seed_list), "figures": list(figures), "notes": notes})
    n = len(ctx.setup.seed_list)
    md = [f"# {title}", "", f"Dataset: `{ctx.setup.dataset}`, scale: `{ctx.setup.scale}`, {n} seed(s) {list(ctx.setup.seed_list)}.", ""]
    if n > 1:
        md += [f"Cells are means over the {n} seeds ± the half-width of the 95% Student-t interval over seeds.", ""]
    if notes:
        md += [notes, ""]
    md.append(R.markdown_table([{k: cell_text(v, digits) for k, v in r.items()} for r in rows], columns, digits=digits))
    if claims:
        md += ["", claims_table(claims, with_artefact=False)]
    if figures:
        md += [""] + [f"![{f}]({f})" for f in figures]
    R.write_text(folder / "table.md", "\n".join(md) + "\n")
    return folder


def claims_table(claims: Sequence[Claim], *, with_artefact: bool = True) -> str:
    """Markdown table of claims: verdict, effect with its interval, seeds, preconditions."""
    head = (["artefact"] if with_artefact else []) + ["paper's claim", "verdict", "effect (sign = claim)",
                                                      "mean [95% interval]", "seeds", "preconditions", "evidence"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in claims:
        evidence = "; ".join(t for t in (c.evidence, c.judgement.note) if t)
        cells = ([c.artefact] if with_artefact else []) + [
            ("(primary) " if c.primary else "") + c.claim, f"**{c.mark()}**", c.effect, c.effect_text(),
            str(c.judgement.effect.n), c.preconditions_text(), evidence]
        lines.append("| " + " | ".join(str(x).replace("|", "/") for x in cells) + " |")
    return "\n".join(lines) + "\n"


def save_figure(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


def merge_json(path: Path, values: dict) -> dict:
    """``values`` written over the JSON dict at ``path`` (kept where absent); returns the result."""
    merged = {**(R.read_json(path) if path.exists() else {}), **values}
    R.write_json(path, merged)
    return merged
