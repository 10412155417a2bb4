"""Engine v2: populations (K models in one program) against the same models trained alone,
the on-device loop (steps scanned per call) against the per-step loop, population keys and
eval-set names. Everything runs on the 8 fake CPU devices of conftest.py."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import _assert_tree_close, _batch_data, _np_variables, _reference

from jaxhfc import datasets, models, parallel
from jaxhfc.config import DATA_FIELDS, EVAL_FIELDS, FLAT_FIELDS, HPARAM_FIELDS, TrainConfig
from jaxhfc.evaluation import eval_set_name
from jaxhfc.fit import fit, fit_population, population_key
from jaxhfc.prepare import prepare_data
from jaxhfc.runs import load_run
from jaxhfc.step import TrainState, _loop_plan, make_optimizer, make_train_loop, named_keys


class _Kill(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_data():
    return datasets.make_synthetic(num_train=128, num_test=48, seed=0)


def _config(**kw):
    base = dict(model="small_cnn", width=4, dataset="synthetic", epochs=2, batch_size=32, learning_rate=3e-3,
                eval_radii=(8,), eval_batch_size=48, checkpoint_every=1, augment_crop=True, augment_flip=True,
                dropout=0.1)
    base.update(kw)
    return TrainConfig(**base)


def _leaves(state):
    return [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(jax.device_get(state))]


def _members():
    """Three models that share a program: two seeds, and one trained on LFC images with
    shuffled labels (other data) and another learning rate."""
    return [_config(seed=0), _config(seed=1), _config(seed=2, train_filter="low", train_radius=8.0,
                                                      shuffle_labels=1.0, data_seed=3, learning_rate=1e-3)]


def test_population_key_groups_configs():
    a = _config()
    assert population_key(a) == population_key(dataclasses.replace(
        a, seed=4, data_seed=1, train_filter="high", train_radius=4.0, shuffle_labels=0.5, eval_every=3,
        eval_radii=(2, 4), checkpoint_every=7, learning_rate=1e-3))
    for change in ({"momentum": 0.5}, {"optimizer": "sgd"}, {"batch_size": 64}, {"epochs": 3}, {"width": 8}, {"num_train": 64}):
        assert population_key(a) != population_key(dataclasses.replace(a, **change)), change
    hash(population_key(a))
    # every field is either in the key (as "section.field") or outside the program: none is forgotten
    in_key = {tuple(k.split(".")) for k, _ in population_key(a)}
    declared = {FLAT_FIELDS[n] for n in DATA_FIELDS + EVAL_FIELDS + HPARAM_FIELDS}
    assert len(declared) == len(DATA_FIELDS) + len(EVAL_FIELDS) + len(HPARAM_FIELDS)
    assert in_key | declared == set(FLAT_FIELDS.values()) and not in_key & declared
    with pytest.raises(ValueError, match="momentum"):
        fit_population([a, dataclasses.replace(a, momentum=0.5)], ["x", "y"])
    with pytest.raises(ValueError, match="one run folder"):
        fit_population([a, a], ["x", "x"])


def test_eval_set_name(tiny_data):
    assert eval_set_name("test_low", 12.0) == "test_low_12"
    assert eval_set_name("test_low", 12) == "test_low_12"
    assert eval_set_name("test_high", 12.5) == "test_high_12p5"
    assert eval_set_name("train_low", np.float64(4.0)) == "train_low_4"
    with pytest.raises(ValueError, match="kind"):
        eval_set_name("val_low", 4)
    with pytest.raises(ValueError, match="radius"):
        eval_set_name("test_low", -1)
    sets = prepare_data(_config(eval_radii=(4.0, 12.5)), tiny_data)
    assert set(sets["eval"]) == {"test", "test_low_4", "test_high_4", "test_low_12p5", "test_high_12p5"}


def test_population_scanned_loop_equals_plain_reference():
    """Two models (own data, batch order and learning rate) in one program, 2 steps scanned
    per call on 8 devices == each model's plain single-device steps (no shard_map, vmap or scan)."""
    model = models.get_model("small_cnn", width=4)  # with BatchNorm (synchronised over "data")
    tx = make_optimizer(optimizer="sgd", learning_rate=1.0, momentum=0.9)  # rates below
    rates = [0.1, 0.05]
    mesh = parallel.make_mesh()
    x, y = _batch_data(48, seed=0)
    xs, ys = np.stack([x, 1.0 - x]), np.stack([y, (y + 3) % 10])
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 48, (4, 2, 16)).astype(np.int32)  # (steps, K, B)
    loop = make_train_loop(model, tx, mesh, global_batch=16, num_classes=10, population=2,
                                 shared_images=False, shared_labels=False)
    v = _np_variables(model)
    one = TrainState(step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v["batch_stats"],
                           opt_state=tx.init(v["params"]))
    state = parallel.global_from_full(mesh, jax.tree_util.tree_map(lambda a: np.stack([a, a]), one))
    keys = {k: jax.random.wrap_key_data(jnp.stack([jax.random.key_data(v)] * 2))
            for k, v in named_keys(0).items() if k != "init"}
    keys = parallel.global_from_full(mesh, keys)
    images, labels = parallel.global_from_full(mesh, xs), parallel.global_from_full(mesh, ys)
    losses = []
    for s0 in (0, 2):
        chunk = parallel.global_from_full(mesh, idx[s0:s0 + 2], sharded=True, batch_axis=2)
        state, m = loop(state, images, labels, chunk, keys, parallel.global_from_full(mesh, np.float32(rates)))
        losses.append(np.asarray(jax.device_get(m["loss_sum"])))  # (2 steps, K)
    losses = np.concatenate(losses)
    state = jax.device_get(state)
    assert losses.shape == (4, 2) and state.step.tolist() == [4, 4]
    for k in range(2):
        tx_k = make_optimizer(optimizer="sgd", learning_rate=rates[k], momentum=0.9)
        params, bs, ref_losses = _reference(model, tx_k, xs[k], ys[k], list(idx[:, k]))
        _assert_tree_close(jax.tree_util.tree_map(lambda a: a[k], state.params), params)
        _assert_tree_close(jax.tree_util.tree_map(lambda a: a[k], state.batch_stats), bs)
        np.testing.assert_allclose(losses[:, k], ref_losses, rtol=1e-5)


@pytest.mark.slow
def test_population_equals_models_trained_alone(tmp_path, tiny_data):
    configs = _members()
    alone = [fit(c, tmp_path / f"alone{i}", datasets=tiny_data, progress=False) for i, c in enumerate(configs)]
    pop = fit_population(configs, [tmp_path / f"pop{i}" for i in range(3)], datasets=tiny_data,
                               progress=False, vmap=True)
    assert [int(r.state.step) for r in pop] == [8, 8, 8]
    for a, p in zip(alone, pop):
        for x, y in zip(_leaves(a.state), _leaves(p.state)):
            np.testing.assert_allclose(y, x, rtol=2e-4, atol=2e-5)
        assert [h["epoch"] for h in p.history] == [1, 2] and p.history[-1]["population"] == 3
        for ha, hp in zip(a.history, p.history):
            assert hp["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4)
            assert hp["accuracy"] == pytest.approx(ha["accuracy"], abs=1.5 / 48)  # at most one flip
    # the models differ from each other (own seeds and data), each run folder is complete
    assert not np.allclose(_leaves(pop[0].state.params)[0], _leaves(pop[1].state.params)[0])
    for i, c in enumerate(configs):
        info = json.loads((tmp_path / f"pop{i}" / "config.json").read_text())
        assert info["config_hash"] == c.config_hash()
        loaded_config, state, _ = load_run(tmp_path / f"pop{i}")
        assert loaded_config == c
        for x, y in zip(_leaves(pop[i].state), _leaves(state)):
            np.testing.assert_array_equal(x, y)
    # one after the other (the CPU default): each model exactly as fit trains it
    seq = fit_population(configs, [tmp_path / f"seq{i}" for i in range(3)], datasets=tiny_data,
                               progress=False, vmap=False)
    for a, q in zip(alone, seq):
        for x, y in zip(_leaves(a.state), _leaves(q.state)):
            np.testing.assert_array_equal(x, y)


def test_population_resume_is_bit_exact(tmp_path, tiny_data):
    configs = _members()  # the program of the test above (same K and settings): no recompilation
    full = fit_population(configs, [tmp_path / f"full{i}" for i in range(3)], datasets=tiny_data,
                                progress=False, vmap=True)

    def kill(step, metrics):
        assert len(metrics) == 3 and all(np.isfinite(m["loss"]) for m in metrics)
        if step == 6:  # in epoch 2, after the epoch-1 checkpoints
            raise _Kill()

    dirs = [tmp_path / f"killed{i}" for i in range(3)]
    with pytest.raises(_Kill):
        fit_population(configs, dirs, datasets=tiny_data, progress=False, step_callback=kill, vmap=True)
    resumed = fit_population(configs, dirs, datasets=tiny_data, progress=False, vmap=True)
    for f, r in zip(full, resumed):
        for x, y in zip(_leaves(f.state), _leaves(r.state)):
            np.testing.assert_array_equal(x, y)
        assert [h["accuracy"] for h in r.history] == [h["accuracy"] for h in f.history]
    # a member can be resumed alone by fit (its run folder is an ordinary one)
    alone = fit(configs[1], dirs[1], datasets=tiny_data, progress=False, resume=True)
    assert int(alone.state.step) == 8


@pytest.mark.slow  # scanned programs compile and run slowly on CPU; quick variant: ..._plain_reference above
def test_scanned_loop_equals_per_step_loop(tmp_path, tiny_data):
    cfg = _config(epochs=1, checkpoint_every=0, eval_radii=())
    per_step = fit(cfg, tmp_path / "a", datasets=tiny_data, progress=False, steps_per_call=1)
    scanned = fit(cfg, tmp_path / "b", datasets=tiny_data, progress=False, steps_per_call=3)  # 3 + 1 steps
    for x, y in zip(_leaves(per_step.state), _leaves(scanned.state)):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
    assert scanned.history[-1]["train_loss"] == pytest.approx(per_step.history[-1]["train_loss"], rel=1e-5)
    bad = _config(epochs=1, optimizer="sgd", learning_rate=float("inf"), eval_radii=())
    with pytest.raises(FloatingPointError, match="at step 2 "):
        fit(bad, tmp_path / "nan", datasets=tiny_data, progress=False, steps_per_call=4)
    with pytest.raises(ValueError, match="steps_per_call"):
        fit(cfg, tmp_path / "c", datasets=tiny_data, progress=False, steps_per_call=0)


def test_accelerator_loops_forced_on_cpu_equal_the_cpu_form(tmp_path, tiny_data, monkeypatch):
    """``JAXHFC_LOOPS=accelerator`` runs here the loops a GPU runs by default: the steps of an epoch
    scanned in one call, the population's models vmapped in one program, and adversarial
    training's PGD loop rolled. Each model must end as the CPU form trains it (one step per call,
    one model after the other, the PGD loop unrolled), to the float tolerance of batched
    convolutions; a bad form name is refused."""
    base = _config(epochs=1, checkpoint_every=0, eval_radii=(), augment_crop=False, dropout=0.0)
    configs = [base.merged(run={"seed": s}, adversary={"eps": 0.03, "steps": 2, "step_size": 0.015})
               for s in (0, 1)]
    monkeypatch.setenv(parallel.LOOPS_ENV, "cpu")
    assert not parallel.accelerator_loops()
    reference = fit_population(configs, [tmp_path / f"cpu{i}" for i in range(2)], datasets=tiny_data, progress=False)
    assert all(r.history[-1].get("population") is None for r in reference)  # one model after the other
    assert _loop_plan(4, None)[0] == 1
    monkeypatch.setenv(parallel.LOOPS_ENV, "accelerator")
    assert parallel.accelerator_loops() and _loop_plan(4, None)[0] == 4  # an epoch's 4 steps in one scanned call
    forced = fit_population(configs, [tmp_path / f"acc{i}" for i in range(2)], datasets=tiny_data, progress=False)
    assert [r.history[-1]["population"] for r in forced] == [2, 2]  # one vmapped program
    for a, b in zip(reference, forced):
        assert int(b.state.step) == int(a.state.step) == 4
        for x, y in zip(_leaves(a.state), _leaves(b.state)):
            np.testing.assert_allclose(y, x, rtol=2e-4, atol=2e-5)
        assert b.history[-1]["train_loss"] == pytest.approx(a.history[-1]["train_loss"], rel=1e-4)
    # the models learned different things (own seeds), so equality is not of two constants
    assert not np.allclose(_leaves(forced[0].state.params)[0], _leaves(forced[1].state.params)[0])
    monkeypatch.setenv(parallel.LOOPS_ENV, "gpu")
    with pytest.raises(ValueError, match="JAXHFC_LOOPS must be one of"):
        parallel.accelerator_loops()
