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

The nested names are the API (``config.adversary.eps``, ``TrainConfig(net={"norm": "batch"})``,
``config.merged(run={"seed": 3})``); the sections and roles are defined in
:mod:`jaxhfc.sections`. Every field also has its earlier flat name (``adv_eps`` for
``adversary.eps``, ``model`` for ``net.name``), listed once in :data:`FLAT_FIELDS` (:mod:`jaxhfc.flat_names`): they are the
flags of ``jaxhfc train``, the keys of old flat ``config.json`` files (:func:`nest` turns them
into sections) and the names the config hash is made of; passing them to the constructor still
works, with a DeprecationWarning.

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
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from jaxhfc import results
from jaxhfc.flat_names import (DATA_FIELDS, EVAL_FIELDS, FLAT_FIELDS, HPARAM_FIELDS, NESTED_TO_FLAT, PROGRAM_FIELDS,
                               nest)
from jaxhfc.sections import (ADV_NORMS, DATA, EVALUATION, FILTERS, HPARAM, OPTIMIZERS, PROGRAM, SCALINGS, SCHEDULES,
                             SECTIONS, AdversaryConfig, AugmentConfig, DataConfig, EvalConfig, NetConfig, OptimConfig,
                             RunConfig, _fail, _jsonable, _ROLES, _Section, role_of)

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
    "merge_sections",
    "nest",
    "ADV_NORMS",
]

#: Fields added after run folders were first named by :meth:`TrainConfig.config_hash`, with
#: their defaults: a config at those defaults hashes as it did before the field existed.
_ADDED_LATER: dict[str, Any] = {"test_seed": None, "eval_stop_at_train": None}

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
        shuffle_labels: float  # data.shuffle_labels
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
        eval_stop_at_train: float | None  # evaluation.stop_at_train

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
        if flat:
            warnings.warn(f"flat TrainConfig names {sorted(flat)} are deprecated: pass sections, e.g. "
                          f"TrainConfig(**config.nest({{...}})) or TrainConfig(net={{'norm': 'batch'}})",
                          DeprecationWarning, stacklevel=2)
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
        """A copy with whole sections replaced (``config.replace(adversary=AdversaryConfig(...))``);
        to change some fields of a section, :meth:`merged`. Flat names still work, with a
        DeprecationWarning."""
        return dataclasses.replace(self, **changes)

    def merged(self, **sections: Mapping[str, Any]) -> "TrainConfig":
        """A copy with some fields of some sections changed, the others kept:
        ``config.merged(net={"norm": "batch"}, run={"seed": 3})``."""
        unknown = [name for name in sections if name not in SECTIONS]
        if unknown:
            _fail(f"unknown TrainConfig section(s) {sorted(unknown)}; valid: {list(SECTIONS)}")
        return dataclasses.replace(self, **{name: getattr(self, name).replace(**dict(changes))
                                            for name, changes in sections.items()})

    def quick(self) -> "TrainConfig":
        """A minutes-on-a-CPU variant: synthetic data (2,048/1,000), small CNN (width 16),
        at most 8 epochs of batch 64, Adam 3e-3; the other fields are kept."""
        return self.merged(**nest(dict(
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
        )))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict: ``{section: {field: value}}`` (tuples as lists)."""
        return {name: section.to_dict() for name, section in self.sections()}

    def to_flat_dict(self) -> dict[str, Any]:
        """JSON-ready flat dict ``{flat name: value}`` (the form of earlier versions; a field
        without a flat name, e.g. of a section subclass, appears as ``"section.field"``)."""
        out = {flat: _jsonable(getattr(getattr(self, s), f)) for flat, (s, f) in FLAT_FIELDS.items()}
        for name, section in self.sections():
            for f in dataclasses.fields(section):
                if (name, f.name) not in NESTED_TO_FLAT:
                    out[f"{name}.{f.name}"] = _jsonable(getattr(section, f.name))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; also reads the flat form (:meth:`to_flat_dict`, the
        ``config.json`` of earlier run folders, with a DeprecationWarning) and a mix of both.
        Unknown keys raise ValueError."""
        if not isinstance(d, Mapping):
            raise TypeError(f"TrainConfig.from_dict needs a mapping; got {type(d).__name__}")
        flat = [k for k in d if k not in SECTIONS]
        if flat:
            warnings.warn(f"reading flat config names {sorted(flat)[:5]}{'...' if len(flat) > 5 else ''} (an old "
                          "config.json): they are deprecated; configs are written in sections now",
                          DeprecationWarning, stacklevel=2)
        return cls(**nest(d))

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


def merge_sections(*parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Section dicts merged left to right (a later field wins): the layering of recipes."""
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for name, fields in part.items():
            out.setdefault(name, {}).update(dict(fields))
    return out


def _alias(flat: str, section: str, field: str) -> property:
    def get(self: TrainConfig) -> Any:
        return getattr(getattr(self, section), field)

    get.__name__ = flat
    return property(get, doc=f"Read-only alias of ``{section}.{field}``.")


for _flat, (_section, _field) in FLAT_FIELDS.items():
    setattr(TrainConfig, _flat, _alias(_flat, _section, _field))
del _flat, _section, _field
