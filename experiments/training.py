"""The trained models of one reproduction: each trained once per config and shared by every
artefact that asks for it.

A model is identified by its name, seed and config hash (``<out>/runs/<name>-s<seed>-<hash>/``).
A finished training is loaded, never repeated; a killed one continues from its newest
checkpoint. Trainings that can share one compiled program train together as a population where
that pays (on an accelerator). The datasets, evaluation sets and shared evaluation results of
the run are cached here too.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
import time
from typing import Any, Sequence

import numpy as np

from experiments.setup import Setup
from jaxhfc import datasets, evaluation, parallel
from jaxhfc import evidence as E
from jaxhfc import results as R
from jaxhfc.fit import fit, fit_population, population_key
from jaxhfc.prepare import load_splits, load_validation, prepare_data, split_key
from jaxhfc.runs import load_run

log = logging.getLogger("experiments")

#: Settings keys that are accuracy floors of preconditions, written for 10 balanced classes
#: (:meth:`ModelCache.chance_floors` puts them on a dataset's own chance scale).
FLOOR_KEYS = ("min_test", "adv_min", "hfc_min", "fit_min")


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
        return evaluation.logits_fn(self.state, self.model)



class ModelCache:
    """Trains (or loads) the models of one reproduction and caches its data.

    Args:
      setup: the reproduction's :class:`experiments.setup.Setup` (configs come from it).
      progress: show progress bars.
      populations: train models that share a shape together (one compiled program). None (the
        default): where the loops take the accelerator form (:func:`jaxhfc.parallel.accelerator_loops`:
        on a GPU/TPU); on a CPU the models train one after another, which the cost benchmark
        measured faster there (docs/performance.md).
      max_population: the most models in one population.
    """

    def __init__(self, setup: Setup, *, progress: bool = True, populations: bool | None = None,
                 max_population: int = 8):
        self.setup = setup
        self.progress = progress
        self.populations = populations
        self.max_population = max_population
        self.trainings = 0  # trainings actually run here (tests check re-runs do none)
        #: results of expensive evaluations shared between artefacts of one run (e.g. the attacks
        #: on an undefended model that robustness and input_defence both report), keyed by their inputs
        self.memo: dict = {}
        self._datasets: dict = {}
        self._trained: dict = {}
        self._mesh = None

    @property
    def use_populations(self) -> bool:
        """Whether trainings that share a shape train together (:attr:`populations`)."""
        if self.populations is not None:
            return bool(self.populations)
        return parallel.accelerator_loops()

    def mesh(self):
        if self._mesh is None:

            self._mesh = parallel.make_mesh()
        return self._mesh

    def datasets(self, config):
        """``(train, test)`` for a config, loaded once per (dataset, sizes, seed)."""
        key = split_key(config.data)  # the fields load_splits reads (test_seed included)
        if key not in self._datasets:
            self._datasets[key] = load_splits(config)
        return self._datasets[key]

    def validation(self, config):
        """The validation split of ``config`` (held out from its training data; never trained on)."""
        key = ("val", split_key(config.data))
        if key not in self._datasets:
            self._datasets[key] = load_validation(config)
        return self._datasets[key]

    def run_dir(self, name: str, config) -> Path:
        return self.setup.out / "runs" / f"{name}-s{config.run.seed}-{config.config_hash()[:10]}"

    def train(self, name: str, config) -> Trained:
        """Train ``config`` (or load it when a finished run with the same hash exists)."""
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
        return self.train_many([(name, self.setup.config(seed=s, **overrides)) for s in self.setup.seed_list])

    def train_many(self, named_configs) -> list[Trained]:
        """Train (or load) several ``(name, config)`` pairs; returns them in order.

        Unfinished trainings that can share one compiled program (equal
        :func:`jaxhfc.train.population_key`: e.g. seeds, or LFC/HFC radii of one recipe) are
        trained together as a population (:func:`jaxhfc.train.fit_population`) when
        :attr:`populations` is on; each keeps its own run folder and resumes on its own.
        """
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
        return self.train("vanilla", self.setup.config(seed=seed))

    def vanillas(self) -> list[Trained]:
        """M_natural, the vanilla model every artefact shares, for every seed."""
        return self.train_seeds("vanilla")

    def batchnorms(self) -> list[Trained]:
        """The vanilla model with BatchNorm, for every seed (shared by heuristics and radius_curves)."""
        return self.train_seeds("batchnorm", net={"norm": "batch"})

    def adversarial(self, seed: int | None = None) -> Trained:
        """M_adversarial for one seed: Madry PGD training (paper: Linf eps 0.03, 10 steps of
        0.003, no random start, crop + flip; recipes.ADVERSARIAL per scale)."""
        return self.train("adversarial", self.setup.config(seed=seed, **self.setup.adversarial_overrides()))

    def twins(self) -> list[Trained]:
        """M_adversarial's clean twin (:meth:`twin_overrides`) for every seed."""
        return self.train_seeds("adv_twin", **self.setup.twin_overrides())

    def adversarials(self) -> list[Trained]:
        """M_adversarial for every seed."""
        return self.train_seeds("adversarial", **self.setup.adversarial_overrides())

    def test_arrays(self, config, *, kind: str | None = None, radius: float | None = None, split: str = "test"):
        """``(x unit scale float32, y int32)`` of the test (or ``"val"``idation) split, optionally filtered."""
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
            pred = np.asarray(evaluation.predict(trained.state, trained.model, self.mesh(), x,
                                                 batch_size=cfg.evaluation.batch_size))
            y = np.asarray(y)
            right = pred == y
            recorded = final(trained, name)
            if recorded is not None and abs(float(right.mean()) - recorded) > 0.5 / len(y):
                raise ValueError(f"{trained.name} ({trained.run_dir}): per-example outcomes on {name} give accuracy "
                                 f"{float(right.mean()):.4f}, the run recorded {recorded:.4f}; the outcomes do not "
                                 "belong to this model's recorded evaluation")
            out[name] = (pred, y)
        return out

    def chance_floors(self, settings: dict) -> dict:
        """``settings`` with every accuracy floor (:data:`FLOOR_KEYS`, written for 10 balanced
        classes) put on this dataset's chance scale (:func:`jaxhfc.evidence.chance_floor`, from the
        number of classes and the majority class's share of the test subset), so that a constant
        classifier never passes one; ``floors`` records ``{key: [written, applied]}``. Unchanged for
        10 balanced classes."""
        _, test = self.datasets(self.setup.config())
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
