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
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jaxhfc import results as R

log = logging.getLogger("experiments")

SCALES = ("full", "quick", "tiny")


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
        from jaxhfc import train

        return train.logits_fn(self.state, self.model)


@dataclasses.dataclass
class Claim:
    """One qualitative claim of the paper and whether our run supports it."""

    artefact: str
    claim: str
    holds: bool | None
    evidence: str

    def mark(self) -> str:
        return {True: "holds", False: "does not hold", None: "not tested"}[self.holds]


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
      seed: the one seed.
      progress: show progress bars.
    """

    dataset: str = "synthetic"
    scale: str = "quick"
    out: Path | None = None
    data_dir: str | None = None
    model: str = "resnet18"
    seed: int = 0
    progress: bool = True
    trainings: int = 0  # trainings actually run by this context (tests check re-runs do none)
    _datasets: dict = dataclasses.field(default_factory=dict, repr=False)
    _trained: dict = dataclasses.field(default_factory=dict, repr=False)
    _mesh: Any = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        from jaxhfc import sources

        self.out = Path(self.out) if self.out else Path("results") / sources.dataset_slug(self.dataset)
        self.out.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- configs

    @property
    def quick(self) -> bool:
        return self.scale != "full"

    def config(self, **overrides):
        """The vanilla config at this scale, with ``overrides`` applied last.

        Full scale is the paper's vanilla set-up (Adam 1e-4, batch 100, 100 epochs, no
        augmentation, no BatchNorm, paper input scaling). Quick and tiny shrink the data,
        model and epochs but keep every other setting.
        """
        from experiments import recipes
        from jaxhfc import train

        fields = dict(recipes.BASE[self.scale], dataset=self.dataset, data_dir=self.data_dir, seed=self.seed)
        if self.scale == "full":
            fields["model"] = self.model
        base = train.TrainConfig(**fields)
        return dataclasses.replace(base, **overrides)

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
        from jaxhfc import train

        key = (config.dataset, config.data_dir, config.data_source, config.data_seed, config.num_train, config.num_test)
        if key not in self._datasets:
            self._datasets[key] = train.load_splits(config)
        return self._datasets[key]

    def run_dir(self, name: str, config) -> Path:
        return self.out / "runs" / f"{name}-{config.config_hash()[:10]}"

    def train(self, name: str, config) -> Trained:
        """Train ``config`` (or load it when a finished run with the same hash exists)."""
        from jaxhfc import train

        run_dir = self.run_dir(name, config)
        if run_dir in self._trained:
            return self._trained[run_dir]
        done = run_dir / "done.json"
        if done.exists():
            _, state, model = train.load_run(run_dir, mesh=self.mesh())
            history = R.read_jsonl(run_dir / "metrics.jsonl")
            result = Trained(name, config, state, model, history, run_dir, trained_now=False)
            log.info("%s: loaded finished run %s", name, run_dir)
        else:
            log.info("%s: training -> %s", name, run_dir)
            t0 = time.perf_counter()
            res = train.fit(config, run_dir, resume=True, progress=self.progress, datasets=self.datasets(config))
            self.trainings += 1
            R.write_json(done, {"name": name, "config_hash": config.config_hash(),
                                "seconds": time.perf_counter() - t0, "final": res.history[-1] if res.history else None})
            result = Trained(name, config, res.state, res.model, res.history, run_dir, trained_now=True)
        self._trained[run_dir] = result
        return result

    def vanilla(self) -> Trained:
        """M_natural: the vanilla model every artefact shares."""
        return self.train("vanilla", self.config())

    def adversarial(self) -> Trained:
        """M_adversarial: Madry PGD training with the paper's settings (Linf eps 0.03, 10
        steps of 0.003, no random start, crop + flip)."""
        from experiments import recipes

        cfg = self.config(**recipes.ADVERSARIAL[self.scale])
        return self.train("adversarial", cfg)

    def test_arrays(self, config, *, kind: str | None = None, radius: float | None = None):
        """``(x unit scale float32, y int32)`` of the test split, optionally filtered."""
        from jaxhfc import data

        _, test = self.datasets(config)
        if kind:
            test = data.filter_dataset(test, kind, radius)
        return np.asarray(data.to_model_input(test, scaling=config.scaling), np.float32), np.asarray(test.labels, np.int32)

    # ---------------------------------------------------------------- writing

    def artefact_dir(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def write_artefact(
    ctx: Context,
    name: str,
    *,
    title: str,
    rows: Sequence[dict],
    columns: Sequence[str] | None = None,
    claims: Sequence[Claim] = (),
    models: dict[str, Trained] | None = None,
    settings: dict | None = None,
    notes: str = "",
    figures: Sequence[str] = (),
    digits: int = 3,
) -> Path:
    """Write ``config.json``, ``metrics.jsonl`` (one line per row), ``table.json`` and
    ``table.md`` of an artefact, from the same data."""
    folder = ctx.artefact_dir(name)
    R.write_json(
        folder / "config.json",
        {
            "artefact": name,
            "dataset": ctx.dataset,
            "scale": ctx.scale,
            "seed": ctx.seed,
            "settings": settings or {},
            "models": {k: {"run_dir": str(t.run_dir), "config": t.config.to_dict(), "config_hash": t.config.config_hash()}
                       for k, t in (models or {}).items()},
            "environment": R.environment_info(),
        },
    )
    metrics = folder / "metrics.jsonl"
    R.write_text(metrics, "")
    for row in rows:
        R.append_jsonl(metrics, row)
    R.write_json(folder / "table.json", {"title": title, "columns": list(columns or (rows[0].keys() if rows else [])),
                                         "rows": list(rows), "claims": [dataclasses.asdict(c) for c in claims],
                                         "figures": list(figures), "notes": notes})
    md = [f"# {title}", "", f"Dataset: `{ctx.dataset}`, scale: `{ctx.scale}`.", ""]
    if notes:
        md += [notes, ""]
    md.append(R.markdown_table(rows, columns, digits=digits))
    if claims:
        md += ["", "| paper's claim | in our run | evidence |", "|---|---|---|"]
        md += [f"| {c.claim} | **{c.mark()}** | {c.evidence} |" for c in claims]
    if figures:
        md += [""] + [f"![{f}]({f})" for f in figures]
    R.write_text(folder / "table.md", "\n".join(md) + "\n")
    return folder


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


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    from jaxhfc import sources

    p.add_argument("--dataset", default="synthetic", type=sources.dataset_arg,
                   metavar="synthetic|cifar10|tfds:NAME|npz:PATH|folder:PATH",
                   help="built-in data, or a TFDS image dataset, a keras-style .npz or an image folder "
                        "(options ?channels=1&size=N; see jaxhfc.sources)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="minutes on a CPU: small CNN, small data, few epochs")
    g.add_argument("--tiny", action="store_true", help="seconds: a smoke run (tests and CI)")
    p.add_argument("--out", default=None, help="results root (default results/<dataset>)")
    p.add_argument("--data-dir", default=None, help="folder with cifar-10-python.tar.gz or a prepared TFDS dir")
    p.add_argument("--model", default="resnet18", choices=("resnet18", "paper_resnet"), help="model of full-scale runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def context_from_args(args) -> Context:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("experiments").setLevel(logging.INFO)
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    return Context(dataset=args.dataset, scale=scale, out=args.out, data_dir=args.data_dir, model=args.model,
                   seed=args.seed, progress=not args.no_progress)


def run_cli(fn: Callable[[], Any]) -> Any:
    """Run a driver; a missing or corrupt dataset is one clear line and exit status 2."""
    import sys

    from jaxhfc import data

    try:
        return fn()
    except (data.DatasetNotFoundError, data.CorruptDatasetError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main_for(run: Callable[[Context], Any], description: str, argv=None) -> Any:
    args = parser(description).parse_args(argv)
    ctx = context_from_args(args)
    out = run_cli(lambda: run(ctx))
    print(f"wrote {ctx.out}")
    return out
