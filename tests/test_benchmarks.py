"""A smoke run of the whole benchmark suite at tiny sizes (one repeat), so it cannot rot;
the report renders every section from the JSON and fills the README's marked section.
Speed is never asserted."""

import json

import pytest

from benchmarks import report, run_all


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    path = run_all.run_suite(quick=True, tiny=True, out_dir=out)
    return path, json.loads(path.read_text())


def test_suite_runs_every_benchmark(suite):
    path, record = suite
    assert record["errors"] == {}
    assert set(record["results"]) == {name for name, _, _ in run_all.SUITE}
    f = record["results"]["filters"][0]
    assert f["max_abs_error_vs_paper_loop"] < 1e-2  # the benchmarked filter is the paper's filter
    sc = record["results"]["scaling"][0]
    assert [r["devices"] for r in sc["rows"]] == [1, 8]
    one = sc["rows"][0]["img_per_s"]
    for r in sc["rows"]:  # speed-up and efficiency are the measured throughputs' ratios
        assert r["speedup"] == pytest.approx(r["img_per_s"] / one) and r["speedup"] > 0
        assert r["efficiency"] == pytest.approx(r["img_per_s"] / one / r["devices"])
    assert record["results"]["heatmap"][0]["max_abs_map_difference"] == 0.0  # batched == per-frequency loop
    assert path.with_suffix(".md").exists()


def test_report_and_readme_section(suite, tmp_path):
    path, record = suite
    md = report.markdown(record)
    for heading in ("Fourier filtering", "Input pipeline", "Training step", "Attacks", "Scaling", "Fourier heat map"):
        assert heading in md
    assert "GPU figures: not yet measured" in md
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold numbers\n{report.END}\noutro\n")
    report.update_readme(path, readme)
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert md.splitlines()[0] in text
    with pytest.raises(ValueError, match="section"):
        (tmp_path / "bad.md").write_text("no markers")
        report.update_readme(path, tmp_path / "bad.md")


def test_reproduction_time_from_the_run_files(tmp_path):
    from experiments import reproduce_all

    run = tmp_path / "results" / "synthetic"
    readme = tmp_path / "README.md"
    block = f"{reproduce_all.TIME_START}\nold times\n{reproduce_all.TIME_END}\n"
    readme.write_text("intro\n" + block + "outro\n")
    assert reproduce_all.time_markdown(run) == ""  # nothing written: nothing reported
    assert not reproduce_all.update_time_section(readme, run) and "old times" in readme.read_text()
    run.mkdir(parents=True)
    (run / "timings.json").write_text(json.dumps({"table1": 90.0, "robustness": 30.0}))
    (run / "README.md").write_text("# title\n\nMade by `python -m experiments.reproduce_all --quick` on X.\n")
    md = reproduce_all.time_markdown(run)
    assert "(2.0 min in all)" in md and "Made by `python -m experiments.reproduce_all --quick` on X." in md
    assert "| table1 | 90 | 75% |" in md and "| robustness | 30 | 25% |" in md
    (run / "compile_seconds.json").write_text(json.dumps({"table1": 6.0, "robustness": 12.0}))
    md = reproduce_all.time_markdown(run)
    assert "Of it 0.3 min compiling" in md
    assert "| table1 | 90 | 75% | 6 |" in md and "| robustness | 30 | 25% | 12 |" in md
    assert "loaded the others" not in md
    # a run that loaded finished trainings says so: its times are not those of a run from scratch
    for trained, said in ((3, True), (63, False)):
        (run / "README.md").write_text("# title\n\nMade by `x` on X.\n\n## Time\n\n63 trained models in `runs/`, "
                                       f"8.0 min of training in all; this invocation trained {trained} of them.\n")
        md = reproduce_all.time_markdown(run)
        assert ("This invocation trained 3 of the 63 models and loaded the others" in md) is said
    (run / "README.md").write_text("# title\n\nMade by `python -m experiments.reproduce_all --quick` on X.\n")
    # the README block: filled between its markers, labelled relative to the README, rest untouched
    assert reproduce_all.update_time_section(readme, run)
    text = readme.read_text()
    assert "old times" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "(`results/synthetic`)" in text and "| robustness | 30 | 25% | 12 |" in text
    plain = tmp_path / "plain.md"
    plain.write_text("no block\n")
    assert not reproduce_all.update_time_section(plain, run) and plain.read_text() == "no block\n"


def test_benchmark_report_refreshes_the_reproduction_time(suite, tmp_path):
    """benchmarks.report fills the performance block from the JSON and, beside it, the
    reproduction-time block from the run's files, without mixing the two."""
    from experiments import reproduce_all

    path, _ = suite
    run = tmp_path / "results" / "synthetic"
    run.mkdir(parents=True)
    (run / "timings.json").write_text(json.dumps({"table1": 60.0}))
    (run / "README.md").write_text("Made by test.\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.START}\nold\n{report.END}\n{reproduce_all.TIME_START}\nold\n{reproduce_all.TIME_END}\n")
    report.update_readme(path, readme)
    perf, times = readme.read_text().split(report.END)
    assert "Quick reproduction" not in perf and "Fourier filtering" in perf
    assert "| table1 | 60 | 100% |" in times and "old" not in times


def test_report_judges_the_population_target_at_the_paper_setting(suite):
    """The K=8 line appears only for ResNet18 at batch 100, and says met / not met from the
    measured ratio against report.POPULATION_TARGET (hand-made ratios)."""
    import copy

    _, record = suite
    assert "Target for 8" not in report.markdown(record)  # the tiny run: small CNN, no K=8
    for ratio, word in ((3.4, "(met)"), (2.2, "(not met)")):
        rec = copy.deepcopy(record)
        row = rec["results"]["populations"][0]["results"][0]
        row.update(model="resnet18", batch=100)
        template = row["populations"][0]
        row["populations"] = [dict(template, k=k, vs_sequential=(ratio if k == 8 else 1.0)) for k in (1, 2, 4, 8)]
        md = report.markdown(rec)
        assert f"measured {ratio:.2f}x {word}" in md
