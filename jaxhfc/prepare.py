"""The data a training run needs: the loaded splits of a config, its held-out validation
split, and the prepared arrays (training set, evaluation sets on original / LFC / HFC
images) that the fit loop puts on the devices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxhfc.config import DataConfig, TrainConfig
from jaxhfc.datasets import balanced_indices, balanced_subset, filter_dataset, load_dataset, shuffle_labels, to_model_input
from jaxhfc.evaluation import eval_set_name

__all__ = ["holdout_split", "load_splits", "load_validation", "prepare_data", "split_key"]


def load_splits(config: TrainConfig) -> tuple[Any, Any]:
    """``(train, test)`` :class:`jaxhfc.datasets.Dataset` of a config (dataset, data dir, source, sizes, seed).

    With ``config.data.num_val > 0`` the returned training split excludes the validation
    examples (see :func:`load_validation`). Reads only the fields that :func:`split_key`
    keeps."""
    d = split_key(config.data)
    common = dict(data_dir=d.dir, source=d.source, seed=d.seed, num_train=d.num_train, num_test=d.num_test)
    train = load_dataset(d.name, split="train", **common)
    if d.num_val:
        train, _ = holdout_split(train, d.num_val, seed=d.seed)
    if d.test_seed is not None:
        common["seed"] = d.test_seed
    return train, load_dataset(d.name, split="test", **common)


#: Fields of :class:`DataConfig` that :func:`load_splits` does not read (they transform the
#: loaded training split): :func:`split_key` resets them.
_NOT_LOADED = ("train_subset", "shuffle_labels", "train_filter", "train_radius", "scaling")


def split_key(d: DataConfig) -> DataConfig:
    """The data section with the fields :func:`load_splits` does not read reset to defaults:
    configs with equal keys load the same splits (a field added to the section is part of
    the key unless listed in :data:`_NOT_LOADED`)."""
    defaults = DataConfig()
    return d.replace(**{name: getattr(defaults, name) for name in _NOT_LOADED})


def holdout_split(ds: Any, n: int, *, seed: int) -> tuple[Any, Any]:
    """``(rest, held_out)``: a class-balanced random ``n`` examples held out of ``ds``
    (numpy ``default_rng(seed + 7919)``), both in their original order; disjoint, and together
    exactly ``ds``."""
    if not isinstance(n, (int, np.integer)) or not 1 <= n < len(ds):
        raise ValueError(f"validation size must be an int in [1, {len(ds) - 1}], got {n!r}")
    idx = balanced_indices(ds, int(n), seed=seed + 7919)
    keep = np.ones(len(ds), bool)
    keep[idx] = False
    return (ds.replace(images=ds.images[keep], labels=ds.labels[keep]),
            ds.replace(images=ds.images[idx], labels=ds.labels[idx]))


def load_validation(config: TrainConfig, train_full: Any | None = None) -> Any:
    """The validation split of a config: ``data.num_val`` class-balanced examples held out from
    the loaded training split (``train_full``: that split, to skip loading). Raises ValueError
    when ``num_val`` is 0."""
    d = config.data
    if not d.num_val:
        raise ValueError("this config holds out no validation split (num_val=0)")
    if train_full is None:
        train_full = load_dataset(d.name, split="train", data_dir=d.dir, source=d.source, seed=d.seed,
                                       num_train=d.num_train)
    return holdout_split(train_full, d.num_val, seed=d.seed)[1]


def prepare_data(config: TrainConfig, datasets: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Build the training arrays and every evaluation set a config asks for.

    Reads the ``data`` and ``evaluation`` sections only.

    Args:
        config: The run config.
        datasets: Optional ``(train, test)`` :class:`jaxhfc.datasets.Dataset` (skips loading).

    Returns:
        dict with ``train: (x (N,H,W,C) float32 unit scale, y (N,) int32)``, ``eval: {name:
        (x, y)}`` with names ``test``, ``test_low_<r>``, ``test_high_<r>`` and, with
        ``evaluation.train``, ``train``, ``train_low_<r>``; and ``num_classes``.
    """
    d, ev = config.data, config.evaluation
    train, test = datasets if datasets is not None else load_splits(config)
    if d.train_subset is not None:
        train = balanced_subset(train, d.train_subset, seed=d.seed)
    if d.shuffle_labels > 0:
        train = shuffle_labels(train, fraction=d.shuffle_labels, seed=d.seed)
    kind = None if d.train_filter == "none" else d.train_filter
    train_used = filter_dataset(train, kind, d.train_radius) if kind else train

    def arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(to_model_input(ds, scaling=d.scaling), np.float32),
                np.asarray(ds.labels, np.int32))

    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {"test": arrays(test)}
    for r in ev.radii:
        sets[eval_set_name("test_low", r)] = arrays(filter_dataset(test, "low", r))
        sets[eval_set_name("test_high", r)] = arrays(filter_dataset(test, "high", r))
    if ev.train:
        n_sub = ev.train_subset
        base, used = train, train_used
        if n_sub is not None and n_sub < len(train.labels):
            # The same rows for the used set and its LFC copies: subset the unfiltered set,
            # then filter (filtering is per image, so this equals subsetting the filtered set).
            base = balanced_subset(train, n_sub, seed=d.seed + 1)
            used = filter_dataset(base, kind, d.train_radius) if kind else base
        sets["train"] = arrays(used)
        for r in ev.radii:
            sets[eval_set_name("train_low", r)] = arrays(filter_dataset(base, "low", r))
    return {"train": arrays(train_used), "eval": sets, "num_classes": int(train.num_classes)}
