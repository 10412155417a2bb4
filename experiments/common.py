"""What every experiment driver shares: scales (full / quick / tiny), the paper's base
config, trained-model caching by config hash, and writing an artefact folder.

Layout of a results root (default ``results/<dataset>``)::

    runs/<model-name>-<config hash>/     one trained model (config.json, metrics.jsonl, checkpoints/)
    <artefact>/                          config.json, metrics.jsonl, table.md, table.json, *.png

A trained model is shared by every artefact that asks for the same config (same hash), and a
finished training is never repeated: re-running a driver loads its checkpoint. A killed
training continues from its newest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jaxhfc import evidence as E
from jaxhfc import results as R

log = logging.getLogger("experiments")

SCALES = ("full", "quick", "tiny")
#: Seeds per trained artefact, by scale (``--seeds`` overrides).
DEFAULT_SEEDS = {"full": 3, "quick": 3, "tiny": 2}
SEED_STRIDE = 1009
#: Settings keys that are accuracy floors of preconditions, written for 10 balanced classes
#: (:meth:`Context.chance_floors` puts them on a dataset's own chance scale).
FLOOR_KEYS = ("min_test", "adv_min", "hfc_min", "fit_min")
#: Size of the validation split held out from the training data (selections are made on it).
VALIDATION = {"full": 5000, "quick": 512, "tiny": 64}


@dataclasses.dataclass
class Trained:
    """A trained model: its config, final state, model, metrics history and run folder."""

    name: str
    config: Any
    state: Any
    model: Any
    history: list
    run_dir: Path
    trained_now: bool

    def logits_fn(self):
        from jaxhfc.evaluation import logits_fn

        return logits_fn(self.state, self.model)


@dataclasses.dataclass
class Claim:
    """One claim of the paper and the verdict our seeds give it.

    Attributes:
      artefact: the driver's name.
      claim: the claim in words.
      judgement: the :class:`jaxhfc.evidence.Judgement` (verdict, effect interval over
        seeds, the per-seed values, the preconditions and their status).
      effect: what the effect is, with its sign convention ("LFC minus HFC test accuracy").
      evidence: extra words (the numbers behind the effect).
    """

    artefact: str
    claim: str
    judgement: E.Judgement
    effect: str = ""
    evidence: str = ""
    primary: bool = False
    #: a sanity check (e.g. "adversarial training is robust at its own eps"), not a claim of the
    #: paper: judged alone at 95%, outside its artefact's Holm family, and counted apart
    check: bool = False

    def __post_init__(self):
        if not isinstance(self.judgement, E.Judgement):  # a bare single-run bool: no interval, no verdict
            nan = float("nan")
            self.judgement = E.Judgement(
                "not tested", E.Interval(nan, nan, nan, 1, 0.95, "none"), 1, (nan,),
                (E.Precondition("an effect with an interval over seeds", False,
                                f"single-run comparison only (it said {self.judgement})"),))

    def mark(self) -> str:
        return self.judgement.verdict

    def to_dict(self) -> dict:
        return {"artefact": self.artefact, "claim": self.claim, "judgement": self.judgement.to_dict(),
                "effect": self.effect, "evidence": self.evidence, "primary": self.primary, "check": self.check}

    @classmethod
    def from_dict(cls, d: dict) -> "Claim":
        return cls(d["artefact"], d["claim"], E.Judgement.from_dict(d["judgement"]), d.get("effect", ""),
                   d.get("evidence", ""), bool(d.get("primary", False)), bool(d.get("check", False)))

    def effect_text(self) -> str:
        iv = self.judgement.effect
        if math.isnan(iv.mean):
            return "n/a"
        return str(iv)

    def preconditions_text(self) -> str:
        return "; ".join(str(p) for p in self.judgement.preconditions) or "none"


def claim(artefact: str, text: str, values, *, effect: str, direction: int = 1, se=None, preconditions=(),
          evidence: str = "", bounds=None, opposite_possible: bool = True, primary: bool = False,
          check: bool = False) -> Claim:
    """A :class:`Claim` judged from per-seed effect ``values`` (see :func:`jaxhfc.evidence.judge`:
    ``bounds`` is the effect's possible range, ``opposite_possible=False`` says a floor or ceiling
    made the other sign impossible). Its family's Holm control is applied when the artefact is
    written (:func:`family`)."""
    return Claim(artefact, text, E.judge(list(values), direction=direction, se=se, preconditions=preconditions,
                                         bounds=bounds, opposite_possible=opposite_possible),
                 effect, evidence, primary, check)


def family(claims: Sequence[Claim]) -> list[Claim]:
    """An artefact's claims as one family: Holm's control of the family-wise error
    (:func:`jaxhfc.evidence.holm`) applied to their judgements in place, and the first claim
    marked primary when the driver marked none. A family already adjusted (``family_control``)
    is left as it is."""
    claims = list(claims)
    if not claims:
        return claims
    members = [c for c in claims if not c.check]  # sanity checks stay outside the family
    if members and not any(c.judgement.family_control for c in members):
        for c, j in zip(members, E.holm([c.judgement for c in members])):
            c.judgement = j
    if members and not any(c.primary for c in claims):
        members[0].primary = True
    return claims


def smoke_data_dir(data_dir: str | None, out: Path) -> str:
    """The CIFAR-10 folder of a smoke run: ``data_dir`` when it holds the archive (or a prepared
    TFDS copy), else ``<out>/generated-cifar10`` with a generated full-size archive in the standard
    format (:func:`jaxhfc.datasets.cifar10.write_generated_archive`, written once and reused)."""
    from jaxhfc import datasets
    from jaxhfc.datasets import cifar10

    if data_dir:
        try:
            datasets.load_dataset("cifar10", split="test", data_dir=data_dir)
            return data_dir
        except datasets.DatasetNotFoundError:
            pass
    folder = out / "generated-cifar10"
    log.info("smoke run: no CIFAR-10 archive%s; using a generated full-size one in %s",
             f" in {data_dir}" if data_dir else "", folder)
    cifar10.write_generated_archive(str(folder))
    return str(folder)


@dataclasses.dataclass
class Context:
    """Settings shared by every driver of one reproduction.

    Attributes:
      dataset: ``"synthetic"``, ``"cifar10"`` or a spec ``tfds:NAME``, ``npz:PATH``, ``folder:PATH``.
      scale: ``"full"`` (the paper's settings), ``"quick"`` (minutes on a CPU: small CNN, a
        few thousand images, a few epochs) or ``"tiny"`` (seconds; smoke tests and CI).
      out: results root (default ``results/<dataset slug>``, e.g. ``results/npz-digits``).
      data_dir: dataset folder for cifar10.
      model: model name for full runs (``resnet18`` or ``paper_resnet``).
      seed: the base seed; the reproduction's seeds are :attr:`seed_list`.
      seeds: how many seeds every trained artefact runs (None: the scale's default,
        :data:`DEFAULT_SEEDS`).
      progress: show progress bars.
      populations: train models that share a shape together (one compiled program). None (the
        default): where the loops take the accelerator form (:func:`jaxhfc.parallel.accelerator_loops`:
        on a GPU/TPU); on a CPU the models train one after another, which the cost benchmark
        measured faster there (docs/performance.md).
      max_population: the most models in one population.
      smoke: full scale (``scale="full"``) with every loop capped (``recipes.SMOKE``): the
        full-scale recipes, shapes and code paths in minutes, a check that they run, not a result.
      plan: a smoke run metered for a cost plan (``experiments/plan.py``): trainings on 1 device.
    """

    dataset: str = "synthetic"
    scale: str = "quick"
    out: Path | None = None
    data_dir: str | None = None
    model: str = "resnet18"
    seed: int = 0
    seeds: int | None = None
    progress: bool = True
    populations: bool | None = None
    max_population: int = 8
    smoke: bool = False
    plan: bool = False
    trainings: int = 0  # trainings actually run by this context (tests check re-runs do none)
    _datasets: dict = dataclasses.field(default_factory=dict, repr=False)
    _trained: dict = dataclasses.field(default_factory=dict, repr=False)
    _mesh: Any = dataclasses.field(default=None, repr=False)
    _size: int | None = dataclasses.field(default=None, repr=False)
    #: results of expensive evaluations shared between artefacts of one run (e.g. the attacks on
    #: an undefended model that robustness and input_defence both report), keyed by their inputs
    memo: dict = dataclasses.field(default_factory=dict, repr=False)
    #: smoke runs: the uncapped config of every capped one (by config hash), and per artefact
    #: (:attr:`artefact`, set by the driver running it) the full and capped settings it read
    full_configs: dict = dataclasses.field(default_factory=dict, repr=False)
    settings_log: dict = dataclasses.field(default_factory=dict, repr=False)
    artefact: str | None = None

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.smoke and self.scale != "full":
            raise ValueError(f"a smoke run caps the full-scale settings; scale must be 'full', got {self.scale!r}")
        from jaxhfc import datasets

        slug = datasets.dataset_slug(self.dataset) + ("-smoke" if self.smoke else "")
        self.out = Path(self.out) if self.out else Path("results") / slug
        self.out.mkdir(parents=True, exist_ok=True)
        if self.smoke and self.dataset == "cifar10":
            self.data_dir = smoke_data_dir(self.data_dir, self.out)
        if self.seeds is None and self.smoke:
            self.seeds = 1
        if self.seeds is None:
            from experiments import recipes

            own = recipes.DATASETS.get(self.dataset, {}).get("seeds", {})
            self.seeds = own.get(self.scale, DEFAULT_SEEDS[self.scale])
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive int, got {self.seeds!r}")

    @property
    def use_populations(self) -> bool:
        """Whether trainings that share a shape train together (:attr:`populations`)."""
        if self.populations is not None:
            return bool(self.populations)
        from jaxhfc import parallel

        return parallel.accelerator_loops()

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds of this reproduction: ``seed + SEED_STRIDE * i`` for ``i < seeds`` (so base
        seeds 0 and 1 give disjoint seed sets, and the first seed is the base seed)."""
        return tuple(self.seed + SEED_STRIDE * i for i in range(self.seeds))

    # ---------------------------------------------------------------- configs

    @property
    def quick(self) -> bool:
        return self.scale != "full"

    def config(self, seed: int | None = None, **overrides):
        """The vanilla config at this scale, with ``overrides`` (section dicts, e.g.
        ``net={"norm": "batch"}``) applied last.

        Full scale is the paper's vanilla set-up (Adam 1e-4, batch 100, 100 epochs, no
        augmentation, no BatchNorm, paper input scaling). Quick and tiny shrink the data,
        model and epochs but keep every other setting.
        """
        from experiments import recipes
        from jaxhfc.config import TrainConfig, merge_sections

        seed = self.seed if seed is None else seed
        own = recipes.DATASETS.get(self.dataset, {}).get("base", {}).get(self.scale, {})
        fixed = {"data": {"name": self.dataset, "dir": self.data_dir}, "run": {"seed": seed}}
        if self.draws_data:
            fixed["data"].update(seed=seed, test_seed=0)
        if self.scale == "full":
            fixed["net"] = {"name": self.model}
        defaults = {"data": {"num_val": VALIDATION[self.scale]},
                    "evaluation": {"train": True}}  # eval-mode accuracy on clean training data (generalisation gaps)
        base = TrainConfig(**merge_sections(defaults, recipes.BASE[self.scale], own, fixed))
        base = base.merged(evaluation={"radii": tuple(self.radius(r) for r in base.evaluation.radii)})
        config = base.merged(**overrides)
        if not self.smoke:
            return config
        capped = self._smoke_capped(config)
        self.full_configs[capped.config_hash()] = config
        return capped

    def _smoke_capped(self, config):
        """``config`` with the loops of a smoke run capped (``recipes.SMOKE``): its own batch size
        and everything else kept, ``epochs`` x ``steps_per_epoch`` steps, few images evaluated."""
        from experiments import recipes

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
        import jax

        return max(d for d in range(1, jax.device_count() + 1) if batch % d == 0)

    def settings(self, table: dict) -> dict:
        """A driver's settings at this scale (a copy of ``table[scale]``); a smoke run caps the
        image counts and attack steps named in ``recipes.SMOKE["settings"]`` (in nested section
        overrides too) and shortens the lists of repeated rows in ``recipes.SMOKE["lists"]``,
        keeping every other list (radii, eps, attacks, targets) whole."""
        out = dict(table[self.scale])
        if not self.smoke:
            return out
        from experiments import recipes

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

    def chance_floors(self, settings: dict) -> dict:
        """``settings`` with every accuracy floor (:data:`FLOOR_KEYS`, written for 10 balanced
        classes) put on this dataset's chance scale (:func:`jaxhfc.evidence.chance_floor`, from the
        number of classes and the majority class's share of the test subset), so that a constant
        classifier never passes one; ``floors`` records ``{key: [written, applied]}``. Unchanged for
        10 balanced classes."""
        _, test = self.datasets(self.config())
        labels = np.asarray(test.labels)
        majority = float(np.bincount(labels, minlength=test.num_classes).max() / labels.size)
        out, floors = dict(settings), {}
        for k in FLOOR_KEYS:
            if isinstance(out.get(k), (int, float)) and not isinstance(out[k], bool):
                v = E.chance_floor(out[k], num_classes=test.num_classes, majority=majority)
                floors[k] = [out[k], v]
                out[k] = v
        out["floors"] = floors
        return out

    @property
    def cascade(self) -> str:
        """Where the cascade attacks (APGD-T) run (:func:`jaxhfc.attacks.robust_accuracy`): on
        the survivors of the others, or, in a smoke run, on every image (the same result; the
        cascade's program always runs and the cost plan counts its upper bound)."""
        return "all" if self.smoke else "survivors"

    @property
    def draws_data(self) -> bool:
        """Whether each seed draws its own training data (subset, validation split and order)
        from a real dataset, with one test subset shared by all seeds. The built-in synthetic
        data keeps one generated dataset for every seed (``data_seed`` 0)."""
        return self.dataset != "synthetic"

    def eps(self, e: float) -> float:
        """A Linf eps written for CIFAR-10 (``recipes.REFERENCE_EPS`` = 0.03, the paper's 8/255)
        on this dataset's scale: ``e * dataset_eps / 0.03`` (``recipes.DATASETS``; unchanged for
        CIFAR-10 and the built-in data). Fashion-MNIST: 0.03 -> 0.1, 0.09 -> 0.3."""
        from experiments import recipes

        own = recipes.DATASETS.get(self.dataset, {}).get("eps")
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
        from experiments import recipes

        rec = {k: dict(v) for k, v in recipes.ADVERSARIAL[self.scale].items()}
        rec["adversary"] = self.scaled(rec["adversary"], keys=("eps", "step_size"))
        return rec

    @property
    def image_size(self) -> int:
        """Side of the dataset's images (32 for the built-in data and CIFAR-10, 28 for the
        MNIST family; other sources' test split is read once for it)."""
        if self._size is None:
            if self.dataset in ("synthetic", "cifar10"):
                self._size = 32
            elif self.dataset in ("fashion_mnist", "mnist"):
                self._size = 28
            else:  # another source: read its test split once for the size
                from jaxhfc import datasets

                test = datasets.load_dataset(self.dataset, split="test", data_dir=self.data_dir)
                self._size = int(min(test.images.shape[1:3]))
        return self._size

    def radius(self, r: float) -> float:
        """A radius written for 32x32 images (the paper's 4, 8, 12, 16), scaled to this dataset's
        image size: ``r * size / 32`` (an int when whole; unchanged at size 32)."""
        v = float(r) * self.image_size / 32
        return int(v) if v.is_integer() else round(v, 2)

    def pick(self, *, full, quick, tiny=None):
        """A value by scale (``tiny`` defaults to ``quick``)."""
        if self.scale == "full":
            return full
        if self.scale == "tiny" and tiny is not None:
            return tiny
        return quick

    # ---------------------------------------------------------------- data and models

    def mesh(self):
        if self._mesh is None:
            from jaxhfc import parallel

            self._mesh = parallel.make_mesh()
        return self._mesh

    def datasets(self, config):
        """``(train, test)`` for a config, loaded once per (dataset, sizes, seed)."""
        from jaxhfc.prepare import load_splits, split_key

        key = split_key(config.data)  # the fields load_splits reads (test_seed included)
        if key not in self._datasets:
            self._datasets[key] = load_splits(config)
        return self._datasets[key]

    def validation(self, config):
        """The validation split of ``config`` (held out from its training data; never trained on)."""
        from jaxhfc.prepare import split_key, load_validation

        key = ("val", split_key(config.data))
        if key not in self._datasets:
            self._datasets[key] = load_validation(config)
        return self._datasets[key]

    def run_dir(self, name: str, config) -> Path:
        return self.out / "runs" / f"{name}-s{config.run.seed}-{config.config_hash()[:10]}"

    def train(self, name: str, config) -> Trained:
        """Train ``config`` (or load it when a finished run with the same hash exists)."""
        from jaxhfc.fit import fit
        from jaxhfc.runs import load_run

        run_dir = self.run_dir(name, config)
        if run_dir in self._trained:
            return self._trained[run_dir]
        done = run_dir / "done.json"
        if done.exists():
            _, state, model = load_run(run_dir, mesh=self.mesh())
            history = R.read_jsonl(run_dir / "metrics.jsonl")
            result = Trained(name, config, state, model, history, run_dir, trained_now=False)
            log.info("%s: loaded finished run %s", name, run_dir)
        else:
            log.info("%s: training -> %s", name, run_dir)
            t0 = time.perf_counter()
            res = fit(config, run_dir, resume=True, progress=self.progress, datasets=self.datasets(config))
            self.trainings += 1
            R.write_json(done, {"name": name, "config_hash": config.config_hash(),
                                "seconds": time.perf_counter() - t0, "final": res.history[-1] if res.history else None})
            result = Trained(name, config, res.state, res.model, res.history, run_dir, trained_now=True)
        self._trained[run_dir] = result
        return result

    def train_seeds(self, name: str, **overrides) -> list[Trained]:
        """``name`` trained once per seed of :attr:`seed_list` (config :meth:`config` with
        ``overrides``); trainings that share a shape may run together as a population."""
        return self.train_many([(name, self.config(seed=s, **overrides)) for s in self.seed_list])

    def train_many(self, named_configs) -> list[Trained]:
        """Train (or load) several ``(name, config)`` pairs; returns them in order.

        Unfinished trainings that can share one compiled program (equal
        :func:`jaxhfc.train.population_key`: e.g. seeds, or LFC/HFC radii of one recipe) are
        trained together as a population (:func:`jaxhfc.train.fit_population`) when
        :attr:`populations` is on; each keeps its own run folder and resumes on its own.
        """
        from jaxhfc.fit import population_key

        named_configs = list(named_configs)
        pending: dict[Any, list] = {}
        for name, cfg in named_configs:
            run_dir = self.run_dir(name, cfg)
            if run_dir in self._trained or (run_dir / "done.json").exists():
                continue
            key = population_key(cfg) if self.use_populations else run_dir
            pending.setdefault(key, [])
            if all(self.run_dir(n, c) != run_dir for n, c in pending[key]):
                pending[key].append((name, cfg))
        for group in pending.values():
            if len(group) < 2:
                continue
            for chunk in range(0, len(group), self.max_population):
                part = group[chunk:chunk + self.max_population]
                if len(part) > 1:
                    self._train_population(part)
        return [self.train(name, cfg) for name, cfg in named_configs]

    def _train_population(self, group) -> None:
        from jaxhfc.fit import fit_population

        dirs = [self.run_dir(n, c) for n, c in group]
        log.info("population of %d: %s", len(group), ", ".join(d.name for d in dirs))
        t0 = time.perf_counter()
        splits = {id(self.datasets(c)): self.datasets(c) for _, c in group}
        results = fit_population([c for _, c in group], dirs, resume=True, progress=self.progress,
                                       datasets=next(iter(splits.values())) if len(splits) == 1 else None)
        seconds = (time.perf_counter() - t0) / len(group)
        for (name, cfg), run_dir, res in zip(group, dirs, results):
            self.trainings += 1
            R.write_json(run_dir / "done.json", {"name": name, "config_hash": cfg.config_hash(), "seconds": seconds,
                                                 "population": len(group),
                                                 "final": res.history[-1] if res.history else None})
            self._trained[run_dir] = Trained(name, cfg, res.state, res.model, res.history, run_dir, trained_now=True)

    def vanilla(self, seed: int | None = None) -> Trained:
        """M_natural for one seed (default: the base seed)."""
        return self.train("vanilla", self.config(seed=seed))

    def vanillas(self) -> list[Trained]:
        """M_natural, the vanilla model every artefact shares, for every seed."""
        return self.train_seeds("vanilla")

    def batchnorms(self) -> list[Trained]:
        """The vanilla model with BatchNorm, for every seed (shared by heuristics and radius_curves)."""
        return self.train_seeds("batchnorm", net={"norm": "batch"})

    def adversarial(self, seed: int | None = None) -> Trained:
        """M_adversarial for one seed: Madry PGD training (paper: Linf eps 0.03, 10 steps of
        0.003, no random start, crop + flip; recipes.ADVERSARIAL per scale)."""
        return self.train("adversarial", self.config(seed=seed, **self.adversarial_overrides()))

    def twin_overrides(self) -> dict:
        """M_adversarial's recipe without the attack (same norm, augmentation, ...): the model to
        compare with when a claim is about what adversarial training does."""
        from experiments import recipes

        return {k: dict(v) for k, v in recipes.ADVERSARIAL[self.scale].items() if k != "adversary"}

    def twins(self) -> list[Trained]:
        """M_adversarial's clean twin (:meth:`twin_overrides`) for every seed."""
        return self.train_seeds("adv_twin", **self.twin_overrides())

    def adversarials(self) -> list[Trained]:
        """M_adversarial for every seed."""
        return self.train_seeds("adversarial", **self.adversarial_overrides())

    def test_arrays(self, config, *, kind: str | None = None, radius: float | None = None, split: str = "test"):
        """``(x unit scale float32, y int32)`` of the test (or ``"val"``idation) split, optionally filtered."""
        from jaxhfc import datasets

        test = self.datasets(config)[1] if split == "test" else self.validation(config)
        if kind:
            test = datasets.filter_dataset(test, kind, radius)
        return np.asarray(datasets.to_model_input(test, scaling=config.data.scaling), np.float32), np.asarray(test.labels, np.int32)

    def outcomes(self, trained: Trained, names: Sequence[str]) -> dict[str, np.ndarray]:
        """``{name: (N,) bool}``: whether each example of the named evaluation sets is classified
        right (:meth:`predictions`)."""
        return {k: pred == y for k, (pred, y) in self.predictions(trained, names).items()}

    def predictions(self, trained: Trained, names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-example outcomes of a trained model on evaluation sets of its own config
        (:func:`jaxhfc.prepare.prepare_data`: ``test``, ``test_low_<r>``, ``test_high_<r>``,
        ``train``, ``train_low_<r>``): ``{name: (predicted labels (N,), labels (N,))}``. Recomputed from the final state in eval mode at the run's evaluation batch size
        (BatchNorm with current-batch statistics sees the batches it was scored on), so the
        share right is the run's last recorded accuracy on that set (a mismatch raises ValueError)."""
        from jaxhfc.evaluation import predict
        from jaxhfc.prepare import prepare_data

        cfg = trained.config
        key = ("eval sets", cfg.data, cfg.evaluation)
        if key not in self._datasets:
            self._datasets[key] = prepare_data(cfg, self.datasets(cfg))["eval"]
        sets = self._datasets[key]
        out = {}
        for name in names:
            if name not in sets:
                raise KeyError(f"{trained.name}: no evaluation set {name!r}; its config has {sorted(sets)}")
            x, y = sets[name]
            pred = np.asarray(predict(trained.state, trained.model, self.mesh(), x, batch_size=cfg.evaluation.batch_size))
            y = np.asarray(y)
            right = pred == y
            recorded = final(trained, name)
            if recorded is not None and abs(float(right.mean()) - recorded) > 0.5 / len(y):
                raise ValueError(f"{trained.name} ({trained.run_dir}): per-example outcomes on {name} give accuracy "
                                 f"{float(right.mean()):.4f}, the run recorded {recorded:.4f}; the outcomes do not "
                                 "belong to this model's recorded evaluation")
            out[name] = (pred, y)
        return out

    # ---------------------------------------------------------------- writing

    def artefact_dir(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def paired_terms(a, b) -> np.ndarray:
    """Per-example terms ``a - b`` of two arms' outcomes on the same images (bool or float
    ``(N,)``). Raises ValueError unless both are 1-D of one length >= 2 (no broadcasting)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"the two arms' per-example outcomes must align image by image (1-D, one length >= 2); "
                         f"got shapes {a.shape} and {b.shape}")
    return a.astype(np.float64) - b.astype(np.float64)


def image_se(per_seed: Sequence[dict], terms: Callable[[dict], Any], fallback: Callable[[dict], float]) -> list[float]:
    """Per-image standard errors of a per-seed effect for :func:`claim`'s ``se``.

    ``terms(m)`` gives a seed's per-example effect terms (e.g. ``1[A right] - 1[B right]`` on
    each test image, or None when its metrics lack them). When every seed has them, of one
    length, they are paired over seeds image by image (:func:`jaxhfc.evidence.seeds_paired_se`;
    seeds share one test set). Otherwise ``fallback(m)``: the seed's add-one binomial error
    (:func:`jaxhfc.evidence.diff_se`), conservative.
    """
    arrays = [terms(m) for m in per_seed]
    if all(a is None for a in arrays):
        return [float(fallback(m)) for m in per_seed]
    shapes = [None if a is None else np.shape(a) for a in arrays]
    if any(a is None for a in arrays) or len(set(shapes)) != 1 or len(shapes[0]) != 1 or shapes[0][0] < 2:
        raise ValueError(f"per-example terms must be present for every seed, 1-D, of one length >= 2 (the seeds "
                         f"share one test set); got shapes {shapes}")
    return E.seeds_paired_se(np.stack([np.asarray(a, np.float64) for a in arrays]))


def outcome_records(per_seed: Sequence[dict], seeds: Sequence[int], key: str = "correct") -> dict[str, np.ndarray]:
    """``{"seed <s>|<name>": array}`` of the per-example arrays kept under ``m[key]`` of each
    seed's metrics (nested dicts joined by ``|``), for :func:`write_artefact`'s ``outcomes``."""
    out: dict[str, np.ndarray] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}|{k}", v)
        else:
            out[prefix] = np.asarray(value)

    for s, m in zip(seeds, per_seed):
        walk(f"seed {s}", m.get(key, {}))
    return out


def combine_seeds(per_seed: Sequence[Sequence[dict]], *, confidence: float = 0.95) -> list[dict]:
    """Rows of several seeds (the same rows in the same order for every seed) as one set of
    rows: a number becomes ``{"mean", "low", "high", "n", "values"}`` (``low``/``high``: the
    Student-t interval over seeds; NaN with one seed), anything else is kept from the first
    seed. A cell missing (None) on some seed is averaged over the seeds that have it."""
    if not per_seed:
        return []
    n_rows = len(per_seed[0])
    if any(len(rows) != n_rows for rows in per_seed):
        raise ValueError(f"every seed must give the same rows; got {[len(r) for r in per_seed]} rows")
    out = []
    for i in range(n_rows):
        row = {}
        for col, first in per_seed[0][i].items():
            vals = [rows[i].get(col) for rows in per_seed]
            nums = [float(v) for v in vals if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                    and v is not None and math.isfinite(float(v))]
            if isinstance(first, (float, np.floating)) or (nums and not isinstance(first, (str, bool))
                                                           and not isinstance(first, (int, np.integer))):
                if not nums:
                    row[col] = None
                    continue
                if len(nums) == len(vals) and all(v == nums[0] for v in nums):
                    row[col] = nums[0]  # the same on every seed (a reference value, a setting)
                    continue
                iv = E.interval(nums, confidence=confidence)
                row[col] = {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "values": vals}
            else:
                row[col] = first
        out.append(row)
    return out


def cell_text(value: Any, digits: int = 3) -> Any:
    """A combined cell as ``mean ± half-width`` (95% interval over seeds) for markdown."""
    if isinstance(value, dict) and "mean" in value:
        if value["n"] < 2 or not math.isfinite(value["low"]):
            return f"{value['mean']:.{digits}f}"
        return f"{value['mean']:.{digits}f} ± {(value['high'] - value['low']) / 2:.{digits}f}"
    return value


def mean_of(value: Any) -> float | None:
    """The mean of a combined cell (or the number itself)."""
    if isinstance(value, dict):
        return value.get("mean")
    return value


def write_artefact(
    ctx: Context,
    name: str,
    *,
    title: str,
    rows: Sequence[dict],
    columns: Sequence[str] | None = None,
    claims: Sequence[Claim] = (),
    models: dict[str, Any] | None = None,
    settings: dict | None = None,
    notes: str = "",
    figures: Sequence[str] = (),
    digits: int = 3,
    per_seed: Sequence[Sequence[dict]] | None = None,
    outcomes: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``metrics.jsonl`` (one line per row and seed), ``table.json`` and
    ``table.md`` of an artefact, from the same data.

    ``rows`` are combined rows (:func:`combine_seeds`: numeric cells are ``{mean, low, high,
    n, values}``) or plain rows; ``per_seed`` the rows of each seed (written to
    metrics.jsonl with their seed). ``models`` maps a label to a :class:`Trained` or to a list
    of them (one per seed). ``outcomes`` (``{name: (N,) array}``, e.g. from
    :func:`outcome_records`): the per-example outcomes of every seed behind the claims, written
    to ``outcomes.npz`` (:func:`jaxhfc.results.write_outcomes`).
    """
    folder = ctx.artefact_dir(name)
    claims = family(claims)

    def model_info(t: Trained) -> dict:
        return {"run_dir": str(t.run_dir), "seed": t.config.run.seed, "config": t.config.to_dict(),
                "config_hash": t.config.config_hash()}

    R.write_json(
        folder / "config.json",
        {
            "artefact": name,
            "dataset": ctx.dataset,
            "scale": ctx.scale,
            "seed": ctx.seed,
            "seeds": list(ctx.seed_list),
            "settings": settings or {},
            "models": {k: ([model_info(x) for x in t] if isinstance(t, (list, tuple)) else model_info(t))
                       for k, t in (models or {}).items()},
            "environment": R.environment_info(),
        },
    )
    if outcomes:
        R.write_outcomes(folder / "outcomes.npz", outcomes)
    metrics = folder / "metrics.jsonl"
    R.write_text(metrics, "")
    if per_seed is not None:
        for seed, seed_rows in zip(ctx.seed_list, per_seed):
            for row in seed_rows:
                R.append_jsonl(metrics, {"seed": seed, **row})
    else:
        for row in rows:
            R.append_jsonl(metrics, row)
    R.write_json(folder / "table.json", {"title": title, "columns": list(columns or (rows[0].keys() if rows else [])),
                                         "rows": list(rows), "claims": [c.to_dict() for c in claims],
                                         "seeds": list(ctx.seed_list), "figures": list(figures), "notes": notes})
    n = len(ctx.seed_list)
    md = [f"# {title}", "", f"Dataset: `{ctx.dataset}`, scale: `{ctx.scale}`, {n} seed(s) {list(ctx.seed_list)}.", ""]
    if n > 1:
        md += [f"Cells are means over the {n} seeds ± the half-width of the 95% Student-t interval over seeds.", ""]
    if notes:
        md += [notes, ""]
    md.append(R.markdown_table([{k: cell_text(v, digits) for k, v in r.items()} for r in rows], columns, digits=digits))
    if claims:
        md += ["", claims_table(claims, with_artefact=False)]
    if figures:
        md += [""] + [f"![{f}]({f})" for f in figures]
    R.write_text(folder / "table.md", "\n".join(md) + "\n")
    return folder


def claims_table(claims: Sequence[Claim], *, with_artefact: bool = True) -> str:
    """Markdown table of claims: verdict, effect with its interval, seeds, preconditions."""
    head = (["artefact"] if with_artefact else []) + ["paper's claim", "verdict", "effect (sign = claim)",
                                                      "mean [95% interval]", "seeds", "preconditions", "evidence"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in claims:
        evidence = "; ".join(t for t in (c.evidence, c.judgement.note) if t)
        cells = ([c.artefact] if with_artefact else []) + [
            ("(primary) " if c.primary else "") + c.claim, f"**{c.mark()}**", c.effect, c.effect_text(),
            str(c.judgement.effect.n), c.preconditions_text(), evidence]
        lines.append("| " + " | ".join(str(x).replace("|", "/") for x in cells) + " |")
    return "\n".join(lines) + "\n"


def seed_curve(trained: Sequence[Trained], key: str) -> tuple:
    """``(epochs, mean, low, high)`` of a metric over seeds (epochs every seed evaluated)."""
    per = [dict(zip(*curve(t.history, key))) for t in trained]
    epochs = sorted(set.intersection(*(set(p) for p in per))) if per else []
    mean, low, high = [], [], []
    for e in epochs:
        iv = E.interval([p[e] for p in per])
        mean.append(iv.mean)
        low.append(iv.low)
        high.append(iv.high)
    return epochs, mean, low, high


def finals(trained: Sequence[Trained], key: str) -> list:
    """The last value of ``key`` for every seed (None where missing)."""
    return [final(t, key) for t in trained]


def save_figure(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


def curve(history: list, key: str) -> tuple[list, list]:
    """``(epochs, values)`` of ``history[i]['accuracy'][key]`` (or a top-level key)."""
    xs, ys = [], []
    for h in history:
        value = h.get("accuracy", {}).get(key, h.get(key))
        if value is not None:
            xs.append(h["epoch"])
            ys.append(value)
    return xs, ys


def final(trained: Trained, key: str) -> float | None:
    _, ys = curve(trained.history, key)
    return ys[-1] if ys else None


#: jax.monitoring events that make up the compilation of a program (tracing, lowering, XLA).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]
_compile_listening = [False]


def compile_seconds() -> float:
    """Seconds this process has spent compiling jax programs (tracing, lowering and XLA) since
    the first call; read it before and after a piece of work to get that work's share. The
    listener is registered on the first call (drivers only: the library registers nothing)."""
    if not _compile_listening[0]:
        import jax

        def listen(event: str, duration: float, **_):
            if event in COMPILE_EVENTS:
                _compile_seconds[0] += duration

        jax.monitoring.register_event_duration_secs_listener(listen)
        _compile_listening[0] = True
    return _compile_seconds[0]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    from jaxhfc import datasets

    p.add_argument("--dataset", default="synthetic", type=datasets.dataset_arg,
                   metavar="synthetic|cifar10|fashion_mnist|mnist|tfds:NAME|npz:PATH|folder:PATH",
                   help="built-in data (synthetic), CIFAR-10, Fashion-MNIST / MNIST (IDX files), or a TFDS image "
                        "dataset, a keras-style .npz or an image folder (options ?channels=1&size=N; see jaxhfc.sources)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="minutes on a CPU: small CNN, small data, few epochs")
    g.add_argument("--tiny", action="store_true", help="seconds: a smoke run (tests and CI)")
    g.add_argument("--smoke", action="store_true",
                   help="the full-scale recipes (ResNet18, batch 100, every evaluation set, full attack lists) with "
                        "every loop capped to a few steps and images (recipes.SMOKE): checks the full-scale path runs; "
                        "with --dataset cifar10 and no archive in --data-dir, a generated full-size archive is used")
    p.add_argument("--loops", default="auto", choices=("auto", "accelerator", "cpu"),
                   help="form of the training, population and attack loops: auto follows the backend; accelerator "
                        "runs the GPU/TPU form (scanned steps, vmapped populations, rolled PGD loops) on a CPU too")
    p.add_argument("--out", default=None, help="results root (default results/<dataset>)")
    p.add_argument("--data-dir", default=None,
                   help="folder with cifar-10-python.tar.gz or a prepared TFDS dir, or with the Fashion-MNIST / MNIST "
                        "IDX files (default for those: /usr/share/datasets/<name>, then ~/.keras/datasets/<name>)")
    p.add_argument("--model", default="resnet18", choices=("resnet18", "paper_resnet"), help="model of full-scale runs")
    p.add_argument("--seed", type=int, default=None,
                   help="base seed (the seeds are seed + 1009 * i); default 0, or the dataset's own base seed "
                        "(recipes.DATASETS: 3 for the built-in data, whose recipes were calibrated on seeds 0-2)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds per trained artefact (default by scale: {DEFAULT_SEEDS})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--cpu-devices", default="auto",
                   help="split the CPU into this many XLA devices for data parallelism: 'auto' (default) = the "
                        "number of cores, unless XLA_FLAGS already sets a device count; 1 = off. No effect on the "
                        "accelerator of a GPU/TPU host")
    return p


def configure_cpu_devices(value: str | int = "auto", *, environ=None, cores: int | None = None) -> int | None:
    """``--cpu-devices``: :func:`jaxhfc.parallel.request_cpu_devices` (one XLA device per core
    by default, so data parallelism uses every core of a CPU host)."""
    from jaxhfc import parallel

    return parallel.request_cpu_devices(value, environ=environ, cores=cores)


def quiet_read_only_checkpoints(record: logging.LogRecord) -> bool:
    """Logging filter: drop orbax's warnings that a checkpoint manager opened read-only (to load
    a finished run) is read-only; they say nothing the user needs."""
    msg = record.getMessage()
    return not (msg.startswith("CheckpointManagerOptions.read_only=True") or msg.startswith("Given directory is read only"))


def context_from_args(args) -> Context:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("experiments").setLevel(logging.INFO)
    logging.getLogger("absl").addFilter(quiet_read_only_checkpoints)
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    configure_cpu_devices(getattr(args, "cpu_devices", "auto"))
    loops = getattr(args, "loops", "auto")
    if loops != "auto":
        import os

        from jaxhfc import parallel

        os.environ[parallel.LOOPS_ENV] = loops
    smoke, plan = bool(getattr(args, "smoke", False)), bool(getattr(args, "plan", False))
    seed = args.seed
    if seed is None:
        from experiments import recipes

        seed = int(recipes.DATASETS.get(args.dataset, {}).get("base_seed", 0))
    return Context(dataset=args.dataset, scale=scale, out=args.out, data_dir=args.data_dir, model=args.model,
                   seed=seed, seeds=args.seeds, progress=not args.no_progress, smoke=smoke or plan, plan=plan)


def run_cli(fn: Callable[[], Any]) -> Any:
    """Run a driver; a missing or corrupt dataset is one clear line and exit status 2."""
    import sys

    from jaxhfc import datasets

    try:
        return fn()
    except (datasets.DatasetNotFoundError, datasets.CorruptDatasetError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main_for(run: Callable[[Context], Any], description: str, argv=None) -> Any:
    args = parser(description).parse_args(argv)
    ctx = context_from_args(args)
    # a driver run alone (also as __main__): its NAME, so its per-artefact smoke caps apply
    ctx.artefact = getattr(sys.modules.get(run.__module__), "NAME", None)
    out = run_cli(lambda: run(ctx))
    print(f"wrote {ctx.out}")
    return out
