"""The flat names of the training configuration's fields, in one table.

Before the sections, :class:`jaxhfc.config.TrainConfig` was flat (``adv_eps``, ``model``,
``eval_every``). Those names stay for three uses: they are the flags of ``jaxhfc train``, the keys
of old flat ``config.json`` files (:func:`nest` turns them into sections), and the names
:meth:`TrainConfig.config_hash` hashes, so the run folders named by earlier versions keep their
names. :data:`FLAT_FIELDS` maps each to its ``(section, field)``; every section field has
exactly one (checked at import).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxhfc.sections import DATA, EVALUATION, HPARAM, PROGRAM, SECTIONS, _fail, role_of

#: The one table of flat names: flat name -> (section, field), in the order of the flat
#: ``TrainConfig`` of earlier versions: the flags of ``jaxhfc train``, the keys of old flat
#: ``config.json`` files (:meth:`TrainConfig.from_dict`, :func:`nest`), the deprecated keyword
#: arguments and read-only aliases, and :meth:`TrainConfig.config_hash`.

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
    "eval_stop_at_train": ("evaluation", "stop_at_train"),
}
NESTED_TO_FLAT = {v: k for k, v in FLAT_FIELDS.items()}


def _check_table() -> None:
    """Every section field has exactly one flat name (else a config hash could miss a field)."""
    fields = {(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    if len(NESTED_TO_FLAT) != len(FLAT_FIELDS) or set(NESTED_TO_FLAT) != fields or set(FLAT_FIELDS) & set(SECTIONS):
        missing = sorted(fields - set(NESTED_TO_FLAT))
        raise TypeError(f"FLAT_FIELDS must name every section field once, apart from the section names; "
                        f"missing {missing}, extra {sorted(set(NESTED_TO_FLAT) - fields)}")


_check_table()


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


def nest(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat names (:data:`FLAT_FIELDS`: the command-line flags and old ``config.json`` files) as
    section dicts: ``{"norm": "batch", "adv_eps": 0.1}`` -> ``{"net": {"norm": "batch"},
    "adversary": {"eps": 0.1}}``; keys that are already sections are merged in."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        if name in SECTIONS:
            out.setdefault(name, {}).update(dict(value))
            continue
        if name not in FLAT_FIELDS:
            _fail(f"unknown TrainConfig field {name!r}; valid: the sections {list(SECTIONS)} or the flat names "
                  f"{list(FLAT_FIELDS)}")
        section, field = FLAT_FIELDS[name]
        out.setdefault(section, {})[field] = value
    return out
