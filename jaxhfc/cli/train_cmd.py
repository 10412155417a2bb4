"""``jaxhfc train`` and ``jaxhfc eval`` (driver code: argument parsing, printing, files).

``jaxhfc train`` exposes every :class:`jaxhfc.config.TrainConfig` field as a flag named
after its flat name (:data:`jaxhfc.config.FLAT_FIELDS`: ``--train-filter low`` sets
``data.train_filter``, ``--learning-rate 1e-4``, ``--augment-crop``/``--no-augment-crop``,
``--eval-radii 4 8 12 16``; ``--radius`` is an alias of ``--train-radius``); ``--quick``
starts from ``TrainConfig().quick()``. Multi-host runs pass ``--coordinator-address``,
``--num-processes`` and ``--process-id`` (or set ``JAXHFC_*``/SLURM variables) on every host.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import types
import typing
from typing import Any

from jaxhfc.cli._errors import CLIError

log = logging.getLogger("jaxhfc")


def _field_type(hint: Any) -> tuple[str, Any]:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if hint is bool:
        return "bool", None
    if origin is tuple:
        return "tuple", float
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return "optional", inner[0]
    return "plain", hint


def _flat_fields() -> list[tuple[str, str, dataclasses.Field, Any]]:
    """``(flat name, "section.field", field, type hint)`` of every config field, in the order
    of :data:`jaxhfc.config.FLAT_FIELDS`."""
    from jaxhfc.config import FLAT_FIELDS, SECTIONS

    out = []
    for flat, (section, name) in FLAT_FIELDS.items():
        cls = SECTIONS[section]
        field = next(f for f in dataclasses.fields(cls) if f.name == name)
        out.append((flat, f"{section}.{name}", field, typing.get_type_hints(cls)[name]))
    return out


def _add_distributed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-host (also from JAXHFC_COORDINATOR_ADDRESS / JAXHFC_NUM_PROCESSES / "
                             "JAXHFC_PROCESS_ID or SLURM)")
    g.add_argument("--coordinator-address", help="host:port of process 0")
    g.add_argument("--num-processes", type=int)
    g.add_argument("--process-id", type=int)


def add_train_parser(sub: Any) -> None:
    """Register ``jaxhfc train``."""
    p = sub.add_parser(
        "train",
        help="train a model (run folder with config.json, metrics.jsonl, checkpoints)",
        description="Train a model on CIFAR-10, the synthetic data or your own (--dataset npz:PATH ...) (optionally on LFC/HFC images) "
        "with evaluation on the LFC/HFC test sets; resumable with --resume.",
    )
    p.add_argument("--out", "-o", help="run folder (default: runs/train/<config hash>)")
    p.add_argument("--quick", action="store_true", help="start from TrainConfig().quick(): synthetic data, "
                   "small CNN, a few epochs (minutes on a CPU)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--radius", dest="train_radius", type=float, default=None, help="alias of --train-radius")
    g = p.add_argument_group("config (TrainConfig fields by their flat names; defaults as in "
                             "jaxhfc.config.TrainConfig)")
    for name, nested, f, hint in _flat_fields():
        flag = "--" + name.replace("_", "-")
        kind, typ = _field_type(hint)
        default_text = f"default: {f.default!r} ({nested})"
        if kind == "bool":
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=default_text)
        elif kind == "tuple":
            g.add_argument(flag, dest=name, type=float, nargs="*", default=None, help=default_text)
        elif name == "dataset":
            from jaxhfc import datasets

            g.add_argument(flag, dest=name, type=datasets.dataset_arg, default=None,
                           help=f"{default_text}; also tfds:NAME, npz:PATH, folder:PATH (see jaxhfc.sources)")
        elif name == "train_radius":
            g.add_argument(flag, dest=name, type=float, default=None, help=default_text)
        else:
            g.add_argument(flag, dest=name, type=typ, default=None, help=default_text)
    _add_distributed_flags(p)
    p.set_defaults(func=cmd_train)


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig the flags describe (quick() base with --quick)."""
    from jaxhfc.config import FLAT_FIELDS, TrainConfig, nest

    base = TrainConfig().quick() if args.quick else TrainConfig()
    overrides = {name: getattr(args, name) for name in FLAT_FIELDS if getattr(args, name, None) is not None}
    if "eval_radii" in overrides:
        overrides["eval_radii"] = tuple(overrides["eval_radii"])
    return base.merged(**nest(overrides))  # the flags are the flat names


def cmd_train(args: argparse.Namespace) -> int:
    from jaxhfc import parallel

    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    from jaxhfc.fit import fit

    try:
        config = config_from_args(args)
    except ValueError as err:
        raise CLIError(str(err)) from None
    out = pathlib.Path(args.out) if args.out else pathlib.Path("runs") / "train" / config.config_hash()
    log.info("run folder %s (config hash %s)", out, config.config_hash())
    try:
        result = fit(config, out, resume=args.resume, progress=not args.no_progress)
    except (FileExistsError, FloatingPointError, ValueError) as err:
        raise CLIError(str(err)) from None
    if result.history:
        last = result.history[-1]
        accs = "  ".join(f"{k} {v:.4f}" for k, v in last["accuracy"].items())
        print(f"epoch {last['epoch']} step {last['step']}: train loss {last['train_loss']:.4f} "
              f"acc {last['train_accuracy']:.4f}  {accs}  ({last['img_per_s']:.0f} img/s)")
    print(f"run folder: {out}")
    return 0


def load_run(run: pathlib.Path, *, step: int | None = None) -> tuple[Any, Any, Any]:
    """``jaxhfc.runs.load_run`` with a missing, unreadable or corrupt run folder or
    checkpoint as a one-line :class:`CLIError`."""
    from jaxhfc import runs

    if not run.is_dir():
        raise CLIError(f"{run}: no such run folder (expected config.json and checkpoints/ from jaxhfc train)")
    try:
        return runs.load_run(run, step=step)
    except (FileNotFoundError, runs.CheckpointError) as err:
        raise CLIError(str(err)) from None
    except (ValueError, KeyError, TypeError) as err:  # config.json unreadable or from another version
        raise CLIError(f"{run / 'config.json'}: not a readable run config ({type(err).__name__}: {err})") from None


def add_eval_parser(sub: Any) -> None:
    """Register ``jaxhfc eval``."""
    p = sub.add_parser(
        "eval",
        help="evaluate a run's checkpoint on the original / LFC / HFC test sets",
        description="Load a run folder written by `jaxhfc train`, restore a checkpoint and report "
        "accuracy and loss on the test set and its LFC/HFC copies; writes eval.json in the run folder.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--step", type=int, help="checkpoint step (default: newest)")
    p.add_argument("--radii", type=float, nargs="*", help="LFC/HFC radii (default: the run's eval_radii)")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch (default: the run's)")
    p.add_argument("--data-dir", help="dataset folder (default: the run's)")
    p.add_argument("--out", help="JSON output (default: RUN/eval_step<step>.json)")
    _add_distributed_flags(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxhfc import parallel

    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    from jaxhfc.evaluation import evaluate
    from jaxhfc.prepare import prepare_data

    run = pathlib.Path(args.run)
    config, state, model = load_run(run, step=args.step)
    evaluation: dict[str, Any] = {"train": False}
    if args.radii is not None:
        evaluation["radii"] = tuple(args.radii)
    config = config.merged(evaluation=evaluation, **({"data": {"dir": args.data_dir}} if args.data_dir is not None else {}))
    prepared = prepare_data(config)
    mesh = parallel.make_mesh(None)
    step = int(parallel.to_host(state.step))
    results = {}
    for name, (x, y) in prepared["eval"].items():
        results[name] = evaluate(state, model, mesh, x, y, batch_size=args.batch_size or config.evaluation.batch_size)
    print(f"{run} step {step}")
    print(f"{'set':<16} {'accuracy':>9} {'loss':>9} {'n':>7}")
    for name, r in results.items():
        print(f"{name:<16} {r['accuracy']:>9.4f} {r['loss']:>9.4f} {r['n']:>7d}")
    out = pathlib.Path(args.out) if args.out else run / f"eval_step{step}.json"
    if __import__("jax").process_index() == 0:
        out.write_text(json.dumps({"run": str(run), "step": step, "results": results}, indent=2))
        print(f"wrote {out}")
    return 0
