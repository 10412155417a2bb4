"""Run folders: the run information in ``config.json``, orbax checkpoints, and loading a run.

A run folder (written by :func:`jaxhfc.fit.fit`) holds ``config.json`` (the config in the
nested form of :meth:`jaxhfc.config.TrainConfig.to_dict`, its hash, the number of classes,
the input shape, devices and versions), ``metrics.jsonl`` and ``checkpoints/<step>/``.
:func:`load_run` also reads the flat ``config.json`` of run folders written before the
config had sections.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from jaxhfc import parallel, results
from jaxhfc.config import TrainConfig
from jaxhfc.step import TrainState, abstract_train_state, build_model, optimizer_from_config

__all__ = ["CheckpointError", "checkpoint_manager", "load_run", "restore_checkpoint", "run_info"]


class CheckpointError(RuntimeError):
    """A checkpoint could not be restored."""


def run_info(config: TrainConfig, mesh: Mesh, *, num_classes: int, input_shape: Sequence[int]) -> dict[str, Any]:
    """What a run folder's ``config.json`` holds: the nested config and its hash, the number of
    classes, the input shape (without batch), the mesh's devices, and the environment
    (versions, hardware, git commit)."""
    return {
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "num_classes": int(num_classes),
        "input_shape": [int(d) for d in input_shape],
        "devices": [str(d) for d in mesh.devices.reshape(-1)],
        **results.environment_info(),
    }


def checkpoint_manager(run_dir: pathlib.Path, keep: int, *, read_only: bool = False) -> Any:
    """An orbax ``CheckpointManager`` on ``<run_dir>/checkpoints`` keeping the ``keep`` newest
    steps; asynchronous saves when writing, none when ``read_only``. Close it when done."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=not read_only)
    return ocp.CheckpointManager((run_dir / "checkpoints").resolve(), options=options)


def restore_checkpoint(manager: Any, step: int, template: TrainState) -> TrainState:
    """Restore checkpoint ``step`` of ``manager`` with the shapes, dtypes and shardings of
    ``template`` (a state, or :func:`jaxhfc.step.abstract_train_state`); any failure is a :class:`CheckpointError` that names the step, its folder and
    the older checkpoints left untouched."""
    import orbax.checkpoint as ocp

    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding) if isinstance(a, jax.Array) else a,
        template,
    )
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # noqa: BLE001 - re-raised with context
        others = [s for s in manager.all_steps() if s != step]
        path = pathlib.Path(manager.directory) / str(step)
        raise CheckpointError(
            f"checkpoint at step {step} ({path}) could not be restored: {type(e).__name__}: {e}. "
            f"It may be corrupt or from a different config. Older checkpoints {sorted(others)} are "
            f"untouched; move {path} away to resume from the newest of them."
        ) from e


def load_run(run_dir: str | os.PathLike[str], *, step: int | None = None,
             mesh: Mesh | None = None) -> tuple[TrainConfig, TrainState, nn.Module]:
    """Load a run folder written by :func:`jaxhfc.fit.fit`: its config, a checkpointed state and the model.

    Args:
        run_dir: The run folder (with ``config.json`` and ``checkpoints/``).
        step: Checkpoint step (default: the newest).
        mesh: Mesh to place the state on (default: all devices).

    Returns:
        ``(config, state, model)``; ``state`` replicated on ``mesh``. ``config.json`` may hold
        the config in the nested or in the earlier flat form.
    """
    run_dir = pathlib.Path(run_dir)
    info_path = run_dir / "config.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} not found: expected a run folder written by jaxhfc.fit.fit")
    info = json.loads(info_path.read_text())
    config = TrainConfig.from_dict(info["config"])
    mesh = mesh or parallel.make_mesh(None)
    manager = checkpoint_manager(run_dir, config.run.keep_checkpoints, read_only=True)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
        # Shapes only: the number of classes and input shape come from the checkpoint template.
        num_classes = int(info.get("num_classes", 10))
        model = build_model(config, num_classes)
        tx = optimizer_from_config(config.optim, total_steps=1)
        template = abstract_train_state(model, tx, tuple(info.get("input_shape", (32, 32, 3))), mesh=mesh)
        state = restore_checkpoint(manager, step, template)
    finally:
        manager.close()
    return config, state, model
