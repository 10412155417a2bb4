"""Reproduce every artefact of the paper (and the analyses beyond it) with one command, and
write ``results/<dataset>/README.md``: each table with the paper's value, ours and the
difference, each figure, and a line per artefact saying whether the paper's qualitative
claim holds in our run.

    python -m experiments.reproduce_all --quick                     # minutes on a laptop CPU, synthetic data
    python -m experiments.reproduce_all --dataset cifar10 --data-dir ~/data   # the paper's settings (accelerator)

Trained models are shared between artefacts (same config, same model) and never trained
twice: re-running skips finished trainings and continues a killed one from its checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import time
from pathlib import Path

from experiments import protocol
from experiments.common import Claim, claims_table, compile_seconds, context_from_args, parser, run_cli
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
    seeds = list(ctx.seed_list)
    flags = (f"{' --quick' if ctx.scale == 'quick' else ''}{' --tiny' if ctx.scale == 'tiny' else ''}"
             f"{' --plan' if ctx.plan else ' --smoke' if ctx.smoke else ''}")
    lines = [
        f"# jaxhfc reproduction: `{ctx.dataset}` data, `{ctx.scale}` scale",
        "",
        *answer_lines(ctx),
        f"Made by `python -m experiments.reproduce_all{flags} --dataset {ctx.dataset} --seed {ctx.seed} "
        f"--seeds {len(seeds)}` on {env['processor']} "
        f"({env['backend']}, {env['device_count']} device(s): {env['device_kind']}), jax {env['versions']['jax']}, "
        f"commit {env['git_commit']}, {env['time']}.",
        "",
    ]
    if ctx.smoke:
        lines += [
            "**A smoke run**: the full-scale recipes, shapes and code paths (ResNet18, batch 100, every evaluation "
            "set, the full attack lists with APGD-T's targets, the full heat-map grid) with every loop capped to a few "
            "steps and images (`experiments/recipes.py: SMOKE`). It shows the full-scale path runs end to end; its "
            "numbers and verdicts mean nothing"
            + (" (the images are generated: `jaxhfc.datasets.cifar10.write_generated_archive`)."
               if "generated-cifar10" in str(ctx.data_dir) else "."),
            "",
        ]
    if ctx.dataset == "synthetic":
        lines += [
            "**These numbers come from the built-in synthetic dataset**, not CIFAR-10 (`jaxhfc.datasets.make_synthetic`, "
            "docs/synthetic.md). It is a model of what the paper argues natural data is like, built so the "
            "machinery can be checked on a CPU: evidence about CNNs on natural images comes from CIFAR-10 runs. "
            "The paper's columns are CIFAR-10 numbers; the comparison is qualitative.",
            "",
        ]
    if ctx.dataset in ("fashion_mnist", "mnist"):
        lines += [
            f"**Real images: {ctx.dataset}** (28x28 grey photos, 10 classes), read from the standard IDX files. "
            "Each seed draws its own training images, validation split and order; every seed is scored on the same "
            "fixed test subset. The recipe was chosen on validation accuracy only (`recipe_selection.md`, seeds no "
            "reproduction reports). The paper's columns are CIFAR-10 numbers: compare directions, not values. "
            "Here the data decides: a claim that is contradicted or inconclusive is a finding.",
            "",
        ]
    if ctx.scale != "full":
        lines += [f"Scale `{ctx.scale}`: a small CNN, a few thousand images and a few epochs instead of the paper's "
                  "ResNet and 100 epochs; the recipes are in `experiments/recipes.py` and each artefact's settings in "
                  "the `SETTINGS` dict at the top of its driver (also in its config.json).", ""]
    lines += claims_section(ctx)
    present = [m for m, _, _ in ARTEFACTS if (ctx.out / m / "table.json").exists()]
    try:
        from experiments import recipes

        deviations = list(getattr(recipes, "DEVIATIONS", ())) + list(
            recipes.DATASETS.get(ctx.dataset, {}).get("deviations", ()))
    except ImportError:  # pragma: no cover
        deviations = []
    if deviations:
        lines += ["", "## Where we differ from the paper's code", ""] + [f"- {d}" for d in deviations]
    runs = [R.read_json(d) for d in sorted((ctx.out / "runs").glob("*/done.json"))]
    train_s = sum(r.get("seconds", 0.0) for r in runs)
    lines += ["", "## Time", "",
              f"{len(runs)} trained models in `runs/`, {train_s / 60:.1f} min of training in all (from each run's "
              f"done.json); this invocation trained {ctx.trainings} of them. Wall time of each artefact when it "
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


TIME_START, TIME_END = "<!-- repro-time:start -->", "<!-- repro-time:end -->"



DEVIATIONS_START, DEVIATIONS_END = "<!-- deviations:start -->", "<!-- deviations:end -->"


def update_deviations(doc: Path | None = None) -> bool:
    """Fill ``docs/deviations.md``'s generated block from ``experiments/recipes.py``: the
    deviations of every run, then those of each dataset (the same lines the results READMEs print)."""
    from experiments import recipes

    doc = Path(doc) if doc else Path(__file__).resolve().parent.parent / "docs" / "deviations.md"
    lines = ["Every results README prints these (from `experiments/recipes.py: DEVIATIONS`):", ""]
    lines += [f"- {d}" for d in recipes.DEVIATIONS]
    for name, spec in recipes.DATASETS.items():
        if spec.get("deviations"):
            lines += ["", f"On `{name}` also:", ""] + [f"- {d}" for d in spec["deviations"]]
    return fill_block(doc, DEVIATIONS_START, DEVIATIONS_END, "\n".join(lines) + "\n")


def claims_section(ctx) -> list[str]:
    """The results README's claims: the count and the rule in a few lines, a table a person can
    scan (:func:`compact_claims`), then each claim's preconditions and evidence."""
    seeds = list(ctx.seed_list)
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
                  f"{ctx.seed} by steps of 1009.")
    return [
        "## Claims",
        "",
        f"{len(claims)} claims in {n_families} families: {counts}"
        + (f"; and {len(checks)} sanity check(s): {tally_text(checks)}." if checks else "."),
        "",
        *([f"Protocol fixed before the run, with each claim's arms, gates, selection, images, seeds and minimum "
           f"detectable effect: [protocol.md](protocol.md).", ""] if rows else []),
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

def fill_block(readme: Path, start: str, end: str, body: str) -> bool:
    """Replace what stands between the markers ``start`` and ``end`` of ``readme`` with ``body``
    (the markers and everything outside them kept); False, and the file untouched, when the
    file lacks either marker."""
    text = Path(readme).read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    Path(readme).write_text(head + start + "\n" + body + end + tail)
    return True


def time_markdown(results_dir: Path, label: str | None = None) -> str:
    """The quick reproduction's wall time per artefact, from the files that run wrote
    (``timings.json``, ``compile_seconds.json`` when present, and the run line of ``README.md``
    in ``results_dir``); empty when absent."""
    times_path, readme = Path(results_dir) / "timings.json", Path(results_dir) / "README.md"
    if not times_path.exists() or not readme.exists():
        return ""
    times = R.read_json(times_path)
    run_line = next((line for line in readme.read_text().splitlines() if line.startswith("Made by ")), "")
    total = sum(times.values())
    compile_path = Path(results_dir) / "compile_seconds.json"
    compiling = R.read_json(compile_path) if compile_path.exists() else {}
    lines = [f"**Quick reproduction** (`{label or results_dir}`), wall time per artefact "
             f"({total / 60:.1f} min in all). {run_line}", ""]
    if compiling:  # written by reproduce_all since it records compile time
        lines += [f"Of it {sum(compiling.values()) / 60:.1f} min compiling jax programs (tracing, lowering, XLA).", ""]
    found = re.search(r"(\d+) trained models in `runs/`.*?this invocation trained (\d+) of them", readme.read_text())
    if found and int(found.group(2)) < int(found.group(1)):
        lines += [f"This invocation trained {found.group(2)} of the {found.group(1)} models and loaded the others "
                  "(finished runs of the same configs): these are not the times of a run from an empty folder.", ""]
    extra = lambda k: (f" {compiling[k]:.0f} |" if k in compiling else " |") if compiling else ""  # noqa: E731
    lines += ["| artefact | s | share |" + (" compiling s |" if compiling else ""),
              "|---|---|---|" + ("---|" if compiling else "")]
    lines += [f"| {k} | {v:.0f} | {v / total:.0%} |{extra(k)}" for k, v in times.items()]
    return "\n".join(lines + [""])


def update_time_section(readme: Path, results_dir: Path, *, dataset: str = "synthetic") -> bool:
    """Fill the README's block between :data:`TIME_START` and :data:`TIME_END` with
    :func:`time_markdown` of ``results_dir``; False (README unchanged) when the README has no
    such block or the folder holds no finished run."""
    readme, results_dir = Path(readme), Path(results_dir)
    label = Path(os.path.relpath(results_dir.resolve(), readme.resolve().parent)).as_posix()
    md = time_markdown(results_dir, label)
    if not md:
        return False
    body = md + f"\n(Generated from `{label}/timings.json` by `experiments/reproduce_all.py --update-readme`.)\n"
    return fill_block(readme, *markers("repro-time", dataset), body)


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def markers(kind: str, dataset: str) -> tuple[str, str]:
    """The README's marker pair of a generated block (``kind`` ``"results"`` or ``"repro-time"``)
    for a dataset: ``<!-- results:start -->`` for the built-in data, ``<!-- results:fashion_mnist:start -->``
    for another."""
    from jaxhfc import datasets

    tag = kind if dataset == "synthetic" else f"{kind}:{datasets.dataset_slug(dataset)}"
    return f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"


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


def update_readme(ctx, readme: Path | None = None, *, figure: str = "heuristics/batchnorm.png") -> Path:
    """Fill the project README's results section from ``<out>/README.md`` (the claims table,
    the run line and one figure), and the reproduction-time block (:func:`update_time_section`)
    of ``docs/reproduce.md`` (of ``readme`` itself when it is another file) when it has one, so
    the README shows only numbers this code produced."""
    readme = Path(readme) if readme else Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    start, end = markers("results", ctx.dataset)
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} section to fill")
    ours = (ctx.out / "README.md").read_text()
    run_line = next(line for line in ours.splitlines() if line.startswith("Made by "))
    time_note = ours.split("## Time\n\n", 1)[1].split("\n\n", 1)[0]
    rel = ctx.out.resolve().relative_to(readme.resolve().parent) if ctx.out.resolve().is_relative_to(
        readme.resolve().parent) else ctx.out
    if ctx.dataset == "synthetic":
        what = (f"All numbers below come from the **built-in synthetic dataset** at `{ctx.scale}` scale on that CPU, "
                "not from CIFAR-10: a verdict here says the code recovered an effect the generator planted")
    else:
        what = f"All numbers below come from **real `{ctx.dataset}` images** at `{ctx.scale}` scale on that CPU"
    table = compact_claims(ctx).rstrip("\n")
    tally = next((line for line in ours.splitlines() if " claims in " in line and " families: " in line), "")
    answer = ctx.out / "answer.md"
    body = "\n".join([
        *([answer.read_text().strip(), ""] if answer.exists() else []),
        run_line,
        "",
        f"{what}. {time_note.split(';')[0]}. Every table and figure, with preconditions, evidence and the "
        f"paper's values beside ours: [{rel}/README.md]({rel}/README.md).",
        "",
        (tally + " Each artefact's claims are one family under Holm's control (family-wise error 5%).").strip(),
        "",
        table,
        "",
        f"![{figure}]({rel}/{figure})",
        "",
    ])
    fill_block(readme, start, end, body)
    project = readme.parent == Path(__file__).resolve().parent.parent  # the project's own README
    # its per-artefact times live in docs/reproduce.md (the README gives the totals)
    update_time_section(readme.parent / "docs" / "reproduce.md" if project else readme, ctx.out, dataset=ctx.dataset)
    if project:
        update_deviations()
    return readme


def plan_markers(dataset: str) -> tuple[str, str]:
    """The README's marker pair of a dataset's cost-plan block: ``<!-- plan:cifar10:start -->``,
    ``<!-- plan:fashion_mnist:start -->``."""
    from jaxhfc import datasets

    tag = f"plan:{datasets.dataset_slug(dataset)}"
    return f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"


PLAN_START, PLAN_END = plan_markers("cifar10")


def update_plan_section(ctx, md: str, env: dict, readme: Path | None = None) -> Path:
    """Fill the cost-plan block of ``ctx.dataset`` (:func:`plan_markers`; in ``docs/reproduce.md``
    unless ``readme`` names another file) from a
    ``--plan`` run: the plan's table and prediction, with the command, machine, commit and the
    metered smoke run's wall time. Raises ValueError when the README has no such block."""
    readme = Path(readme) if readme else Path(__file__).resolve().parent.parent / "docs" / "reproduce.md"
    saved = R.read_json(ctx.out / "plan.json").get("environment") if (ctx.out / "plan.json").exists() else None
    if saved:  # the environment the metered run was made in
        env = saved
    else:  # plan.json written before it kept the environment: the run's README names its commit
        readme_text = (ctx.out / "README.md").read_text() if (ctx.out / "README.md").exists() else ""
        found = re.search(r"commit ([0-9a-f]{7,40})", readme_text)
        env = {**env, "git_commit": found.group(1)} if found else env
    timings = R.read_json(ctx.out / "timings.json") if (ctx.out / "timings.json").exists() else {}
    wall = sum(timings.values())
    where = Path(os.path.relpath(ctx.out.resolve(), readme.parent.resolve())).as_posix()
    body = "\n".join([
        f"Made by `python -m experiments.reproduce_all --dataset {ctx.dataset} --plan --out {where}` on {env['processor']} "
        f"({env['backend']}, jax {env['versions']['jax']}), commit {env['git_commit'][:7]}, {env['time'][:10]}: "
        f"the metered smoke run took {int(wall // 60)} min {wall % 60:.0f} s on that machine "
        f"([{where}/plan.md]({where}/plan.md)).",
        "", md, ""])
    start, end = plan_markers(ctx.dataset)
    if not fill_block(readme, start, end, body):
        raise ValueError(f"{readme} has no {start} ... {end} block to fill")
    return readme


def _merge_into(path: Path, values: dict) -> dict:
    """``values`` written over the JSON dict at ``path`` (kept where absent); returns the result."""
    merged = {**(R.read_json(path) if path.exists() else {}), **values}
    R.write_json(path, merged)
    return merged


def run(ctx, only=None, meter=None) -> dict:
    """Run the artefacts (all, or ``only`` these) in order and write the results README; with a
    :class:`jaxhfc.costs.Meter`, each artefact's programs are reported to it under its name."""
    done: dict[str, list[Claim]] = {}
    timings: dict[str, float] = {}
    compiling: dict[str, float] = {}  # of which compiling jax programs
    rows, base_seeds = protocol.read(ctx.out), ctx.seeds  # a protocol fixed before the run sets seeds per artefact
    for module, title, _ in ARTEFACTS:
        if only and module not in only:
            continue
        t0, c0 = time.perf_counter(), compile_seconds()
        ctx.seeds = protocol.artefact_seeds(rows, module, base_seeds) if rows else base_seeds
        print(f"== {title} ({ctx.seeds} seeds)", flush=True)
        ctx.artefact = module
        with meter.label(module) if meter is not None else contextlib.nullcontext():
            out = importlib.import_module(f"experiments.{module}").run(ctx)
        done[module] = list(out.get("claims", []))
        timings[module] = time.perf_counter() - t0
        compiling[module] = compile_seconds() - c0
        for c in done[module]:
            print(f"   [{c.mark()}] {c.claim}: {c.evidence}", flush=True)
        print(f"   {timings[module]:.0f} s, of which {compiling[module]:.0f} s compiling jax programs", flush=True)
    ctx.seeds = base_seeds
    # seconds per artefact, kept across invocations (an --only run updates its artefacts)
    path = write_readme(ctx, _merge_into(ctx.out / "timings.json", timings),
                        _merge_into(ctx.out / "compile_seconds.json", compiling))
    print(f"wrote {path} ({ctx.trainings} trainings run, {sum(timings.values()):.0f} s)")
    return {"claims": done, "timings": timings, "readme": path}


def main(argv=None):
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=[a[0] for a in ARTEFACTS], help="run only these artefacts")
    p.add_argument("--update-readme", action="store_true", help="fill the project README's results section")
    p.add_argument("--rewrite-claims", action="store_true",
                   help="only rewrite the claims sections of <out>/README.md from the artefacts' table.json files "
                        "(no training, no evaluation)")
    p.add_argument("--plan", action="store_true",
                   help="print the cost plan of the full-scale run: a metered --smoke run (in a fresh --out) scaled "
                        "to the uncapped recipes; per artefact the models, steps, FLOPs per step (XLA cost analysis), "
                        "peak memory per program (XLA memory analysis) and the predicted time on one H200")
    args = p.parse_args(argv)
    from jaxhfc import compat

    errors, _ = compat.problems()
    if errors:  # one line, before any data is read or program compiled
        p.error(compat.summary(errors, []))
    if args.plan:
        if args.quick or args.tiny:
            p.error("--plan plans the full-scale run (it runs it as a metered --smoke run); drop --quick/--tiny")
        if args.loops == "accelerator":
            p.error("--plan counts FLOPs with the loops unrolled (XLA counts a rolled loop's body once): "
                    "drop --loops accelerator")
        args.smoke, args.loops = True, "cpu"
    ctx = context_from_args(args)
    if args.rewrite_claims:
        print(f"rewrote {rewrite_claims(ctx)}")
        return None
    if args.plan and any((ctx.out / "runs").glob("*/done.json")):
        p.error(f"--plan meters every training, so it needs a --out without finished runs; {ctx.out / 'runs'} has some")
    if args.plan:
        from experiments import plan
        from jaxhfc import costs

        with costs.metering() as meter:
            out = run_cli(lambda: run(ctx, only=args.only, meter=meter))
        env = R.environment_info()
        _, md = plan.write(ctx, meter, machine=f"{env['processor']} ({env['backend']}, jax {env['versions']['jax']})")
        print(md)
        print(f"wrote {ctx.out / 'plan.md'}")
        if args.update_readme:
            print(f"updated {update_plan_section(ctx, md, env)}")
        return out
    out = run_cli(lambda: run(ctx, only=args.only))
    if args.update_readme:
        examples = "prediction_counts/examples_hfc_right_lfc_wrong.png"
        figure = examples if ctx.dataset != "synthetic" and (ctx.out / examples).exists() else "heuristics/batchnorm.png"
        print(f"updated {update_readme(ctx, figure=figure)}")
    return out


if __name__ == "__main__":
    main()
