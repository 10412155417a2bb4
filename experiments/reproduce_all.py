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
import time

from experiments import budget, plan, protocol
from experiments.claims import Claim
from experiments.common import compile_seconds, context_from_args, parser, run_cli
from experiments.readme_blocks import update_plan_section, update_readme
from experiments.reporting import ARTEFACTS, merge_json, rewrite_claims, write_readme
from jaxhfc import compat, costs
from jaxhfc import results as R


def run(ctx, only=None, meter=None) -> dict:
    """Run the artefacts (all, or ``only`` these) in order and write the results README; with a
    :class:`jaxhfc.costs.Meter`, each artefact's programs are reported to it under its name."""
    done: dict[str, list[Claim]] = {}
    timings: dict[str, float] = {}
    compiling: dict[str, float] = {}  # of which compiling jax programs
    rows, base_seeds = protocol.read(ctx.out), ctx.setup.seeds  # a protocol fixed before the run sets seeds per artefact
    for module, title, _ in ARTEFACTS:
        if only and module not in only:
            continue
        t0, c0 = time.perf_counter(), compile_seconds()
        ctx.setup.seeds = protocol.artefact_seeds(rows, module, base_seeds) if rows else base_seeds
        print(f"== {title} ({ctx.setup.seeds} seeds)", flush=True)
        ctx.setup.artefact = module
        with meter.label(module) if meter is not None else contextlib.nullcontext():
            out = importlib.import_module(f"experiments.{module}").run(ctx)
        done[module] = list(out.get("claims", []))
        timings[module] = time.perf_counter() - t0
        compiling[module] = compile_seconds() - c0
        for c in done[module]:
            print(f"   [{c.mark()}] {c.claim}: {c.evidence}", flush=True)
        print(f"   {timings[module]:.0f} s, of which {compiling[module]:.0f} s compiling jax programs", flush=True)
    ctx.setup.seeds = base_seeds
    budget.write_training_seconds(ctx.out)  # each training's seconds, kept when runs/ is not
    # seconds per artefact, kept across invocations (an --only run updates its artefacts)
    path = write_readme(ctx, merge_json(ctx.out / "timings.json", timings),
                        merge_json(ctx.out / "compile_seconds.json", compiling))
    print(f"wrote {path} ({ctx.models.trainings} trainings run, {sum(timings.values()):.0f} s)")
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
        print(f"updated {update_readme(ctx)}")
    return out


if __name__ == "__main__":
    main()
