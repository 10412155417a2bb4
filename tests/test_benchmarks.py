"""A smoke run of the whole benchmark suite at tiny sizes (one repeat), so it cannot rot;
the report renders every section from the JSON and fills the README's marked section.
Speed is never asserted."""

import json

import pytest

from jaxhfc import results as R

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
    from experiments import readme_blocks

    run = tmp_path / "results" / "synthetic"
    readme = tmp_path / "README.md"
    block = f"{readme_blocks.TIME_START}\nold times\n{readme_blocks.TIME_END}\n"
    readme.write_text("intro\n" + block + "outro\n")
    assert readme_blocks.time_markdown(run) == ""  # nothing written: nothing reported
    assert not readme_blocks.update_time_section(readme, run) and "old times" in readme.read_text()
    run.mkdir(parents=True)
    (run / "timings.json").write_text(json.dumps({"table1": 90.0, "robustness": 30.0}))
    (run / "README.md").write_text("# title\n\nMade by `python -m experiments.reproduce_all --quick` on X.\n")
    md = readme_blocks.time_markdown(run)
    assert "(2.0 min in all)" in md and "Made by `python -m experiments.reproduce_all --quick` on X." in md
    assert "| table1 | 90 | 75% |" in md and "| robustness | 30 | 25% |" in md
    (run / "compile_seconds.json").write_text(json.dumps({"table1": 6.0, "robustness": 12.0}))
    md = readme_blocks.time_markdown(run)
    assert "Of it 0.3 min compiling" in md
    assert "| table1 | 90 | 75% | 6 |" in md and "| robustness | 30 | 25% | 12 |" in md
    assert "loaded the others" not in md
    # a run that loaded finished trainings says so: its times are not those of a run from scratch
    for trained, said in ((3, True), (63, False)):
        (run / "README.md").write_text("# title\n\nMade by `x` on X.\n\n## Time\n\n63 trained models in `runs/`, "
                                       f"8.0 min of training in all; this invocation trained {trained} of them.\n")
        md = readme_blocks.time_markdown(run)
        assert ("This invocation trained 3 of the 63 models and loaded the others" in md) is said
    (run / "README.md").write_text("# title\n\nMade by `python -m experiments.reproduce_all --quick` on X.\n")
    # the README block: filled between its markers, labelled relative to the README, rest untouched
    assert readme_blocks.update_time_section(readme, run)
    text = readme.read_text()
    assert "old times" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "(`results/synthetic`)" in text and "| robustness | 30 | 25% | 12 |" in text
    plain = tmp_path / "plain.md"
    plain.write_text("no block\n")
    assert not readme_blocks.update_time_section(plain, run) and plain.read_text() == "no block\n"


def test_reproduction_time_says_what_the_minutes_buy(tmp_path):
    from experiments import budget, readme_blocks

    run = tmp_path / "r"
    times = {"a": 600.0, "b": 300.0, "c": 900.0, "d": 60.0}
    verdicts = {"a": ["holds", "inconclusive"], "b": ["contradicted"], "c": ["holds", "holds", "holds"],
                "d": ["inconclusive"]}
    for name, vs in verdicts.items():
        claims = [{"claim": "x", "judgement": {"verdict": v}} for v in vs]
        claims.append({"claim": "check", "check": True, "judgement": {"verdict": "holds"}})  # not counted
        R.write_json(run / name / "table.json", {"claims": claims})
    R.write_json(run / "timings.json", times)
    (run / "README.md").write_text("Made by x.\n")
    assert budget.claim_counts(run) == {"a": (2, 1), "b": (1, 1), "c": (3, 3), "d": (1, 0)}
    md = readme_blocks.time_markdown(run)
    assert "| a | 600 | 32% | 2 | 1 |" in md and "| d | 60 | 3% | 1 | 0 |" in md
    # decided per second: b 1/300, c 3/900 (tie, the shorter first), a 1/600, d 0: b + c = 20 min, a no longer fits,
    # d (60 s) does
    text = readme_blocks.greedy_budget_text(times, budget.claim_counts(run))
    assert "20 minutes buy b, c, d (21.0 min)" not in text
    assert text.startswith("At these times 20 minutes buy b, c (20.0 min): 4 of the 5 decided claims, 4 of all 7")
    assert "buy b, c, a, d" in readme_blocks.greedy_budget_text(times, budget.claim_counts(run), minutes=40)
    assert "buy no artefact (0.0 min): 0 of the 5" in readme_blocks.greedy_budget_text(times, budget.claim_counts(run),
                                                                               minutes=0.5)


def test_benchmark_report_refreshes_the_reproduction_time(suite, tmp_path):
    """benchmarks.report fills the performance block from the JSON and, beside it, the
    reproduction-time block from the run's files, without mixing the two."""
    from experiments import readme_blocks

    path, _ = suite
    run = tmp_path / "results" / "synthetic"
    run.mkdir(parents=True)
    (run / "timings.json").write_text(json.dumps({"table1": 60.0}))
    (run / "README.md").write_text("Made by test.\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.START}\nold\n{report.END}\n{readme_blocks.TIME_START}\nold\n{readme_blocks.TIME_END}\n")
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


def _fake_reproduction(root, *, trained_now=None):
    """A results folder as experiments.reproduce_all writes it: timings, compile seconds, two
    artefacts' config.json listing their run folders, and those runs' done.json."""
    run = root / "results" / "fashion_mnist"
    cfg = {"data": {"num_train": 1064, "num_val": 64}, "optim": {"epochs": 2, "batch_size": 100},
           "adversary": {"eps": 0.0, "steps": 3}, "evaluation": {"every": 1}}
    adv = {**cfg, "adversary": {"eps": 0.1, "steps": 3}}
    models = {"prediction_counts": {"vanilla": [{"run_dir": f"/x/runs/vanilla-s{s}-abc", "config": cfg} for s in (0, 1)]},
              "robustness": {"natural": [{"run_dir": f"/x/runs/vanilla-s{s}-abc", "config": cfg} for s in (0, 1)],
                             "adversarial": [{"run_dir": "/x/runs/adversarial-s0-def", "config": adv}]}}
    settings = {"prediction_counts": {"n_test": 10}, "robustness": {"eps": [0.1], "pgd_steps": 5}}
    for art, m in models.items():
        (run / art).mkdir(parents=True)
        (run / art / "config.json").write_text(json.dumps({"artefact": art, "settings": settings[art], "models": m}))
    (run / "timings.json").write_text(json.dumps({"prediction_counts": 50.0, "robustness": 80.0}))
    (run / "compile_seconds.json").write_text(json.dumps({"prediction_counts": 2.0, "robustness": 9.0}))
    for name, secs in (("vanilla-s0-abc", 20.0), ("vanilla-s1-abc", 22.0), ("adversarial-s0-def", 40.0)):
        (run / "runs" / name).mkdir(parents=True)
        (run / "runs" / name / "done.json").write_text(json.dumps({"name": name.split("-s")[0], "seconds": secs}))
    if trained_now is not None:
        (run / "README.md").write_text(f"## Time\n\n3 trained models in `runs/`, 1.0 min of training in all; "
                                       f"this invocation trained {trained_now} of them.\n")
    return run


def test_cost_reproduction_split_from_the_run_files(tmp_path):
    """Per artefact: trainings charged to the first artefact listing them; own work = wall - trainings,
    attacks where the driver's settings attack; per role: trainings, steps and seconds from done.json."""
    from benchmarks import cost

    run = _fake_reproduction(tmp_path)
    r = cost.reproduction(run, img_per_s=1000.0)
    assert r["runs_present"] and r["from_empty_folder"] and r["run_folders"] == 3
    arts = {a["artefact"]: a for a in r["artefacts"]}
    assert list(arts) == ["prediction_counts", "robustness"]  # reproduce_all's order
    pc, rb = arts["prediction_counts"], arts["robustness"]
    assert pc["trainings"] == 2 and pc["training_s"] == pytest.approx(42.0) and pc["own_work"] == "evaluation"
    assert pc["own_work_s"] == pytest.approx(50.0 - 42.0) and pc["own_work_basis"] == "done.json"
    assert rb["trainings"] == 1 and rb["training_s"] == pytest.approx(40.0) and rb["own_work"] == "attacks"
    assert rb["own_work_s"] == pytest.approx(40.0) and rb["compile_s"] == 9.0
    assert r["total_wall_s"] == pytest.approx(130.0) and r["total_training_s"] == pytest.approx(82.0)
    roles = {g["role"]: g for g in r["roles"]}
    assert roles["vanilla"]["trainings"] == 2 and roles["vanilla"]["seconds"] == pytest.approx(42.0)
    assert roles["vanilla"]["steps"] == 2 * 2 * (1000 // 100)  # seeds x epochs x steps per epoch
    # PGD-3 training: each step is 1 + 3 forward-backward passes over the batch
    assert roles["adversarial"]["image_passes"] == 4 * roles["adversarial"]["steps"] * 100
    assert roles["adversarial"]["estimated_seconds"] == pytest.approx(roles["adversarial"]["image_passes"] / 1000.0)
    # the committed form of the folder: runs/ gone, each training's seconds in training_seconds.json
    from experiments import budget
    import shutil

    budget.write_training_seconds(run)
    shutil.rmtree(run / "runs")
    kept = cost.reproduction(run, img_per_s=1000.0)
    assert kept["runs_present"] and kept["run_folders"] == 0
    assert kept["artefacts"] == r["artefacts"] and kept["total_training_s"] == pytest.approx(82.0)
    (run / budget.TRAININGS_FILE).unlink()  # neither: estimated from the image passes
    est = {a["artefact"]: a for a in cost.reproduction(run, img_per_s=1000.0)["artefacts"]}
    assert est["robustness"]["training_s"] is None and est["robustness"]["own_work_basis"] == "estimate"
    # a run that loaded most of its models: wall times hold no trainings, so no own-work split
    part = cost.reproduction(_fake_reproduction(tmp_path / "b", trained_now=1))
    assert not part["from_empty_folder"] and all(a["own_work_s"] is None for a in part["artefacts"])


def test_cost_bad_results_folder_is_one_line(tmp_path, capsys):
    from benchmarks import cost

    assert cost.main(["--results", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no timings.json" in err and "\n" not in err
    with pytest.raises(FileNotFoundError, match="no timings.json"):
        cost.reproduction(tmp_path)


def test_cost_conv_ops_found_in_the_compiled_step():
    """The profile's convolution instructions: every HLO convolution, and each fusion calling one."""
    import jax
    import jax.numpy as jnp

    from benchmarks import cost

    def f(x, w):
        y = jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (jax.nn.relu(y) ** 2).sum()

    text = jax.jit(jax.grad(f, argnums=1)).lower(jnp.ones((4, 8, 8, 2)), jnp.ones((3, 3, 2, 4))).compile().as_text()
    ops = cost._conv_ops(text)
    assert ops
    entry = text[text.index("ENTRY"):]
    for name in ops & {ln.split(" = ")[0].strip().lstrip("%") for ln in entry.splitlines() if " = " in ln}:
        assert name in entry
    assert not any(n.startswith(("add", "multiply", "broadcast")) for n in ops)


def test_cost_benchmark_tiny_writes_its_json(tmp_path):
    """A tiny run (one XLA setting, one round of two steps) writes the documented fields."""
    from benchmarks import cost

    run = _fake_reproduction(tmp_path)
    out = tmp_path / "out"
    assert cost.main(["--tiny", "--results", str(run), "--out", str(out), "--settings", "default_2dev"]) == 0
    (path,) = out.glob("cost-*.json")
    rec = json.loads(path.read_text())
    for key in ("hardware", "recipe", "cpu_flags", "reproduction", "throughput", "convolutions", "populations",
                "settings", "decisions", "default_worker", "setting_workers"):
        assert key in rec
    assert rec["hardware"]["cpu"] and rec["recipe"]["model"] == "small_cnn"
    assert rec["reproduction"]["artefacts"][0]["artefact"] == "prediction_counts"
    tp = rec["throughput"]
    assert {"jax_f32", "jax_bf16", "jax_host_fed"} <= set(tp["variants"])
    for v in tp["variants"].values():
        assert v["img_per_s"] > 0 and len(v["img_per_s_rounds"]) == tp["rounds"]
    if "torch_f32" in tp["variants"]:  # PyTorch installed (the [bench] extra): the paired ratio
        assert tp["ratios"]["jax_over_torch"] > 0
    conv = rec["convolutions"]
    assert 0 < conv["conv_share"] <= 1 and conv["conv_op_s"] <= conv["op_s"]
    pops = rec["populations"]["populations"]
    assert [p["k"] for p in pops] == [2] and pops[0]["img_per_s_total"] > 0
    assert [s["setting"] for s in rec["settings"]] == ["default_2dev"]
    assert rec["settings"][0]["vs_default"] == pytest.approx(1.0)  # the default against itself, round by round
    assert any(k.startswith("populations") for k in rec["decisions"])
    md = cost.markdown(rec, path.name)
    for heading in ("Training step, paired", "Convolutions", "Populations", "Quick reproduction", "Decisions"):
        assert heading in md
    doc = tmp_path / "perf.md"
    doc.write_text(f"keep\n{cost.DOC_START}\nOLD-NUMBERS\n{cost.DOC_END}\ntail\n")
    cost.update_doc(path, doc)
    text = doc.read_text()
    assert "OLD-NUMBERS" not in text and text.startswith("keep\n") and text.endswith("tail\n") and path.name in text


def test_cost_decisions_need_a_steady_margin():
    from benchmarks import cost

    assert cost.decide(None, on="a", off="b") == "not measured"
    assert cost.decide(1.2, on="a", off="b").endswith("-> a")
    assert cost.decide(1.02, on="a", off="b").endswith("-> b")  # under the margin
    assert cost.decide(1.2, on="a", off="b", rounds=[0.5, 2.0, 1.2, 0.9]).endswith("not a steady win: b")
    assert cost.decide(1.2, on="a", off="b", rounds=[1.1, 1.3, 1.2, 1.15]).endswith("-> a")
