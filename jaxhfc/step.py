"""The training step: state, keys, optimizer, model, and the data-parallel step and loop.

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
  the device index (``fold_in(key, axis_index)``). The epoch permutations of
  :func:`jaxhfc.fit.fit` are ``pipeline.epoch_indices(fold_in(data_key, epoch), ...)``, so a
  resumed run is bit-identical to an uninterrupted one.
- The loop (:func:`make_train_loop`) runs ``S`` steps per compiled call (a ``lax.scan`` when
  ``S > 1``, the plain step when ``S == 1``) and returns every step's metrics. With
  ``population=K`` the state, indices and keys carry a leading model axis and the step is
  ``vmap``-ed over it inside the data-parallel map (K models in one program).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, PartitionSpec as P

from jaxhfc import kernels, models, parallel, pipeline
from jaxhfc.config import (OPTIMIZERS, SCHEDULES, AdversaryConfig, AugmentConfig, NetConfig, OptimConfig,
                           TrainConfig)
from jaxhfc.parallel import DATA_AXIS

__all__ = [
    "TrainState",
    "named_keys",
    "make_optimizer",
    "optimizer_from_config",
    "build_model",
    "create_train_state",
    "abstract_train_state",
    "make_train_loop",
    "make_train_step",
    "STEP_OPTIONS",
]


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
        optimizer: ``adam`` (AdamW when ``weight_decay`` > 0) or ``sgd`` (momentum, weight decay
            added to the gradient as in PyTorch).
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
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    if optimizer == "adam":
        return optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
    if optimizer == "sgd":
        sgd = optax.sgd(lr, momentum=momentum if momentum else None)
        return optax.chain(optax.add_decayed_weights(weight_decay), sgd) if weight_decay else sgd
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")


def optimizer_from_config(optim: OptimConfig | TrainConfig, total_steps: int, *,
                          learning_rate: float | None = None) -> optax.GradientTransformation:
    """:func:`make_optimizer` of an optimisation section (or a config's), over ``total_steps``
    steps; ``learning_rate`` replaces the section's (a population's programs use 1)."""
    o = optim.optim if isinstance(optim, TrainConfig) else optim
    return make_optimizer(optimizer=o.name, learning_rate=o.learning_rate if learning_rate is None else learning_rate,
                          momentum=o.momentum, weight_decay=o.weight_decay, schedule=o.schedule,
                          total_steps=total_steps)


def build_model(config: TrainConfig | NetConfig, num_classes: int) -> nn.Module:
    """The model a config (or its ``net`` section) describes."""
    net = config.net if isinstance(config, TrainConfig) else config
    return models.get_model(net.name, num_classes=num_classes, width=net.width, norm=net.norm,
                            dropout=net.dropout, dtype=net.dtype, normalize=net.normalize, bn_eval=net.bn_eval)


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
    return _state_fn(tx, mesh)(variables)


def abstract_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: Sequence[int],
    *,
    mesh: Mesh | None = None,
) -> TrainState:
    """The shapes, dtypes and (with ``mesh``: replicated) shardings of :func:`create_train_state`'s
    result, as ``jax.ShapeDtypeStruct`` leaves, without computing or compiling anything: the
    template to restore a checkpoint into (:func:`jaxhfc.runs.restore_checkpoint`)."""
    sharding = None if mesh is None else parallel.replicated(mesh)
    init = _init_fn(model, tuple(int(d) for d in input_shape), None)
    shapes = jax.eval_shape(lambda key: _new_state(tx, init(key)), jax.random.key(0))
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)


def _new_state(tx: optax.GradientTransformation, variables: dict[str, Any]) -> TrainState:
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def _state_fn(tx: optax.GradientTransformation, mesh: Mesh | None) -> Callable[[dict[str, Any]], TrainState]:
    """The jitted ``variables -> TrainState``, one per (optimizer, mesh): the models of a driver
    share the optimizer of their settings (:func:`jaxhfc.fit` caches it), so they share one
    compiled program instead of compiling one each (about 0.1 s a model on a CPU)."""
    try:
        return _cached_state_fn(tx, mesh)
    except TypeError:  # an unhashable optimizer: a program of its own
        return _cached_state_fn.__wrapped__(tx, mesh)


@functools.lru_cache(maxsize=32)
def _cached_state_fn(tx: optax.GradientTransformation, mesh: Mesh | None) -> Callable[[dict[str, Any]], TrainState]:
    return jax.jit(functools.partial(_new_state, tx), out_shardings=None if mesh is None else parallel.replicated(mesh))


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
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, positions)
    return jax.vmap(lambda k, xi: pipeline.augment(k, xi[None], crop_pad=crop_pad, flip=flip)[0])(keys, x)


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
            x, targets = pipeline.mixup(jax.random.fold_in(jax.random.fold_in(rng("data"), 1), dev), x, targets,
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


#: Keyword options of one training step, shared by :func:`make_train_step` and :func:`make_train_loop`.
STEP_OPTIONS = ("label_smoothing", "mixup_alpha", "crop_pad", "flip", "regularizer", "regularizer_weight",
                "adversary")


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    global_batch: int,
    num_classes: int,
    **options: Any,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build the jitted data-parallel step ``step(state, batch, keys) -> (state, metrics)``.

    One step of :func:`make_train_loop` (which runs many steps per call).

    Args:
        model: The model (its BatchNorm is given ``axis_name="data"`` here).
        tx: The optax optimizer.
        mesh: 1-D mesh over ``"data"``.
        global_batch: B, the global batch size (divisible by the device count).
        num_classes: Number of classes (for one-hot targets).
        **options: The step options of :func:`make_train_loop` (:data:`STEP_OPTIONS`:
            ``label_smoothing``, ``mixup_alpha``, ``crop_pad``, ``flip``, ``regularizer``,
            ``regularizer_weight``, ``adversary``), with the same defaults and meanings.

    Returns:
        ``step(state, batch, keys)`` with ``state`` a replicated :class:`TrainState`
        (donated), ``batch = (images (N,H,W,C) float32 replicated, labels (N,) int32
        replicated, idx (B,) int32 sharded over "data")`` and ``keys`` a dict of replicated
        keys ``data``, ``dropout``, ``attack``. ``metrics`` (replicated scalars): ``loss_sum``
        (sum of per-example cross entropies), ``correct`` (argmax == label count),
        ``count`` (B), ``regularizer`` (its unweighted value).
    """
    unknown = sorted(set(options) - set(STEP_OPTIONS))
    if unknown:
        raise TypeError(f"make_train_step got unknown options {unknown}; expected some of {list(STEP_OPTIONS)}")
    parallel.local_batch_size(global_batch, mesh)  # validates divisibility
    loop = make_train_loop(model, tx, mesh, global_batch=global_batch, num_classes=num_classes, **options)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state: TrainState, batch: tuple[jax.Array, jax.Array, jax.Array],
             keys: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        images, labels, idx = batch
        if tuple(idx.shape) != (global_batch,):
            raise ValueError(f"idx must have shape ({global_batch},); got {tuple(idx.shape)}")
        state, m = loop(state, images, labels, idx[None], keys)
        return state, jax.tree_util.tree_map(lambda a: a[0], m)

    return step


# ----------------------------------------------------------------------------- the compiled loop of a config


def _adversary(adversary: AdversaryConfig, unroll: bool | None = None) -> Callable[..., jax.Array] | None:
    """The step's adversary of an ``adversary`` section (None: no adversarial training), its PGD
    loop unrolled when ``unroll`` (the CPU form: XLA:CPU runs convolutions inside a while loop
    several times slower, benchmarks/attacks.py; None: the form of
    :func:`jaxhfc.parallel.accelerator_loops`)."""
    if adversary.eps <= 0:
        return None
    if unroll is None:
        unroll = not parallel.accelerator_loops()
    from jaxhfc import attacks  # only for adversarial training

    return attacks.madry_adversary(eps=adversary.eps, step_size=adversary.step_size, steps=adversary.steps,
                                   norm=adversary.norm, random_start=adversary.random_start, unroll=unroll)


def _regularizer(optim: OptimConfig) -> Callable[[Any], jax.Array] | None:
    """The step's regularizer of an ``optim`` section (None: no kernel penalty)."""
    if optim.kernel_penalty <= 0:
        return None
    return kernels.smoothness_penalty


@functools.lru_cache(maxsize=16)
def _cached_loop(model: nn.Module, mesh: Mesh, optim: OptimConfig, augment: AugmentConfig,
                 adversary: AdversaryConfig, total_steps: int, num_classes: int, population: int | None,
                 shared_images: bool, shared_labels: bool,
                 unroll_adversary: bool) -> tuple[optax.GradientTransformation, Callable[..., Any]]:
    """Optimizer and jitted training loop, cached so repeated fits reuse the compilation.

    The cache key is the arguments: the model (the ``net`` section and the number of
    classes), the mesh (``run.num_devices``), and the ``optim``, ``augment`` and
    ``adversary`` sections whole, the only parts of a config the step reads; a field added to
    one of them is in the key without being listed. A population passes ``optim`` with
    learning rate 1 (each model's update is scaled by its own rate: :func:`make_train_loop`).
    ``unroll_adversary``: the form of adversarial training's PGD loop (:func:`_adversary`).
    """
    tx = optimizer_from_config(optim, total_steps)
    loop = make_train_loop(
        model, tx, mesh, global_batch=optim.batch_size, num_classes=num_classes,
        label_smoothing=optim.label_smoothing, mixup_alpha=augment.mixup_alpha,
        crop_pad=4 if augment.crop else 0, flip=augment.flip,
        regularizer=_regularizer(optim), regularizer_weight=optim.kernel_penalty, adversary=_adversary(adversary, unroll_adversary),
        population=population, shared_images=shared_images, shared_labels=shared_labels,
    )
    return tx, loop


def _loop_plan(steps_per_epoch: int, steps_per_call: int | None) -> tuple[int, int]:
    """``(S, calls in flight)``: steps per compiled call and calls sent before the oldest is fetched.

    By default (``steps_per_call`` None) the form of :func:`jaxhfc.parallel.accelerator_loops`:
    up to 100 steps scanned on the device per call on an accelerator, one step per call on a CPU
    (XLA:CPU runs convolutions inside while loops several times slower: benchmarks/train_loop.py).
    On a CPU at most 8 steps are in flight (fake CPU devices deadlock with ~50 collective steps
    in flight); elsewhere the next call is queued behind the running one.
    """
    cpu = jax.default_backend() == "cpu"
    if steps_per_call is None:
        steps_per_call = 100 if parallel.accelerator_loops() else 1
    if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, (int, np.integer)) or steps_per_call < 1:
        raise ValueError(f"steps_per_call must be a positive int or None; got {steps_per_call!r}")
    s = min(int(steps_per_call), steps_per_epoch)
    return s, (max(1, 8 // s) if cpu else 1)
