"""Experiment drivers end to end at the tiny scale: every driver runs (through reproduce_all),
tables have the expected rows and columns, the prediction counts add up to the test set at
every radius, and re-running a finished driver does no training."""

import json

import numpy as np
import pytest

from experiments import common, readme_blocks, reporting, reproduce_all
from jaxhfc import results as R


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    ctx = common.Context(dataset="synthetic", scale="tiny", out=out, progress=False)
    res = reproduce_all.run(ctx)
    return ctx, res


def _table(ctx, name):
    return json.loads((ctx.out / name / "table.json").read_text())


def test_every_artefact_written(tiny_run):
    ctx, res = tiny_run
    for module, _, _ in reporting.ARTEFACTS:
        folder = ctx.out / module
        for f in ("config.json", "metrics.jsonl", "table.md", "table.json"):
            assert (folder / f).exists(), f"{module}/{f} missing"
        table = _table(ctx, module)
        assert table["rows"], module
        for fig in table["figures"]:
            assert (folder / fig).stat().st_size > 1000
        # metrics.jsonl holds the table's rows, once per seed for artefacts combined over seeds
        lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        if lines and "seed" in lines[0]:
            assert len(lines) == len(table["rows"]) * len(ctx.setup.seed_list)
            assert sorted({x["seed"] for x in lines}) == sorted(ctx.setup.seed_list)
        else:
            assert len(lines) == len(table["rows"])
    readme = (ctx.out / "README.md").read_text()
    assert "synthetic dataset" in readme and "## Claims" in readme
    for module, title, _ in reporting.ARTEFACTS:
        assert title in readme
    n_claims = sum(len(v) for v in res["claims"].values())
    section = readme.split("## Claims", 1)[1].split("## Time", 1)[0]
    scan, details = section.split("## Preconditions and evidence", 1)
    marks = ("| **holds** |", "| **contradicted** |", "| **inconclusive** |", "| **no power** |", "| **not tested** |")
    assert sum(scan.count(m) for m in marks) == n_claims == sum(details.count(m) for m in marks)
    for claims in res["claims"].values():
        for c in claims:  # every claim shows its interval (or says why it has none) and its seeds
            assert c.mark() in ("holds", "contradicted", "inconclusive", "no power", "not tested")
            assert c.effect_text() in section and c.effect in section


def test_prediction_counts_add_up(tiny_run):
    ctx, _ = tiny_run
    folder = ctx.out / "prediction_counts"
    table = _table(ctx, "prediction_counts")
    radii = [row["r"] for row in table["rows"]]
    assert radii[:17] == list(range(17)) and radii[-1] == 23
    per_seed = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert len(per_seed) == len(radii) * len(ctx.setup.seed_list)
    for row in per_seed:
        cells = [row[f"{c} ours %"] for c in ("L+H-", "L-H+", "L+H+", "L-H-")]
        assert sum(cells) == pytest.approx(100.0)
        assert row["LFC acc"] == pytest.approx((cells[0] + cells[2]) / 100)
    # at r = 0 the HFC is the original image and beyond the corner the LFC is: both are the
    # image divided by its own max (the paper scaling of filtered images), so they agree
    preds = np.load(folder / "predictions.npz")
    assert np.array_equal(preds["pred_high"][0] == preds["labels"], preds["pred_low"][-1] == preds["labels"])
    # the radius of the claim was chosen on the validation split, among the SETTINGS radii
    assert float(preds["r_star"]) in prediction_counts_settings(ctx)["select"]
    # the paper-reproduction columns are there, as fractions
    row8 = next(r for r in table["rows"] if r["r"] == 8)
    assert row8["L+H- repro %"] == pytest.approx(39.09)


def prediction_counts_settings(ctx):
    from experiments import prediction_counts

    return prediction_counts.SETTINGS[ctx.setup.scale]


def test_table_shapes(tiny_run):
    ctx, _ = tiny_run
    t1 = _table(ctx, "table1")
    assert [(r["trained on"], r["r"]) for r in t1["rows"]] == [("LFC", 4), ("LFC", 12), ("HFC", 4), ("HFC", 12)]
    assert {"train acc (repro)", "train acc (ours)", "test acc (repro)", "test acc (ours)", "test diff"} <= set(t1["columns"])
    for r in t1["rows"]:
        ours = r["test acc (ours)"]  # combined over seeds: mean, interval, per-seed values
        if isinstance(ours, dict):
            assert ours["mean"] == pytest.approx(np.mean(ours["values"]))
            assert len(ours["values"]) == len(ctx.setup.seed_list) and ours["low"] <= ours["mean"] <= ours["high"]
        else:  # the same value on every seed is written once
            ours = {"mean": ours}
        assert 0.0 <= ours["mean"] <= 1.0
        assert reporting.mean_of(r["test diff"]) == pytest.approx(ours["mean"] - r["test acc (repro)"])
    per_seed = [json.loads(x) for x in (ctx.out / "table1" / "metrics.jsonl").read_text().splitlines()]
    for i, r in enumerate(t1["rows"]):
        vals = [p["test acc (ours)"] for p in per_seed if (p["trained on"], p["r"]) == (r["trained on"], r["r"])]
        assert len(vals) == len(ctx.setup.seed_list)
        assert reporting.mean_of(r["test acc (ours)"]) == pytest.approx(np.mean(vals))
    heur = _table(ctx, "heuristics")
    variants = [r["variant"] for r in heur["rows"]]
    assert variants[:8] == ["vanilla", "mixup", "batch 32", "batch 128", "batch 128, lr x2", "dropout 0.5",
                            "batchnorm", "adversarial"]
    # the HFC-trained models are scored on HFC test images too, and each row says how long it trained
    assert {"epochs", "test acc, same filter"} <= set(t1["columns"])
    rob = _table(ctx, "robustness")
    for r in rob["rows"]:
        # robust accuracy never exceeds clean accuracy
        m = reporting.mean_of
        assert m(r["PGD 0.03"]) <= m(r["clean"]) + 1e-9 and m(r["FGSM 0.03"]) <= m(r["clean"]) + 1e-9
    assert {r["defence"] for r in rob["rows"]} >= {"none", "smooth rho=1", "kernel low-pass r=1"}


def test_shared_models_and_rerun_trains_nothing(tiny_run):
    ctx, _ = tiny_run
    runs = sorted(p.name for p in (ctx.out / "runs").iterdir())
    # one vanilla model per seed, shared by every artefact
    assert sorted(n.rsplit("-", 1)[0] for n in runs if n.startswith("vanilla-")) == sorted(
        f"vanilla-s{s}" for s in ctx.setup.seed_list)
    assert all((ctx.out / "runs" / name / "done.json").exists() for name in runs)
    again = common.Context(dataset="synthetic", scale="tiny", out=ctx.out, progress=False)
    from experiments import heuristics, table1

    before = (ctx.out / "table1" / "table.json").read_text()
    table1.run(again)
    heuristics.run(again)
    assert again.models.trainings == 0
    assert json.loads((ctx.out / "table1" / "table.json").read_text())["rows"] == json.loads(before)["rows"]


def test_results_notebook_reads_the_run(tiny_run, monkeypatch):
    from notebook_runner import outputs_text, run_notebook

    ctx, res = tiny_run
    monkeypatch.setenv("JAXHFC_RESULTS", str(ctx.out))
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    text = outputs_text(run_notebook("02_quick_reproduction.ipynb"))
    first = res["claims"]["table1"][0]
    assert first.claim in text and first.effect in text and first.mark() in text
    assert "| trained on | r |" in text


def test_update_readme_section(tiny_run, tmp_path):
    ctx, res = tiny_run
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{readme_blocks.RESULTS_START}\nOLD-PLACEHOLDER\n{readme_blocks.RESULTS_END}\nmid\n"
                      f"{readme_blocks.TIME_START}\nOLD-TIMES\n{readme_blocks.TIME_END}\nbottom\n")
    readme_blocks.update_readme(ctx, readme)
    text = readme.read_text()
    assert "OLD-PLACEHOLDER" not in text and text.startswith("top\n") and text.endswith("bottom\n")
    assert "synthetic dataset" in text
    claim = res["claims"]["table1"][0]
    assert claim.claim in text
    # the time block comes from the same run's timings.json, so the two cannot drift apart
    times = text.split(readme_blocks.TIME_START)[1]
    assert "OLD-TIMES" not in times and "| table1 |" in times
    assert f"({sum(R.read_json(ctx.out / 'timings.json').values()) / 60:.1f} min in all)" in times


def test_same_seeds_same_numbers(tiny_run, tmp_path):
    # A fresh reproduction with the same seeds gives the same numbers, exactly.
    ctx, _ = tiny_run
    from experiments import table1

    again = common.Context(dataset="synthetic", scale="tiny", out=tmp_path, progress=False)
    assert again.setup.seed_list == ctx.setup.seed_list
    table1.run(again)
    read = lambda root: (root / "table1" / "metrics.jsonl").read_text()  # noqa: E731
    assert read(tmp_path) == read(ctx.out)


def test_missing_cifar10_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce_all.main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "empty"), "--tiny",
                            "--out", str(tmp_path / "res"), "--only", "table1", "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "cifar-10-python.tar.gz" in err and "jaxhfc[tf]" in err
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_configure_cpu_devices_sets_xla_flags_once():
    from experiments.common import configure_cpu_devices
    from jaxhfc.parallel import CPU_DEVICE_FLAG

    env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    assert configure_cpu_devices("auto", environ=env, cores=2) == 2
    assert env["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {CPU_DEVICE_FLAG}=2"
    assert configure_cpu_devices("4", environ=env) is None  # an explicit count already there wins
    assert env["XLA_FLAGS"].count(CPU_DEVICE_FLAG) == 1
    assert configure_cpu_devices("auto", environ={}, cores=64) == 8  # capped
    empty = {}
    assert configure_cpu_devices(1, environ=empty) is None and empty == {}  # 1: off, nothing written
    for bad in ("two", "0", -3):
        with pytest.raises(ValueError, match="--cpu-devices must be 'auto' or a positive int"):
            configure_cpu_devices(bad, environ={})


def test_undefended_rows_are_one_computation_in_both_tables(tiny_run):
    """input_defence reports the undefended rows robustness already attacked (same model, images,
    key and settings): equal numbers per seed, and the run's memo holds one result per row."""
    ctx, _ = tiny_run

    def rows(name, model, col, none):
        lines = [json.loads(x) for x in (ctx.out / name / "metrics.jsonl").read_text().splitlines()]
        return {x["seed"]: x for x in lines if x["model"] == model and x[col] == none}

    cols = ["clean", "FGSM 0.03", "PGD 0.03", "worst 0.03", "scale d", "steps d", "noise acc", "checks"]
    for model in ("M_natural", "M_adversarial"):
        a, b = rows("robustness", model, "defence", "none"), rows("input_defence", model, "input low-pass r", "none")
        assert sorted(a) == sorted(b) == sorted(ctx.setup.seed_list)
        for s in ctx.setup.seed_list:
            assert {c: a[s][c] for c in cols} == {c: b[s][c] for c in cols}
    undefended = [json.loads(x) for x in (ctx.out / "robustness" / "metrics.jsonl").read_text().splitlines()]
    undefended = [x for x in undefended if x["defence"] == "none"]
    memo = [k for k in ctx.models.memo if k[0] == "robust_accuracy"]
    rob = json.loads((ctx.out / "robustness" / "config.json").read_text())["settings"]
    inp = json.loads((ctx.out / "input_defence" / "config.json").read_text())["settings"]
    assert rob["claim_eps"] == inp["claim_eps"] and rob["claim_eps"] in rob["eps"] and inp["eps"] == [rob["claim_eps"]]
    assert len(memo) == len(undefended) * len(rob["eps"])  # one per row and eps; input_defence added none
    # the validation search that chose the claims' eps ran once per seed, shared by both drivers
    assert len([k for k in ctx.models.memo if k[0] == "minimal_eps" and k[1][1] == "validation"]) == len(ctx.setup.seed_list)


def test_read_only_checkpoint_warnings_are_filtered_and_others_kept():
    import logging

    def rec(msg):
        return logging.LogRecord("absl", logging.WARNING, __file__, 1, msg, None, None)

    assert not common.quiet_read_only_checkpoints(rec("CheckpointManagerOptions.read_only=True, setting max_to_keep=None."))
    assert not common.quiet_read_only_checkpoints(rec("Given directory is read only=/tmp/x/checkpoints"))
    assert common.quiet_read_only_checkpoints(rec("checkpoint 40 could not be restored"))


def test_per_example_outcomes_of_every_seed_match_the_tables(tiny_run):
    """outcomes.npz holds each seed's per-example outcomes behind the claims, recomputed from the
    trained models: their shares equal the accuracies the runs recorded."""
    from jaxhfc import results as R

    ctx, _ = tiny_run
    t1 = R.read_outcomes(ctx.out / "table1" / "outcomes.npz")
    per_seed = [json.loads(x) for x in (ctx.out / "table1" / "metrics.jsonl").read_text().splitlines()]
    for p in per_seed:
        kind = "low" if p["trained on"] == "LFC" else "high"
        right = t1[f"seed {p['seed']}|{kind}|{p['r']}"]
        assert right.dtype == bool and right.mean() == pytest.approx(p["test acc (ours)"], abs=1e-9)
    for name in ("prediction_counts", "label_shuffle", "heuristics", "robustness", "input_defence", "radius_curves",
                 "fourier_heatmap"):
        keys = R.read_outcomes(ctx.out / name / "outcomes.npz")
        # right/wrong per seed; the heuristics also keep the predicted labels under "pred|seed <s>|..."
        assert {k.removeprefix("pred|").split("|")[0] for k in keys} == {f"seed {s}" for s in ctx.setup.seed_list}, name
    rob = R.read_outcomes(ctx.out / "robustness" / "outcomes.npz")
    rows = [json.loads(x) for x in (ctx.out / "robustness" / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert rob[f"seed {r['seed']}|{r['model']}/{r['defence']}|clean"].mean() == pytest.approx(r["clean"])
        assert rob[f"seed {r['seed']}|{r['model']}/{r['defence']}|worst 0.03"].mean() == pytest.approx(r["worst 0.03"])
