"""The seven sections of a training configuration, each a small frozen dataclass that
validates its own values, and the roles of their fields (what a field changes: the compiled
program, a per-model hyper-parameter, the data, or evaluation); :class:`jaxhfc.config.TrainConfig`
is made of them.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

from jaxhfc import models
from jaxhfc.datasets.transforms import SCALINGS

#: Optimizers of :func:`jaxhfc.step.make_optimizer`.
OPTIMIZERS = ("adam", "sgd")
#: Learning-rate schedules of :func:`jaxhfc.step.make_optimizer`.
SCHEDULES = ("constant", "cosine", "step")
#: Training-set filters: none, LFC (``"low"``) or HFC (``"high"``).
FILTERS = ("none", "low", "high")
#: Input scalings of :func:`jaxhfc.datasets.to_model_input`.
#: Norms of the adversary's perturbation.
ADV_NORMS = ("linf", "l2")

#: Role of a field that shapes the compiled training program (see the module docstring).
PROGRAM = "program"
#: Role of a per-model hyper-parameter inside one compiled program.
HPARAM = "hparam"
#: Role of data values and seeds.
DATA = "data"
#: Role of evaluation and checkpoint settings.
EVALUATION = "evaluation"
_ROLES = (PROGRAM, HPARAM, DATA, EVALUATION)


def _role(role: str, default: Any) -> Any:
    """A field whose role differs from its section's."""
    assert role in _ROLES, role
    return dataclasses.field(default=default, metadata={"role": role})


def _fail(message: str) -> None:
    raise ValueError(message)


def _check_choice(label: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        _fail(f"{label} must be one of {choices}; got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_min(label: str, value: Any, low: float, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_number(value) or not value >= low:
        _fail(f"{label} must be {'None or ' if optional else ''}a number >= {low}; got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Section:
    """Base of the sections: dict conversion and ``replace``."""

    #: Role of the section's fields unless a field declares its own (see :func:`role_of`).
    ROLE: ClassVar[str] = PROGRAM

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields (tuples as lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        if not isinstance(d, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict needs a mapping; got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            _fail(f"unknown {cls.__name__} field(s) {unknown}; valid: {names}")
        return cls(**dict(d))


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetConfig(_Section):
    """The network, as :func:`jaxhfc.models.get_model` builds it. Role: program.

    Attributes:
        name: ``"resnet18"``, ``"paper_resnet"`` or ``"small_cnn"`` (flat alias ``model``).
        width: Base width (None: the model's default).
        norm: ``"batch"``, ``"none"`` or None (the model's default).
        bn_eval: BatchNorm statistics at test time: ``"running"`` (running averages) or
            ``"batch"`` (the current batch's, epsilon 1e-3, as the paper's code); see ``models``.
        dropout: Dropout rate in [0, 1) before the final Dense.
        dtype: Compute dtype name (``"float32"`` or ``"bfloat16"``); params are float32.
        normalize: CIFAR-10 mean/std normalisation inside the model.
    """

    ROLE: ClassVar[str] = PROGRAM
    name: str = "resnet18"
    width: int | None = None
    norm: str | None = None
    bn_eval: str = "running"
    dropout: float = 0.0
    dtype: str = "float32"
    normalize: bool = False

    def __post_init__(self) -> None:
        _check_choice("model (net.name)", self.name, models.MODEL_NAMES)
        _check_min("width (net.width)", self.width, 1, optional=True)
        _check_choice("norm (net.norm)", self.norm, (None, "batch", "none"))
        _check_choice("bn_eval (net.bn_eval)", self.bn_eval, models.BN_EVAL_MODES)
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            _fail(f"dropout (net.dropout) must be in [0, 1); got {self.dropout!r}")
        models.parse_dtype(self.dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig(_Section):
    """The data: which dataset, how much of it, and how the training set is transformed.
    Role: data, but for the fields that change the training arrays' shapes (``name``,
    ``num_train``, ``train_subset``, ``num_val``: program).

    Attributes:
        name: ``"cifar10"``, ``"synthetic"`` or anything ``datasets.load_dataset`` knows (flat
            alias ``dataset``).
        dir: Directory with the dataset (TFDS dir or the CIFAR archive; flat ``data_dir``).
        source: ``datasets.load_dataset(source=...)`` (flat ``data_source``).
        seed: Seed for the synthetic data, subsets and label shuffling, kept apart from
            ``run.seed`` so trials with different seeds see the same data (flat ``data_seed``).
        test_seed: Seed of the test split's subset (``num_test``), None: ``seed``. Fixing it
            while ``seed`` varies gives every seed its own training draw and one shared test
            set, so per-image outcomes can be paired across seeds (flat ``test_seed``).
        num_train: Number of training examples to load (synthetic size / prefix), None: all.
        num_test: Number of test examples to load, None: all.
        train_subset: Balanced subset of the training set of this size (None: all).
        num_val: Size of a class-balanced validation split held out from the loaded training
            split (never trained on; :func:`jaxhfc.fit.load_validation`); 0: none. Selections
            (radius, rho, epoch) are made on it, never on the test set.
        shuffle_labels: Fraction of training labels shuffled once (paper Fig. 3: 1.0).
        train_filter: Train on ``"none"``, ``"low"`` (LFC) or ``"high"`` (HFC) images.
        train_radius: Radius of the training filter.
        scaling: ``"paper"`` (filtered images / per-image max) or ``"unit"`` (all / 255).
    """

    ROLE: ClassVar[str] = DATA
    name: str = _role(PROGRAM, "cifar10")
    dir: str | None = None
    source: str = "auto"
    seed: int = 0
    test_seed: int | None = None
    num_train: int | None = _role(PROGRAM, None)
    num_test: int | None = None
    train_subset: int | None = _role(PROGRAM, None)
    num_val: int = _role(PROGRAM, 0)
    shuffle_labels: float = 0.0
    train_filter: str = "none"
    train_radius: float = 8.0
    scaling: str = "paper"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail(f"dataset (data.name) must be a non-empty string; got {self.name!r}")
        for label, value in (("num_train", self.num_train), ("num_test", self.num_test),
                             ("train_subset", self.train_subset)):
            _check_min(f"{label} (data.{label})", value, 1, optional=True)
        _check_min("num_val (data.num_val)", self.num_val, 0)
        _check_min("test_seed (data.test_seed)", self.test_seed, 0, optional=True)
        if not _is_number(self.shuffle_labels) or not 0.0 <= self.shuffle_labels <= 1.0:
            _fail(f"shuffle_labels must be a fraction in [0, 1]; got {self.shuffle_labels!r}")
        _check_choice("train_filter (data.train_filter)", self.train_filter, FILTERS)
        _check_min("train_radius (data.train_radius)", self.train_radius, 0)
        _check_choice("scaling (data.scaling)", self.scaling, SCALINGS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig(_Section):
    """Optimisation: optimizer, schedule, length, batch and the loss terms. Role: program, but
    ``learning_rate`` (a per-model hyper-parameter: models of one population may differ in it).

    Attributes:
        name: ``"adam"`` or ``"sgd"`` (with momentum) (flat alias ``optimizer``).
        learning_rate: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay (sgd: added to the gradient; adam: decoupled, AdamW).
        schedule: ``"constant"``, ``"cosine"`` (to 0 at the end) or ``"step"`` (x0.1 at 50%
            and 75% of training).
        epochs: Number of epochs.
        batch_size: Global batch size (divisible by the device count).
        label_smoothing: Label smoothing epsilon.
        kernel_penalty: Weight of ``kernels.smoothness_penalty(params)`` (0: off).
    """

    ROLE: ClassVar[str] = PROGRAM
    name: str = "adam"
    learning_rate: float = _role(HPARAM, 1e-4)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    epochs: int = 100
    batch_size: int = 100
    label_smoothing: float = 0.0
    kernel_penalty: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("optimizer (optim.name)", self.name, OPTIMIZERS)
        _check_choice("schedule (optim.schedule)", self.schedule, SCHEDULES)
        _check_min("epochs (optim.epochs)", self.epochs, 1)
        _check_min("batch_size (optim.batch_size)", self.batch_size, 1)
        _check_min("weight_decay (optim.weight_decay)", self.weight_decay, 0)
        _check_min("kernel_penalty (optim.kernel_penalty)", self.kernel_penalty, 0)
        if not _is_number(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
            _fail(f"label_smoothing must be in [0, 1); got {self.label_smoothing!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentConfig(_Section):
    """On-device augmentation of the training batches. Role: program.

    Attributes:
        crop: Random crop with 4-pixel padding (flat alias ``augment_crop``).
        flip: Random horizontal flip (flat ``augment_flip``).
        mixup_alpha: Mixup Beta(alpha, alpha) (0: off).
    """

    ROLE: ClassVar[str] = PROGRAM
    crop: bool = False
    flip: bool = False
    mixup_alpha: float = 0.0

    def __post_init__(self) -> None:
        _check_min("mixup_alpha (augment.mixup_alpha)", self.mixup_alpha, 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdversaryConfig(_Section):
    """Adversarial training (Madry PGD; :func:`jaxhfc.attacks.madry_adversary`). Role: program.
    Flat aliases: ``adv_<field>``.

    Attributes:
        eps: Adversarial training when > 0; eps in unit scale.
        steps: PGD steps.
        step_size: PGD step size.
        random_start: Start from a random point of the eps ball.
        norm: ``"linf"`` or ``"l2"``.
    """

    ROLE: ClassVar[str] = PROGRAM
    eps: float = 0.0
    steps: int = 10
    step_size: float = 0.003
    random_start: bool = False
    norm: str = "linf"

    def __post_init__(self) -> None:
        _check_min("adv_eps (adversary.eps)", self.eps, 0)
        _check_min("adv_steps (adversary.steps)", self.steps, 0)
        _check_choice("adv_norm (adversary.norm)", self.norm, ADV_NORMS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig(_Section):
    """Evaluation during training. Role: evaluation. Flat aliases: ``eval_<field>``.

    Attributes:
        every: Evaluate every N epochs (and always after the last; 0: only the last).
        batch_size: Global batch size for evaluation.
        radii: Radii of the LFC/HFC test copies evaluated (``test_low_r``/``test_high_r``).
        train: Also evaluate on the training set and its LFC copies at ``radii``.
        train_subset: Size of the (balanced) training subset used for that (None: all).
        stop_at_train: A fit criterion: training stops after the first evaluation whose
            accuracy on the (eval-mode, clean) training subset is at least this (needs
            ``train``); ``optim.epochs`` is then the cap. None: train every epoch. Role: program
            (a population only groups models with one criterion).
    """

    ROLE: ClassVar[str] = EVALUATION
    every: int = 1
    batch_size: int = 1000
    radii: tuple[float, ...] = (4, 8, 12, 16)
    train: bool = False
    train_subset: int | None = None
    stop_at_train: float | None = _role(PROGRAM, None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "radii", tuple(self.radii))
        _check_min("eval_every (evaluation.every)", self.every, 0)
        _check_min("eval_batch_size (evaluation.batch_size)", self.batch_size, 1)
        for r in self.radii:
            _check_min("eval_radii (evaluation.radii)", r, 0)
        _check_min("eval_train_subset (evaluation.train_subset)", self.train_subset, 1, optional=True)
        if self.stop_at_train is not None and not (0.0 < self.stop_at_train <= 1.0 and self.train):
            raise ValueError(f"evaluation.stop_at_train must lie in (0, 1] and needs evaluation.train=True; "
                             f"got {self.stop_at_train!r} with train={self.train}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(_Section):
    """The run: seed, checkpoints, devices. Role: evaluation (bookkeeping), but ``seed`` (data)
    and ``num_devices`` (program).

    Attributes:
        seed: Seed of the run (init, epoch order, augmentation, dropout, attack).
        checkpoint_every: Save a checkpoint every N epochs (and always after the last).
        keep_checkpoints: Number of checkpoints kept.
        num_devices: Devices used (None: all).
    """

    ROLE: ClassVar[str] = EVALUATION
    seed: int = _role(DATA, 0)
    checkpoint_every: int = 10
    keep_checkpoints: int = 3
    num_devices: int | None = _role(PROGRAM, None)

    def __post_init__(self) -> None:
        _check_min("checkpoint_every (run.checkpoint_every)", self.checkpoint_every, 0)
        _check_min("keep_checkpoints (run.keep_checkpoints)", self.keep_checkpoints, 1)
        _check_min("num_devices (run.num_devices)", self.num_devices, 1, optional=True)


#: The sections of :class:`TrainConfig`, in order: name -> section class.
SECTIONS: dict[str, type[_Section]] = {
    "net": NetConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "augment": AugmentConfig,
    "adversary": AdversaryConfig,
    "evaluation": EvalConfig,
    "run": RunConfig,
}


def role_of(section: type[_Section] | _Section, field: str | dataclasses.Field) -> str:
    """Role of a section's field: its metadata's ``"role"``, else the section's ``ROLE``."""
    name = field if isinstance(field, str) else field.name
    for f in dataclasses.fields(section):
        if f.name == name:
            return f.metadata.get("role", section.ROLE)
    raise ValueError(f"{getattr(section, '__name__', type(section).__name__)} has no field {name!r}")
