"""What a time budget buys from a reproduction: which artefacts to run (``reproduce_all --only``)
so that the most claims are decided within the budget, each training counted once.

A run from an empty folder trains every model the first time an artefact asks for it, so an
artefact's wall time (``timings.json``) holds the trainings it ran first and its own work
(attacks, evaluation, figures). Each artefact's ``config.json`` lists the run folders of the
models it uses; their seconds come from ``runs/*/done.json``, or, where the run folders are not
kept (a committed results folder), from ``training_seconds.json``, which
:func:`write_training_seconds` writes beside ``timings.json``. A subset of artefacts then costs
its artefacts' own work plus the trainings of the union of the models they list, and the best
subset is found by trying every subset (ten artefacts: 1,024 subsets).

Compilation is the one shared cost this does not split: programs an earlier artefact compiled
are reused by later ones, so an artefact run alone may compile a little more than its share.
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
from pathlib import Path
import re

from experiments.reporting import ARTEFACTS
from jaxhfc import results as R

#: run folder name -> training seconds, written beside timings.json
TRAININGS_FILE = "training_seconds.json"

_TRAINED = re.compile(r"(\d+) trained models in `runs/`.*?this invocation trained (\d+) of them")


def claim_counts(results_dir: Path) -> dict[str, tuple[int, int]]:
    """``{artefact: (claims, decided)}`` from each artefact's table.json (sanity checks left
    out; decided: holds or contradicted); empty when no artefact has judged claims."""
    out = {}
    for path in sorted(Path(results_dir).glob("*/table.json")):
        judged = [c for c in R.read_json(path).get("claims", []) if "judgement" in c and not c.get("check")]
        if judged:
            verdicts = [c["judgement"]["verdict"] for c in judged]
            out[path.parent.name] = (len(judged), sum(v in ("holds", "contradicted") for v in verdicts))
    return out


def _done_seconds(results_dir: Path) -> dict[str, float]:
    out = {}
    for f in sorted((Path(results_dir) / "runs").glob("*/done.json")):
        try:
            seconds = R.read_json(f).get("seconds")
        except (OSError, ValueError):
            continue
        if isinstance(seconds, (int, float)):
            out[f.parent.name] = float(seconds)
    return out


def training_seconds(results_dir: Path) -> dict[str, float]:
    """``{run folder name: seconds}`` of every finished training: ``runs/*/done.json`` where the
    run folders are there, else :data:`TRAININGS_FILE`; empty when neither is."""
    found = _done_seconds(results_dir)
    if found:
        return found
    path = Path(results_dir) / TRAININGS_FILE
    return {k: float(v) for k, v in R.read_json(path).items()} if path.is_file() else {}


def write_training_seconds(results_dir: Path) -> Path | None:
    """Write :data:`TRAININGS_FILE` from ``runs/*/done.json`` (the seconds of runs no longer
    there are kept); None, nothing written, when there is no finished run."""
    found = _done_seconds(results_dir)
    if not found:
        return None
    path = Path(results_dir) / TRAININGS_FILE
    old = R.read_json(path) if path.is_file() else {}
    R.write_json(path, {**old, **{k: round(v, 3) for k, v in sorted(found.items())}})
    return path


def artefact_runs(results_dir: Path) -> dict[str, list[str]]:
    """``{artefact: [run folder names]}``: the models each artefact's ``config.json`` lists."""
    out = {}
    for path in sorted(Path(results_dir).glob("*/config.json")):
        names = []
        for entries in (R.read_json(path).get("models") or {}).values():
            for e in entries if isinstance(entries, list) else [entries]:
                if isinstance(e, dict) and e.get("run_dir"):
                    name = Path(e["run_dir"]).name
                    if name not in names:
                        names.append(name)
        out[path.parent.name] = names
    return out


def invocation_trained(results_dir: Path) -> tuple[int, int] | None:
    """``(trained by the invocation that wrote README.md, trained models in runs/)``, from the
    line :func:`experiments.reporting.write_readme` writes; None when the README has no such line."""
    readme = Path(results_dir) / "README.md"
    found = _TRAINED.search(readme.read_text()) if readme.is_file() else None
    return (int(found.group(2)), int(found.group(1))) if found else None


def from_empty_folder(results_dir: Path) -> bool:
    """Whether the run that wrote ``README.md`` trained every model it lists (an invocation that
    loaded finished trainings has them outside its artefacts' wall times)."""
    counts = invocation_trained(results_dir)
    return counts is None or counts[0] >= counts[1]


@dataclass(frozen=True)
class Costs:
    """A run's time split: ``own`` (artefact -> seconds of its own work), ``runs`` (artefact ->
    the run folders it needs), ``training`` (run folder -> training seconds)."""

    own: dict
    runs: dict
    training: dict

    def seconds(self, artefacts) -> tuple[float, float]:
        """``(training seconds, own-work seconds)`` of running ``artefacts`` alone, from empty."""
        needed = {r for a in artefacts for r in self.runs.get(a, ())}
        return sum(self.training[r] for r in needed), sum(self.own[a] for a in artefacts)


def costs(results_dir: Path) -> Costs | None:
    """The time split of a run from an empty folder (see the module doc); None when it is not one,
    or when a model an artefact lists has no recorded training seconds."""
    results_dir = Path(results_dir)
    times_path = results_dir / "timings.json"
    if not times_path.is_file() or not from_empty_folder(results_dir):
        return None
    times, lists, secs = R.read_json(times_path), artefact_runs(results_dir), training_seconds(results_dir)
    order = [a for a, _, _ in ARTEFACTS if a in times] + [a for a in times if a not in {x for x, _, _ in ARTEFACTS}]
    if not secs or any(r not in secs for a in order for r in lists.get(a, ())):
        return None
    own, seen = {}, set()
    for a in order:  # each training is in the wall time of the first artefact that listed it
        first = [r for r in lists.get(a, ()) if r not in seen]
        seen.update(first)
        own[a] = max(float(times[a]) - sum(secs[r] for r in first), 0.0)
    return Costs(own=own, runs={a: list(lists.get(a, ())) for a in order}, training=secs)


def best_subset(c: Costs, counts: dict, budget_s: float) -> tuple[tuple, float]:
    """The artefacts (in run order) that decide the most claims within ``budget_s`` seconds from
    an empty folder, then the most claims, then the least time; ``((), 0.0)`` when none fits."""
    names = list(c.own)
    best, best_key = ((), 0.0), (0, 0, 0.0)
    for k in range(1, len(names) + 1):
        for subset in itertools.combinations(names, k):
            spent = sum(c.seconds(subset))
            if spent > budget_s:
                continue
            key = (sum(counts.get(a, (0, 0))[1] for a in subset), sum(counts.get(a, (0, 0))[0] for a in subset),
                   -spent)
            if key > best_key:
                best, best_key = (subset, spent), key
    return best


def budget_text(results_dir: Path, minutes: float, counts: dict | None = None) -> str:
    """What ``minutes`` buy from an empty folder (:func:`best_subset`), and how far the whole run
    is from them; empty when the folder has no time split (:func:`costs` is None)."""
    c = costs(results_dir)
    if c is None:
        return ""
    counts = claim_counts(results_dir) if counts is None else counts
    subset, spent = best_subset(c, counts, minutes * 60)
    n_all, d_all = sum(n for n, _ in counts.values()), sum(d for _, d in counts.values())
    train_all, own_all = c.seconds(list(c.own))
    if subset:
        train_s, own_s = c.seconds(subset)
        n_runs = len({r for a in subset for r in c.runs.get(a, ())})
        head = (f"From an empty folder, {minutes:g} minutes buy `--only {' '.join(subset)}`: about {spent / 60:.1f} min "
                f"({n_runs} trainings, {train_s / 60:.1f} min, each counted once; the artefacts' own work "
                f"{own_s / 60:.1f} min), deciding {sum(counts.get(a, (0, 0))[1] for a in subset)} of the {d_all} "
                f"decided claims ({sum(counts.get(a, (0, 0))[0] for a in subset)} of all {n_all}).")
    else:
        head = f"From an empty folder, no artefact fits in {minutes:g} minutes."
    largest = sorted(c.own, key=lambda a: -c.own[a])[:2]
    tail = (f" The whole run is {(train_all + own_all) / 60:.1f} min, {(train_all + own_all) / (minutes * 60):.1f}x "
            f"the budget: {len(c.training)} trainings {train_all / 60:.1f} min, the artefacts' own work "
            f"{own_all / 60:.1f} min (largest: " + ", ".join(f"{a} {c.own[a] / 60:.1f}" for a in largest) + ").")
    # each part that must shrink by itself, whatever the other does
    over = (train_all > minutes * 60, own_all > minutes * 60)
    tail += {(True, True): " The trainings alone exceed the budget, and so does the artefacts' own work.",
             (True, False): " The trainings alone exceed the budget.",
             (False, True): " The artefacts' own work alone exceeds the budget.", (False, False): ""}[over]
    if (train_all + own_all) <= minutes * 60:
        tail = f" The whole run fits: {(train_all + own_all) / 60:.1f} min."
    return head + tail
