"""Training engine: the mapped step against a plain single-device reference, evaluation,
optimizers, and the fit loop (accuracy, determinism, resume, NaN, corrupt checkpoints).

Random-number code is slow to compile on this CPU, so most tests build parameters from
numpy and share one small synthetic dataset; fits reuse one compiled step (same settings).
"""
import inspect
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhfc import datasets, models, parallel
from jaxhfc.config import TrainConfig
from jaxhfc.evaluation import evaluate, logits_fn, predict
from jaxhfc.fit import fit
from jaxhfc.runs import CheckpointError, load_run
from jaxhfc.step import STEP_OPTIONS, TrainState, create_train_state, make_optimizer, make_train_loop, make_train_step, named_keys
from jaxhfc import step as step_module

REPO = pathlib.Path(__file__).resolve().parents[1]


def _np_variables(model, seed=0, shape=(2, 32, 32, 3)):
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            return jnp.asarray(rng.normal(0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape), jnp.float32)
        if "scale" in name or "var" in name:
            return jnp.ones(leaf.shape, jnp.float32)
        return jnp.zeros(leaf.shape, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _state(model, tx, mesh, seed=0):
    v = _np_variables(model, seed)
    st = TrainState(step=jnp.zeros((), jnp.int32), params=v["params"],
                          batch_stats=v.get("batch_stats", {}), opt_state=tx.init(v["params"]))
    return parallel.global_from_full(mesh, st)


def _batch_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def _run_mapped(model, tx, n_dev, x, y, idx_list, **kw):
    mesh = parallel.make_mesh(n_dev)
    step = make_train_step(model, tx, mesh, global_batch=len(idx_list[0]), num_classes=10, **kw)
    state = _state(model, tx, mesh)
    keys = parallel.global_from_full(mesh, {k: v for k, v in named_keys(0).items() if k != "init"})
    images, labels = parallel.global_from_full(mesh, x), parallel.global_from_full(mesh, y)
    metrics = []
    for idx in idx_list:
        state, m = step(state, (images, labels, parallel.global_from_full(mesh, idx, sharded=True)), keys)
        metrics.append(jax.device_get(m))
    return jax.device_get(state), metrics


def _reference(model, tx, x, y, idx_list, *, label_smoothing=0.0, reg=None, reg_w=0.0, transform=None):
    """Plain JAX on the whole batch: no shard_map, no collectives, BN over the full batch."""
    v = _np_variables(model)
    params, bs, opt = v["params"], v.get("batch_stats", {}), tx.init(v["params"])
    losses = []
    for idx in idx_list:
        xb, yb = jnp.asarray(x[idx]), jnp.asarray(y[idx])
        if transform is not None:
            xb = transform(xb)

        def loss_fn(p):
            variables = {"params": p, **({"batch_stats": bs} if bs else {})}
            logits, upd = model.apply(variables, xb, train=True, mutable=["batch_stats"])
            t = jax.nn.one_hot(yb, 10)
            if label_smoothing:
                t = t * (1 - label_smoothing) + label_smoothing / 10
            ce = -jnp.sum(t * jax.nn.log_softmax(logits), -1)
            total = jnp.mean(ce) + (reg_w * reg(p) if reg else 0.0)
            return total, (upd, jnp.sum(ce))

        g, (upd, ce_sum) = jax.grad(loss_fn, has_aux=True)(params)
        u, opt = tx.update(g, opt, params)
        params = optax.apply_updates(params, u)
        bs = upd.get("batch_stats", bs)
        losses.append(float(ce_sum))
    return params, bs, losses


def _assert_tree_close(a, b, rtol=2e-4, atol=2e-5):
    for (path, u), w in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(w), rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(path))


def test_eight_device_step_equals_single_device_reference(n_devices):
    assert n_devices == 8
    model = models.get_model("small_cnn", width=4)  # with BatchNorm
    tx = make_optimizer(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = _batch_data()
    rng = np.random.default_rng(1)
    idx_list = [rng.permutation(64)[:32].astype(np.int32) for _ in range(3)]
    reg = lambda p: sum(jnp.sum(jnp.square(l)) for l in jax.tree_util.tree_leaves(p))  # noqa: E731
    kw = dict(label_smoothing=0.1, regularizer=reg, regularizer_weight=1e-3)
    ref_params, ref_bs, ref_losses = _reference(model, tx, x, y, idx_list, label_smoothing=0.1, reg=reg, reg_w=1e-3)
    # the reference is a plain single-device step on the full batch; the mapped 1-device
    # step is compared with the 8-device one in test_augmentation_is_independent_of_device_count
    for n_dev in (8,):
        state, metrics = _run_mapped(model, tx, n_dev, x, y, idx_list, **kw)
        assert int(state.step) == 3
        _assert_tree_close(state.params, ref_params)
        # synchronised BN: running stats equal those of BN over the full global batch
        _assert_tree_close(state.batch_stats, ref_bs)
        np.testing.assert_allclose([m["loss_sum"] for m in metrics], ref_losses, rtol=1e-5)
        assert all(int(m["count"]) == 32 for m in metrics)
        np.testing.assert_allclose(metrics[0]["regularizer"], reg(_np_variables(model)["params"]), rtol=1e-5)


def test_adam_no_bn_paper_resnet_step_and_adversary_hook():
    model = models.get_model("paper_resnet", width=2)
    tx = make_optimizer(optimizer="adam", learning_rate=1e-3)
    x, y = _batch_data(32)
    idx_list = [np.arange(16, dtype=np.int32), np.arange(16, 32, dtype=np.int32)]
    # adversary hook: trains on adversary(x) only; here a fixed transform 1 - x.
    adversary = lambda lf, xb, yb, key: 1.0 - xb  # noqa: E731
    ref_params, _, ref_losses = _reference(model, tx, x, y, idx_list, transform=lambda z: 1.0 - z)
    state, metrics = _run_mapped(model, tx, 8, x, y, idx_list, adversary=adversary)
    _assert_tree_close(state.params, ref_params)
    np.testing.assert_allclose([m["loss_sum"] for m in metrics], ref_losses, rtol=1e-5)


def test_augmentation_is_independent_of_device_count():
    model = models.get_model("small_cnn", width=4)
    tx = make_optimizer(optimizer="sgd", learning_rate=0.1, momentum=0.0)
    x, y = _batch_data(32)
    idx_list = [np.arange(16, dtype=np.int32)]
    s8, m8 = _run_mapped(model, tx, 8, x, y, idx_list, crop_pad=4, flip=True)
    s2, m2 = _run_mapped(model, tx, 1, x, y, idx_list, crop_pad=4, flip=True)
    s_plain, m_plain = _run_mapped(model, tx, 1, x, y, idx_list)
    _assert_tree_close(s8.params, s2.params)
    np.testing.assert_allclose(m8[0]["loss_sum"], m2[0]["loss_sum"], rtol=1e-5)
    assert not np.isclose(m8[0]["loss_sum"], m_plain[0]["loss_sum"], rtol=1e-4)  # augmentation did act


def test_mixup_step_runs_and_changes_loss():
    model = models.get_model("small_cnn", width=4)
    tx = make_optimizer(optimizer="sgd", learning_rate=0.0)
    x, y = _batch_data(32)
    idx_list = [np.arange(16, dtype=np.int32)]
    ref_params, _, ref_losses = _reference(model, tx, x, y, idx_list)
    _, mix = _run_mapped(model, tx, 8, x, y, idx_list, mixup_alpha=1.0)
    assert np.isfinite(mix[0]["loss_sum"])
    assert not np.isclose(mix[0]["loss_sum"], ref_losses[0])


def test_make_train_step_rejects_unknown_options():
    model = models.get_model("small_cnn", width=4)
    tx = make_optimizer(optimizer="sgd", learning_rate=0.0)
    with pytest.raises(TypeError, match=r"unknown options \['mixup'\]"):
        make_train_step(model, tx, parallel.make_mesh(1), global_batch=4, num_classes=10, mixup=1.0)
    assert set(STEP_OPTIONS) <= set(inspect.signature(make_train_loop).parameters)


@pytest.mark.slow
def test_real_pgd_adversary_raises_training_loss():
    cfg = TrainConfig(adv_eps=0.03, adv_steps=2, adv_step_size=0.01)
    model = models.get_model("small_cnn", width=4)
    tx = make_optimizer(optimizer="sgd", learning_rate=0.0)
    x, y = _batch_data(32)
    idx_list = [np.arange(16, dtype=np.int32)]
    _, clean = _run_mapped(model, tx, 8, x, y, idx_list)
    _, adv = _run_mapped(model, tx, 8, x, y, idx_list, adversary=step_module._adversary(cfg.adversary))
    assert np.isfinite(adv[0]["loss_sum"])
    assert adv[0]["loss_sum"] > clean[0]["loss_sum"]  # PGD raises the loss of the same batch


def test_kernel_penalty_maps_to_kernels_module():
    from jaxhfc import kernels

    assert step_module._regularizer(TrainConfig().optim) is None
    assert step_module._regularizer(TrainConfig(kernel_penalty=0.1).optim) is kernels.smoothness_penalty


def test_evaluate_and_predict_count_each_example_once():
    model = models.get_model("small_cnn", width=4)
    v = _np_variables(model, seed=3)
    x, y = _batch_data(37, seed=4)
    logits = np.asarray(model.apply(v, jnp.asarray(x), train=False), np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    ref_loss = -np.mean(logp[np.arange(37), y])
    ref_acc = np.mean(logits.argmax(1) == y)
    for n_dev, bs in ((8, 16), (8, 5), (1, 1000)):
        mesh = parallel.make_mesh(n_dev)
        r = evaluate(v, model, mesh, x, y, batch_size=bs)
        assert r["n"] == 37
        np.testing.assert_allclose(r["loss"], ref_loss, rtol=1e-5)
        assert r["accuracy"] == pytest.approx(ref_acc)
        pred, lg = predict(v, model, mesh, x, batch_size=bs, return_logits=True)
        np.testing.assert_array_equal(pred, logits.argmax(1))
        np.testing.assert_allclose(lg, logits, rtol=1e-4, atol=1e-5)
    f = logits_fn(v, model)
    np.testing.assert_allclose(np.asarray(jax.jit(f)(jnp.asarray(x[:4]))), logits[:4], rtol=1e-4, atol=1e-5)


def test_train_state_per_key_and_abstract_template():
    """create_train_state gives each key its own state (the compiled initialiser is shared, not
    its values), equal to flax's init and optax's init done by hand; abstract_train_state has its
    structure, shapes, dtypes and shardings without computing it."""
    from jaxhfc import step as step_module

    mesh = parallel.make_mesh(None)
    model = models.get_model("small_cnn", num_classes=10, width=8, norm="batch")
    tx = make_optimizer(optimizer="adam", learning_rate=1e-3)
    states = [create_train_state(model, tx, jax.random.key(k), (32, 32, 3), mesh=mesh) for k in (1, 2)]
    for k, state in zip((1, 2), states):
        ref = model.init({"params": jax.random.key(k)}, jnp.zeros((1, 32, 32, 3)), train=False)
        # (to float rounding: a jitted initialiser and flax's op-by-op init round apart by an ulp)
        for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref["params"])):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
        for got, want in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(tx.init(ref["params"]))):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
        assert int(state.step) == 0 and jax.tree.structure(state.batch_stats) == jax.tree.structure(ref["batch_stats"])
    assert not np.array_equal(np.asarray(states[0].params["head"]["kernel"]), np.asarray(states[1].params["head"]["kernel"]))
    abstract = step_module.abstract_train_state(model, tx, (32, 32, 3), mesh=mesh)
    assert jax.tree.structure(abstract) == jax.tree.structure(states[0])
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(states[0])):
        assert isinstance(a, jax.ShapeDtypeStruct) and (a.shape, a.dtype) == (s.shape, s.dtype)
        assert a.sharding.is_equivalent_to(s.sharding, s.ndim)


def test_make_optimizer_numbers():
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, 0.25])}
    # SGD + momentum + weight decay (PyTorch style): first step p - lr * (g + wd * p)
    tx = make_optimizer(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.01)
    u, _ = tx.update(g, tx.init(p), p)
    np.testing.assert_allclose(optax.apply_updates(p, u)["w"], [1 - 0.1 * (0.5 + 0.01), -2 - 0.1 * (0.25 - 0.02)],
                               rtol=1e-6)
    # Adam: first step moves each weight by lr * g / (|g| + eps) ~ lr * sign(g)
    tx = make_optimizer(optimizer="adam", learning_rate=1e-4)
    u, _ = tx.update(g, tx.init(p), p)
    np.testing.assert_allclose(u["w"], [-1e-4, -1e-4], rtol=1e-5)
    # schedules: value of the learning rate seen by SGD (momentum 0) at step t
    def lr_at(schedule, t, total=100):
        tx = make_optimizer(optimizer="sgd", learning_rate=1.0, momentum=0.0, schedule=schedule,
                                  total_steps=total)
        s = tx.init(p)
        for _ in range(t):
            _, s = tx.update(g, s, p)
        u, _ = tx.update({"w": jnp.array([1.0, 1.0])}, s, p)
        return -float(u["w"][0])

    assert lr_at("constant", 70) == pytest.approx(1.0)
    assert lr_at("cosine", 0) == pytest.approx(1.0)
    assert lr_at("cosine", 50) == pytest.approx(0.5, abs=1e-6)
    assert lr_at("cosine", 100) == pytest.approx(0.0, abs=1e-6)
    assert lr_at("step", 49) == pytest.approx(1.0)
    assert lr_at("step", 60) == pytest.approx(0.1)
    assert lr_at("step", 80) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="schedule"):
        make_optimizer(schedule="linear")


def test_config_validation_hash_and_roundtrip():
    c = TrainConfig(model="small_cnn", eval_radii=[4, 8])
    assert c.eval_radii == (4, 8)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.config_hash() == TrainConfig(model="small_cnn", eval_radii=(4, 8)).config_hash()
    assert c.config_hash() != TrainConfig(model="small_cnn", eval_radii=(4, 8), seed=1).config_hash()
    q = c.quick()
    assert q.dataset == "synthetic" and q.model == "small_cnn" and q.epochs <= 8
    # stable across interpreters (no dependence on Python's hash randomisation)
    code = ("from jaxhfc.config import TrainConfig; "
            "print(TrainConfig(net={'name': 'small_cnn'}, evaluation={'radii': (4, 8)}).config_hash())")
    env = dict(os.environ, PYTHONHASHSEED="123", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.stdout.strip() == c.config_hash(), out.stderr
    for bad in (dict(model="vgg"), dict(optimizer="lamb"), dict(train_filter="band"), dict(shuffle_labels=2.0),
                dict(batch_size=0), dict(mixup_alpha=1.0, adv_eps=0.03), dict(dtype="int8")):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"modell": "x"})


# ------------------------------------------------------------------ fit


@pytest.fixture(scope="module")
def tiny_data():
    return datasets.make_synthetic(num_train=256, num_test=64, seed=0)


def _tiny_config(**kw):
    base = dict(model="small_cnn", width=4, dataset="synthetic", epochs=3, batch_size=32, learning_rate=3e-3,
                eval_radii=(8,), eval_batch_size=64, checkpoint_every=1, augment_crop=True, augment_flip=True,
                dropout=0.1, eval_train=True, eval_train_subset=40)
    base.update(kw)
    return TrainConfig(**base)


def _flat(state):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(jax.device_get(state))]


class _Kill(Exception):
    pass


def test_fit_writes_run_folder_and_resume_is_bit_exact(tmp_path, tiny_data):
    cfg = _tiny_config()
    full = fit(cfg, tmp_path / "full", datasets=tiny_data, progress=False)
    steps_per_epoch = 256 // 32
    assert int(full.state.step) == 3 * steps_per_epoch
    # run folder contents
    info = json.loads((tmp_path / "full" / "config.json").read_text())
    assert info["config"] == cfg.to_dict() and info["config_hash"] == cfg.config_hash()
    assert {"jax", "flax", "optax"} <= set(info["versions"]) and len(info["devices"]) == 8
    assert "git_commit" in info
    lines = [json.loads(s) for s in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2, 3] and [h["step"] for h in lines] == [8, 16, 24]
    assert set(lines[-1]["accuracy"]) == {"test", "test_low_8", "test_high_8", "train", "train_low_8"}
    for h in lines:
        assert 0 <= h["accuracy"]["test"] <= 1 and np.isfinite(h["train_loss"]) and h["time_s"] > 0
    assert lines == json.loads(json.dumps(full.history))
    assert sorted(int(p.name) for p in (tmp_path / "full" / "checkpoints").iterdir() if p.name.isdigit()) == [8, 16, 24]

    # same seed, same result
    again = fit(cfg, tmp_path / "again", datasets=tiny_data, progress=False)
    for a, b in zip(_flat(full.state), _flat(again.state)):
        np.testing.assert_array_equal(a, b)

    # "kill" in the middle of epoch 3 (after the epoch-2 checkpoint), then resume
    def kill(step, metrics):
        assert np.isfinite(metrics["loss"])
        if step == 2 * steps_per_epoch + 3:
            raise _Kill()

    with pytest.raises(_Kill):
        fit(cfg, tmp_path / "killed", datasets=tiny_data, progress=False, step_callback=kill)
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(FileExistsError, match="resume"):
        fit(cfg, tmp_path / "killed", datasets=tiny_data, progress=False)
    with pytest.raises(ValueError, match="hash"):
        fit(_tiny_config(seed=5), tmp_path / "killed", datasets=tiny_data, progress=False, resume=True)
    resumed = fit(cfg, tmp_path / "killed", datasets=tiny_data, progress=False, resume=True)
    assert int(resumed.state.step) == 3 * steps_per_epoch
    for a, b in zip(_flat(full.state), _flat(resumed.state)):
        np.testing.assert_array_equal(a, b)  # bit-identical
    res_lines = [json.loads(s) for s in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in res_lines] == [1, 2, 3]
    assert [h["accuracy"] for h in res_lines] == [h["accuracy"] for h in lines]

    # load_run restores the final checkpoint; evaluation gives the logged test accuracy
    config, state, model = load_run(tmp_path / "full")
    assert config == cfg and int(state.step) == 24
    for a, b in zip(_flat(full.state), _flat(state)):
        np.testing.assert_array_equal(a, b)
    xt = datasets.to_model_input(tiny_data[1])
    r = evaluate(state, model, parallel.make_mesh(), xt, tiny_data[1].labels, batch_size=64)
    assert r["accuracy"] == pytest.approx(lines[-1]["accuracy"]["test"])


def test_corrupt_checkpoint_clear_error_older_kept(tmp_path, tiny_data):
    cfg = _tiny_config(epochs=2)
    fit(cfg, tmp_path, datasets=tiny_data, progress=False)
    latest = tmp_path / "checkpoints" / "16"
    files = [p for p in latest.rglob("*") if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(b"\x00garbage" * 3)
    with pytest.raises(CheckpointError, match=r"step 16.*\[8\]"):
        fit(cfg, tmp_path, datasets=tiny_data, progress=False, resume=True)
    assert (tmp_path / "checkpoints" / "8").is_dir() and latest.is_dir()
    _, state, _ = load_run(tmp_path, step=8)
    assert int(state.step) == 8


def test_nan_loss_stops_with_step(tmp_path, tiny_data):
    cfg = _tiny_config(optimizer="sgd", learning_rate=float("inf"), epochs=1, eval_train=False)
    with pytest.raises(FloatingPointError, match="at step 2 "):
        fit(cfg, tmp_path, datasets=tiny_data, progress=False)


def test_quick_fit_learns_synthetic_data(tmp_path):
    """Small CNN on 1,024 synthetic images, 8 devices: > 35% test accuracy (chance 10%) in < 1 min."""
    ds = datasets.make_synthetic(num_train=1024, num_test=512, seed=0)
    cfg = TrainConfig(model="small_cnn", width=16, dataset="synthetic", epochs=8, batch_size=32,
                            learning_rate=3e-3, eval_radii=(), eval_every=0, checkpoint_every=0)
    r = fit(cfg, tmp_path, datasets=ds, progress=False)
    assert len(r.history) == 1
    assert r.history[-1]["accuracy"]["test"] > 0.35
    assert r.history[-1]["train_loss"] < 2.0


def test_fit_criterion_stops_at_the_first_fitted_evaluation(tmp_path, tiny_data):
    """``evaluation.stop_at_train``: training stops after the first evaluation whose clean training
    accuracy reaches the criterion; the model is then the one trained for exactly that many epochs
    (constant schedule: the same steps), and a resume trains no further."""
    full = fit(_tiny_config(), tmp_path / "full", datasets=tiny_data, progress=False)
    accs = [h["accuracy"]["train"] for h in full.history]
    crit = max(accs[:2])  # met at epoch 1 or 2, before the cap of 3
    stop = next(i for i, a in enumerate(accs) if a >= crit) + 1
    assert stop < 3
    cfg = _tiny_config(eval_stop_at_train=crit)
    stopped = fit(cfg, tmp_path / "stopped", datasets=tiny_data, progress=False)
    assert [h["epoch"] for h in stopped.history] == list(range(1, stop + 1))
    assert int(stopped.state.step) == stop * (256 // 32)
    shorter = fit(_tiny_config(epochs=stop), tmp_path / "short", datasets=tiny_data, progress=False)
    for a, b in zip(_flat(shorter.state), _flat(stopped.state)):
        np.testing.assert_array_equal(a, b)
    again = fit(cfg, tmp_path / "stopped", datasets=tiny_data, progress=False, resume=True)
    assert int(again.state.step) == stop * (256 // 32) and len(again.history) == stop
    # a criterion never met: the cap
    capped = fit(_tiny_config(eval_stop_at_train=1.0 if max(accs) < 1.0 else None), tmp_path / "cap",
                 datasets=tiny_data, progress=False)
    assert len(capped.history) == 3
    with pytest.raises(ValueError, match="stop_at_train"):
        _tiny_config(eval_stop_at_train=0.9, eval_train=False)
    with pytest.raises(ValueError, match="stop_at_train"):
        _tiny_config(eval_stop_at_train=1.5)
