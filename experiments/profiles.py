"""One profile per dataset: everything the drivers, the CLI and the results READMEs ask about a
dataset, in one place.

A :class:`DatasetProfile` gives a dataset's image size (which scales the paper's radii), its
Linf eps (which scales the paper's eps), its default base seed and seeds per scale, whether
each seed draws its own training data, its recipe per scale (over ``recipes.BASE``), where a
run on it differs from the paper, and the paragraph its results README opens with.

Adding a dataset: register its reader (``jaxhfc.datasets.registry.READERS``, plus a reader
module when the file format is new) and add its profile here (or :func:`register` it). A name
without a profile (a ``tfds:``/``npz:``/``folder:`` spec) gets :func:`profile`'s default: the
size read from its test split, the paper's eps, base seed 0, each seed its own draw.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional

from jaxhfc import datasets
from jaxhfc.datasets import cifar10

log = logging.getLogger("experiments")

#: seeds per scale when a profile names none
DEFAULT_SEEDS = MappingProxyType({"full": 3, "quick": 3, "tiny": 2})

_REAL_BLURB = (
    "**Real images: {title}**{about}. Each seed draws its own training images, validation split and order; "
    "every seed is scored on the same fixed test subset. The recipe was chosen on validation accuracy only "
    "(`recipe_selection.md`, seeds no reproduction reports). The paper's columns are CIFAR-10 numbers: compare "
    "directions, not values. Here the data decides: a claim that is contradicted or inconclusive is a finding.")


@dataclasses.dataclass(frozen=True)
class DatasetProfile:
    """What a reproduction needs to know about one dataset.

    Attributes:
      name: the ``--dataset`` name (a reader of ``jaxhfc.datasets.registry.READERS`` or a spec).
      title: the name people write (``"Fashion-MNIST"``).
      train_size: images in its whole training split (a cost plan's count when a run uses
        them all); None: unknown.
      image_size: side of its images (the paper's radii 4..16 are scaled by ``size / 32``);
        None: read from its test split once.
      eps: its standard Linf budget, the counterpart of CIFAR-10's 8/255 (the paper's eps,
        written for 0.03, are scaled by ``eps / 0.03``); None: the paper's eps unchanged.
      base_seed: the default ``--seed`` (seeds a recipe was calibrated on must not be reported).
      seeds: seeds per scale (``{"quick": 5}``); a scale not named uses :data:`DEFAULT_SEEDS`.
      draws_data: whether each seed draws its own training subset, validation split and order
        (one fixed test subset for all seeds); False: one generated dataset for every seed.
      recipes: config overrides per scale, applied over ``recipes.BASE[scale]`` and under the
        artefact's own.
      deviations: where a run on it differs from the paper (one line each; results README).
      blurb: the paragraph its results README opens with (what the numbers come from).
      summary: the README's one-sentence description of where its numbers come from.
      figure: the figure the project README shows from its results (relative to the results root),
        with a fallback when that file is absent.
      goal_minutes: the quick reproduction's time goal on a 2-core CPU (its time block says
        what that many minutes buy).
      smoke_data: ``(data_dir, out) -> data_dir`` for a ``--smoke`` run without the real files
        (CIFAR-10: a generated archive in the standard format).
    """

    name: str
    title: str
    image_size: Optional[int] = None
    train_size: Optional[int] = None
    eps: Optional[float] = None
    base_seed: int = 0
    seeds: Mapping[str, int] = dataclasses.field(default_factory=dict)
    draws_data: bool = True
    recipes: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    deviations: tuple[str, ...] = ()
    blurb: str = ""
    summary: str = ""
    figure: str = "prediction_counts/examples_hfc_right_lfc_wrong.png"
    goal_minutes: float = 20.0
    smoke_data: Optional[Callable[[Optional[str], object], str]] = None

    def __post_init__(self):
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 4):
            raise ValueError(f"profile {self.name!r}: image_size must be an int >= 4 or None, got {self.image_size!r}")
        if self.eps is not None and not 0 < self.eps <= 1:
            raise ValueError(f"profile {self.name!r}: eps must be in (0, 1] (images in [0, 1]), got {self.eps!r}")
        for scale, n in self.seeds.items():
            if scale not in DEFAULT_SEEDS or not isinstance(n, int) or n < 1:
                raise ValueError(f"profile {self.name!r}: seeds must map a scale {tuple(DEFAULT_SEEDS)} to a "
                                 f"positive int, got {dict(self.seeds)!r}")

    def seeds_at(self, scale: str) -> int:
        """Seeds per trained artefact at ``scale``."""
        return int(self.seeds.get(scale, DEFAULT_SEEDS[scale]))

    def recipe(self, scale: str) -> dict:
        """Its config overrides at ``scale`` (empty when it has none)."""
        return dict(self.recipes.get(scale, {}))


def _generated_cifar10(data_dir: Optional[str], out) -> str:
    """The CIFAR-10 folder of a smoke run: ``data_dir`` when it holds the archive (or a prepared
    TFDS copy), else ``<out>/generated-cifar10`` with a generated full-size archive in the
    standard format (:func:`jaxhfc.datasets.cifar10.write_generated_archive`, written once and
    reused)."""
    if data_dir:
        try:
            datasets.load_dataset("cifar10", split="test", data_dir=data_dir)
            return data_dir
        except datasets.DatasetNotFoundError:
            pass
    folder = Path(out) / "generated-cifar10"
    log.info("smoke run: no CIFAR-10 archive%s; using a generated full-size one in %s",
             f" in {data_dir}" if data_dir else "", folder)
    cifar10.write_generated_archive(str(folder))
    return str(folder)


# Fashion-MNIST / MNIST quick recipe: 10,000 training images (+ the 512-image validation split),
# 12 epochs, width 16: the cheapest of seven candidates reaching validation accuracy 0.89 (0.900
# on two selection seeds; results/fashion_mnist/recipe_selection.md).
_IDX_QUICK = dict(net=dict(width=16), data=dict(num_train=10_512, num_test=2000), optim=dict(epochs=12),
                  evaluation=dict(every=4), run=dict(checkpoint_every=4))

PROFILES: dict[str, DatasetProfile] = {}


def register(p: DatasetProfile) -> DatasetProfile:
    """Add (or replace) the profile of ``p.name``; returns it."""
    if not isinstance(p, DatasetProfile):
        raise TypeError(f"register takes a DatasetProfile, got {type(p).__name__}")
    PROFILES[p.name] = p
    return p


def profile(name: str) -> DatasetProfile:
    """The profile of dataset ``name``; a name without one (a spec) gets the default profile."""
    if name in PROFILES:
        return PROFILES[name]
    return DatasetProfile(name=name, title=name, summary=f"**real `{name}` images** at `{{scale}}` scale on that CPU")


register(DatasetProfile(
    name="synthetic", title="built-in synthetic data", image_size=32, train_size=50_000,
    # base seed 3 (seeds 3, 1012, 2021): the quick recipes and the generator were calibrated on
    # seeds 0-2 (tests/test_calibration.py), and a reported seed must not be one a recipe was chosen on
    base_seed=3, draws_data=False,
    deviations=(
        "Quick scale on the built-in data: synthetic images (docs/synthetic.md), small CNN width 16, 2,048 "
        "training images, 8 epochs; one generated dataset for every seed. Base seed 3 by default: the quick "
        "recipes were calibrated on seeds 0-2.",),
    blurb=("**These numbers come from the built-in synthetic dataset**, not CIFAR-10 (`jaxhfc.datasets.make_synthetic`, "
           "docs/synthetic.md). It is a model of what the paper argues natural data is like, built so the "
           "machinery can be checked on a CPU: evidence about CNNs on natural images comes from CIFAR-10 runs. "
           "The paper's columns are CIFAR-10 numbers; the comparison is qualitative."),
    summary=("the **built-in synthetic dataset** at `{scale}` scale on that CPU, not from CIFAR-10: a verdict here "
             "says the code recovered an effect the generator planted"),
    figure="heuristics/batchnorm.png",
    goal_minutes=15.0,
))

register(DatasetProfile(
    name="cifar10", title="CIFAR-10", image_size=32, train_size=50_000,
    summary="**real `cifar10` images** at `{scale}` scale on that CPU",
    smoke_data=_generated_cifar10,
))

_IDX_ABOUT = " (28x28 grey photos, 10 classes), read from the standard IDX files"

register(DatasetProfile(
    # eps 0.1 is the usual Linf budget of adversarial training and evaluation on Fashion-MNIST.
    # Base seed 2 (seeds 2, 1011, ...): base seed 0's run (the pilot of the protocol's minimum
    # detectable effects) and base seed 1's seed check were reported under the earlier rules.
    name="fashion_mnist", title="Fashion-MNIST", image_size=28, train_size=60_000, eps=0.1, base_seed=2, seeds={"quick": 5},
    recipes={"quick": _IDX_QUICK},
    deviations=(
        "Fashion-MNIST (28x28 grey): radii scaled by 28/32 (the paper's 4, 8, 12, 16 become 3.5, 7, 10.5, 14); "
        "every Linf eps scaled by 0.1 / 0.03 (adversarial training at eps 0.1 with PGD-3 steps of 0.04; attacks at "
        "0.1 and 0.3 for CIFAR-10's 0.03 and 0.09): 0.1 is the usual Linf budget for Fashion-MNIST, as 8/255 is for "
        "CIFAR-10, and CIFAR-10's 0.03 is less than 8 grey levels on images with large flat regions.",
        "Fashion-MNIST quick recipe: 10,000 training images drawn per seed, 12 epochs, small CNN width 16, chosen on "
        "validation accuracy only (recipe_selection.md); a fixed 2,000-image class-balanced test subset shared by "
        "all seeds. A first selection (target 0.87 on validation: 6 epochs) gave M_natural a mean test accuracy of "
        "0.839 over the 5 seeds, below the 0.85 we require of a healthy model, so the target was raised to 0.89 "
        "and the candidates extended (that first run was stopped after its first two artefacts, whose claims held; the "
        "change was made for the accuracy floor, which no verdict enters).",
    ),
    blurb=_REAL_BLURB.format(title="fashion_mnist", about=_IDX_ABOUT),
    summary="**real `fashion_mnist` images** at `{scale}` scale on that CPU",
))

register(DatasetProfile(
    # eps 0.3: Madry et al.'s MNIST budget
    name="mnist", title="MNIST", image_size=28, train_size=60_000, eps=0.3, seeds={"quick": 5}, recipes={"quick": _IDX_QUICK},
    blurb=_REAL_BLURB.format(title="mnist", about=_IDX_ABOUT),
    summary="**real `mnist` images** at `{scale}` scale on that CPU",
))
