"""jaxhfc.costs: XLA's FLOP counts of the programs that ran, against counts made by hand, on one
and on 8 (fake) devices; nothing is recorded, and nothing is paid, without a meter."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhfc import costs, datasets, parallel
from jaxhfc.config import TrainConfig
from jaxhfc.fit import fit


def _matmul(w, x):
    return x @ w


@pytest.mark.parametrize("devices", [None, 8])
def test_sweep_flops_equal_a_hand_count(devices):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 24)).astype(np.float32)
    w = rng.normal(size=(24, 5)).astype(np.float32)
    mesh = parallel.make_mesh(devices) if devices else None
    with costs.metering() as meter:
        out = parallel.sweep(_matmul, (x,), (w,), batch_size=32, mesh=mesh)
    np.testing.assert_allclose(out, x @ w, rtol=1e-4, atol=1e-5)
    (rec,) = meter.records
    b = 32  # a multiple of 8 either way
    assert (rec.kind, rec.calls, rec.rows) == ("sweep", 4, 4 * b)
    # a (b, 24) x (24, 5) product is 2 * 24 * 5 FLOPs per row; gathers and padding add none that count
    assert rec.flops_per_call == pytest.approx(2 * 24 * 5 * b, rel=0.02)
    assert rec.flops == pytest.approx(4 * 2 * 24 * 5 * b, rel=0.02)
    assert rec.memory["peak"] >= rec.memory["argument"] > 0
    assert meter.total(kind="sweep") == rec.flops and meter.total(kind="train") == 0


def test_no_meter_records_nothing_and_labels_nest():
    x = np.ones((8, 3), np.float32)
    parallel.sweep(_matmul, (x,), (np.ones((3, 2), np.float32),), batch_size=8)
    assert costs.active() is None
    with costs.metering() as outer:
        with outer.label("a"), outer.label("b"):
            parallel.sweep(_matmul, (x,), (np.ones((3, 2), np.float32),), batch_size=8)
        parallel.sweep(_matmul, (x,), (np.ones((3, 2), np.float32),), batch_size=4)
    assert [r.labels for r in outer.records] == [("a", "b"), ()]
    assert outer.total(label="a") == outer.records[0].flops
    assert costs.active() is None


def test_training_steps_are_metered_per_step_and_scanned_calls_count_every_step(tmp_path, monkeypatch):
    """The training loop's FLOPs per step are the same whether one step runs per call or an
    epoch's 4 steps are scanned in one call (XLA counts a loop body once; the meter multiplies),
    and a step costs between 2 and 4 forward passes (backward ~ 2 forwards)."""
    tr, te = datasets.make_synthetic(num_train=128, num_test=32, seed=0)
    cfg = TrainConfig(net=dict(name="small_cnn", width=4), data=dict(name="synthetic"),
                      optim=dict(epochs=1, batch_size=32), evaluation=dict(radii=(), batch_size=32),
                      run=dict(checkpoint_every=0))
    per_step = {}
    for form in ("cpu", "accelerator"):
        monkeypatch.setenv(parallel.LOOPS_ENV, form)
        with costs.metering() as meter, meter.label("run"):
            fit(cfg, tmp_path / form, datasets=(tr, te), progress=False)
        train = [r for r in meter.records if r.kind == "train"]
        assert sum(r.rows for r in train) == 4 and all(r.detail["runs"] == [str(tmp_path / form)] for r in train)
        per_step[form] = sum(r.flops for r in train) / 4
        evals = [r for r in meter.records if r.kind == "sweep"]
        assert evals and all("training" in r.labels for r in evals)
        forward_per_image = evals[0].flops_per_call / evals[0].rows
    assert per_step["accelerator"] == pytest.approx(per_step["cpu"], rel=0.05)
    assert 2 * 32 * forward_per_image < per_step["cpu"] < 4 * 32 * forward_per_image
