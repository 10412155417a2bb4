"""The coordinator every experiment driver gets, and the command line they share.

A :class:`Context` holds one reproduction's :class:`~experiments.setup.Setup` (dataset profile,
scale, seeds, configs, settings) as ``ctx.setup`` and its
:class:`~experiments.training.ModelCache` (trained models, data and shared evaluation results)
as ``ctx.models``, and says where each artefact writes (``ctx.artefact_dir``). Writing results is
:mod:`experiments.reporting`; a claim and its verdict is :mod:`experiments.claims`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
import sys
from typing import Any, Callable

import jax

from experiments import profiles
from experiments.setup import DEFAULT_SEEDS, Setup
from experiments.training import ModelCache
from jaxhfc import datasets, parallel


class Context:
    """One reproduction: its setup, its models, and its results root.

    Keyword arguments are those of :class:`~experiments.setup.Setup` (``dataset``, ``scale``,
    ``out``, ``data_dir``, ``model``, ``seed``, ``seeds``, ``smoke``, ``plan``) and of
    :class:`~experiments.training.ModelCache` (``progress``, ``populations``,
    ``max_population``). Nothing is written on construction: folders are made when something
    is written into them.
    """

    _CACHE_KEYS = ("progress", "populations", "max_population")

    def __init__(self, **kwargs):
        cache = {k: kwargs.pop(k) for k in self._CACHE_KEYS if k in kwargs}
        self.setup = Setup(**kwargs)
        self.models = ModelCache(self.setup, **cache)

    def __repr__(self) -> str:
        return f"Context({self.setup!r})"

    @property
    def out(self) -> Path:
        """The results root."""
        return self.setup.out

    def artefact_dir(self, name: str) -> Path:
        """``<out>/<name>``, made if absent."""
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path


#: jax.monitoring events that make up the compilation of a program (tracing, lowering, XLA).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]
_compile_listening = [False]


def compile_seconds() -> float:
    """Seconds this process has spent compiling jax programs (tracing, lowering and XLA) since
    the first call; read it before and after a piece of work to get that work's share. The
    listener is registered on the first call (drivers only: the library registers nothing)."""
    if not _compile_listening[0]:
        def listen(event: str, duration: float, **_):
            if event in COMPILE_EVENTS:
                _compile_seconds[0] += duration

        jax.monitoring.register_event_duration_secs_listener(listen)
        _compile_listening[0] = True
    return _compile_seconds[0]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default="synthetic", type=datasets.dataset_arg,
                   metavar="|".join((*datasets.READERS, "tfds:NAME", "npz:PATH", "folder:PATH")),
                   help="built-in data (synthetic), CIFAR-10, Fashion-MNIST / MNIST (IDX files), or a TFDS image "
                        "dataset, a keras-style .npz or an image folder (options ?channels=1&size=N; see jaxhfc.datasets.specs)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="minutes on a CPU: small CNN, small data, few epochs")
    g.add_argument("--tiny", action="store_true", help="seconds: a smoke run (tests and CI)")
    g.add_argument("--smoke", action="store_true",
                   help="the full-scale recipes (ResNet18, batch 100, every evaluation set, full attack lists) with "
                        "every loop capped to a few steps and images (recipes.SMOKE): checks the full-scale path runs; "
                        "with --dataset cifar10 and no archive in --data-dir, a generated full-size archive is used")
    p.add_argument("--loops", default="auto", choices=("auto", "accelerator", "cpu"),
                   help="form of the training, population and attack loops: auto follows the backend; accelerator "
                        "runs the GPU/TPU form (scanned steps, vmapped populations, rolled PGD loops) on a CPU too")
    p.add_argument("--out", default=None, help="results root (default results/<dataset>)")
    p.add_argument("--data-dir", default=None,
                   help="folder with cifar-10-python.tar.gz or a prepared TFDS dir, or with the Fashion-MNIST / MNIST "
                        "IDX files (default for those: /usr/share/datasets/<name>, then ~/.keras/datasets/<name>)")
    p.add_argument("--model", default="resnet18", choices=("resnet18", "paper_resnet"), help="model of full-scale runs")
    p.add_argument("--seed", type=int, default=None,
                   help="base seed (the seeds are seed + 1009 * i); default 0, or the dataset's own base seed "
                        "(experiments/profiles.py: 3 for the built-in data, whose recipes were calibrated on seeds 0-2)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds per trained artefact (default: the dataset profile's, else by scale {DEFAULT_SEEDS})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--cpu-devices", default="auto",
                   help="split the CPU into this many XLA devices for data parallelism: 'auto' (default) = the "
                        "number of cores, unless XLA_FLAGS already sets a device count; 1 = off. No effect on the "
                        "accelerator of a GPU/TPU host")
    return p


def configure_cpu_devices(value: str | int = "auto", *, environ=None, cores: int | None = None) -> int | None:
    """``--cpu-devices``: :func:`jaxhfc.parallel.request_cpu_devices` (one XLA device per core
    by default, so data parallelism uses every core of a CPU host)."""
    return parallel.request_cpu_devices(value, environ=environ, cores=cores)


def quiet_read_only_checkpoints(record: logging.LogRecord) -> bool:
    """Logging filter: drop orbax's warnings that a checkpoint manager opened read-only (to load
    a finished run) is read-only; they say nothing the user needs."""
    msg = record.getMessage()
    return not (msg.startswith("CheckpointManagerOptions.read_only=True") or msg.startswith("Given directory is read only"))


def context_from_args(args) -> Context:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("experiments").setLevel(logging.INFO)
    logging.getLogger("absl").addFilter(quiet_read_only_checkpoints)
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    configure_cpu_devices(getattr(args, "cpu_devices", "auto"))
    loops = getattr(args, "loops", "auto")
    if loops != "auto":
        os.environ[parallel.LOOPS_ENV] = loops
    smoke, plan = bool(getattr(args, "smoke", False)), bool(getattr(args, "plan", False))
    seed = args.seed if args.seed is not None else profiles.profile(args.dataset).base_seed
    return Context(dataset=args.dataset, scale=scale, out=args.out, data_dir=args.data_dir, model=args.model,
                   seed=seed, seeds=args.seeds, progress=not args.no_progress, smoke=smoke or plan, plan=plan)


def run_cli(fn: Callable[[], Any]) -> Any:
    """Run a driver; a missing or corrupt dataset is one clear line and exit status 2."""
    try:
        return fn()
    except (datasets.DatasetNotFoundError, datasets.CorruptDatasetError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main_for(run: Callable[[Context], Any], description: str, argv=None) -> Any:
    args = parser(description).parse_args(argv)
    ctx = context_from_args(args)
    # a driver run alone (also as __main__): its NAME, so its per-artefact smoke caps apply
    ctx.artefact = getattr(sys.modules.get(run.__module__), "NAME", None)
    out = run_cli(lambda: run(ctx))
    print(f"wrote {ctx.out}")
    return out
