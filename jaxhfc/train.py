"""Training: config, state, the data-parallel step, evaluation, and the resumable fit loop.

Data layout (one code path for 1..N devices, 1..P processes):

- A whole split lives on the devices, *replicated*, as unit-scale float32
  ``images: (N, H, W, C)`` and ``labels: (N,) int32`` (see docs/architecture.md).
- A training batch is ``batch = (images, labels, idx)`` where ``idx: (B,) int32`` are the
  global row indices of the step's examples, sharded over the mesh axis ``"data"``: each
  device gathers its own ``B / n_devices`` rows and augments them on device.
- The step is a pure per-device function ``step(state, batch, keys) -> (state, metrics)``
  mapped with ``jax.jit(jax.shard_map(..., mesh))`` over ``"data"`` with the state donated.
  Parameters are replicated; the per-device loss is ``sum(local losses) / B`` so the
  gradient, which shard_map already sums over ``"data"`` for replicated inputs, is the
  global-batch mean. BatchNorm statistics are averaged over ``"data"`` inside the model
  (synchronised BN); metrics are ``psum``-ed.
- Randomness: one seed -> named keys ``init``, ``data``, ``dropout``, ``attack``
  (:func:`named_keys`). Inside the step every key is folded with ``state.step``; crop/flip
  augmentation uses one key per example folded with its position in the *global* batch
  (so augmentation does not depend on the device count); dropout, mixup and the attack use
  the device index (``fold_in(key, axis_index)``). Epoch permutations are
  ``data.epoch_indices(fold_in(data_key, epoch), ...)``. A resumed run is therefore
  bit-identical to an uninterrupted one.
- The loop (:func:`make_train_loop`) runs ``S`` steps per compiled call (a ``lax.scan`` on
  accelerators; one step per call on CPU, where XLA runs convolutions inside loops slowly)
  and returns every step's metrics; :func:`fit` fetches them a few calls later (at most 8
  steps in flight on CPU, where fake devices deadlock with many collective steps queued).
- Populations (:func:`fit_population`): K models with equal :func:`population_key` train in
  one program, the step ``vmap``-ed over a model axis inside the data-parallel map; each
  keeps its own run folder. Evaluation goes through :func:`jaxhfc.parallel.sweep`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, PartitionSpec as P

from jaxhfc import models, parallel, results
from jaxhfc.parallel import DATA_AXIS

__all__ = [
    "TrainConfig",
    "TrainState",
    "RunResult",
    "CheckpointError",
    "named_keys",
    "make_optimizer",
    "build_model",
    "create_train_state",
    "make_train_step",
    "make_train_loop",
    "DATA_FIELDS",
    "EVAL_FIELDS",
    "HPARAM_FIELDS",
    "EVAL_KINDS",
    "population_key",
    "eval_set_name",
    "fit_population",
    "evaluate",
    "predict",
    "logits_fn",
    "load_splits",
    "load_validation",
    "holdout_split",
    "prepare_data",
    "fit",
    "load_run",
]

logger = logging.getLogger(__name__)

_OPTIMIZERS = ("adam", "sgd", "adagrad", "adadelta", "rmsprop")
_SCHEDULES = ("constant", "cosine", "step")
_FILTERS = ("none", "low", "high")


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that defines a training run (hashable, JSON-serialisable).

    Defaults follow the paper's released code for the vanilla model on CIFAR-10 with the
    common ResNet18 (Adam lr 1e-4, batch 100, 100 epochs, no augmentation, no weight decay,
    paper scaling of the input).

    Attributes:
        model: ``"resnet18"``, ``"paper_resnet"`` or ``"small_cnn"``.
        width: Base width (None: the model's default).
        norm: ``"batch"``, ``"none"`` or None (the model's default).
        bn_eval: BatchNorm statistics at test time: ``"running"`` (running averages) or
            ``"batch"`` (the current batch's, epsilon 1e-3, as the paper's code); see ``models``.
        dropout: Dropout rate before the final Dense.
        dtype: Compute dtype name (``"float32"`` or ``"bfloat16"``); params are float32.
        normalize: CIFAR-10 mean/std normalisation inside the model.
        dataset: ``"cifar10"`` or ``"synthetic"`` (anything ``data.load_dataset`` knows).
        data_dir: Directory with the dataset (TFDS dir or the CIFAR archive).
        data_source: ``data.load_dataset(source=...)``.
        data_seed: Seed for the synthetic data, subsets and label shuffling (kept apart from
            ``seed`` so trials with different seeds see the same data).
        num_train: Number of training examples to load (synthetic size / prefix), None: all.
        num_test: Number of test examples to load, None: all.
        train_subset: Balanced subset of the training set of this size (None: all).
        num_val: Size of a class-balanced validation split held out from the loaded training
            split (never trained on; :func:`load_validation`); 0: none. Selections (radius,
            rho, epoch) are made on it, never on the test set.
        shuffle_labels: Fraction of training labels shuffled once (paper Fig. 3: 1.0).
        train_filter: Train on ``"none"``, ``"low"`` (LFC) or ``"high"`` (HFC) images.
        train_radius: Radius of the training filter.
        scaling: ``"paper"`` (filtered images / per-image max) or ``"unit"`` (all / 255).
        augment_crop: Random crop with 4-pixel padding.
        augment_flip: Random horizontal flip.
        mixup_alpha: Mixup Beta(alpha, alpha) (0: off).
        label_smoothing: Label smoothing epsilon.
        optimizer: ``"adam"``, ``"sgd"`` (with momentum), ``"adagrad"``, ``"adadelta"``,
            ``"rmsprop"``.
        learning_rate: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay (sgd: added to the gradient; adam: decoupled, AdamW).
        schedule: ``"constant"``, ``"cosine"`` (to 0 at the end) or ``"step"`` (x0.1 at 50%
            and 75% of training).
        epochs: Number of epochs.
        batch_size: Global batch size (divisible by the device count).
        eval_every: Evaluate every N epochs (and always after the last; 0: only the last).
        eval_batch_size: Global batch size for evaluation.
        eval_radii: Radii of the LFC/HFC test copies evaluated (``test_low_r``/``test_high_r``).
        eval_train: Also evaluate on the training set and its LFC copies at ``eval_radii``.
        eval_train_subset: Size of the (balanced) training subset used for that (None: all).
        checkpoint_every: Save a checkpoint every N epochs (and always after the last).
        keep_checkpoints: Number of checkpoints kept.
        seed: Seed of the run (init, epoch order, augmentation, dropout, attack).
        adv_eps: Adversarial training (Madry PGD) when > 0; eps in unit scale.
        adv_steps, adv_step_size, adv_random_start, adv_norm: PGD settings.
        kernel_penalty: Weight of ``kernels.smoothness_penalty(params)`` (0: off).
        num_devices: Devices used (None: all).
    """

    model: str = "resnet18"
    width: int | None = None
    norm: str | None = None
    bn_eval: str = "running"
    dropout: float = 0.0
    dtype: str = "float32"
    normalize: bool = False
    dataset: str = "cifar10"
    data_dir: str | None = None
    data_source: str = "auto"
    data_seed: int = 0
    num_train: int | None = None
    num_test: int | None = None
    train_subset: int | None = None
    num_val: int = 0
    shuffle_labels: float = 0.0
    train_filter: str = "none"
    train_radius: float = 8.0
    scaling: str = "paper"
    augment_crop: bool = False
    augment_flip: bool = False
    mixup_alpha: float = 0.0
    label_smoothing: float = 0.0
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    epochs: int = 100
    batch_size: int = 100
    eval_every: int = 1
    eval_batch_size: int = 1000
    eval_radii: tuple[float, ...] = (4, 8, 12, 16)
    eval_train: bool = False
    eval_train_subset: int | None = None
    checkpoint_every: int = 10
    keep_checkpoints: int = 3
    seed: int = 0
    adv_eps: float = 0.0
    adv_steps: int = 10
    adv_step_size: float = 0.003
    adv_random_start: bool = False
    adv_norm: str = "linf"
    kernel_penalty: float = 0.0
    num_devices: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_radii", tuple(self.eval_radii))
        if self.model not in models.MODEL_NAMES:
            raise ValueError(f"model must be one of {models.MODEL_NAMES}; got {self.model!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}; got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}; got {self.schedule!r}")
        if self.train_filter not in _FILTERS:
            raise ValueError(f"train_filter must be one of {_FILTERS}; got {self.train_filter!r}")
        if self.scaling not in ("paper", "unit"):
            raise ValueError(f"scaling must be 'paper' or 'unit'; got {self.scaling!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(
                f"epochs, batch_size and eval_batch_size must be >= 1; got {self.epochs}, "
                f"{self.batch_size}, {self.eval_batch_size}"
            )
        if not 0.0 <= self.shuffle_labels <= 1.0:
            raise ValueError(f"shuffle_labels must be a fraction in [0, 1]; got {self.shuffle_labels}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")
        if self.mixup_alpha < 0 or self.adv_eps < 0 or self.kernel_penalty < 0:
            raise ValueError("mixup_alpha, adv_eps and kernel_penalty must be >= 0")
        if self.mixup_alpha > 0 and self.adv_eps > 0:
            raise ValueError("mixup and adversarial training together are not supported")
        models.parse_dtype(self.dtype)

    def quick(self) -> "TrainConfig":
        """A minutes-on-a-CPU variant: synthetic data (2,048/1,000), small CNN (width 16),
        at most 8 epochs of batch 64, Adam 3e-3; the other fields are kept."""
        return dataclasses.replace(
            self,
            model="small_cnn",
            width=16,
            norm=None,
            dtype="float32",
            dataset="synthetic",
            num_train=2048,
            num_test=1000,
            train_subset=None,
            epochs=min(self.epochs, 8),
            batch_size=64,
            eval_batch_size=500,
            learning_rate=3e-3 if self.optimizer == "adam" else self.learning_rate,
            eval_radii=tuple(r for r in self.eval_radii if r <= 8) or (4,),
            eval_train_subset=min(self.eval_train_subset or 500, 500),
            checkpoint_every=4,
            adv_steps=min(self.adv_steps, 3),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        d = dataclasses.asdict(self)
        d["eval_radii"] = list(self.eval_radii)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}; expected a subset of {sorted(names)}")
        return cls(**dict(d))

    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of the config (same fields, same hash, across runs)."""
        return results.config_hash(self.to_dict(), length=16)


# ----------------------------------------------------------------------------- state


class TrainState(struct.PyTreeNode):
    """Training state (a pytree; optimizer and model live outside).

    Attributes:
        step: () int32, number of optimizer steps taken.
        params: Model parameters (float32).
        batch_stats: BatchNorm running statistics (``{}`` without BatchNorm).
        opt_state: Optax optimizer state.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    def variables(self) -> dict[str, Any]:
        """The variables dict for ``model.apply``."""
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


@dataclasses.dataclass
class RunResult:
    """What :func:`fit` returns: final state, one metrics dict per evaluation, run folder."""

    state: TrainState
    history: list[dict[str, Any]]
    run_dir: pathlib.Path
    model: nn.Module
    config: TrainConfig


class CheckpointError(RuntimeError):
    """A checkpoint could not be restored."""


def named_keys(seed: int) -> dict[str, jax.Array]:
    """Split one seed into the named keys ``init``, ``data``, ``dropout``, ``attack``."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "data", "dropout", "attack"))}


def make_optimizer(
    *,
    optimizer: str = "adam",
    learning_rate: float = 1e-4,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    total_steps: int = 1,
) -> optax.GradientTransformation:
    """Optax optimizer with a learning-rate schedule.

    Args:
        optimizer: ``adam`` (AdamW when ``weight_decay`` > 0), ``sgd`` (momentum, weight decay
            added to the gradient as in PyTorch), ``adagrad``, ``adadelta``, ``rmsprop``.
        learning_rate: Peak learning rate.
        momentum: SGD momentum (0: plain SGD).
        weight_decay: Weight decay coefficient.
        schedule: ``constant``; ``cosine`` (decays to 0 over ``total_steps``); ``step``
            (x0.1 at 50% and again at 75% of ``total_steps``).
        total_steps: Number of optimizer steps of the run.
    """
    if schedule == "constant":
        lr: Any = learning_rate
    elif schedule == "cosine":
        lr = optax.cosine_decay_schedule(learning_rate, max(int(total_steps), 1))
    elif schedule == "step":
        lr = optax.piecewise_constant_schedule(
            learning_rate, {int(0.5 * total_steps): 0.1, int(0.75 * total_steps): 0.1}
        )
    else:
        raise ValueError(f"schedule must be one of {_SCHEDULES}; got {schedule!r}")
    if optimizer == "adam":
        return optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
    if optimizer == "sgd":
        sgd = optax.sgd(lr, momentum=momentum if momentum else None)
        return optax.chain(optax.add_decayed_weights(weight_decay), sgd) if weight_decay else sgd
    others = {"adagrad": optax.adagrad, "adadelta": optax.adadelta, "rmsprop": optax.rmsprop}
    if optimizer not in others:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}; got {optimizer!r}")
    tx = others[optimizer](lr)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The model a config describes."""
    return models.get_model(config.model, num_classes=num_classes, width=config.width, norm=config.norm,
                            dropout=config.dropout, dtype=config.dtype, normalize=config.normalize,
                            bn_eval=config.bn_eval)


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    input_shape: Sequence[int],
    *,
    mesh: Mesh | None = None,
) -> TrainState:
    """Initialise parameters, BatchNorm statistics and the optimizer state.

    Args:
        model: A model from :mod:`jaxhfc.models`.
        tx: The optax optimizer.
        key: The ``init`` key.
        input_shape: ``(H, W, C)`` of one example.
        mesh: When given, the state is created replicated on this mesh (works with several
            processes, every process computing the same values).

    Returns:
        ``TrainState`` with ``step = 0``.
    """
    variables = _init_fn(model, tuple(int(d) for d in input_shape), mesh)(key)
    out_shardings = None if mesh is None else parallel.replicated(mesh)

    def init(variables: dict[str, Any]) -> TrainState:
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

    return jax.jit(init, out_shardings=out_shardings)(variables)


@functools.lru_cache(maxsize=32)
def _init_fn(model: nn.Module, input_shape: tuple[int, ...], mesh: Mesh | None) -> Callable[[jax.Array], Any]:
    # Cached per (model, shape, mesh): random-number code is slow to compile on CPU, and
    # repeated runs (seeds, resumes) then reuse one compiled initialiser.
    def init(key: jax.Array) -> Any:
        return model.init({"params": key}, jnp.zeros((1, *input_shape), jnp.float32), train=False)

    return jax.jit(init, out_shardings=None if mesh is None else parallel.replicated(mesh))


# ----------------------------------------------------------------------------- step


def _augment_per_example(key: jax.Array, x: jax.Array, positions: jax.Array, *, crop_pad: int,
                         flip: bool) -> jax.Array:
    """Crop/flip each example with its own key ``fold_in(key, global position)``."""
    from jaxhfc import data

    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, positions)
    return jax.vmap(lambda k, xi: data.augment(k, xi[None], crop_pad=crop_pad, flip=flip)[0])(keys, x)


def _step_body(
    model: nn.Module,
    tx: optax.GradientTransformation,
    n_dev: int,
    *,
    global_batch: int,
    num_classes: int,
    label_smoothing: float,
    mixup_alpha: float,
    crop_pad: int,
    flip: bool,
    regularizer: Callable[[Any], jax.Array] | None,
    regularizer_weight: float,
    adversary: Callable[..., jax.Array] | None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """The per-device step ``body(state, images, labels, idx, keys) -> (state, metrics)``."""
    if global_batch % n_dev:
        raise ValueError(f"global batch {global_batch} must be divisible by the number of devices {n_dev}")
    local_b = global_batch // n_dev
    train_model = model.clone(axis_name=DATA_AXIS)

    def body(state: TrainState, images: jax.Array, labels: jax.Array, idx: jax.Array,
             keys: dict[str, jax.Array], rate: jax.Array | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        dev = jax.lax.axis_index(DATA_AXIS)
        # Keys are derived only where randomness is used (random-number code is slow to compile on CPU).
        def rng(name: str) -> jax.Array:
            return jax.random.fold_in(keys[name], state.step)

        x = jnp.take(images, idx, axis=0)
        y = jnp.take(labels, idx, axis=0)
        if crop_pad > 0 or flip:
            positions = dev * local_b + jnp.arange(local_b)
            x = _augment_per_example(jax.random.fold_in(rng("data"), 0), x, positions, crop_pad=crop_pad, flip=flip)
        if adversary is not None:
            eval_vars = state.variables()
            x = jax.lax.stop_gradient(
                adversary(lambda z: model.apply(eval_vars, z, train=False), x, y,
                          jax.random.fold_in(rng("attack"), dev))
            )
        targets = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
        if label_smoothing > 0:
            targets = optax.smooth_labels(targets, label_smoothing)
        if mixup_alpha > 0:
            from jaxhfc import data

            x, targets = data.mixup(jax.random.fold_in(jax.random.fold_in(rng("data"), 1), dev), x, targets,
                                    alpha=mixup_alpha)
        rngs = {"dropout": jax.random.fold_in(rng("dropout"), dev)} if getattr(model, "dropout", 0.0) > 0 else {}

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[Any, ...]]:
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            logits, updates = train_model.apply(variables, x, train=True, mutable=["batch_stats"],
                                                rngs=rngs)
            ce = optax.softmax_cross_entropy(logits, targets)
            # Gradients w.r.t. replicated params are summed over "data" by shard_map, so
            # dividing by the global batch (and the replicated term by n_dev) gives the mean.
            loss = jnp.sum(ce) / global_batch
            reg = jnp.zeros((), jnp.float32)
            if regularizer is not None and regularizer_weight:
                reg = regularizer(params)
                loss = loss + regularizer_weight * reg / n_dev
            return loss, (logits, updates, ce, reg)

        grads, (logits, updates, ce, reg) = jax.grad(loss_fn, has_aux=True)(state.params)
        upd, opt_state = tx.update(grads, state.opt_state, state.params)
        if rate is not None:  # a model's own learning rate (tx built with rate 1: see make_train_loop)
            upd = jax.tree_util.tree_map(lambda u: u * rate.astype(u.dtype), upd)
        params = optax.apply_updates(state.params, upd)
        new_state = state.replace(step=state.step + 1, params=params,
                                  batch_stats=updates.get("batch_stats", state.batch_stats), opt_state=opt_state)
        metrics = {
            "loss_sum": jax.lax.psum(jnp.sum(ce), DATA_AXIS),
            "correct": jax.lax.psum(jnp.sum(jnp.argmax(logits, -1) == y).astype(jnp.int32), DATA_AXIS),
            "count": jax.lax.psum(jnp.int32(local_b), DATA_AXIS),
            "regularizer": reg.astype(jnp.float32),
        }
        return new_state, metrics

    return body


def make_train_loop(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    global_batch: int,
    num_classes: int,
    label_smoothing: float = 0.0,
    mixup_alpha: float = 0.0,
    crop_pad: int = 0,
    flip: bool = False,
    regularizer: Callable[[Any], jax.Array] | None = None,
    regularizer_weight: float = 0.0,
    adversary: Callable[..., jax.Array] | None = None,
    population: int | None = None,
    shared_images: bool = True,
    shared_labels: bool = True,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build the jitted data-parallel loop ``loop(state, images, labels, idx, keys) -> (state, metrics)``.

    One call runs ``S`` optimizer steps on the devices (``S`` = ``idx.shape[0]``; a
    ``lax.scan`` when ``S > 1``, the plain step when ``S == 1``) and returns every step's
    metrics, so the host fetches once per call and a non-finite loss still names its step.
    With ``population=K`` the state, indices and keys carry a leading model axis and the
    step is ``jax.vmap``-ed over it inside the data-parallel map: K models that share the
    architecture and step settings train in one program, each on its own data, order and
    keys, exactly as each would alone (to float tolerance).

    Args:
        model, tx, global_batch, num_classes, label_smoothing, mixup_alpha, crop_pad, flip,
        regularizer, regularizer_weight, adversary: See :func:`make_train_step`.
        mesh: 1-D mesh over ``"data"``.
        population: K, the number of models (None: one model, no model axis).
        shared_images: With a population: one ``images`` array for every model (else
            ``images`` is ``(K, N, H, W, C)``); ``shared_labels`` likewise for ``labels``.

    Returns:
        ``loop(state, images, labels, idx, keys)`` with ``state`` a replicated
        :class:`TrainState` (donated; leaves ``(K, ...)`` with a population), ``images
        (N, H, W, C)`` float32 and ``labels (N,)`` int32 replicated (``(K, N, ...)`` unless
        shared), ``idx: (S, B)`` (``(S, K, B)``) int32 global row indices sharded over
        ``"data"`` on the ``B`` axis, and ``keys`` a dict of replicated keys ``data``,
        ``dropout``, ``attack`` (``(K,)`` each); optional ``rates: (K,)`` float32 replicated
        (populations only): each model's optimizer update is multiplied by its rate, so with
        ``tx`` built with learning rate 1 every model has its own learning rate (every
        optimizer of :func:`make_optimizer` ends with the learning-rate scaling).
        ``metrics`` (replicated): ``loss_sum``, ``correct``, ``count``, ``regularizer`` of
        every step, shape ``(S,)`` (``(S, K)``).
    """
    n_dev = mesh.devices.size
    body = _step_body(model, tx, n_dev, global_batch=global_batch, num_classes=num_classes,
                      label_smoothing=label_smoothing, mixup_alpha=mixup_alpha, crop_pad=crop_pad, flip=flip,
                      regularizer=regularizer, regularizer_weight=regularizer_weight, adversary=adversary)
    if population is not None:
        body = jax.vmap(body, in_axes=(0, None if shared_images else 0, None if shared_labels else 0, 0, 0, 0))

    def chunk(state: TrainState, images: jax.Array, labels: jax.Array, idxs: jax.Array,
              keys: dict[str, jax.Array], rates: jax.Array | None) -> tuple[TrainState, dict[str, jax.Array]]:
        if idxs.shape[0] == 1:  # no loop: XLA:CPU runs convolutions in while loops several times slower
            state, m = body(state, images, labels, idxs[0], keys, rates)
            return state, jax.tree_util.tree_map(lambda a: a[None], m)
        return jax.lax.scan(lambda s, i: body(s, images, labels, i, keys, rates), state, idxs)

    idx_spec = P(None, DATA_AXIS) if population is None else P(None, None, DATA_AXIS)
    mapped = jax.shard_map(chunk, mesh=mesh, in_specs=(P(), P(), P(), idx_spec, P(), P()), out_specs=(P(), P()))
    want = (global_batch,) if population is None else (population, global_batch)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def loop(state: TrainState, images: jax.Array, labels: jax.Array, idx: jax.Array,
             keys: dict[str, jax.Array], rates: jax.Array | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        if idx.ndim != len(want) + 1 or idx.shape[1:] != want or idx.shape[0] < 1:
            raise ValueError(f"idx must have shape (S, {', '.join(map(str, want))}); got {idx.shape}")
        if rates is not None and (population is None or tuple(rates.shape) != (population,)):
            raise ValueError(f"rates must have shape ({population},) with a population; got {tuple(rates.shape)}")
        return mapped(state, images, labels, idx.astype(jnp.int32), keys, rates)

    return loop


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    global_batch: int,
    num_classes: int,
    label_smoothing: float = 0.0,
    mixup_alpha: float = 0.0,
    crop_pad: int = 0,
    flip: bool = False,
    regularizer: Callable[[Any], jax.Array] | None = None,
    regularizer_weight: float = 0.0,
    adversary: Callable[..., jax.Array] | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build the jitted data-parallel step ``step(state, batch, keys) -> (state, metrics)``.

    One step of :func:`make_train_loop` (which runs many steps per call).

    Args:
        model: The model (its BatchNorm is given ``axis_name="data"`` here).
        tx: The optax optimizer.
        mesh: 1-D mesh over ``"data"``.
        global_batch: B, the global batch size (divisible by the device count).
        num_classes: Number of classes (for one-hot targets).
        label_smoothing: Label smoothing epsilon.
        mixup_alpha: Mixup Beta(alpha, alpha), one lambda per device batch (0: off).
        crop_pad: Random-crop padding in pixels (0: no crop).
        flip: Random horizontal flips.
        regularizer: ``params -> scalar`` added to the loss with ``regularizer_weight``.
        regularizer_weight: Its weight.
        adversary: ``adversary(logits_fn, x, y, key) -> x_adv`` run per device on the local
            batch with the model in eval mode; the step then trains on ``x_adv`` only (Madry).

    Returns:
        ``step(state, batch, keys)`` with ``state`` a replicated :class:`TrainState`
        (donated), ``batch = (images (N,H,W,C) float32 replicated, labels (N,) int32
        replicated, idx (B,) int32 sharded over "data")`` and ``keys`` a dict of replicated
        keys ``data``, ``dropout``, ``attack``. ``metrics`` (replicated scalars): ``loss_sum``
        (sum of per-example cross entropies), ``correct`` (argmax == label count),
        ``count`` (B), ``regularizer`` (its unweighted value).
    """
    parallel.local_batch_size(global_batch, mesh)  # validates divisibility
    loop = make_train_loop(model, tx, mesh, global_batch=global_batch, num_classes=num_classes,
                           label_smoothing=label_smoothing, mixup_alpha=mixup_alpha, crop_pad=crop_pad, flip=flip,
                           regularizer=regularizer, regularizer_weight=regularizer_weight, adversary=adversary)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state: TrainState, batch: tuple[jax.Array, jax.Array, jax.Array],
             keys: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        images, labels, idx = batch
        if tuple(idx.shape) != (global_batch,):
            raise ValueError(f"idx must have shape ({global_batch},); got {tuple(idx.shape)}")
        state, m = loop(state, images, labels, idx[None], keys)
        return state, jax.tree_util.tree_map(lambda a: a[0], m)

    return step


# ----------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=64)
def _eval_rows(model: nn.Module, with_logits: bool) -> Callable[..., dict[str, jax.Array]]:
    """Per-example evaluation of a batch (the function :func:`parallel.sweep` maps)."""

    def rows(variables: Any, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        logits = model.apply(variables, x, train=False)
        out = {"loss": optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y),
               "pred": jnp.argmax(logits, -1).astype(jnp.int32)}
        if with_logits:
            out["logits"] = logits.astype(jnp.float32)
        return out

    return rows


def _run_eval(state: TrainState | Mapping[str, Any], model: nn.Module, mesh: Mesh | None, x: Any, y: Any, *,
              batch_size: int, with_logits: bool) -> dict[str, np.ndarray]:
    variables = state.variables() if isinstance(state, TrainState) else dict(state)
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"x must be (N, H, W, C) unit-scale float; got shape {getattr(x, 'shape', None)}")
    n = int(x.shape[0])
    if y is None:
        y = np.zeros((n,), np.int32)
    if int(np.shape(y)[0]) != n:
        raise ValueError(f"x and y must have the same length; got {n} and {np.shape(y)[0]}")
    if not isinstance(x, jax.Array):
        x = np.asarray(x, np.float32)
    if not isinstance(y, jax.Array):
        y = np.asarray(y, np.int32)
    return parallel.sweep(_eval_rows(model, with_logits), (x, y), (variables,), batch_size=batch_size, mesh=mesh)


def evaluate(state: TrainState | Mapping[str, Any], model: nn.Module, mesh: Mesh | None, x: Any, y: Any, *,
             batch_size: int = 1000) -> dict[str, float]:
    """Mean loss and accuracy of a model on a whole array, data-parallel.

    Runs through :func:`jaxhfc.parallel.sweep` (multi-host safe: every process passes the
    same full arrays and gets the same numbers).

    Args:
        state: A :class:`TrainState` or a variables dict (``params``, optional ``batch_stats``).
        model: The model.
        mesh: 1-D mesh over ``"data"`` (None: the default device).
        x: (N, H, W, C) float32 unit-scale images (numpy, or a jax array, e.g. placed once
            on the mesh with :func:`parallel.global_from_full`; then it is not copied again).
        y: (N,) int labels.
        batch_size: Global evaluation batch (rounded up to a multiple of the device count);
            the last batch is padded and the padding dropped, so each example counts once.

    Returns:
        ``{"loss": mean cross entropy, "accuracy": fraction correct, "n": N}`` (sums in float64).
    """
    out = _run_eval(state, model, mesh, x, y, batch_size=batch_size, with_logits=False)
    n = int(x.shape[0])
    labels = parallel.to_host(y) if isinstance(y, jax.Array) else np.asarray(y)
    return {"loss": float(np.sum(out["loss"], dtype=np.float64) / n),
            "accuracy": float(np.sum(out["pred"] == labels) / n), "n": n}


def predict(state: TrainState | Mapping[str, Any], model: nn.Module, mesh: Mesh | None, x: Any, *,
            batch_size: int = 1000, return_logits: bool = False) -> Any:
    """Per-example predicted labels (and logits), data-parallel, in input order.

    Args:
        state, model, mesh, x, batch_size: As in :func:`evaluate`.
        return_logits: Also return the logits.

    Returns:
        ``pred: (N,) int32``, or ``(pred, logits: (N, num_classes) float32)``.
    """
    out = _run_eval(state, model, mesh, x, None, batch_size=batch_size, with_logits=return_logits)
    return (out["pred"], out["logits"]) if return_logits else out["pred"]


@functools.lru_cache(maxsize=64)
def _eval_apply(model: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
    def apply(variables: Any, x: jax.Array) -> jax.Array:
        return model.apply(variables, x, train=False)

    return apply


def logits_fn(state: TrainState | Mapping[str, Any], model: nn.Module) -> Callable[[jax.Array], jax.Array]:
    """``x: (B, H, W, C) unit scale -> logits (B, num_classes)`` in eval mode (jittable).

    Returns a ``jax.tree_util.Partial`` whose arguments are the variables: passed to a jitted
    attack or analysis, the parameters stay program arguments (not constants), and one
    compiled program serves every set of parameters of the same model (e.g. smoothed kernels).
    """
    variables = state.variables() if isinstance(state, TrainState) else dict(state)
    return jax.tree_util.Partial(_eval_apply(model), variables)


# ----------------------------------------------------------------------------- data


def load_splits(config: TrainConfig) -> tuple[Any, Any]:
    """``(train, test)`` :class:`jaxhfc.data.Dataset` of a config (dataset, data dir, source, sizes, seed).

    With ``config.num_val > 0`` the returned training split excludes the validation examples
    (see :func:`load_validation`)."""
    from jaxhfc import data

    common = dict(data_dir=config.data_dir, source=config.data_source, seed=config.data_seed,
                  num_train=config.num_train, num_test=config.num_test)
    train = data.load_dataset(config.dataset, split="train", **common)
    if config.num_val:
        train, _ = holdout_split(train, config.num_val, seed=config.data_seed)
    return train, data.load_dataset(config.dataset, split="test", **common)


def holdout_split(ds: Any, n: int, *, seed: int) -> tuple[Any, Any]:
    """``(rest, held_out)``: a class-balanced random ``n`` examples held out of ``ds``
    (numpy ``default_rng(seed + 7919)``), both in their original order; disjoint, and together
    exactly ``ds``."""
    from jaxhfc import data

    if not isinstance(n, (int, np.integer)) or not 1 <= n < len(ds):
        raise ValueError(f"validation size must be an int in [1, {len(ds) - 1}], got {n!r}")
    idx = data.balanced_indices(ds, int(n), seed=seed + 7919)
    keep = np.ones(len(ds), bool)
    keep[idx] = False
    return (ds.replace(images=ds.images[keep], labels=ds.labels[keep]),
            ds.replace(images=ds.images[idx], labels=ds.labels[idx]))


def load_validation(config: TrainConfig, train_full: Any | None = None) -> Any:
    """The validation split of a config: ``num_val`` class-balanced examples held out from the
    loaded training split (``train_full``: that split, to skip loading). Raises ValueError
    when ``num_val`` is 0."""
    from jaxhfc import data

    if not config.num_val:
        raise ValueError("this config holds out no validation split (num_val=0)")
    if train_full is None:
        train_full = data.load_dataset(config.dataset, split="train", data_dir=config.data_dir,
                                       source=config.data_source, seed=config.data_seed, num_train=config.num_train)
    return holdout_split(train_full, config.num_val, seed=config.data_seed)[1]


#: Kinds of filtered evaluation sets (:func:`eval_set_name`).
EVAL_KINDS = ("test_low", "test_high", "train_low")


def eval_set_name(kind: str, radius: float) -> str:
    """Name of a filtered evaluation set in ``metrics.jsonl``: ``kind`` and the radius, an
    integer radius without decimals and a point written ``p``.

    >>> eval_set_name("test_low", 12.0), eval_set_name("test_high", 12.5), eval_set_name("train_low", 4)
    ('test_low_12', 'test_high_12p5', 'train_low_4')
    """
    if kind not in EVAL_KINDS:
        raise ValueError(f"kind must be one of {EVAL_KINDS}; got {kind!r}")
    r = float(radius)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"radius must be a finite number >= 0; got {radius!r}")
    return f"{kind}_{int(r) if r.is_integer() else repr(r).replace('.', 'p')}"


def prepare_data(config: TrainConfig, datasets: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Build the training arrays and every evaluation set a config asks for.

    Args:
        config: The run config.
        datasets: Optional ``(train, test)`` :class:`jaxhfc.data.Dataset` (skips loading).

    Returns:
        dict with ``train: (x (N,H,W,C) float32 unit scale, y (N,) int32)``, ``eval: {name:
        (x, y)}`` with names ``test``, ``test_low_<r>``, ``test_high_<r>`` and, with
        ``eval_train``, ``train``, ``train_low_<r>``; and ``num_classes``.
    """
    from jaxhfc import data

    train, test = datasets if datasets is not None else load_splits(config)
    if config.train_subset is not None:
        train = data.balanced_subset(train, config.train_subset, seed=config.data_seed)
    if config.shuffle_labels > 0:
        train = data.shuffle_labels(train, fraction=config.shuffle_labels, seed=config.data_seed)
    kind = None if config.train_filter == "none" else config.train_filter
    train_used = data.filter_dataset(train, kind, config.train_radius) if kind else train

    def arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(data.to_model_input(ds, scaling=config.scaling), np.float32),
                np.asarray(ds.labels, np.int32))

    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {"test": arrays(test)}
    for r in config.eval_radii:
        sets[eval_set_name("test_low", r)] = arrays(data.filter_dataset(test, "low", r))
        sets[eval_set_name("test_high", r)] = arrays(data.filter_dataset(test, "high", r))
    if config.eval_train:
        n_sub = config.eval_train_subset
        base, used = train, train_used
        if n_sub is not None and n_sub < len(train.labels):
            # The same rows for the used set and its LFC copies: subset the unfiltered set,
            # then filter (filtering is per image, so this equals subsetting the filtered set).
            base = data.balanced_subset(train, n_sub, seed=config.data_seed + 1)
            used = data.filter_dataset(base, kind, config.train_radius) if kind else base
        sets["train"] = arrays(used)
        for r in config.eval_radii:
            sets[eval_set_name("train_low", r)] = arrays(data.filter_dataset(base, "low", r))
    return {"train": arrays(train_used), "eval": sets, "num_classes": int(train.num_classes)}


# ----------------------------------------------------------------------------- run folder


def _run_info(config: TrainConfig, mesh: Mesh, *, num_classes: int, input_shape: Sequence[int]) -> dict[str, Any]:
    from jaxhfc import results

    return {
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "num_classes": int(num_classes),
        "input_shape": [int(d) for d in input_shape],
        "devices": [str(d) for d in mesh.devices.reshape(-1)],
        **results.environment_info(),
    }


def _checkpoint_manager(run_dir: pathlib.Path, keep: int, *, read_only: bool = False) -> Any:
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=not read_only)
    return ocp.CheckpointManager((run_dir / "checkpoints").resolve(), options=options)


def _restore(manager: Any, step: int, template: TrainState) -> TrainState:
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


# ----------------------------------------------------------------------------- fit


def _adversary(config: TrainConfig) -> Callable[..., jax.Array] | None:
    if config.adv_eps <= 0:
        return None
    from jaxhfc import attacks

    # XLA:CPU runs convolutions inside a while loop several times slower than unrolled
    # (measured in benchmarks/attacks.py), so the PGD loop is unrolled on CPU only.
    return attacks.madry_adversary(eps=config.adv_eps, step_size=config.adv_step_size, steps=config.adv_steps,
                                   norm=config.adv_norm, random_start=config.adv_random_start,
                                   unroll=jax.default_backend() == "cpu")


def _regularizer(config: TrainConfig) -> Callable[[Any], jax.Array] | None:
    if config.kernel_penalty <= 0:
        return None
    from jaxhfc import kernels

    return kernels.smoothness_penalty


#: Fields of :class:`TrainConfig` that never change the compiled training program: the data
#: *values* (not their shapes), the seeds and the evaluation/checkpoint settings. Every other
#: field is part of :func:`population_key` and of the compiled-step cache key, so a new field
#: costs a recompile (never a stale program) until it is listed here.
DATA_FIELDS = ("data_dir", "data_source", "data_seed", "shuffle_labels", "train_filter", "train_radius",
               "scaling", "seed")
#: Evaluation and checkpoint settings (see :data:`DATA_FIELDS`).
EVAL_FIELDS = ("num_test", "eval_every", "eval_batch_size", "eval_radii", "eval_train", "eval_train_subset",
               "checkpoint_every", "keep_checkpoints")
#: Scalar hyper-parameters that may differ between the models of one population (each
#: model's update is scaled by its own value inside the shared program).
HPARAM_FIELDS = ("learning_rate",)


def _program_key(config: TrainConfig) -> tuple[tuple[str, Any], ...]:
    """Key of one model's compiled program: every field but the data and evaluation ones."""
    skip = set(DATA_FIELDS) | set(EVAL_FIELDS)
    return tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(config) if f.name not in skip)


def population_key(config: TrainConfig) -> tuple[tuple[str, Any], ...]:
    """Hashable key of the compiled training program of a config.

    Configs with equal keys can train together in one :func:`fit_population` call: they
    differ at most in :data:`DATA_FIELDS` (seed, data seed, training filter and radius,
    shuffled labels, scaling, data source), :data:`EVAL_FIELDS` and :data:`HPARAM_FIELDS`
    (learning rate). The key is every other field as ``(name, value)`` pairs, so a field
    added to :class:`TrainConfig` separates populations (and recompiles) until it is
    declared data, evaluation or hyper-parameter only.
    """
    return tuple((name, v) for name, v in _program_key(config) if name not in HPARAM_FIELDS)


@functools.lru_cache(maxsize=16)
def _cached_loop(model: nn.Module, mesh: Mesh, key: tuple[tuple[str, Any], ...], total_steps: int,
                 num_classes: int, population: int | None, shared_images: bool,
                 shared_labels: bool) -> tuple[optax.GradientTransformation, Callable[..., Any]]:
    """Optimizer and jitted training loop for a :func:`population_key`, cached so repeated
    fits reuse the compilation."""
    c = TrainConfig(**dict(key))
    # a population scales each model's update by its own learning rate (make_train_loop)
    tx = make_optimizer(optimizer=c.optimizer, learning_rate=1.0 if population else c.learning_rate,
                        momentum=c.momentum,
                        weight_decay=c.weight_decay, schedule=c.schedule, total_steps=total_steps)
    loop = make_train_loop(
        model, tx, mesh, global_batch=c.batch_size, num_classes=num_classes,
        label_smoothing=c.label_smoothing, mixup_alpha=c.mixup_alpha,
        crop_pad=4 if c.augment_crop else 0, flip=c.augment_flip,
        regularizer=_regularizer(c), regularizer_weight=c.kernel_penalty, adversary=_adversary(c),
        population=population, shared_images=shared_images, shared_labels=shared_labels,
    )
    return tx, loop


def _loop_plan(steps_per_epoch: int, steps_per_call: int | None) -> tuple[int, int]:
    """``(S, calls in flight)``: steps per compiled call and calls sent before the oldest is fetched.

    On CPU one step per call (XLA:CPU runs convolutions inside while loops several times
    slower: benchmarks/train_loop.py) and at most 8 steps in flight (fake CPU devices
    deadlock with ~50 collective steps in flight); elsewhere up to 100 steps scanned on the
    device per call, the next call queued behind the running one.
    """
    cpu = jax.default_backend() == "cpu"
    if steps_per_call is None:
        steps_per_call = 1 if cpu else 100
    if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, (int, np.integer)) or steps_per_call < 1:
        raise ValueError(f"steps_per_call must be a positive int or None; got {steps_per_call!r}")
    s = min(int(steps_per_call), steps_per_epoch)
    return s, (max(1, 8 // s) if cpu else 1)


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
    """Members with their data; configs with the same data share the prepared arrays."""
    splits: dict[Any, tuple[Any, Any]] = {}
    prepared: dict[TrainConfig, dict[str, Any]] = {}
    members = []
    for config, workdir in zip(configs, workdirs):
        data_key = dataclasses.replace(config, seed=0, eval_every=0, checkpoint_every=0, keep_checkpoints=1)
        if data_key not in prepared:
            ds = datasets
            if ds is None:
                load_key = tuple(getattr(config, f) for f in ("dataset", "data_dir", "data_source", "data_seed",
                                                               "num_train", "num_test", "num_val"))
                if load_key not in splits:
                    splits[load_key] = load_splits(config)
                ds = splits[load_key]
            prepared[data_key] = prepare_data(config, ds)
        members.append(_Member(config=config, run_dir=pathlib.Path(workdir), prepared=prepared[data_key],
                               keys=named_keys(config.seed)))
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


def _train(configs: Sequence[TrainConfig], workdirs: Sequence[Any], *, population: bool, resume: bool,
           progress: bool, datasets: tuple[Any, Any] | None,
           step_callback: Callable[[int, list[dict[str, float]]], None] | None,
           steps_per_call: int | None) -> list[RunResult]:
    """The fit loop of :func:`fit` (one model) and :func:`fit_population` (a model axis)."""
    from tqdm.auto import tqdm

    from jaxhfc import data

    t_start = time.perf_counter()
    config = configs[0]
    is_main = jax.process_index() == 0
    mesh = parallel.make_mesh(config.num_devices)
    parallel.local_batch_size(config.batch_size, mesh)  # validates divisibility
    members = _prepare_members(configs, workdirs, datasets)
    trains = [m.prepared["train"] for m in members]
    n_train = int(trains[0][0].shape[0])
    for m, (x, _) in zip(members, trains):
        if int(x.shape[0]) != n_train:
            raise ValueError(f"the models of a population must have training sets of one size; {m.run_dir} has "
                             f"{x.shape[0]}, {members[0].run_dir} {n_train}")
    if n_train < config.batch_size:
        raise ValueError(f"training set ({n_train}) is smaller than the batch size ({config.batch_size})")
    steps_per_epoch = n_train // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    num_classes = members[0].prepared["num_classes"]
    k_models = len(members)
    shared_images = all(x is trains[0][0] or np.array_equal(x, trains[0][0]) for x, _ in trains)
    shared_labels = all(y is trains[0][1] or np.array_equal(y, trains[0][1]) for _, y in trains)

    model = build_model(config, num_classes)
    tx, loop = _cached_loop(model, mesh, population_key(config) if population else _program_key(config),
                            total_steps, num_classes,
                            k_models if population else None, shared_images or not population,
                            shared_labels or not population)
    states = [create_train_state(model, tx, m.keys["init"], trains[0][0].shape[1:], mesh=mesh) for m in members]
    steps_per_call, calls_in_flight = _loop_plan(steps_per_epoch, steps_per_call)

    for m in members:
        m.run_dir.mkdir(parents=True, exist_ok=True)
        m.manager = _checkpoint_manager(m.run_dir, m.config.keep_checkpoints)
    try:
        start = _resume_step(members, resume)
        for i, m in enumerate(members):
            if start is not None:
                states[i] = _restore(m.manager, start, states[i])
                m.history = [h for h in results.read_jsonl(m.metrics_path) if h["step"] <= start]
                logger.info("resumed %s from step %d", m.run_dir, start)
            if is_main:
                if not (resume and (m.run_dir / "config.json").exists()):
                    info = _run_info(m.config, mesh, num_classes=num_classes, input_shape=trains[0][0].shape[1:])
                    results.write_json(m.run_dir / "config.json", info)
                m.metrics_path.write_text("".join(json.dumps(h) + "\n" for h in m.history))
        start_step = start or 0
        if start_step % steps_per_epoch:
            raise CheckpointError(f"checkpoint step {start_step} is not at an epoch boundary "
                                  f"({steps_per_epoch} steps per epoch)")
        start_epoch = start_step // steps_per_epoch

        def put(arrays: list[np.ndarray], shared: bool) -> jax.Array:
            return parallel.global_from_full(mesh, arrays[0] if shared else np.stack(arrays))

        images = put([x for x, _ in trains], shared_images or not population)
        labels = put([y for _, y in trains], shared_labels or not population)
        placed: dict[int, jax.Array] = {}  # models with the same data share its device copy

        def place(a: np.ndarray) -> jax.Array:
            if id(a) not in placed:
                placed[id(a)] = parallel.global_from_full(mesh, a)
            return placed[id(a)]

        for m in members:
            m.eval_sets = {name: (place(x), place(y)) for name, (x, y) in m.prepared["eval"].items()}
        step_keys = parallel.global_from_full(mesh, _stack_keys(members, population))
        rates = (parallel.global_from_full(mesh, np.asarray([m.config.learning_rate for m in members], np.float32))
                 if population else None)
        state = _stack_fn(mesh)(states) if population else states[0]
        del states
        compiled = False

        for epoch in range(start_epoch, config.epochs):
            perms = [np.asarray(data.epoch_indices(jax.random.fold_in(m.keys["data"], epoch), n_train,
                                                   config.batch_size), np.int32) for m in members]
            idx_epoch = np.stack(perms, axis=1) if population else perms[0]  # (steps, [K,] B)
            sums = np.zeros((k_models, 3))  # loss_sum, correct, count of the epoch
            t_epoch = time.perf_counter()
            t_timed, timed_steps = t_epoch, 0
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       disable=not (progress and is_main), unit="step")
            pending: list[tuple[int, jax.Array]] = []

            def drain_one() -> None:
                s0, m_dev = pending.pop(0)
                host = parallel.to_host(m_dev)
                loss = np.asarray(host["loss_sum"], np.float64).reshape(-1, k_models)
                correct = np.asarray(host["correct"], np.float64).reshape(-1, k_models)
                count = np.asarray(host["count"], np.float64).reshape(-1, k_models)
                reg = np.asarray(host["regularizer"], np.float64).reshape(-1, k_models)
                for i in range(loss.shape[0]):
                    g = epoch * steps_per_epoch + s0 + i + 1
                    step_loss = loss[i] / count[i]
                    for j, m in enumerate(members):
                        if not math.isfinite(step_loss[j]) or not math.isfinite(reg[i, j]):
                            raise FloatingPointError(
                                f"non-finite training loss {step_loss[j]} at step {g} (epoch {epoch + 1}, batch "
                                f"{s0 + i + 1}/{steps_per_epoch}) of {m.run_dir}; newest checkpoint: step "
                                f"{m.manager.latest_step()}. Lower the learning rate or check the inputs for NaN/inf.")
                    sums[:, 0] += loss[i]
                    sums[:, 1] += correct[i]
                    sums[:, 2] += count[i]
                    if step_callback is not None:
                        step_callback(g, [{"loss": float(step_loss[j]), "accuracy": float(correct[i, j] / count[i, j])}
                                          for j in range(k_models)])
                bar.update(loss.shape[0])
                bar.set_postfix(loss=f"{np.mean(sums[:, 0] / sums[:, 2]):.4f}",
                                acc=f"{np.mean(sums[:, 1] / sums[:, 2]):.3f}")

            for s0 in range(0, steps_per_epoch, steps_per_call):
                n_steps = min(steps_per_call, steps_per_epoch - s0)
                idx = parallel.global_from_full(mesh, idx_epoch[s0:s0 + n_steps], sharded=True,
                                                batch_axis=idx_epoch.ndim - 1)
                state, m_dev = loop(state, images, labels, idx, step_keys, rates)
                pending.append((s0, m_dev))
                if not compiled:  # the first call of the process compiles: wait, and time from here
                    drain_one()
                    compiled, t_timed = True, time.perf_counter()
                    continue
                timed_steps += n_steps
                while len(pending) > calls_in_flight:
                    drain_one()
            while pending:
                drain_one()
            bar.close()
            t_done = time.perf_counter()
            epoch_time = t_done - t_epoch
            img_per_s = timed_steps * config.batch_size / (t_done - t_timed) if timed_steps else float("nan")
            done = epoch + 1
            step_now = done * steps_per_epoch
            last = done == config.epochs
            due_eval = [last or (m.config.eval_every > 0 and done % m.config.eval_every == 0) for m in members]
            due_ckpt = [last or (m.config.checkpoint_every > 0 and done % m.config.checkpoint_every == 0)
                        for m in members]
            if not any(due_eval) and not any(due_ckpt):
                continue
            member_states = _unstack_fn(mesh, k_models)(state) if population else [state]
            for j, m in enumerate(members):
                if due_eval[j]:
                    record: dict[str, Any] = {
                        "epoch": done, "step": step_now, "train_loss": sums[j, 0] / sums[j, 2],
                        "train_accuracy": sums[j, 1] / sums[j, 2], "img_per_s": img_per_s,
                        "epoch_time_s": epoch_time, "time_s": time.perf_counter() - t_start,
                        "accuracy": {}, "loss": {},
                    }
                    if population:
                        record["population"] = k_models
                    for name, (x, y) in m.eval_sets.items():
                        r = evaluate(member_states[j], model, mesh, x, y, batch_size=m.config.eval_batch_size)
                        record["accuracy"][name] = r["accuracy"]
                        record["loss"][name] = r["loss"]
                    m.history.append(record)
                    if is_main:
                        results.append_jsonl(m.metrics_path, record)
                    logger.info("%s epoch %d step %d train loss %.4f acc %.4f test acc %.4f (%.0f img/s per model)",
                                m.run_dir, done, step_now, record["train_loss"], record["train_accuracy"],
                                record["accuracy"].get("test", float("nan")), img_per_s)
                if due_ckpt[j]:
                    import orbax.checkpoint as ocp

                    m.manager.save(step_now, args=ocp.args.StandardSave(member_states[j]))
            del member_states
        final = _unstack_fn(mesh, k_models)(state) if population else [state]
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

    - ``config.json``: ``{"config", "config_hash", "versions", "devices", "device_kind",
      "process_count", "git_commit"}``;
    - ``metrics.jsonl``: one JSON object per evaluation with ``epoch``, ``step``,
      ``train_loss``, ``train_accuracy`` (means over the epoch's training batches, with
      augmentation/mixup/adversarial inputs as trained), ``img_per_s`` (training images
      per second in that epoch, compilation excluded), ``epoch_time_s``, ``time_s`` (wall
      time since the start of this process's run), ``accuracy: {set: value}`` and
      ``loss: {set: value}`` for the sets of :func:`prepare_data` (``test``,
      ``test_low_8``, ``test_high_8``, ``train``, ``train_low_4``, ...; see
      :func:`eval_set_name`);
    - ``checkpoints/<step>/``: orbax checkpoints every ``checkpoint_every`` epochs and at the
      end (the newest ``keep_checkpoints`` are kept).

    The steps run on the devices in calls of ``steps_per_call`` steps (:func:`make_train_loop`),
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
            fetches; 100 elsewhere; at most one epoch).

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
    map (:func:`make_train_loop`): each model has its own parameters, optimizer state,
    seed (initialisation, epoch order, augmentation, dropout), training data (filter and
    radius, shuffled labels) and run folder, and ends as it would with :func:`fit` alone
    (to float tolerance: batched convolutions round differently). Each run folder gets what
    :func:`fit` writes (``config.json``, ``metrics.jsonl`` with ``"population": K`` added,
    checkpoints on its own schedule) and can be resumed, evaluated and loaded alone. Data
    shared by several models (e.g. seeds of one config) is prepared and held once. Models
    may also differ in their learning rate (:data:`HPARAM_FIELDS`): the program's optimizer
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
            None: False on CPU, True elsewhere.

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
        if population_key(c) != key:
            diff = sorted(name for (name, a), (_, b) in zip(key, population_key(c)) if a != b)
            raise ValueError(f"configs of one population may differ only in "
                             f"{DATA_FIELDS + EVAL_FIELDS + HPARAM_FIELDS}; "
                             f"these differ in {diff} (group configs by train.population_key)")
    if vmap is None:
        vmap = jax.default_backend() != "cpu"
    if not vmap:
        return [_train([c], [w], population=False, resume=resume, progress=progress, datasets=datasets,
                       step_callback=step_callback, steps_per_call=steps_per_call)[0]
                for c, w in zip(configs, workdirs)]
    return _train(configs, workdirs, population=True, resume=resume, progress=progress, datasets=datasets,
                  step_callback=step_callback, steps_per_call=steps_per_call)


def load_run(run_dir: str | os.PathLike[str], *, step: int | None = None,
             mesh: Mesh | None = None) -> tuple[TrainConfig, TrainState, nn.Module]:
    """Load a run folder written by :func:`fit`: its config, a checkpointed state and the model.

    Args:
        run_dir: The run folder (with ``config.json`` and ``checkpoints/``).
        step: Checkpoint step (default: the newest).
        mesh: Mesh to place the state on (default: all devices).

    Returns:
        ``(config, state, model)``; ``state`` replicated on ``mesh``.
    """
    run_dir = pathlib.Path(run_dir)
    info_path = run_dir / "config.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} not found: expected a run folder written by jaxhfc.train.fit")
    info = json.loads(info_path.read_text())
    config = TrainConfig.from_dict(info["config"])
    mesh = mesh or parallel.make_mesh(None)
    manager = _checkpoint_manager(run_dir, config.keep_checkpoints, read_only=True)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
        # Shapes only: the number of classes and input shape come from the checkpoint template.
        num_classes = int(info.get("num_classes", 10))
        model = build_model(config, num_classes)
        tx = make_optimizer(optimizer=config.optimizer, learning_rate=config.learning_rate,
                            momentum=config.momentum, weight_decay=config.weight_decay,
                            schedule=config.schedule, total_steps=1)
        template = create_train_state(model, tx, named_keys(config.seed)["init"],
                                      tuple(info.get("input_shape", (32, 32, 3))), mesh=mesh)
        state = _restore(manager, step, template)
    finally:
        manager.close()
    return config, state, model
