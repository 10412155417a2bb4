"""experiments/plateau.py: the rule that says a run left the ln 10 plateau, and a smoke run."""

import json
import math

import numpy as np
import pytest

from experiments import plateau


def test_left_plateau_rule_by_hand():
    count = 100
    flat = np.full(60, math.log(10.0))  # a model that predicts uniformly: loss ln 10, chance accuracy
    out = plateau.left_plateau(flat, np.full(60, 10), count, window=50)
    assert out == {"tail_loss": pytest.approx(math.log(10.0)), "tail_train_accuracy": pytest.approx(0.1),
                   "window": 50, "left_plateau": False}
    learning = np.concatenate([flat[:10], np.full(50, 1.5)])
    correct = np.concatenate([np.full(10, 10), np.full(50, 45)])
    out = plateau.left_plateau(learning, correct, count, window=50)
    assert out["left_plateau"] and out["tail_loss"] == pytest.approx(1.5) and out["tail_train_accuracy"] == 0.45
    # a lower loss without above-chance accuracy (or the reverse) is not enough
    assert not plateau.left_plateau(np.full(50, 1.5), np.full(50, 15), count, window=50)["left_plateau"]
    assert not plateau.left_plateau(np.full(50, 2.25), np.full(50, 45), count, window=50)["left_plateau"]


@pytest.mark.slow
def test_plateau_smoke_run(tmp_path):
    """Two paper-setting steps of the code's 32-layer ResNet: files written, finite losses."""
    summary = plateau.run(model="paper_resnet", steps=2, seed=0, eval_every=2, num_test=100, window=2, out=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    assert 0.0 <= rows[-1]["test_accuracy"] <= 1.0 and summary["steps"] == 2
    assert (tmp_path / "loss.png").stat().st_size > 0 and json.loads((tmp_path / "config.json").read_text())
