"""The training configuration: :class:`TrainConfig`, made of seven sections.

A :class:`TrainConfig` is a frozen, hashable dataclass whose fields are sections, each a
small frozen, hashable dataclass that validates its own values:

- ``net``: :class:`NetConfig`, the network (name, width, norm, bn_eval, dropout, dtype, normalize);
- ``data``: :class:`DataConfig`, the dataset, its sizes and seed, the validation split and the
  transforms of the training set (subset, shuffled labels, LFC/HFC filter, input scaling);
- ``optim``: :class:`OptimConfig`, optimizer, learning-rate schedule, epochs, batch size and
  the loss terms (label smoothing, kernel penalty);
- ``augment``: :class:`AugmentConfig`, crop, flip and mixup;
- ``adversary``: :class:`AdversaryConfig`, Madry PGD training;
- ``evaluation``: :class:`EvalConfig`, what is evaluated during training and how often;
- ``run``: :class:`RunConfig`, the seed, checkpoints and devices.

The nested names are the primary API (``config.adversary.eps``); every field also has its
earlier flat name (``config.adv_eps``, ``config.model`` for ``config.net.name``), listed once in
:data:`FLAT_FIELDS`. Flat names are read-only aliases, accepted by the constructor
(``TrainConfig(model="small_cnn", adv_eps=0.03)``), by ``dataclasses.replace`` and
:meth:`TrainConfig.replace`, and by :meth:`TrainConfig.from_dict` (the flat ``config.json``
of run folders written before the sections); they are the flags of ``jaxhfc train``.

Roles. Every field has a role that says what it changes (:func:`role_of`): by default its
section's (``ROLE``), a field may declare another in its metadata.

- :data:`PROGRAM`: shapes the compiled training program: all of ``net``, ``optim`` (but the
  learning rate), ``augment`` and ``adversary``; the data fields that change the training
  arrays' shapes (``data.name``, ``num_train``, ``num_val``, ``train_subset``) and
  ``run.num_devices``. These make :func:`jaxhfc.fit.population_key`, so a field added to one
  of those sections separates populations automatically.
- :data:`HPARAM`: a per-model hyper-parameter inside one program (``optim.learning_rate``).
- :data:`DATA`: data values and seeds (the rest of ``data``, ``run.seed``).
- :data:`EVALUATION`: evaluation and checkpoint settings (``evaluation``, ``run``'s checkpoints).
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from jaxhfc import models, results
from jaxhfc.datasets.transforms import SCALINGS

__all__ = [
    "TrainConfig",
    "NetConfig",
    "DataConfig",
    "OptimConfig",
    "AugmentConfig",
    "AdversaryConfig",
    "EvalConfig",
    "RunConfig",
    "SECTIONS",
    "FLAT_FIELDS",
    "PROGRAM",
    "HPARAM",
    "DATA",
    "EVALUATION",
    "role_of",
    "PROGRAM_FIELDS",
    "DATA_FIELDS",
    "EVAL_FIELDS",
    "HPARAM_FIELDS",
    "OPTIMIZERS",
    "SCHEDULES",
    "FILTERS",
    "SCALINGS",
    "ADV_NORMS",
]

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
    """

    ROLE: ClassVar[str] = EVALUATION
    every: int = 1
    batch_size: int = 1000
    radii: tuple[float, ...] = (4, 8, 12, 16)
    train: bool = False
    train_subset: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "radii", tuple(self.radii))
        _check_min("eval_every (evaluation.every)", self.every, 0)
        _check_min("eval_batch_size (evaluation.batch_size)", self.batch_size, 1)
        for r in self.radii:
            _check_min("eval_radii (evaluation.radii)", r, 0)
        _check_min("eval_train_subset (evaluation.train_subset)", self.train_subset, 1, optional=True)


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

#: The one table of flat names: flat name -> (section, field), in the order of the flat
#: ``TrainConfig`` of earlier versions. Drives the read-only aliases, the flat keyword
#: arguments, :meth:`TrainConfig.from_dict` of flat dicts, :meth:`TrainConfig.config_hash`
#: and the flags of ``jaxhfc train``.
#: Fields added after run folders were first named by :meth:`TrainConfig.config_hash`, with
#: their defaults: a config at those defaults hashes as it did before the field existed.
_ADDED_LATER: dict[str, Any] = {"test_seed": None}

FLAT_FIELDS: dict[str, tuple[str, str]] = {
    "model": ("net", "name"),
    "width": ("net", "width"),
    "norm": ("net", "norm"),
    "bn_eval": ("net", "bn_eval"),
    "dropout": ("net", "dropout"),
    "dtype": ("net", "dtype"),
    "normalize": ("net", "normalize"),
    "dataset": ("data", "name"),
    "data_dir": ("data", "dir"),
    "data_source": ("data", "source"),
    "data_seed": ("data", "seed"),
    "test_seed": ("data", "test_seed"),
    "num_train": ("data", "num_train"),
    "num_test": ("data", "num_test"),
    "train_subset": ("data", "train_subset"),
    "num_val": ("data", "num_val"),
    "shuffle_labels": ("data", "shuffle_labels"),
    "train_filter": ("data", "train_filter"),
    "train_radius": ("data", "train_radius"),
    "scaling": ("data", "scaling"),
    "augment_crop": ("augment", "crop"),
    "augment_flip": ("augment", "flip"),
    "mixup_alpha": ("augment", "mixup_alpha"),
    "label_smoothing": ("optim", "label_smoothing"),
    "optimizer": ("optim", "name"),
    "learning_rate": ("optim", "learning_rate"),
    "momentum": ("optim", "momentum"),
    "weight_decay": ("optim", "weight_decay"),
    "schedule": ("optim", "schedule"),
    "epochs": ("optim", "epochs"),
    "batch_size": ("optim", "batch_size"),
    "eval_every": ("evaluation", "every"),
    "eval_batch_size": ("evaluation", "batch_size"),
    "eval_radii": ("evaluation", "radii"),
    "eval_train": ("evaluation", "train"),
    "eval_train_subset": ("evaluation", "train_subset"),
    "checkpoint_every": ("run", "checkpoint_every"),
    "keep_checkpoints": ("run", "keep_checkpoints"),
    "seed": ("run", "seed"),
    "adv_eps": ("adversary", "eps"),
    "adv_steps": ("adversary", "steps"),
    "adv_step_size": ("adversary", "step_size"),
    "adv_random_start": ("adversary", "random_start"),
    "adv_norm": ("adversary", "norm"),
    "kernel_penalty": ("optim", "kernel_penalty"),
    "num_devices": ("run", "num_devices"),
}
_NESTED_TO_FLAT = {v: k for k, v in FLAT_FIELDS.items()}


def _check_table() -> None:
    """Every section field has exactly one flat name (else a config hash could miss a field)."""
    fields = {(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    if len(_NESTED_TO_FLAT) != len(FLAT_FIELDS) or set(_NESTED_TO_FLAT) != fields or set(FLAT_FIELDS) & set(SECTIONS):
        missing = sorted(fields - set(_NESTED_TO_FLAT))
        raise TypeError(f"FLAT_FIELDS must name every section field once, apart from the section names; "
                        f"missing {missing}, extra {sorted(set(_NESTED_TO_FLAT) - fields)}")


_check_table()


def role_of(section: type[_Section] | _Section, field: str | dataclasses.Field) -> str:
    """Role of a section's field: its metadata's ``"role"``, else the section's ``ROLE``."""
    name = field if isinstance(field, str) else field.name
    for f in dataclasses.fields(section):
        if f.name == name:
            return f.metadata.get("role", section.ROLE)
    raise ValueError(f"{getattr(section, '__name__', type(section).__name__)} has no field {name!r}")


def _flat_names(role: str) -> tuple[str, ...]:
    return tuple(flat for flat, (s, f) in FLAT_FIELDS.items() if role_of(SECTIONS[s], f) == role)


#: Flat names of the fields that shape the compiled program (derived from the roles).
PROGRAM_FIELDS = _flat_names(PROGRAM)
#: Flat names of the data values and seeds (role :data:`DATA`; derived, kept for the flat API).
DATA_FIELDS = _flat_names(DATA)
#: Flat names of the evaluation and checkpoint settings (role :data:`EVALUATION`; derived).
EVAL_FIELDS = _flat_names(EVALUATION)
#: Flat names of the per-model hyper-parameters (role :data:`HPARAM`; derived).
HPARAM_FIELDS = _flat_names(HPARAM)


@dataclasses.dataclass(frozen=True, init=False)
class TrainConfig:
    """Everything that defines a training run (frozen, hashable, JSON-serialisable).

    Defaults follow the paper's released code for the vanilla model on CIFAR-10 with the
    common ResNet18 (Adam lr 1e-4, batch 100, 100 epochs, no augmentation, no weight decay,
    paper scaling of the input).

    Build it from sections, from flat names (:data:`FLAT_FIELDS`), or both (flat names are
    applied on top of the given or default sections)::

        TrainConfig(net=NetConfig(name="small_cnn"), adversary=AdversaryConfig(eps=0.03))
        TrainConfig(model="small_cnn", adv_eps=0.03)           # the same config

    Attributes:
        net: :class:`NetConfig`.
        data: :class:`DataConfig`.
        optim: :class:`OptimConfig`.
        augment: :class:`AugmentConfig`.
        adversary: :class:`AdversaryConfig`.
        evaluation: :class:`EvalConfig`.
        run: :class:`RunConfig`.

    Every flat name of :data:`FLAT_FIELDS` is a read-only alias (``config.adv_eps`` is
    ``config.adversary.eps``, ``config.model`` is ``config.net.name``).
    """

    net: NetConfig = dataclasses.field(default_factory=NetConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    adversary: AdversaryConfig = dataclasses.field(default_factory=AdversaryConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    if TYPE_CHECKING:  # the read-only flat aliases (set below from FLAT_FIELDS), for type checkers
        model: str  # net.name
        width: int | None  # net.width
        norm: str | None  # net.norm
        bn_eval: str  # net.bn_eval
        dropout: float  # net.dropout
        dtype: str  # net.dtype
        normalize: bool  # net.normalize
        dataset: str  # data.name
        data_dir: str | None  # data.dir
        data_source: str  # data.source
        data_seed: int  # data.seed
        test_seed: int | None  # data.test_seed
        num_train: int | None  # data.num_train
        num_test: int | None  # data.num_test
        train_subset: int | None  # data.train_subset
        num_val: int  # data.num_val
        shuffle_labels: float  # datasets.shuffle_labels
        train_filter: str  # data.train_filter
        train_radius: float  # data.train_radius
        scaling: str  # data.scaling
        augment_crop: bool  # augment.crop
        augment_flip: bool  # augment.flip
        mixup_alpha: float  # augment.mixup_alpha
        label_smoothing: float  # optim.label_smoothing
        optimizer: str  # optim.name
        learning_rate: float  # optim.learning_rate
        momentum: float  # optim.momentum
        weight_decay: float  # optim.weight_decay
        schedule: str  # optim.schedule
        epochs: int  # optim.epochs
        batch_size: int  # optim.batch_size
        eval_every: int  # evaluation.every
        eval_batch_size: int  # evaluation.batch_size
        eval_radii: tuple[float, ...]  # evaluation.radii
        eval_train: bool  # evaluation.train
        eval_train_subset: int | None  # evaluation.train_subset
        checkpoint_every: int  # run.checkpoint_every
        keep_checkpoints: int  # run.keep_checkpoints
        seed: int  # run.seed
        adv_eps: float  # adversary.eps
        adv_steps: int  # adversary.steps
        adv_step_size: float  # adversary.step_size
        adv_random_start: bool  # adversary.random_start
        adv_norm: str  # adversary.norm
        kernel_penalty: float  # optim.kernel_penalty
        num_devices: int | None  # run.num_devices

    def __init__(
        self,
        *,
        net: NetConfig | Mapping[str, Any] | None = None,
        data: DataConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        augment: AugmentConfig | Mapping[str, Any] | None = None,
        adversary: AdversaryConfig | Mapping[str, Any] | None = None,
        evaluation: EvalConfig | Mapping[str, Any] | None = None,
        run: RunConfig | Mapping[str, Any] | None = None,
        **flat: Any,
    ) -> None:
        unknown = [name for name in flat if name not in FLAT_FIELDS]
        if unknown:
            _fail(f"unknown TrainConfig field(s) {sorted(unknown)}; valid: the sections {list(SECTIONS)} "
                  f"or the flat names {list(FLAT_FIELDS)}")
        given = {"net": net, "data": data, "optim": optim, "augment": augment, "adversary": adversary,
                 "evaluation": evaluation, "run": run}
        changes: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            section, field = FLAT_FIELDS[name]
            changes.setdefault(section, {})[field] = value
        for name, cls in SECTIONS.items():
            value = given[name]
            if value is None:
                value = cls(**changes.get(name, {}))
            else:
                if isinstance(value, Mapping):
                    value = cls.from_dict(value)
                elif not isinstance(value, cls):
                    raise TypeError(f"TrainConfig {name} must be a {cls.__name__} (or a dict of its fields); "
                                    f"got {type(value).__name__}")
                if name in changes:
                    value = dataclasses.replace(value, **changes[name])
            object.__setattr__(self, name, value)
        if self.augment.mixup_alpha > 0 and self.adversary.eps > 0:
            _fail("mixup and adversarial training together are not supported (mixup_alpha > 0 and adv_eps > 0)")

    def sections(self) -> Iterator[tuple[str, _Section]]:
        """``(name, section)`` pairs in order."""
        return ((name, getattr(self, name)) for name in SECTIONS)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes``: sections and/or flat names (flat names applied last).

        ``config.replace(adv_eps=0.03)`` equals ``dataclasses.replace(config, adv_eps=0.03)``
        and ``config.replace(adversary=config.adversary.replace(eps=0.03))``.
        """
        return dataclasses.replace(self, **changes)

    def quick(self) -> "TrainConfig":
        """A minutes-on-a-CPU variant: synthetic data (2,048/1,000), small CNN (width 16),
        at most 8 epochs of batch 64, Adam 3e-3; the other fields are kept."""
        return self.replace(
            model="small_cnn",
            width=16,
            norm=None,
            dtype="float32",
            dataset="synthetic",
            num_train=2048,
            num_test=1000,
            train_subset=None,
            epochs=min(self.optim.epochs, 8),
            batch_size=64,
            eval_batch_size=500,
            learning_rate=3e-3 if self.optim.name == "adam" else self.optim.learning_rate,
            eval_radii=tuple(r for r in self.evaluation.radii if r <= 8) or (4,),
            eval_train_subset=min(self.evaluation.train_subset or 500, 500),
            checkpoint_every=4,
            adv_steps=min(self.adversary.steps, 3),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict: ``{section: {field: value}}`` (tuples as lists)."""
        return {name: section.to_dict() for name, section in self.sections()}

    def to_flat_dict(self) -> dict[str, Any]:
        """JSON-ready flat dict ``{flat name: value}`` (the form of earlier versions; a field
        without a flat name, e.g. of a section subclass, appears as ``"section.field"``)."""
        out = {flat: _jsonable(getattr(getattr(self, s), f)) for flat, (s, f) in FLAT_FIELDS.items()}
        for name, section in self.sections():
            for f in dataclasses.fields(section):
                if (name, f.name) not in _NESTED_TO_FLAT:
                    out[f"{name}.{f.name}"] = _jsonable(getattr(section, f.name))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; also reads the flat form (:meth:`to_flat_dict`, the
        ``config.json`` of earlier run folders) and a mix of both. Unknown keys raise ValueError."""
        if not isinstance(d, Mapping):
            raise TypeError(f"TrainConfig.from_dict needs a mapping; got {type(d).__name__}")
        return cls(**dict(d))

    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of the config (same fields, same hash, across runs).

        The hash of the flat form (:meth:`to_flat_dict`), so it is unchanged from the flat
        ``TrainConfig`` of earlier versions: run folders named by it are found again.
        """
        flat = self.to_flat_dict()
        for name, default in _ADDED_LATER.items():  # left out at their default: old hashes stay valid
            if flat.get(name) == default:
                flat.pop(name)
        return results.config_hash(flat, length=16)

    def key(self, *roles: str) -> tuple[tuple[str, Any], ...]:
        """Hashable ``(("section.field", value), ...)`` of the fields whose role is in ``roles``
        (:func:`role_of`), in section and field order: e.g. ``key(PROGRAM)`` is
        :func:`jaxhfc.fit.population_key`. A field added to a section is in it by its role."""
        bad = [r for r in roles if r not in _ROLES]
        if bad or not roles:
            _fail(f"roles must be some of {_ROLES}; got {roles!r}")
        return tuple((f"{name}.{f.name}", getattr(section, f.name)) for name, section in self.sections()
                     for f in dataclasses.fields(section) if role_of(section, f) in roles)


def _alias(flat: str, section: str, field: str) -> property:
    def get(self: TrainConfig) -> Any:
        return getattr(getattr(self, section), field)

    get.__name__ = flat
    return property(get, doc=f"Read-only alias of ``{section}.{field}``.")


for _flat, (_section, _field) in FLAT_FIELDS.items():
    setattr(TrainConfig, _flat, _alias(_flat, _section, _field))
del _flat, _section, _field
