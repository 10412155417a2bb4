"""The generated blocks of the project's documents: the results section and reproduction time
of ``README.md`` and ``docs/reproduce.md``, the cost plan, and the deviations list of
``docs/deviations.md``. Each block sits between a marker pair (``<!-- results:start -->`` ...
``<!-- results:end -->``) and is rewritten from a results root's files, so the documents show only
numbers this code produced.
"""

from __future__ import annotations

import os
from pathlib import Path
import re

from experiments import budget, recipes
from experiments.profiles import PROFILES, profile
from experiments.reporting import compact_claims
from jaxhfc import datasets
from jaxhfc import results as R

#: the project's root (its README, docs/)
ROOT = Path(__file__).resolve().parent.parent

TIME_START, TIME_END = "<!-- repro-time:start -->", "<!-- repro-time:end -->"



DEVIATIONS_START, DEVIATIONS_END = "<!-- deviations:start -->", "<!-- deviations:end -->"


def update_deviations(doc: Path | None = None) -> bool:
    """Fill ``docs/deviations.md``'s generated block from ``experiments/recipes.py``: the
    deviations of every run, then those of each dataset (the same lines the results READMEs print)."""
    doc = Path(doc) if doc else ROOT / "docs" / "deviations.md"
    lines = ["Every results README prints these (from `experiments/recipes.py: DEVIATIONS`):", ""]
    lines += [f"- {d}" for d in recipes.DEVIATIONS]
    for name, prof in PROFILES.items():
        if prof.deviations:
            lines += ["", f"On `{name}` also:", ""] + [f"- {d}" for d in prof.deviations]
    return fill_block(doc, DEVIATIONS_START, DEVIATIONS_END, "\n".join(lines) + "\n")


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


def time_markdown(results_dir: Path, label: str | None = None, *, minutes: float = 20.0) -> str:
    """The quick reproduction's wall time per artefact, from the files that run wrote
    (``timings.json``, ``compile_seconds.json`` when present, and the run line of ``README.md``
    in ``results_dir``), and what ``minutes`` of it buy; empty when absent."""
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
    trained = budget.invocation_trained(results_dir)
    if trained and trained[0] < trained[1]:
        lines += [f"This invocation trained {trained[0]} of the {trained[1]} models and loaded the others "
                  "(finished runs of the same configs): these are not the times of a run from an empty folder.", ""]
    counts = budget.claim_counts(results_dir)

    def extra(k: str) -> str:
        cells = (f" {compiling[k]:.0f} |" if k in compiling else " |") if compiling else ""
        if counts:
            n, decided = counts.get(k, (0, 0))
            cells += f" {n} | {decided} |"
        return cells

    lines += ["| artefact | s | share |" + (" compiling s |" if compiling else "")
              + (" claims | decided |" if counts else ""),
              "|---|---|---|" + ("---|" if compiling else "") + ("---|---|" if counts else "")]
    lines += [f"| {k} | {v:.0f} | {v / total:.0%} |{extra(k)}" for k, v in times.items()]
    if counts:
        lines += ["", "*decided*: claims whose interval excludes 0 (holds or contradicted). "
                  + (budget.budget_text(results_dir, minutes, counts) or greedy_budget_text(times, counts, minutes))]
    return "\n".join(lines + [""])


def greedy_budget_text(times: dict, counts: dict, minutes: float = 20.0) -> str:
    """What ``minutes`` of this run buy when its trainings cannot be split from its artefacts (no
    :func:`experiments.budget.costs`): the artefacts taken by decided claims per second (then by
    claims per second) while they fit, with their time and claims."""
    order = sorted(times, key=lambda k: (-counts.get(k, (0, 0))[1] / max(times[k], 1e-9),
                                         -counts.get(k, (0, 0))[0] / max(times[k], 1e-9), times[k]))
    chosen, spent = [], 0.0
    for k in order:
        if spent + times[k] <= minutes * 60:
            chosen.append(k)
            spent += times[k]
    n_all = sum(n for n, _ in counts.values())
    d_all = sum(d for _, d in counts.values())
    n = sum(counts.get(k, (0, 0))[0] for k in chosen)
    d = sum(counts.get(k, (0, 0))[1] for k in chosen)
    return (f"At these times {minutes:g} minutes buy {', '.join(chosen) or 'no artefact'} ({spent / 60:.1f} min): "
            f"{d} of the {d_all} decided claims, {n} of all {n_all} (artefacts taken by decided claims per "
            "second; an artefact's time includes the trainings it ran first, so one run alone may need models "
            "another trained).")


def update_time_section(readme: Path, results_dir: Path, *, dataset: str = "synthetic") -> bool:
    """Fill the README's block between :data:`TIME_START` and :data:`TIME_END` with
    :func:`time_markdown` of ``results_dir``; False (README unchanged) when the README has no
    such block or the folder holds no finished run."""
    readme, results_dir = Path(readme), Path(results_dir)
    label = Path(os.path.relpath(results_dir.resolve(), readme.resolve().parent)).as_posix()
    md = time_markdown(results_dir, label, minutes=profile(dataset).goal_minutes)
    if not md:
        return False
    body = md + f"\n(Generated from `{label}/timings.json` by `experiments/reproduce_all.py --update-readme`.)\n"
    return fill_block(readme, *markers("repro-time", dataset), body)


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def markers(kind: str, dataset: str) -> tuple[str, str]:
    """The README's marker pair of a generated block (``kind`` ``"results"`` or ``"repro-time"``)
    for a dataset: ``<!-- results:start -->`` for the built-in data, ``<!-- results:fashion_mnist:start -->``
    for another."""
    tag = kind if dataset == "synthetic" else f"{kind}:{datasets.dataset_slug(dataset)}"
    return f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"


#: the figure a results section shows when its profile's figure was not made
FALLBACK_FIGURE = "heuristics/batchnorm.png"


def update_readme(ctx, readme: Path | None = None, *, figure: str | None = None) -> Path:
    """Fill the project README's results section from ``<out>/README.md`` (the claims table,
    the run line and one figure: ``figure``, else the profile's when the run made it, else
    :data:`FALLBACK_FIGURE`), and the reproduction-time block (:func:`update_time_section`)
    of ``docs/reproduce.md`` (of ``readme`` itself when it is another file) when it has one, so
    the README shows only numbers this code produced."""
    readme = Path(readme) if readme else ROOT / "README.md"
    text = readme.read_text()
    start, end = markers("results", ctx.setup.dataset)
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} section to fill")
    ours = (ctx.out / "README.md").read_text()
    run_line = next(line for line in ours.splitlines() if line.startswith("Made by "))
    time_note = ours.split("## Time\n\n", 1)[1].split("\n\n", 1)[0]
    rel = ctx.out.resolve().relative_to(readme.resolve().parent) if ctx.out.resolve().is_relative_to(
        readme.resolve().parent) else ctx.out
    if figure is None:
        own = ctx.setup.profile.figure
        figure = own if (ctx.out / own).exists() else FALLBACK_FIGURE
    what = "All numbers below come from " + ctx.setup.profile.summary.format(scale=ctx.setup.scale)
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
    project = readme.parent == ROOT  # the project's own README
    # its per-artefact times live in docs/reproduce.md (the README gives the totals)
    update_time_section(readme.parent / "docs" / "reproduce.md" if project else readme, ctx.out, dataset=ctx.setup.dataset)
    if project:
        update_deviations()
    return readme


def plan_markers(dataset: str) -> tuple[str, str]:
    """The README's marker pair of a dataset's cost-plan block: ``<!-- plan:cifar10:start -->``,
    ``<!-- plan:fashion_mnist:start -->``."""
    tag = f"plan:{datasets.dataset_slug(dataset)}"
    return f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"


PLAN_START, PLAN_END = plan_markers("cifar10")


def update_plan_section(ctx, md: str, env: dict, readme: Path | None = None) -> Path:
    """Fill the cost-plan block of ``ctx.setup.dataset`` (:func:`plan_markers`; in ``docs/reproduce.md``
    unless ``readme`` names another file) from a
    ``--plan`` run: the plan's table and prediction, with the command, machine, commit and the
    metered smoke run's wall time. Raises ValueError when the README has no such block."""
    readme = Path(readme) if readme else ROOT / "docs" / "reproduce.md"
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
        f"Made by `python -m experiments.reproduce_all --dataset {ctx.setup.dataset} --plan --out {where}` on {env['processor']} "
        f"({env['backend']}, jax {env['versions']['jax']}), commit {env['git_commit'][:7]}, {env['time'][:10]}: "
        f"the metered smoke run took {int(wall // 60)} min {wall % 60:.0f} s on that machine "
        f"([{where}/plan.md]({where}/plan.md)).",
        "", md, ""])
    start, end = plan_markers(ctx.setup.dataset)
    if not fill_block(readme, start, end, body):
        raise ValueError(f"{readme} has no {start} ... {end} block to fill")
    return readme
