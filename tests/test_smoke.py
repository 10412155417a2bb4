"""The full-scale path on the CPU: ``reproduce_all --smoke`` (the full-scale recipes with every
loop capped) on a CIFAR-10 archive in the standard format written by the library's generator,
the cost plan (``--plan``) built from a metered smoke run, and the device script in its tiny
mode. The whole smoke run over every artefact on the full-size archive is a slow test; the
quick variants run one artefact on a smaller archive."""
import json

import pytest

from experiments import plan as P
from experiments import readme_blocks, recipes, reporting, reproduce_all
from experiments.common import Context
from jaxhfc.datasets import cifar10


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar")
    cifar10.write_generated_archive(str(d), num_train=1000, num_test=300, seed=0)
    return str(d)


def test_smoke_configs_keep_the_full_recipe_and_cap_the_loops(tmp_path, small_archive):
    full = Context(dataset="cifar10", scale="full", out=tmp_path / "f", data_dir=small_archive, progress=False)
    smoke = Context(dataset="cifar10", scale="full", out=tmp_path / "s", data_dir=small_archive, progress=False,
                    smoke=True)
    assert smoke.setup.seed_list == (0,) and len(full.setup.seed_list) == 3
    for over in ({}, {"optim": {"batch_size": 512}}, {"adversary": {"eps": 0.03, "steps": 10, "step_size": 0.003}}):
        f, s = full.setup.config(**over), smoke.setup.config(**over)
        # the model, optimizer, batch, adversary and evaluation sets are the full ones
        assert (s.net, s.adversary, s.augment, s.evaluation.radii) == (f.net, f.adversary, f.augment, f.evaluation.radii)
        assert s.optim.replace(epochs=f.optim.epochs) == f.optim and f.net.name == "resnet18" and f.optim.batch_size in (100, 512)
        caps = recipes.SMOKE
        assert s.optim.epochs == caps["epochs"] and f.optim.epochs == 100
        n_steps = (s.data.num_train - s.data.num_val) // s.optim.batch_size
        assert n_steps == caps["steps_per_epoch"]
        assert s.data.num_test == caps["num_test"] and smoke.setup.full_configs[s.config_hash()] == f
    from experiments import robustness

    fs, ss = full.setup.settings(robustness.SETTINGS), smoke.setup.settings(robustness.SETTINGS)
    assert ss["apgd_targets"] == fs["apgd_targets"] == 9 and ss["eps"] == fs["eps"] and len(fs["eps"]) == 3
    assert ss["apgd_steps"] == 2 < fs["apgd_steps"] and ss["n_eval"] == 16 and fs["n_eval"] is None
    assert ss["rhos"] == fs["rhos"][-1:] and ss["defended_eps"] == fs["defended_eps"][-1:]  # repeated rows, once
    assert ss["defended"] == fs["defended"] and ss["penalty"] == fs["penalty"]
    from experiments import input_defence, table1

    smoke.setup.artefact = "input_defence"  # a list capped for one artefact only
    assert smoke.setup.settings(input_defence.SETTINGS)["radii"] == full.setup.settings(input_defence.SETTINGS)["radii"][-1:]
    smoke.setup.artefact = "table1"
    assert smoke.setup.settings(table1.SETTINGS)["radii"] == full.setup.settings(table1.SETTINGS)["radii"]
    assert smoke.setup.cascade == "all" and full.setup.cascade == "survivors"
    with pytest.raises(ValueError, match="scale must be 'full'"):
        Context(dataset="cifar10", scale="quick", out=tmp_path / "q", smoke=True)
    assert not (tmp_path / "q").exists()  # refused before anything is written


def test_plan_of_one_artefact_counts_resnet18_steps(tmp_path, small_archive, capsys):
    """``--plan`` on label_shuffle: 2 ResNet18 trainings (1 seed) whose uncapped steps are
    100 and 300 epochs of 45,000 / 100 steps; FLOPs per step near the published cost of a CIFAR
    ResNet18 (0.56 GMAC forward per image: ~1.1 GFLOP, a training step ~3x that, x batch 100)."""
    out = tmp_path / "plan"
    reproduce_all.main(["--dataset", "cifar10", "--plan", "--data-dir", small_archive, "--out", str(out),
                        "--only", "label_shuffle", "--no-progress"])
    plan = json.loads((out / "plan.json").read_text())
    (row,) = plan["artefacts"]
    assert row["artefact"] == "label_shuffle" and row["models"] == 2
    assert row["steps"] == 100 * 450 + 300 * 450
    lo, hi = row["flops_per_step"]
    assert 250e9 < lo <= hi < 450e9
    assert row["train_flops"] == pytest.approx(lo * row["steps"], rel=0.01)
    assert row["train_eval_flops"] > 0 and row["max_train_peak_bytes"] > 0
    minutes = P.predict_minutes(plan["total"]["flops"])
    assert minutes == pytest.approx(plan["total"]["flops"] / (0.3 * 494.7e12) / 60)
    text = capsys.readouterr().out
    assert "Prediction, not a measurement" in text and "H200" in text
    assert (out / "plan.md").exists() and (out / "README.md").exists()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{readme_blocks.PLAN_START}\nold\n{readme_blocks.PLAN_END}\n")
    from jaxhfc import results as R

    ctx = Context(dataset="cifar10", scale="full", out=out, data_dir=small_archive, smoke=True, plan=True,
                  progress=False)
    readme_blocks.update_plan_section(ctx, (out / "plan.md").read_text().split("\n", 2)[2], R.environment_info(),
                                      readme=readme)
    text = readme.read_text()
    assert "old" not in text and "| label_shuffle | 2 |" in text and "--plan" in text and "min" in text
    # a plan meters every training: finished runs in --out are refused, nothing is deleted
    with pytest.raises(SystemExit):
        reproduce_all.main(["--dataset", "cifar10", "--plan", "--data-dir", small_archive, "--out", str(out),
                            "--only", "label_shuffle", "--no-progress"])
    assert (out / "plan.json").exists()


@pytest.mark.slow  # about 20-30 minutes on a 2-core CPU; quick variant: the plan test above
def test_full_smoke_run_on_a_full_size_archive(tmp_path):
    out = tmp_path / "smoke"
    reproduce_all.main(["--dataset", "cifar10", "--smoke", "--out", str(out), "--no-progress"])
    assert (out / "generated-cifar10" / "cifar-10-python.tar.gz").exists()
    gen = json.loads((out / "generated-cifar10" / "generated.json").read_text())
    assert (gen["num_train"], gen["num_test"]) == (50_000, 10_000)
    for module, _, _ in reporting.ARTEFACTS:
        assert (out / module / "table.json").exists(), module
    assert "A smoke run" in (out / "README.md").read_text()


def test_record_factors_by_hand():
    """The plan's scaling of one evaluation call from the smoke run to the full run, by hand:
    an attack row at n_eval images, a check at check_n images, a test-set sweep, and a count
    no cap produced (left unscaled)."""
    import types

    from experiments.setup import VALIDATION

    full = dict(eps=(0.03, 0.06, 0.09), pgd_steps=20, apgd_steps=100, apgd_targets=9, n_eval=None, check_n=1000,
                defended_eps=(0.03, 0.06, 0.09), rhos=(0.125, 0.25, 0.5, 1.0), kernel_radii=(1.2, 1.0),
                defended=("M_natural", "M_adversarial"), penalty=True)
    capped = dict(full, pgd_steps=2, apgd_steps=2, n_eval=16, check_n=6, defended_eps=(0.09,), rhos=(1.0,),
                  kernel_radii=(1.0,))
    pairs = [(full, capped)]
    rec = lambda name, n: types.SimpleNamespace(name=name, detail={"images": n})  # noqa: E731
    g_full, g_capped = 1 + 20 + 100 * 11, 1 + 2 + 2 * 11
    rows_full, rows_capped = 3 * 3 + 2 * (2 * 4 + 2) * 3, 3 * 3 + 2 * (2 + 1) * 1
    assert P.record_factor("robustness", rec("_batch_attacks", 16), pairs) == pytest.approx(
        10_000 / 16 * g_full / g_capped * rows_full / rows_capped)
    assert P.record_factor("robustness", rec("_batch_attacks", 6), pairs) == pytest.approx(
        1000 / 6 * g_full / g_capped * rows_full / rows_capped)
    assert P.record_factor("robustness", rec("batch_diagnostics", 6), pairs) == pytest.approx(1000 / 6)
    assert P.record_factor("table1", rec("rows", recipes.SMOKE["num_test"]), []) == pytest.approx(
        10_000 / recipes.SMOKE["num_test"])
    assert P.record_factor("table1", rec("rows", recipes.SMOKE["num_val"]), []) == pytest.approx(
        VALIDATION["full"] / recipes.SMOKE["num_val"])
    assert P.record_factor("occlusion", rec("occlusion", 6), []) is None
    # the caps are distinct numbers, so an image count names the setting it came from
    counts = [recipes.SMOKE[k] for k in ("num_test", "num_val", "train_subset")] + [
        recipes.SMOKE["settings"][k] for k in ("n_eval", "check_n", "n_val", "n_images")]
    assert len(set(counts)) == len(counts)
    with pytest.raises(ValueError, match="utilisation"):
        P.predict_minutes(1e15, utilisation=0)
