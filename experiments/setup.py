"""The settings of one reproduction: dataset profile, scale, seeds, the config stack of every
training, each artefact's settings, and the eps and radius rescaling to the dataset.

:class:`Setup` reads no data (except, once, the test split of a dataset whose profile gives no
image size) and writes nothing: it answers "with which config and settings", never "train".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax

from experiments import profiles, recipes
from jaxhfc import datasets
from jaxhfc.config import TrainConfig, merge_sections

SCALES = ("full", "quick", "tiny")
#: Seeds per trained artefact, by scale, when the dataset's profile names none (``--seeds`` overrides).
DEFAULT_SEEDS = dict(profiles.DEFAULT_SEEDS)
SEED_STRIDE = 1009
#: Size of the validation split held out from the training data (selections are made on it).
VALIDATION = {"full": 5000, "quick": 512, "tiny": 64}


@dataclasses.dataclass
class Setup:
    """Settings shared by every driver of one reproduction.

    Attributes:
      dataset: a name with a profile (:mod:`experiments.profiles`: ``"synthetic"``, ``"cifar10"``,
        ``"fashion_mnist"``, ``"mnist"``) or a spec ``tfds:NAME``, ``npz:PATH``, ``folder:PATH``.
      scale: ``"full"`` (the paper's settings), ``"quick"`` (minutes on a CPU: small CNN, a
        few thousand images, a few epochs) or ``"tiny"`` (seconds; smoke tests and CI).
      out: results root (default ``results/<dataset slug>``, e.g. ``results/npz-digits``); not created here.
      data_dir: the dataset's folder (None: the reader's default).
      model: model name for full runs (``resnet18`` or ``paper_resnet``).
      seed: the base seed; the reproduction's seeds are :attr:`seed_list`.
      seeds: how many seeds every trained artefact runs (None: the profile's, per scale).
      smoke: full scale (``scale="full"``) with every loop capped (``recipes.SMOKE``): the
        full-scale recipes, shapes and code paths in minutes, a check that they run, not a result.
      plan: a smoke run metered for a cost plan (``experiments/plan.py``): trainings on 1 device.
      artefact: the artefact whose settings are being read (set by the driver running; its
        per-artefact smoke caps apply).
    """

    dataset: str = "synthetic"
    scale: str = "quick"
    out: Path | None = None
    data_dir: str | None = None
    model: str = "resnet18"
    seed: int = 0
    seeds: int | None = None
    smoke: bool = False
    plan: bool = False
    artefact: str | None = None
    #: smoke runs: the uncapped config of every capped one (by config hash), and per artefact
    #: the full and capped settings it read
    full_configs: dict = dataclasses.field(default_factory=dict, repr=False)
    settings_log: dict = dataclasses.field(default_factory=dict, repr=False)
    _size: int | None = dataclasses.field(default=None, repr=False)
    _data_ready: bool = dataclasses.field(default=False, repr=False)

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.smoke and self.scale != "full":
            raise ValueError(f"a smoke run caps the full-scale settings; scale must be 'full', got {self.scale!r}")
        slug = datasets.dataset_slug(self.dataset) + ("-smoke" if self.smoke else "")
        self.out = Path(self.out) if self.out else Path("results") / slug
        if self.seeds is None:
            self.seeds = 1 if self.smoke else self.profile.seeds_at(self.scale)
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive int, got {self.seeds!r}")

    @property
    def profile(self) -> profiles.DatasetProfile:
        """What this dataset is (:func:`experiments.profiles.profile`)."""
        return profiles.profile(self.dataset)

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds of this reproduction: ``seed + SEED_STRIDE * i`` for ``i < seeds`` (so base
        seeds 0 and 1 give disjoint seed sets, and the first seed is the base seed)."""
        return tuple(self.seed + SEED_STRIDE * i for i in range(self.seeds))

    @property
    def quick(self) -> bool:
        return self.scale != "full"

    def pick(self, *, full, quick, tiny=None):
        """A value by scale (``tiny`` defaults to ``quick``)."""
        if self.scale == "full":
            return full
        if self.scale == "tiny" and tiny is not None:
            return tiny
        return quick

    # ---------------------------------------------------------------- configs

    def resolved_data_dir(self) -> str | None:
        """:attr:`data_dir`; in a smoke run of a dataset whose profile can stand in for missing
        files (CIFAR-10: a generated archive under :attr:`out`), that folder, made on first use."""
        if self.smoke and self.profile.smoke_data is not None and not self._data_ready:
            self.data_dir = self.profile.smoke_data(self.data_dir, self.out)
            self._data_ready = True
        return self.data_dir

    def config(self, seed: int | None = None, **overrides) -> TrainConfig:
        """The vanilla config at this scale, with ``overrides`` (section dicts, e.g.
        ``net={"norm": "batch"}``) applied last.

        Layers: the scale's defaults, ``recipes.BASE[scale]``, the profile's recipe, the
        dataset and seed, then ``overrides``. Full scale is the paper's vanilla set-up (Adam
        1e-4, batch 100, 100 epochs, no augmentation, no BatchNorm, paper input scaling).
        Quick and tiny shrink the data, model and epochs but keep every other setting.
        """
        seed = self.seed if seed is None else seed
        fixed = {"data": {"name": self.dataset, "dir": self.resolved_data_dir()}, "run": {"seed": seed}}
        if self.draws_data:
            fixed["data"].update(seed=seed, test_seed=0)
        if self.scale == "full":
            fixed["net"] = {"name": self.model}
        defaults = {"data": {"num_val": VALIDATION[self.scale]},
                    "evaluation": {"train": True}}  # eval-mode accuracy on clean training data (generalisation gaps)
        base = TrainConfig(**merge_sections(defaults, recipes.BASE[self.scale], self.profile.recipe(self.scale),
                                            fixed))
        base = base.merged(evaluation={"radii": tuple(self.radius(r) for r in base.evaluation.radii)})
        config = base.merged(**overrides)
        if not self.smoke:
            return config
        capped = self._smoke_capped(config)
        self.full_configs[capped.config_hash()] = config
        return capped

    def _smoke_capped(self, config: TrainConfig) -> TrainConfig:
        """``config`` with the loops of a smoke run capped (``recipes.SMOKE``): its own batch size
        and everything else kept, ``epochs`` x ``steps_per_epoch`` steps, few images evaluated."""
        caps, batch = recipes.SMOKE, config.optim.batch_size
        subset = config.evaluation.train_subset
        return config.merged(
            data={"num_train": caps["steps_per_epoch"] * batch + caps["num_val"], "num_val": caps["num_val"],
                  "num_test": min(config.data.num_test or caps["num_test"], caps["num_test"])},
            optim={"epochs": min(config.optim.epochs, caps["epochs"])},
            evaluation={"train_subset": min(subset or caps["train_subset"], caps["train_subset"])},
            run={"checkpoint_every": 1, "num_devices": self._smoke_devices(batch)})

    def _smoke_devices(self, batch: int) -> int:
        """Devices of a smoke run's training: 1 for a cost plan (XLA's memory analysis is then
        what one accelerator needs), else the most devices the batch divides evenly over (batch
        100 on 8 devices: 5)."""
        if self.plan:
            return 1
        return max(d for d in range(1, jax.device_count() + 1) if batch % d == 0)

    def settings(self, table: dict) -> dict:
        """A driver's settings at this scale (a copy of ``table[scale]``); a smoke run caps the
        image counts and attack steps named in ``recipes.SMOKE["settings"]`` (in nested section
        overrides too) and shortens the lists of repeated rows in ``recipes.SMOKE["lists"]``,
        keeping every other list (radii, eps, attacks, targets) whole."""
        out = dict(table[self.scale])
        if not self.smoke:
            return out
        caps = recipes.SMOKE["settings"]
        lists = recipes.SMOKE["lists"]

        def cap(d: dict) -> dict:
            d = dict(d)
            for k, v in d.items():
                keep = lists.get(f"{self.artefact}.{k}", lists.get(k))
                if isinstance(v, dict):
                    d[k] = cap(v)
                elif k in caps and isinstance(v, int) and not isinstance(v, bool):
                    d[k] = min(v, caps[k])
                elif k in caps and v is None:
                    d[k] = caps[k]
                elif keep and isinstance(v, (tuple, list)):
                    d[k] = tuple(v)[-keep:]
            return d

        capped = cap(out)
        self.settings_log.setdefault(self.artefact, []).append((out, capped))
        return capped

    @property
    def cascade(self) -> str:
        """Where the cascade attacks (APGD-T) run (:func:`jaxhfc.attacks.robust_accuracy`): on
        the survivors of the others, or, in a smoke run, on every image (the same result; the
        cascade's program always runs and the cost plan counts its upper bound)."""
        return "all" if self.smoke else "survivors"

    @property
    def draws_data(self) -> bool:
        """Whether each seed draws its own training data (subset, validation split and order),
        with one test subset shared by all seeds (the profile's ``draws_data``)."""
        return self.profile.draws_data

    # ---------------------------------------------------------------- the dataset's scale

    def eps(self, e: float) -> float:
        """A Linf eps written for CIFAR-10 (``recipes.REFERENCE_EPS`` = 0.03, the paper's 8/255)
        on this dataset's scale: ``e * profile.eps / 0.03`` (unchanged when the profile has no
        eps). Fashion-MNIST: 0.03 -> 0.1, 0.09 -> 0.3."""
        own = self.profile.eps
        return float(e) if own is None else round(float(e) * own / recipes.REFERENCE_EPS, 6)

    def scaled(self, settings: dict, keys: Sequence[str] = ("eps", "defended_eps")) -> dict:
        """A copy of an artefact's ``settings`` with the eps values under ``keys`` (a number or a
        tuple) put on this dataset's scale (:meth:`eps`)."""
        out = dict(settings)
        for k in keys:
            if k in out:
                v = out[k]
                out[k] = tuple(self.eps(e) for e in v) if isinstance(v, (tuple, list)) else self.eps(v)
        return out

    def adversarial_overrides(self) -> dict:
        """M_adversarial's recipe (``recipes.ADVERSARIAL`` at this scale) with its eps and step
        size on this dataset's scale (:meth:`eps`)."""
        rec = {k: dict(v) for k, v in recipes.ADVERSARIAL[self.scale].items()}
        rec["adversary"] = self.scaled(rec["adversary"], keys=("eps", "step_size"))
        return rec

    def twin_overrides(self) -> dict:
        """M_adversarial's recipe without the attack (same norm, augmentation, ...): the model to
        compare with when a claim is about what adversarial training does."""
        return {k: dict(v) for k, v in recipes.ADVERSARIAL[self.scale].items() if k != "adversary"}

    @property
    def image_size(self) -> int:
        """Side of the dataset's images (the profile's; a dataset without one has its test split
        read once for it)."""
        if self._size is None:
            size = self.profile.image_size
            if size is None:
                test = datasets.load_dataset(self.dataset, split="test", data_dir=self.data_dir)
                size = int(min(test.images.shape[1:3]))
            self._size = size
        return self._size

    def radius(self, r: float) -> float:
        """A radius written for 32x32 images (the paper's 4, 8, 12, 16), scaled to this dataset's
        image size: ``r * size / 32`` (an int when whole; unchanged at size 32)."""
        v = float(r) * self.image_size / 32
        return int(v) if v.is_integer() else round(v, 2)
