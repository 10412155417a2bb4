"""Training, in one namespace: re-exports the training modules by role.

- :mod:`jaxhfc.config`: :class:`TrainConfig` and its sections (``net``, ``data``, ``optim``,
  ``augment``, ``adversary``, ``evaluation``, ``run``), the flat-name table and field roles;
- :mod:`jaxhfc.step`: :class:`TrainState`, :func:`named_keys`, :func:`make_optimizer`,
  :func:`build_model`, :func:`create_train_state` and the data-parallel step and loop
  (:func:`make_train_step`, :func:`make_train_loop`), with the data layout on the devices;
- :mod:`jaxhfc.evaluation`: :func:`evaluate`, :func:`predict`, :func:`logits_fn`,
  :func:`eval_set_name`;
- :mod:`jaxhfc.runs`: run folders, checkpoints, :func:`load_run`, :class:`CheckpointError`;
- :mod:`jaxhfc.prepare`: data preparation (:func:`prepare_data`, :func:`load_splits`,
  :func:`load_validation`, :func:`holdout_split`); :mod:`jaxhfc.fit`: :func:`fit`, :func:`fit_population`,
  :func:`population_key`.

``from jaxhfc.train import X`` and ``train.X`` work for every name of ``__all__``.
"""
from __future__ import annotations

from jaxhfc.config import (
    DATA_FIELDS,
    EVAL_FIELDS,
    FLAT_FIELDS,
    HPARAM_FIELDS,
    PROGRAM_FIELDS,
    SECTIONS,
    AdversaryConfig,
    AugmentConfig,
    DataConfig,
    EvalConfig,
    NetConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from jaxhfc.evaluation import EVAL_KINDS, eval_set_name, evaluate, logits_fn, predict
from jaxhfc.fit import RunResult, fit, fit_population, population_key
from jaxhfc.prepare import holdout_split, load_splits, load_validation, prepare_data
from jaxhfc.runs import CheckpointError, load_run
from jaxhfc.step import (
    STEP_OPTIONS,
    TrainState,
    build_model,
    create_train_state,
    make_optimizer,
    make_train_loop,
    make_train_step,
    named_keys,
    optimizer_from_config,
)

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
    "TrainState",
    "RunResult",
    "CheckpointError",
    "named_keys",
    "make_optimizer",
    "optimizer_from_config",
    "build_model",
    "create_train_state",
    "make_train_step",
    "make_train_loop",
    "STEP_OPTIONS",
    "DATA_FIELDS",
    "EVAL_FIELDS",
    "HPARAM_FIELDS",
    "PROGRAM_FIELDS",
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
