"""`jaxhfc train` then `jaxhfc eval` on the synthetic data: the eval command reproduces the
accuracies the training run logged for its last epoch, and bad inputs give one-line errors."""

import json

import pytest

from jaxhfc import cli, results


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "--quick", "--epochs", "2", "--num-train", "256", "--num-test", "96", "--batch-size", "64",
            "--width", "8", "--eval-radii", "8", "--train-filter", "low", "--radius", "12", "--no-progress",
            "--out", str(out)]
    assert cli.main(argv) == 0
    return out


def test_train_writes_run_folder(run_dir):
    info = results.read_json(run_dir / "config.json")
    assert info["config"]["data"]["train_filter"] == "low" and info["config"]["data"]["train_radius"] == 12.0
    assert info["versions"]["jax"] and info["device_count"] == 8
    hist = results.read_jsonl(run_dir / "metrics.jsonl")
    assert [h["epoch"] for h in hist] == [1, 2]
    assert set(hist[-1]["accuracy"]) == {"test", "test_low_8", "test_high_8"}


def test_eval_matches_logged_accuracy(run_dir, capsys):
    assert cli.main(["eval", str(run_dir)]) == 0
    out = json.loads(next(run_dir.glob("eval_step*.json")).read_text())
    logged = results.read_jsonl(run_dir / "metrics.jsonl")[-1]["accuracy"]
    for name, acc in logged.items():
        assert out["results"][name]["accuracy"] == pytest.approx(acc, abs=1e-6)
        assert out["results"][name]["n"] == 96
    assert "test_high_8" in capsys.readouterr().out


def test_cli_errors(tmp_path, run_dir, capsys):
    assert cli.main(["eval", str(tmp_path / "nothing")]) == 2
    assert "config.json" in capsys.readouterr().err
    # an existing run folder without --resume is refused, nothing overwritten
    before = (run_dir / "metrics.jsonl").read_text()
    argv = ["train", "--quick", "--epochs", "2", "--num-train", "256", "--num-test", "96", "--batch-size", "64",
            "--width", "8", "--eval-radii", "8", "--train-filter", "low", "--radius", "12", "--no-progress",
            "--out", str(run_dir)]
    assert cli.main(argv) == 2
    assert "resume" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_text() == before
    assert cli.main(["train", "--quick", "--train-filter", "sideways", "--out", str(tmp_path / "x")]) == 2
    assert "train_filter" in capsys.readouterr().err
