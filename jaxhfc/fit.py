"""Fitting: data preparation, the resumable fit loop, and populations of models.

- Data (:func:`prepare_data`): a config's ``(train, test)`` splits (:func:`load_splits`, with
  the validation split held out: :func:`load_validation`), the training set transformed as
  the config says (balanced subset, shuffled labels, LFC/HFC filter) and every evaluation set
  (``test``, ``test_low_<r>``, ``test_high_<r>``, optionally ``train`` and ``train_low_<r>``;
  :func:`jaxhfc.evaluation.eval_set_name`), all as unit-scale float32 arrays. :func:`fit`
  places them on the devices once, replicated (the layout of :mod:`jaxhfc.step`).
- The loop (:func:`fit`) runs the steps of :func:`jaxhfc.step.make_train_loop` in calls of
  ``S`` steps (a ``lax.scan`` on accelerators; one step per call on CPU, where XLA runs
  convolutions inside loops slowly; :func:`jaxhfc.parallel.accelerator_loops` forces either) and fetches every step's metrics a few calls later (at
  most 8 steps in flight on CPU, where fake devices deadlock with many collective steps
  queued). Epoch permutations are ``pipeline.epoch_indices(fold_in(data_key, epoch), ...)``;
  evaluation, ``metrics.jsonl`` and checkpoints (:mod:`jaxhfc.runs`) happen at epoch ends, so
  a resumed run is bit-identical to an uninterrupted one.
- Populations (:func:`fit_population`): K models with equal :func:`population_key` train in
  one program, the step ``vmap``-ed over a model axis inside the data-parallel map; each
  keeps its own run folder. Evaluation goes through :func:`jaxhfc.parallel.sweep`.
- The compiled loop is cached per model, mesh and the ``optim``, ``augment`` and ``adversary``
  sections (:func:`_cached_loop`): repeated fits (seeds, resumes) reuse one compilation, and
  the step never sees a field that is not part of its cache key.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxhfc import costs, parallel, pipeline, results
from jaxhfc.config import (
    DATA_FIELDS,
    EVAL_FIELDS,
    FLAT_FIELDS,
    HPARAM_FIELDS,
    PROGRAM,
    DataConfig,
    TrainConfig,
)
from jaxhfc.evaluation import evaluate
from jaxhfc.prepare import load_splits, prepare_data, split_key
from jaxhfc.runs import CheckpointError, checkpoint_manager, restore_checkpoint, run_info
from jaxhfc.step import TrainState, _cached_loop, _loop_plan, build_model, create_train_state, named_keys

__all__ = [
    "RunResult",
    "population_key",
    "fit",
    "fit_population",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RunResult:
    """What :func:`fit` returns: final state, one metrics dict per evaluation, run folder."""

    state: TrainState
    history: list[dict[str, Any]]
    run_dir: pathlib.Path
    model: nn.Module
    config: TrainConfig


def population_key(config: TrainConfig) -> tuple[tuple[str, Any], ...]:
    """Hashable key of the compiled training program of a config.

    Configs with equal keys can train together in one :func:`fit_population` call. The key
    is ``(("section.field", value), ...)`` of every field whose role is
    :data:`jaxhfc.config.PROGRAM` (``config.key(PROGRAM)``): the whole ``net``, ``optim``
    (but the learning rate), ``augment`` and ``adversary`` sections, the data fields that
    change the training arrays' shapes (dataset, ``num_train``, ``num_val``,
    ``train_subset``) and ``run.num_devices``. Configs of one key may differ in data values
    and seeds (:data:`jaxhfc.config.DATA_FIELDS`: seed, data seed, training filter and radius,
    shuffled labels, scaling, data source, ...), evaluation and checkpoint settings
    (:data:`jaxhfc.config.EVAL_FIELDS`) and the learning rate
    (:data:`jaxhfc.config.HPARAM_FIELDS`). A field added to a program section is part of
    the key by its section's role, without being listed anywhere.
    """
    return config.key(PROGRAM)


@dataclasses.dataclass
class _Member:
    """One model of a training call: its config, run folder, keys, data and history."""

    config: TrainConfig
    run_dir: pathlib.Path
    prepared: dict[str, Any]
    keys: dict[str, jax.Array]
    manager: Any = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    eval_sets: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def metrics_path(self) -> pathlib.Path:
        return self.run_dir / "metrics.jsonl"


def _prepare_members(configs: Sequence[TrainConfig], workdirs: Sequence[Any],
                     datasets: tuple[Any, Any] | None) -> list[_Member]:
    """Members with their data; configs with the same data share the prepared arrays.

    :func:`prepare_data` reads the ``data`` and ``evaluation`` sections, so those (but the
    evaluation period and batch) are the key of the prepared arrays; :func:`split_key` that
    of the loaded splits."""
    splits: dict[DataConfig, tuple[Any, Any]] = {}
    prepared: dict[Any, dict[str, Any]] = {}
    members = []
    for config, workdir in zip(configs, workdirs):
        data_key = (config.data, config.evaluation.replace(every=0, batch_size=1))
        if data_key not in prepared:
            ds = datasets
            if ds is None:
                load_key = split_key(config.data)
                if load_key not in splits:
                    splits[load_key] = load_splits(config)
                ds = splits[load_key]
            prepared[data_key] = prepare_data(config, ds)
        members.append(_Member(config=config, run_dir=pathlib.Path(workdir), prepared=prepared[data_key],
                               keys=named_keys(config.run.seed)))
    return members


def _stack_keys(members: Sequence[_Member], population: bool) -> dict[str, jax.Array]:
    names = ("data", "dropout", "attack")
    if not population:
        return {k: members[0].keys[k] for k in names}
    return {k: jax.random.wrap_key_data(jnp.stack([jax.random.key_data(m.keys[k]) for m in members]))
            for k in names}


@functools.lru_cache(maxsize=8)
def _stack_fn(mesh: Mesh) -> Callable[..., Any]:
    return jax.jit(lambda states: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states),
                   out_shardings=parallel.replicated(mesh))


@functools.lru_cache(maxsize=8)
def _unstack_fn(mesh: Mesh, k: int) -> Callable[..., Any]:
    return jax.jit(lambda state: [jax.tree_util.tree_map(lambda a: a[i], state) for i in range(k)],
                   out_shardings=parallel.replicated(mesh))


def _resume_step(members: Sequence[_Member], resume: bool) -> int | None:
    """Check the run folders and return the step to restore (None: start fresh)."""
    latest = []
    for m in members:
        step = m.manager.latest_step()
        if step is not None and not resume:
            raise FileExistsError(f"{m.run_dir} already holds checkpoints (newest step {step}); "
                                  "pass resume=True (--resume) or use a new folder")
        if resume and (m.run_dir / "config.json").exists():
            saved = json.loads((m.run_dir / "config.json").read_text())
            if saved.get("config_hash") != m.config.config_hash():
                raise ValueError(f"cannot resume {m.run_dir}: its config.json has hash {saved.get('config_hash')}, "
                                 f"this config {m.config.config_hash()}; use the same config or a new folder")
        latest.append(step if resume else None)
    if all(s is None for s in latest):
        return None
    common = min(s or 0 for s in latest)
    for m, s in zip(members, latest):
        if s is not None and s != common and common not in m.manager.all_steps():
            raise CheckpointError(
                f"the models of this population stopped at different steps ({latest}) and {m.run_dir} has no "
                f"checkpoint at step {common}; resume its members one by one with fit(..., resume=True)")
    for m in members:  # a model ahead of the others redoes its steps after the common one
        for s in m.manager.all_steps():
            if s > common:
                m.manager.delete(s)
    return common if common > 0 else None


def _due(done: int, every: int, last: bool) -> bool:
    """Whether an epoch-periodic action (evaluation, checkpoint) runs after epoch ``done``:
    every ``every`` epochs (0: never) and always after the last."""
    return last or (every > 0 and done % every == 0)


def _check_training_sets(members: Sequence[_Member], batch_size: int) -> int:
    """The common training-set size of the members (a population trains on sets of one size)."""
    trains = [m.prepared["train"] for m in members]
    n_train = int(trains[0][0].shape[0])
    for m, (x, _) in zip(members, trains):
        if int(x.shape[0]) != n_train:
            raise ValueError(f"the models of a population must have training sets of one size; {m.run_dir} has "
                             f"{x.shape[0]}, {members[0].run_dir} {n_train}")
    if n_train < batch_size:
        raise ValueError(f"training set ({n_train}) is smaller than the batch size ({batch_size})")
    return n_train


def _open_runs(members: Sequence[_Member], states: list, *, resume: bool, mesh: Mesh, num_classes: int,
               input_shape, steps_per_epoch: int) -> int:
    """Open each run folder (checkpoint manager, config.json, metrics.jsonl), restore the common
    checkpoint when resuming (``states`` in place), and return the epoch to start from."""
    is_main = jax.process_index() == 0
    for m in members:
        m.run_dir.mkdir(parents=True, exist_ok=True)
        m.manager = checkpoint_manager(m.run_dir, m.config.run.keep_checkpoints)
    start = _resume_step(members, resume)
    for i, m in enumerate(members):
        if start is not None:
            states[i] = restore_checkpoint(m.manager, start, states[i])
            m.history = [h for h in results.read_jsonl(m.metrics_path) if h["step"] <= start]
            logger.info("resumed %s from step %d", m.run_dir, start)
        if is_main:
            if not (resume and (m.run_dir / "config.json").exists()):
                info = run_info(m.config, mesh, num_classes=num_classes, input_shape=input_shape)
                results.write_json(m.run_dir / "config.json", info)
            m.metrics_path.write_text("".join(json.dumps(h) + "\n" for h in m.history))
    start_step = start or 0
    if start_step % steps_per_epoch:
        raise CheckpointError(f"checkpoint step {start_step} is not at an epoch boundary "
                              f"({steps_per_epoch} steps per epoch)")
    return start_step // steps_per_epoch


def _place_data(members: Sequence[_Member], mesh: Mesh, *, stacked_images: bool, stacked_labels: bool):
    """The training arrays on the devices (one copy, or stacked per model when a population's
    models train on different data) and each member's evaluation sets (models with the same
    data share its device copy)."""
    trains = [m.prepared["train"] for m in members]

    def put(arrays: list[np.ndarray], stacked: bool) -> jax.Array:
        return parallel.global_from_full(mesh, np.stack(arrays) if stacked else arrays[0])

    images = put([x for x, _ in trains], stacked_images)
    labels = put([y for _, y in trains], stacked_labels)
    placed: dict[int, jax.Array] = {}

    def place(a: np.ndarray) -> jax.Array:
        if id(a) not in placed:
            placed[id(a)] = parallel.global_from_full(mesh, a)
        return placed[id(a)]

    for m in members:
        m.eval_sets = {name: (place(x), place(y)) for name, (x, y) in m.prepared["eval"].items()}
    return images, labels


class _EpochMeter:
    """The training metrics of one epoch as they come back from the devices: per-model sums of
    loss, correct and count, the NaN check, the step callback and the progress bar."""

    def __init__(self, members: Sequence[_Member], *, epoch: int, epochs: int, steps_per_epoch: int,
                 progress: bool, step_callback):
        from tqdm.auto import tqdm

        self.members, self.epoch, self.steps_per_epoch = members, epoch, steps_per_epoch
        self.k = len(members)
        self.sums = np.zeros((self.k, 3))  # loss_sum, correct, count of the epoch
        self.step_callback = step_callback
        self.bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                        disable=not (progress and jax.process_index() == 0), unit="step")

    def add(self, s0: int, metrics_on_device) -> None:
        """The metrics of the steps ``s0, s0 + 1, ...`` of this epoch (one device call)."""
        host = parallel.to_host(metrics_on_device)
        loss = np.asarray(host["loss_sum"], np.float64).reshape(-1, self.k)
        correct = np.asarray(host["correct"], np.float64).reshape(-1, self.k)
        count = np.asarray(host["count"], np.float64).reshape(-1, self.k)
        reg = np.asarray(host["regularizer"], np.float64).reshape(-1, self.k)
        for i in range(loss.shape[0]):
            g = self.epoch * self.steps_per_epoch + s0 + i + 1
            step_loss = loss[i] / count[i]
            for j, m in enumerate(self.members):
                if not math.isfinite(step_loss[j]) or not math.isfinite(reg[i, j]):
                    raise FloatingPointError(
                        f"non-finite training loss {step_loss[j]} at step {g} (epoch {self.epoch + 1}, batch "
                        f"{s0 + i + 1}/{self.steps_per_epoch}) of {m.run_dir}; newest checkpoint: step "
                        f"{m.manager.latest_step()}. Lower the learning rate or check the inputs for NaN/inf.")
            self.sums[:, 0] += loss[i]
            self.sums[:, 1] += correct[i]
            self.sums[:, 2] += count[i]
            if self.step_callback is not None:
                self.step_callback(g, [{"loss": float(step_loss[j]), "accuracy": float(correct[i, j] / count[i, j])}
                                       for j in range(self.k)])
        self.bar.update(loss.shape[0])
        self.bar.set_postfix(loss=f"{np.mean(self.sums[:, 0] / self.sums[:, 2]):.4f}",
                             acc=f"{np.mean(self.sums[:, 1] / self.sums[:, 2]):.3f}")


def _fitted(m: _Member) -> bool:
    """Whether a member has met its fit criterion (``evaluation.stop_at_train``) at its newest
    evaluation: its eval-mode accuracy on the clean training subset is at least the criterion."""
    crit = m.config.evaluation.stop_at_train
    if crit is None or not m.history:
        return False
    acc = m.history[-1].get("accuracy", {}).get("train")
    return acc is not None and acc >= crit


def _evaluate_and_save(members: Sequence[_Member], member_states: list, *, model, mesh: Mesh, due_eval, due_ckpt,
                       meter: _EpochMeter, done: int, step_now: int, img_per_s: float, epoch_time: float,
                       t_start: float, population: bool, stopped: dict) -> None:
    """After an epoch: evaluate the members due for it (one metrics.jsonl record each) and
    checkpoint those due for a checkpoint. A member that meets its fit criterion at this
    evaluation stops: it is checkpointed now and its state kept in ``stopped`` (index -> state);
    stopped members are neither evaluated nor checkpointed again."""
    is_main = jax.process_index() == 0
    sums = meter.sums
    for j, m in enumerate(members):
        if j in stopped:
            continue
        if due_eval[j]:
            record: dict[str, Any] = {
                "epoch": done, "step": step_now, "train_loss": sums[j, 0] / sums[j, 2],
                "train_accuracy": sums[j, 1] / sums[j, 2], "img_per_s": img_per_s,
                "epoch_time_s": epoch_time, "time_s": time.perf_counter() - t_start,
                "accuracy": {}, "loss": {},
            }
            if population:
                record["population"] = len(members)
            for name, (x, y) in m.eval_sets.items():
                r = evaluate(member_states[j], model, mesh, x, y, batch_size=m.config.evaluation.batch_size)
                record["accuracy"][name] = r["accuracy"]
                record["loss"][name] = r["loss"]
            m.history.append(record)
            if is_main:
                results.append_jsonl(m.metrics_path, record)
            logger.info("%s epoch %d step %d train loss %.4f acc %.4f test acc %.4f (%.0f img/s per model)",
                        m.run_dir, done, step_now, record["train_loss"], record["train_accuracy"],
                        record["accuracy"].get("test", float("nan")), img_per_s)
        if due_eval[j] and _fitted(m):
            stopped[j] = member_states[j]
            logger.info("%s met its fit criterion (train acc %.4f >= %g) after epoch %d: stopped", m.run_dir,
                        m.history[-1]["accuracy"]["train"], m.config.evaluation.stop_at_train, done)
        if due_ckpt[j] or j in stopped:
            import orbax.checkpoint as ocp

            m.manager.save(step_now, args=ocp.args.StandardSave(member_states[j]))


def _train(configs: Sequence[TrainConfig], workdirs: Sequence[Any], *, population: bool, resume: bool,
           progress: bool, datasets: tuple[Any, Any] | None,
           step_callback: Callable[[int, list[dict[str, float]]], None] | None,
           steps_per_call: int | None) -> list[RunResult]:
    """The fit loop of :func:`fit` (one model) and :func:`fit_population` (a model axis): set up,
    open the runs (resuming), place the data, then per epoch run the steps in calls of
    ``steps_per_call`` with a few calls in flight, and evaluate and checkpoint when due."""
    t_start = time.perf_counter()
    config = configs[0]
    batch_size, epochs = config.optim.batch_size, config.optim.epochs
    mesh = parallel.make_mesh(config.run.num_devices)
    parallel.local_batch_size(batch_size, mesh)  # validates divisibility
    members = _prepare_members(configs, workdirs, datasets)
    n_train = _check_training_sets(members, batch_size)
    trains = [m.prepared["train"] for m in members]
    steps_per_epoch = n_train // batch_size
    total_steps = steps_per_epoch * epochs
    num_classes = members[0].prepared["num_classes"]
    k_models = len(members)
    shared_images = all(x is trains[0][0] or np.array_equal(x, trains[0][0]) for x, _ in trains)
    shared_labels = all(y is trains[0][1] or np.array_equal(y, trains[0][1]) for _, y in trains)

    model = build_model(config, num_classes)
    # a population's program has learning rate 1; each model's update is scaled by its own rate
    optim = config.optim.replace(learning_rate=1.0) if population else config.optim
    tx, loop = _cached_loop(model, mesh, optim, config.augment, config.adversary, total_steps, num_classes,
                            k_models if population else None, shared_images or not population,
                            shared_labels or not population, not parallel.accelerator_loops())
    states = [create_train_state(model, tx, m.keys["init"], trains[0][0].shape[1:], mesh=mesh) for m in members]
    steps_per_call, calls_in_flight = _loop_plan(steps_per_epoch, steps_per_call)
    try:
        start_epoch = _open_runs(members, states, resume=resume, mesh=mesh, num_classes=num_classes,
                                 input_shape=trains[0][0].shape[1:], steps_per_epoch=steps_per_epoch)
        images, labels = _place_data(members, mesh, stacked_images=population and not shared_images,
                                     stacked_labels=population and not shared_labels)
        step_keys = parallel.global_from_full(mesh, _stack_keys(members, population))
        rates = (parallel.global_from_full(mesh, np.asarray([m.config.optim.learning_rate for m in members], np.float32))
                 if population else None)
        # members that met their fit criterion before a resume stay stopped at their restored state
        stopped = {j: states[j] for j, m in enumerate(members) if _fitted(m)}
        state = _stack_fn(mesh)(states) if population else states[0]
        del states
        compiled = False

        for epoch in range(start_epoch, epochs):
            if len(stopped) == k_models:
                break
            perms = [np.asarray(pipeline.epoch_indices(jax.random.fold_in(m.keys["data"], epoch), n_train,
                                                       batch_size), np.int32) for m in members]
            idx_epoch = np.stack(perms, axis=1) if population else perms[0]  # (steps, [K,] B)
            t_epoch = time.perf_counter()
            t_timed, timed_steps = t_epoch, 0
            meter = _EpochMeter(members, epoch=epoch, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                progress=progress, step_callback=step_callback)
            pending: list[tuple[int, jax.Array]] = []
            for s0 in range(0, steps_per_epoch, steps_per_call):
                n_steps = min(steps_per_call, steps_per_epoch - s0)
                idx = parallel.global_from_full(mesh, idx_epoch[s0:s0 + n_steps], sharded=True,
                                                batch_axis=idx_epoch.ndim - 1)
                if costs.active() is not None:  # metering (opt-in): before the call donates the state
                    costs.report("train", loop, (state, images, labels, idx, step_keys, rates), calls=1,
                                 rows=n_steps, devices=int(mesh.devices.size), name="train_loop",
                                 loop_trips=n_steps, models=k_models, batch=batch_size, net=config.net.name,
                                 runs=[str(m.run_dir) for m in members])
                state, m_dev = loop(state, images, labels, idx, step_keys, rates)
                pending.append((s0, m_dev))
                if not compiled:  # the first call of the process compiles: wait, and time from here
                    meter.add(*pending.pop(0))
                    compiled, t_timed = True, time.perf_counter()
                    continue
                timed_steps += n_steps
                while len(pending) > calls_in_flight:
                    meter.add(*pending.pop(0))
            while pending:
                meter.add(*pending.pop(0))
            meter.bar.close()
            t_done = time.perf_counter()
            done = epoch + 1
            last = done == epochs
            due_eval = [_due(done, m.config.evaluation.every, last) for m in members]
            due_ckpt = [_due(done, m.config.run.checkpoint_every, last) for m in members]
            for j in stopped:
                due_eval[j] = due_ckpt[j] = False
            if not any(due_eval) and not any(due_ckpt):
                continue
            member_states = _unstack_fn(mesh, k_models)(state) if population else [state]
            cost_meter = costs.active()  # metering (opt-in): evaluations here belong to the training
            with cost_meter.label("training") if cost_meter is not None else contextlib.nullcontext():
                _evaluate_and_save(
                    members, member_states, model=model, mesh=mesh, due_eval=due_eval, due_ckpt=due_ckpt,
                    meter=meter, done=done, step_now=done * steps_per_epoch,
                    img_per_s=timed_steps * batch_size / (t_done - t_timed) if timed_steps else float("nan"),
                    epoch_time=t_done - t_epoch, t_start=t_start, population=population, stopped=stopped)
            del member_states
        final = _unstack_fn(mesh, k_models)(state) if population else [state]
        final = [stopped.get(j, s) for j, s in enumerate(final)]
        for m in members:
            m.manager.wait_until_finished()
    finally:
        for m in members:
            if m.manager is not None:
                m.manager.wait_until_finished()
                m.manager.close()
    return [RunResult(state=s, history=m.history, run_dir=m.run_dir, model=model, config=m.config)
            for s, m in zip(final, members)]


def fit(
    config: TrainConfig,
    workdir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    datasets: tuple[Any, Any] | None = None,
    step_callback: Callable[[int, dict[str, float]], None] | None = None,
    steps_per_call: int | None = None,
) -> RunResult:
    """Train and evaluate a model as ``config`` says, writing a run folder.

    The run folder ``workdir`` gets:

    - ``config.json``: ``{"config", "config_hash", "num_classes", "input_shape", "devices",
      "versions", "device_kind", "process_count", "git_commit", ...}`` with the config in the
      nested form of :meth:`TrainConfig.to_dict` and its (flat-form) :meth:`TrainConfig.config_hash`;
    - ``metrics.jsonl``: one JSON object per evaluation with ``epoch``, ``step``,
      ``train_loss``, ``train_accuracy`` (means over the epoch's training batches, with
      augmentation/mixup/adversarial inputs as trained), ``img_per_s`` (training images
      per second in that epoch, compilation excluded), ``epoch_time_s``, ``time_s`` (wall
      time since the start of this process's run), ``accuracy: {set: value}`` and
      ``loss: {set: value}`` for the sets of :func:`prepare_data` (``test``,
      ``test_low_8``, ``test_high_8``, ``train``, ``train_low_4``, ...; see
      :func:`jaxhfc.evaluation.eval_set_name`);
    - ``checkpoints/<step>/``: orbax checkpoints every ``run.checkpoint_every`` epochs and at
      the end (the newest ``run.keep_checkpoints`` are kept).

    The steps run on the devices in calls of ``steps_per_call`` steps
    (:func:`jaxhfc.step.make_train_loop`),
    with the metrics of every step fetched a few calls later; the result does not depend on
    ``steps_per_call`` beyond float rounding, and a resumed run is bit-identical to an
    uninterrupted one with the same ``steps_per_call``.

    Args:
        config: The run.
        workdir: Run folder (created). Must not hold checkpoints unless ``resume``.
        resume: Continue from the newest checkpoint (a run killed at any point ends with the
            same parameters as an uninterrupted one; metrics lines after the checkpoint are
            dropped and recomputed). Starts fresh when there is none.
        progress: Show a tqdm progress bar (epoch, loss, accuracy).
        datasets: Optional ``(train, test)`` Datasets to use instead of loading.
        step_callback: Called for every step with ``(step, {"loss", "accuracy"})`` once its
            metrics are fetched (at most a few calls after the step ran); an exception raised
            there stops the run like a kill (nothing more is saved).
        steps_per_call: Optimizer steps per compiled call, scanned on the device (None: 1 on
            CPU, where XLA runs convolutions in loops slowly and fake devices need frequent
            fetches; 100 elsewhere or where ``JAXHFC_LOOPS=accelerator``
            (:func:`jaxhfc.parallel.accelerator_loops`); at most one epoch).

    Returns:
        :class:`RunResult` with the final state, the metrics history and the run folder.

    Raises:
        FloatingPointError: The training loss became NaN/inf (the message names the step).
        CheckpointError: The newest checkpoint could not be restored.
        FileExistsError: ``workdir`` holds checkpoints and ``resume`` is False.
    """
    callback = None if step_callback is None else (lambda step, ms: step_callback(step, ms[0]))
    return _train([config], [workdir], population=False, resume=resume, progress=progress, datasets=datasets,
                  step_callback=callback, steps_per_call=steps_per_call)[0]


def fit_population(
    configs: Sequence[TrainConfig],
    workdirs: Sequence[str | os.PathLike[str]],
    *,
    resume: bool = True,
    progress: bool = True,
    datasets: tuple[Any, Any] | None = None,
    step_callback: Callable[[int, list[dict[str, float]]], None] | None = None,
    steps_per_call: int | None = None,
    vmap: bool | None = None,
) -> list[RunResult]:
    """Train K models that share a :func:`population_key` in one compiled program.

    The step of :func:`fit` is ``jax.vmap``-ed over a model axis inside the data-parallel
    map (:func:`jaxhfc.step.make_train_loop`): each model has its own parameters, optimizer state,
    seed (initialisation, epoch order, augmentation, dropout), training data (filter and
    radius, shuffled labels) and run folder, and ends as it would with :func:`fit` alone
    (to float tolerance: batched convolutions round differently). Each run folder gets what
    :func:`fit` writes (``config.json``, ``metrics.jsonl`` with ``"population": K`` added,
    checkpoints on its own schedule) and can be resumed, evaluated and loaded alone. Data
    shared by several models (e.g. seeds of one config) is prepared and held once. Models
    may also differ in their learning rate (:data:`jaxhfc.config.HPARAM_FIELDS`): the program's optimizer
    has rate 1 and each model's update is multiplied by its own rate, which equals the
    model's own optimizer exactly for a constant schedule (to float rounding otherwise).

    On CPU the models train one after the other by default (``vmap=None``), each exactly
    as :func:`fit` trains it, sharing one compiled step: XLA:CPU runs the batched
    (grouped) convolutions of a vmapped model axis about 3x slower than the same models
    in turn (``benchmarks/populations.py``).

    Args:
        configs: K >= 1 configs with equal :func:`population_key` (group configs by it).
        workdirs: K distinct run folders, one per config.
        resume: Continue from the checkpoints of the run folders (default True: a
            population is a unit of work of a driver that may be re-run). All models restart
            from the newest step they all have a checkpoint for.
        progress, datasets, steps_per_call: As in :func:`fit`.
        step_callback: Called for every step with ``(step, [{"loss", "accuracy"}] * K)``
            (one model after the other: ``[{"loss", "accuracy"}]`` of the model in training).
        vmap: True: one program with a model axis; False: one model after the other;
            None: :func:`jaxhfc.parallel.accelerator_loops` (False on CPU, True elsewhere,
            unless ``JAXHFC_LOOPS`` forces a form).

    Returns:
        One :class:`RunResult` per config, in order.

    Raises:
        ValueError: Configs with different population keys, a workdir used twice, or
            training sets of different sizes.
        FloatingPointError, CheckpointError, FileExistsError: As in :func:`fit`.
    """
    configs, workdirs = list(configs), [pathlib.Path(w) for w in workdirs]
    if not configs or len(configs) != len(workdirs):
        raise ValueError(f"fit_population needs K >= 1 configs and as many workdirs; got {len(configs)} and "
                         f"{len(workdirs)}")
    if len({w.resolve() for w in workdirs}) != len(workdirs):
        raise ValueError(f"fit_population needs one run folder per model; got {[str(w) for w in workdirs]}")
    key = population_key(configs[0])
    for c in configs[1:]:
        other = population_key(c)
        if other != key:
            a, b, missing = dict(key), dict(other), object()
            flat = {f"{section}.{field}": name for name, (section, field) in FLAT_FIELDS.items()}
            diff = [f"{flat[q]} ({q})" if q in flat else q for q in sorted(a.keys() | b.keys())
                    if a.get(q, missing) != b.get(q, missing)]
            raise ValueError(f"configs of one population may differ only in data values and seeds, evaluation "
                             f"and checkpoint settings and the learning rate "
                             f"({list(DATA_FIELDS + EVAL_FIELDS + HPARAM_FIELDS)}); these differ in {diff} "
                             f"(group configs by train.population_key)")
    if vmap is None:
        vmap = parallel.accelerator_loops()
    if not vmap:
        return [_train([c], [w], population=False, resume=resume, progress=progress, datasets=datasets,
                       step_callback=step_callback, steps_per_call=steps_per_call)[0]
                for c, w in zip(configs, workdirs)]
    return _train(configs, workdirs, population=True, resume=resume, progress=progress, datasets=datasets,
                  step_callback=step_callback, steps_per_call=steps_per_call)

