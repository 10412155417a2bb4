"""What a time budget buys (experiments.budget), on hand-made results folders whose best subsets
are worked out by hand."""

import json

import pytest

from experiments import budget
from jaxhfc import results as R


def _run(tmp_path, *, trained=None, keep_runs=True):
    """Three artefacts: prediction_counts lists v1 v2, table1 t1, robustness v1 a1 (v1 shared).
    Trainings: v1 100 s, v2 100 s, t1 300 s, a1 400 s. Wall times from an empty folder hold the
    trainings each artefact ran first: own work 50, 20, 200 s."""
    out = tmp_path / "r"
    lists = {"prediction_counts": ["v1", "v2"], "table1": ["t1"], "robustness": ["v1", "a1"]}
    verdicts = {"prediction_counts": ["holds", "inconclusive"], "table1": ["contradicted"],
                "robustness": ["holds", "holds"]}
    for art, names in lists.items():
        R.write_json(out / art / "config.json",
                     {"models": {"m": [{"run_dir": f"/elsewhere/runs/{n}", "seed": 0} for n in names]}})
        claims = [{"claim": "x", "judgement": {"verdict": v}} for v in verdicts[art]]
        claims.append({"claim": "sanity", "check": True, "judgement": {"verdict": "holds"}})  # not counted
        R.write_json(out / art / "table.json", {"claims": claims})
    R.write_json(out / "timings.json", {"prediction_counts": 250.0, "table1": 320.0, "robustness": 600.0})
    seconds = {"v1": 100.0, "v2": 100.0, "t1": 300.0, "a1": 400.0}
    if keep_runs:
        for n, s in seconds.items():
            R.write_json(out / "runs" / n / "done.json", {"name": n, "seconds": s})
    else:
        R.write_json(out / budget.TRAININGS_FILE, seconds)
    line = "Made by x.\n"
    if trained is not None:
        line += f"\n4 trained models in `runs/`, 15.0 min of training in all; this invocation trained {trained} of them.\n"
    (out / "README.md").write_text(line)
    return out


def test_costs_split_each_training_to_the_first_artefact_that_listed_it(tmp_path):
    run = _run(tmp_path)
    c = budget.costs(run)
    assert c.own == {"prediction_counts": 50.0, "table1": 20.0, "robustness": 200.0}
    assert c.seconds(["robustness"]) == (500.0, 200.0)  # v1 and a1: the shared model is trained here too
    assert c.seconds(["prediction_counts", "robustness"]) == (600.0, 250.0)  # v1 counted once
    assert sum(c.seconds(list(c.own))) == pytest.approx(250 + 320 + 600)  # the whole run's wall time again
    assert budget.claim_counts(run) == {"prediction_counts": (2, 1), "table1": (1, 1), "robustness": (2, 2)}


def test_best_subset_by_hand(tmp_path):
    run = _run(tmp_path)
    c, counts = budget.costs(run), budget.claim_counts(run)
    # 600 s: robustness alone needs 700; prediction_counts + table1 (570 s) decide 2
    assert budget.best_subset(c, counts, 600) == (("prediction_counts", "table1"), 570.0)
    # 900 s: prediction_counts + robustness (850 s) decide 3; table1 + robustness would need 1,020
    assert budget.best_subset(c, counts, 900) == (("prediction_counts", "robustness"), 850.0)
    assert budget.best_subset(c, counts, 1170) == (("prediction_counts", "table1", "robustness"), 1170.0)
    assert budget.best_subset(c, counts, 200) == ((), 0.0)  # nothing fits
    # equal decided and claims: the cheaper subset
    tie = {"prediction_counts": (1, 1), "table1": (1, 1), "robustness": (0, 0)}
    assert budget.best_subset(c, tie, 300) == (("prediction_counts",), 250.0)


def test_budget_text_and_its_refusals(tmp_path):
    run = _run(tmp_path)
    text = budget.budget_text(run, 10)
    assert text.startswith("From an empty folder, 10 minutes buy `--only prediction_counts table1`: about 9.5 min "
                           "(3 trainings, 8.3 min, each counted once; the artefacts' own work 1.2 min), deciding 2 of "
                           "the 4 decided claims (3 of all 5).")
    assert "The whole run is 19.5 min, 1.9x the budget: 4 trainings 15.0 min" in text
    assert text.endswith("(largest: robustness 3.3, prediction_counts 0.8). The trainings alone exceed the budget.")
    # own work 4.5 min: over a 4-minute budget by itself too
    assert budget.budget_text(run, 4).endswith("The trainings alone exceed the budget, and so does the artefacts' "
                                               "own work.")
    cheap = _run(tmp_path / "cheap", keep_runs=False)  # trainings of 1 s: the own work is the wall time
    R.write_json(cheap / budget.TRAININGS_FILE, {"v1": 1.0, "v2": 1.0, "t1": 1.0, "a1": 1.0})
    assert budget.budget_text(cheap, 10).endswith("(largest: robustness 10.0, table1 5.3). The artefacts' own work "
                                                  "alone exceeds the budget.")
    assert budget.budget_text(run, 20).endswith("The whole run fits: 19.5 min.")
    assert budget.budget_text(run, 1).startswith("From an empty folder, no artefact fits in 1 minutes.")
    # a run that loaded finished trainings has them outside the wall times: no split
    assert budget.costs(_run(tmp_path / "a", trained=2)) is None and budget.budget_text(_run(tmp_path / "b", trained=2), 10) == ""
    assert budget.costs(_run(tmp_path / "c", trained=4)) is not None
    # a listed model without recorded seconds: no split
    lost = _run(tmp_path / "d")
    (lost / "runs" / "a1" / "done.json").unlink()
    assert budget.costs(lost) is None
    assert budget.costs(tmp_path / "nothing") is None


def test_training_seconds_outlive_the_run_folders(tmp_path):
    run = _run(tmp_path)
    path = budget.write_training_seconds(run)
    assert json.loads(path.read_text()) == {"a1": 400.0, "t1": 300.0, "v1": 100.0, "v2": 100.0}
    committed = _run(tmp_path / "c", keep_runs=False)  # no runs/: the file written beside timings.json
    assert budget.training_seconds(committed) == budget.training_seconds(run)
    assert budget.costs(committed).own == budget.costs(run).own
    assert budget.write_training_seconds(committed) is None  # nothing to write from
    # a later --only run adds its runs and keeps the others' seconds
    R.write_json(run / "runs" / "v1" / "done.json", {"seconds": 90.0})
    for n in ("v2", "t1", "a1"):
        (run / "runs" / n / "done.json").unlink()
    budget.write_training_seconds(run)
    assert json.loads(path.read_text()) == {"a1": 400.0, "t1": 300.0, "v1": 90.0, "v2": 100.0}
