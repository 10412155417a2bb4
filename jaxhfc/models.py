"""Flax models for 32x32 images: the common CIFAR ResNet18, the paper's released network, a small CNN.

All models take *unit-scale* input ``x: (B, H, W, C) float32`` (see docs/architecture.md:
original images / 255, filtered images scaled per image) and, when ``normalize=True``,
subtract the CIFAR-10 channel mean and divide by the channel std inside the model, so
attacks can work on [0, 1] images directly. They return ``logits: (B, num_classes) float32``.

Call convention (Flax linen)::

    model = get_model("resnet18", num_classes=10)
    variables = model.init({"params": key}, x, train=False)
    logits = model.apply(variables, x, train=False)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": key})      # rngs only when dropout > 0

Conventions shared by every model here:

- The first convolution is named ``conv_init``: its kernel is at
  ``params["conv_init"]["kernel"]`` with shape ``(3, 3, C_in, C_out)`` (HWIO). The
  ``jaxhfc.kernels`` code finds the first layer through :data:`FIRST_CONV`.
- Convolutions have no bias (as in the paper's released code); the final ``Dense`` has one.
- ``norm="batch"``: BatchNorm with momentum 0.9, epsilon 1e-5, scale 1 and bias 0 at init;
  ``axis_name`` (``"data"`` inside the mapped training step) makes the batch statistics
  synchronised over devices. ``norm="none"`` removes every normalisation layer.
- ``bn_eval`` chooses the statistics BatchNorm uses at test time (``train=False``):
  ``"running"`` (default): the running averages collected in training (the usual BatchNorm);
  ``"batch"``: the paper code's BatchNorm (``tf.nn.moments`` over N, H, W), which normalises
  with the *current batch's* mean and variance in training and at test time alike, keeps no
  running averages (no ``batch_stats`` collection), uses epsilon 1e-3, and has no
  normalisation right before the head (``paper_resnet`` drops its ``norm_final``). At test
  time the statistics are those of the batch given to ``apply`` (per device when sharded),
  so a prediction depends on the other images of its batch, as in the paper's code.
- ``dropout`` > 0 applies dropout to the pooled features right before the final ``Dense``
  (the paper puts dropout on the fully connected layers).
- ``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and the
  logits are returned as float32.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "FIRST_CONV",
    "MODEL_NAMES",
    "BN_EVAL_MODES",
    "BasicBlock",
    "BatchStatNorm",
    "PreActBlock",
    "ResNet",
    "ResNet18",
    "PaperResNet",
    "SmallCNN",
    "get_model",
    "parse_dtype",
    "count_params",
]

#: Name of the first convolution in every model; params path ``params[FIRST_CONV]["kernel"]``.
FIRST_CONV = "conv_init"

#: Model names understood by :func:`get_model`.
MODEL_NAMES = ("resnet18", "paper_resnet", "small_cnn")

_NORMS = ("batch", "none")

#: Test-time BatchNorm statistics understood by :func:`get_model` (see the module docstring).
BN_EVAL_MODES = ("running", "batch")

# PyTorch/torchvision ResNet convention: He-normal with fan_out.
_he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_glorot_uniform = nn.initializers.glorot_uniform()


def parse_dtype(dtype: Any) -> jnp.dtype:
    """Return a jnp dtype from a dtype or a name ("float32", "bfloat16", "bf16", "float16")."""
    if isinstance(dtype, str):
        aliases = {"f32": "float32", "fp32": "float32", "bf16": "bfloat16", "f16": "float16", "fp16": "float16"}
        name = aliases.get(dtype.lower(), dtype.lower())
        if name not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be one of 'float32', 'bfloat16', 'float16'; got {dtype!r}")
        return jnp.dtype(name)
    return jnp.dtype(dtype)


def _check_input(x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"model input must be (B, H, W, C) float, unit scale; got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"model input must be float (unit scale, e.g. datasets.to_model_input); got dtype {x.dtype}"
        )


def _normalize_input(x: jax.Array) -> jax.Array:
    # Lazy import: jaxhfc.data owns the CIFAR-10 statistics (unit scale).
    from jaxhfc.datasets.core import CIFAR10_MEAN, CIFAR10_STD

    mean = jnp.asarray(CIFAR10_MEAN, jnp.float32)
    std = jnp.asarray(CIFAR10_STD, jnp.float32)
    return (x - mean) / std


def _prepare_input(x: jax.Array, normalize: bool) -> jax.Array:
    """Check the model input and apply the optional CIFAR-10 mean/std normalisation."""
    _check_input(x)
    return _normalize_input(x) if normalize else x


class BatchStatNorm(nn.Module):
    """BatchNorm that always normalises with the current batch's statistics (paper code).

    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` with ``mean`` and ``var`` (the
    biased variance, as ``tf.nn.moments``) over every axis but the last, averaged over
    ``axis_name`` when given. ``scale`` starts at 1 and ``bias`` at 0; there are no running
    averages. Statistics are computed in float32.
    """

    epsilon: float = 1e-3
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        xf = x.astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(xf, axis=axes)
        mean_sq = jnp.mean(jnp.square(xf), axis=axes)
        if self.axis_name is not None:
            mean, mean_sq = jax.lax.pmean((mean, mean_sq), self.axis_name)
        var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(self.dtype)


def _make_norm(norm: str, train: bool, dtype: Any, axis_name: str | None,
               bn_eval: str = "running") -> Callable[..., Any]:
    """Return a constructor ``f(name=...) -> layer`` for the chosen normalisation."""
    if bn_eval not in BN_EVAL_MODES:
        raise ValueError(f"bn_eval must be one of {BN_EVAL_MODES}; got {bn_eval!r}")
    if norm == "batch" and bn_eval == "batch":
        return functools.partial(BatchStatNorm, epsilon=1e-3, dtype=dtype,
                                 axis_name=axis_name if train else None)
    if norm == "batch":
        return functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=dtype,
            axis_name=axis_name if train else None,
        )
    if norm == "none":
        return lambda name=None: (lambda y: y)
    raise ValueError(f"norm must be one of {_NORMS}; got {norm!r}")


def _head(x: jax.Array, *, num_classes: int, dropout: float, train: bool, dtype: Any,
          kernel_init: Callable[..., Any]) -> jax.Array:
    """Global average pool -> dropout -> Dense -> float32 logits."""
    x = jnp.mean(x, axis=(1, 2))
    if dropout > 0.0:
        x = nn.Dropout(rate=dropout, deterministic=not train, name="dropout")(x)
    x = nn.Dense(num_classes, dtype=dtype, kernel_init=kernel_init, name="head")(x)
    return x.astype(jnp.float32)


class BasicBlock(nn.Module):
    """ResNet v1 basic block: conv3x3-norm-relu-conv3x3-norm + shortcut, relu.

    The shortcut is a 1x1 strided conv + norm (projection) when the stride is not 1 or the
    width changes, else the identity. 3x3 convs pad (1, 1) on each side (PyTorch parity).
    """

    features: int
    strides: int
    norm: Callable[..., Any]
    dtype: Any = jnp.float32
    kernel_init: Callable[..., Any] = _he_normal_fan_out

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=self.kernel_init)
        y = conv(self.features, (3, 3), strides=self.strides, padding=((1, 1), (1, 1)), name="conv1")(x)
        y = nn.relu(self.norm(name="norm1")(y))
        y = conv(self.features, (3, 3), strides=1, padding=((1, 1), (1, 1)), name="conv2")(y)
        y = self.norm(name="norm2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, (1, 1), strides=self.strides, padding="VALID", name="shortcut_conv")(x)
            x = self.norm(name="shortcut_norm")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR ResNet with basic blocks: 3x3 stem (no max-pool), 4 stages, GAP, Dense.

    Attributes:
        stage_sizes: Number of blocks per stage; stage ``i`` has width ``width * 2**i`` and
            stride 1 for the first stage, 2 for the others.
        num_classes: Number of logits.
        width: Width of the stem and of the first stage (64 for ResNet18).
        norm: ``"batch"`` or ``"none"``.
        dropout: Dropout rate before the final Dense.
        dtype: Compute dtype; parameters are float32.
        normalize: Apply CIFAR-10 mean/std normalisation to the unit-scale input.
        axis_name: Mesh axis over which BatchNorm statistics are averaged in training.
        kernel_init: Conv kernel initialiser (He-normal, fan_out).
    """

    stage_sizes: Sequence[int]
    num_classes: int = 10
    width: int = 64
    norm: str = "batch"
    dropout: float = 0.0
    dtype: Any = jnp.float32
    normalize: bool = False
    axis_name: str | None = None
    kernel_init: Callable[..., Any] = _he_normal_fan_out
    bn_eval: str = "running"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Args: x: (B, H, W, C) float, unit scale. Returns: (B, num_classes) float32 logits."""
        x = _prepare_input(x, self.normalize)
        norm = _make_norm(self.norm, train, self.dtype, self.axis_name, self.bn_eval)
        x = nn.Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                    kernel_init=self.kernel_init, name=FIRST_CONV)(x)
        x = nn.relu(norm(name="norm_init")(x))
        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                strides = 2 if (i > 0 and j == 0) else 1
                x = BasicBlock(self.width * 2**i, strides, norm, dtype=self.dtype,
                               kernel_init=self.kernel_init, name=f"stage{i + 1}_block{j + 1}")(x)
        return _head(x, num_classes=self.num_classes, dropout=self.dropout, train=train,
                     dtype=self.dtype, kernel_init=nn.initializers.lecun_normal())


#: The common CIFAR ResNet18 (11,173,962 parameters for 10 classes with BatchNorm).
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))


class PreActBlock(nn.Module):
    """Pre-activation basic block of the paper's released network (option-A shortcut).

    ``norm-relu-conv3x3(stride)-norm-relu-conv3x3`` plus a shortcut. With
    ``activate_before_residual`` (first block of the network) the shortcut starts after the
    first norm-relu. When the width or stride changes the shortcut is a ``stride x stride``
    average pool (stride ``stride``, VALID) followed by zero-padding of the channels,
    ``(out - in) // 2`` on each side (no parameters). Convs use 'SAME' padding (as TF).
    """

    features: int
    strides: int
    norm: Callable[..., Any]
    activate_before_residual: bool = False
    dtype: Any = jnp.float32
    kernel_init: Callable[..., Any] = _glorot_uniform

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, padding="SAME", dtype=self.dtype,
                                 kernel_init=self.kernel_init)
        if self.activate_before_residual:
            x = nn.relu(self.norm(name="norm1")(x))
            shortcut = x
            y = x
        else:
            shortcut = x
            y = nn.relu(self.norm(name="norm1")(x))
        y = conv(self.features, (3, 3), strides=self.strides, name="conv1")(y)
        y = nn.relu(self.norm(name="norm2")(y))
        y = conv(self.features, (3, 3), strides=1, name="conv2")(y)
        c_in = shortcut.shape[-1]
        if self.strides != 1 or c_in != self.features:
            s = self.strides
            shortcut = nn.avg_pool(shortcut, (s, s), strides=(s, s), padding="VALID")
            pad = (self.features - c_in) // 2
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (pad, self.features - c_in - pad)))
        return y + shortcut.astype(y.dtype)


class PaperResNet(nn.Module):
    """The network of the paper's released code (CIFAR ResNet, widths 16/32/64).

    ``conv_init`` (3x3, ``width`` channels) -> 3 stages of ``blocks_per_stage`` pre-activation
    basic blocks (widths ``width * (1, 2, 4)``, strides 1/2/2, option-A shortcuts) -> norm ->
    relu -> global average pool -> dropout -> Dense. With the defaults: 1 + 30 convs + 1
    Dense = 32 weight layers, all convs without bias, Glorot-uniform init, no BatchNorm.
    """

    num_classes: int = 10
    width: int = 16
    blocks_per_stage: int = 5
    norm: str = "none"
    dropout: float = 0.0
    dtype: Any = jnp.float32
    normalize: bool = False
    axis_name: str | None = None
    kernel_init: Callable[..., Any] = _glorot_uniform
    bn_eval: str = "running"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Args: x: (B, H, W, C) float, unit scale. Returns: (B, num_classes) float32 logits."""
        x = _prepare_input(x, self.normalize)
        norm = _make_norm(self.norm, train, self.dtype, self.axis_name, self.bn_eval)
        x = nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                    kernel_init=self.kernel_init, name=FIRST_CONV)(x)
        for i, mult in enumerate((1, 2, 4)):
            for j in range(self.blocks_per_stage):
                x = PreActBlock(self.width * mult, 2 if (i > 0 and j == 0) else 1, norm,
                                activate_before_residual=(i == 0 and j == 0), dtype=self.dtype,
                                kernel_init=self.kernel_init, name=f"stage{i + 1}_block{j + 1}")(x)
        if not (self.norm == "batch" and self.bn_eval == "batch"):  # paper code: no BN before the head
            x = norm(name="norm_final")(x)
        x = nn.relu(x)
        return _head(x, num_classes=self.num_classes, dropout=self.dropout, train=train,
                     dtype=self.dtype, kernel_init=self.kernel_init)


class SmallCNN(nn.Module):
    """A tiny CNN for tests and quick mode.

    ``conv_init`` 3x3 (width) -> norm -> relu, then three times conv 3x3 stride 2 (2, 4, 8 x
    width) -> norm -> relu, then global average pool -> dropout -> Dense. The receptive
    field (31 pixels) covers the object layout of the synthetic data at 32x32.
    """

    num_classes: int = 10
    width: int = 16
    norm: str = "batch"
    dropout: float = 0.0
    dtype: Any = jnp.float32
    normalize: bool = False
    axis_name: str | None = None
    kernel_init: Callable[..., Any] = _he_normal_fan_out
    bn_eval: str = "running"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Args: x: (B, H, W, C) float, unit scale. Returns: (B, num_classes) float32 logits."""
        x = _prepare_input(x, self.normalize)
        norm = _make_norm(self.norm, train, self.dtype, self.axis_name, self.bn_eval)
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding="SAME", use_bias=False,
                                 dtype=self.dtype, kernel_init=self.kernel_init)
        x = nn.relu(norm(name="norm_init")(conv(self.width, name=FIRST_CONV)(x)))
        x = nn.relu(norm(name="norm2")(conv(2 * self.width, strides=2, name="conv2")(x)))
        x = nn.relu(norm(name="norm3")(conv(4 * self.width, strides=2, name="conv3")(x)))
        x = nn.relu(norm(name="norm4")(conv(8 * self.width, strides=2, name="conv4")(x)))
        return _head(x, num_classes=self.num_classes, dropout=self.dropout, train=train,
                     dtype=self.dtype, kernel_init=nn.initializers.lecun_normal())


_DEFAULTS = {
    # name: (class, default width, default norm)
    "resnet18": (ResNet18, 64, "batch"),
    "paper_resnet": (PaperResNet, 16, "none"),
    "small_cnn": (SmallCNN, 16, "batch"),
}


def get_model(
    name: str,
    *,
    num_classes: int = 10,
    width: int | None = None,
    norm: str | None = None,
    dropout: float = 0.0,
    dtype: Any = jnp.float32,
    normalize: bool = False,
    axis_name: str | None = None,
    bn_eval: str = "running",
) -> nn.Module:
    """Build a model by name.

    Args:
        name: One of ``"resnet18"``, ``"paper_resnet"``, ``"small_cnn"``.
        num_classes: Number of output logits.
        width: Base width (default: 64 for resnet18, 16 for paper_resnet and small_cnn).
        norm: ``"batch"`` or ``"none"`` (default: ``"batch"`` for resnet18 and small_cnn,
            ``"none"`` for paper_resnet, as in the paper's code).
        dropout: Dropout rate in [0, 1) applied before the final Dense.
        dtype: Compute dtype (``jnp.float32``, ``jnp.bfloat16`` or a name); params are float32.
        normalize: Apply CIFAR-10 mean/std normalisation inside the model.
        axis_name: Mesh axis for synchronised BatchNorm statistics in training (the training
            step sets ``"data"`` itself through ``model.clone(axis_name=...)``).
        bn_eval: BatchNorm statistics at test time: ``"running"`` (running averages) or
            ``"batch"`` (the current batch's, as the paper's code; see the module docstring).

    Returns:
        An unbound ``flax.linen.Module``; ``apply(variables, x, train=...)`` maps
        ``(B, H, W, C)`` unit-scale floats to ``(B, num_classes)`` float32 logits.
    """
    if name not in _DEFAULTS:
        raise ValueError(f"model name must be one of {MODEL_NAMES}; got {name!r}")
    cls, default_width, default_norm = _DEFAULTS[name]
    norm = default_norm if norm is None else norm
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}; got {norm!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    if bn_eval not in BN_EVAL_MODES:
        raise ValueError(f"bn_eval must be one of {BN_EVAL_MODES}; got {bn_eval!r}")
    width = default_width if width is None else int(width)
    if width < 1:
        raise ValueError(f"width must be >= 1; got {width}")
    return cls(num_classes=num_classes, width=width, norm=norm, dropout=float(dropout),
               dtype=parse_dtype(dtype), normalize=bool(normalize), axis_name=axis_name, bn_eval=bn_eval)


def count_params(params: Any) -> int:
    """Total number of scalar parameters in a pytree."""
    return int(sum(int(p.size) for p in jax.tree_util.tree_leaves(params)))
