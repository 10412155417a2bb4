"""Mesh/sharding helpers, distributed settings, and a real 2-process multi-host run on CPU."""
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxhfc import parallel
from mp_harness import run_processes



def test_mesh_and_shardings(n_devices):
    mesh = parallel.make_mesh()
    assert mesh.axis_names == (parallel.DATA_AXIS,) and mesh.devices.shape == (n_devices,)
    assert parallel.make_mesh(2).devices.shape == (2,)
    with pytest.raises(ValueError, match="num_devices"):
        parallel.make_mesh(n_devices + 1)
    assert parallel.data_sharding(mesh).spec == P("data")
    assert parallel.data_sharding(mesh, batch_axis=1).spec == P(None, "data")
    assert parallel.replicated(mesh).spec == P()
    assert parallel.local_batch_size(32, mesh) == 32 // n_devices
    with pytest.raises(ValueError, match="divisible"):
        parallel.local_batch_size(12, mesh)


def test_global_array_helpers():
    mesh = parallel.make_mesh()
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    g = parallel.global_from_full(mesh, x, sharded=True)
    assert g.sharding.spec == P("data") and len(g.addressable_shards) == 8
    np.testing.assert_array_equal(g.addressable_shards[3].data, x[6:8])
    local = parallel.global_from_local(mesh, x)  # one process: local rows == all rows
    np.testing.assert_array_equal(parallel.to_host(local), x)
    r = parallel.global_from_full(mesh, {"a": x, "k": jax.random.key(3)})
    assert r["a"].sharding.is_fully_replicated and r["k"].sharding.is_fully_replicated
    assert jax.dtypes.issubdtype(r["k"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(r["k"]), jax.random.key_data(jax.random.key(3)))
    np.testing.assert_array_equal(parallel.to_host(r["a"]), x)
    assert parallel.global_from_full(mesh, r["a"]) is r["a"]


def test_distributed_settings_from_env(monkeypatch):
    for name in ("JAXHFC_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS", "JAXHFC_NUM_PROCESSES",
                 "JAX_NUM_PROCESSES", "JAXHFC_PROCESS_ID", "JAX_PROCESS_ID", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert parallel.distributed_settings()["num_processes"] == 1
    assert parallel.initialize_distributed() is False  # single process: no-op
    monkeypatch.setenv("JAXHFC_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAXHFC_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAXHFC_PROCESS_ID", "2")
    s = parallel.distributed_settings()
    assert s == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2, "source": "env"}
    assert parallel.distributed_settings("h:1", 2, 1)["coordinator_address"] == "h:1"  # flags win
    with pytest.raises(ValueError, match="process_id"):
        parallel.distributed_settings(process_id=7)
    for name in ("JAXHFC_COORDINATOR_ADDRESS", "JAXHFC_NUM_PROCESSES", "JAXHFC_PROCESS_ID"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_NTASKS", "3")
    monkeypatch.setenv("SLURM_PROCID", "1")
    s = parallel.distributed_settings()
    assert s["num_processes"] == 3 and s["process_id"] == 1 and s["source"] == "slurm"
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("JAXHFC_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="coordinator"):
        parallel.initialize_distributed()


# ------------------------------------------------------------------ multi-host

_WORKER = textwrap.dedent(
    """
    import os, sys
    pid, nproc, port, out, ndev = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    import jax
    jax.config.update("jax_num_cpu_devices", ndev)
    from jaxhfc import parallel
    assert parallel.initialize_distributed(f"127.0.0.1:{port}", nproc, pid, initialization_timeout=60)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from multihost_common import run
    params, evaluation, swept = run()
    if pid == 0:
        import numpy as np
        np.savez(out, *params, accuracy=evaluation["accuracy"], loss=evaluation["loss"],
                 **{"sweep_" + k: v for k, v in swept.items()})
    print("process", pid, "of", jax.process_count(), "devices", jax.device_count(), "done", flush=True)
    """
)

_COMMON = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jaxhfc import models, parallel
    from jaxhfc.evaluation import evaluate, predict
    from jaxhfc.step import TrainState, make_optimizer, make_train_step, named_keys

    def rows(w, key, xb, yb, index):
        noise = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), ()))(index)
        return {"z": jnp.sum(xb, axis=(1, 2)) @ w + noise[:, None], "y": yb, "index": index}

    def run():
        # The same global batch on any number of processes/devices: 4 steps, global batch 16.
        rng = np.random.default_rng(0)
        x = rng.random((48, 32, 32, 3), dtype=np.float32)
        y = rng.integers(0, 10, 48).astype(np.int32)
        idx = [rng.permutation(48)[:16].astype(np.int32) for _ in range(4)]
        model = models.get_model("small_cnn", width=4)
        tx = make_optimizer(optimizer="sgd", learning_rate=0.1, momentum=0.9)
        mesh = parallel.make_mesh()
        abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
        prng = np.random.default_rng(1)
        v = jax.tree_util.tree_map(lambda a: prng.normal(0, 0.3, a.shape).astype(np.float32), abstract)
        v["batch_stats"] = jax.tree_util.tree_map(np.abs, v["batch_stats"])
        state = TrainState(step=np.zeros((), np.int32), params=v["params"], batch_stats=v["batch_stats"],
                                 opt_state=tx.init(v["params"]))
        state = parallel.global_from_full(mesh, jax.tree_util.tree_map(np.asarray, state))
        step = make_train_step(model, tx, mesh, global_batch=16, num_classes=10, crop_pad=4, flip=True)
        keys = parallel.global_from_full(mesh, {k: v for k, v in named_keys(0).items() if k != "init"})
        images, labels = parallel.global_from_full(mesh, x), parallel.global_from_full(mesh, y)
        n_local = jax.local_device_count()
        for i in idx:
            # each process feeds only the rows of its own devices (host-local -> global array)
            lo = jax.process_index() * n_local * (16 // jax.device_count())
            local_rows = i[lo: lo + n_local * (16 // jax.device_count())]
            batch_idx = parallel.global_from_local(mesh, local_rows)
            state, m = step(state, (images, labels, batch_idx), keys)
            parallel.to_host(m)
        evaluation = evaluate(state, model, mesh, x, y, batch_size=24)
        host = parallel.to_host(state)
        # the sweep helper: host inputs and device inputs (global arrays), 48 rows in calls of 20
        w = np.linspace(-1, 1, 30, dtype=np.float32).reshape(3, 10)
        swept = {"pred": predict(state, model, mesh, images, batch_size=20)}
        for name, inputs in (("host", (x, y)), ("device", (images, labels))):
            out = parallel.sweep(rows, inputs, (w, jax.random.key(5)), batch_size=20, mesh=mesh, with_index=True)
            swept.update({f"{name}_{k}": v for k, v in out.items()})
        return [np.asarray(a) for a in jax.tree_util.tree_leaves(host)], evaluation, swept
    """
)


def test_two_process_run_equals_single_process(tmp_path):
    """2 CPU processes x 2 devices over 127.0.0.1 == this process (8 devices) == 1 device."""
    (tmp_path / "worker.py").write_text(_WORKER)
    (tmp_path / "multihost_common.py").write_text(_COMMON)
    sys.path.insert(0, str(tmp_path))
    try:
        import multihost_common  # noqa: PLC0415
    finally:
        sys.path.remove(str(tmp_path))
    single_params, single_eval, single_sweep = multihost_common.run()  # 8 local devices, 1 process

    out = tmp_path / "params.npz"
    logs = run_processes(tmp_path / "worker.py", [out, 2])
    assert "of 2 devices 4 done" in logs[0]
    got = np.load(out)
    multi_params = [got[f"arr_{i}"] for i in range(len(single_params))]
    for a, b in zip(single_params, multi_params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(got["loss"]), single_eval["loss"], rtol=1e-5)
    assert float(got["accuracy"]) == pytest.approx(single_eval["accuracy"])
    assert int(single_params[0]) == int(multi_params[0]) == 4  # TrainState.step: 4 steps taken
    # sweeps: the same rows in input order on 2 processes x 2 devices as on 1 process x 8
    for k, v in single_sweep.items():
        np.testing.assert_allclose(got["sweep_" + k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_array_equal(single_sweep["host_index"], np.arange(48))
    np.testing.assert_array_equal(single_sweep["host_y"], single_sweep["device_y"])


def _affine(params, x, *, scale=1.0):
    return scale * (x @ params["w"] + params["b"])


def test_split_join_callable():
    rng = np.random.default_rng(0)
    pa = {"w": rng.normal(size=(3, 2)).astype(np.float32), "b": jax.numpy.ones(2)}
    pb = {"w": rng.normal(size=(3, 2)).astype(np.float32), "b": jax.numpy.zeros(2)}
    fa = jax.tree_util.Partial(_affine, pa, scale=2.0)
    fb = jax.tree_util.Partial(_affine, pb, scale=2.0)
    arrays_a, spec_a = parallel.split_callable(fa)
    arrays_b, spec_b = parallel.split_callable(fb)
    assert len(arrays_a) == 2 and spec_a == spec_b and hash(spec_a) == hash(spec_b)
    assert {spec_a: 1}[spec_b] == 1  # usable as a cache key
    x = rng.normal(size=(4, 3)).astype(np.float32)
    ref = 2.0 * (x.astype(np.float64) @ pb["w"] + np.asarray(pb["b"]))
    g = parallel.join_callable(spec_a, arrays_b)  # a's structure, b's arrays
    np.testing.assert_allclose(np.asarray(g(x)), ref, rtol=1e-5)
    # the joined callable works traced, with the arrays as jit arguments
    out = jax.jit(lambda arr, xx: parallel.join_callable(spec_a, arr)(xx))(arrays_a, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(fa(x)), rtol=1e-6)
    # another non-array leaf (scale) gives another spec
    assert parallel.split_callable(jax.tree_util.Partial(_affine, pa, scale=3.0))[1] != spec_a
    # a plain function: no arrays, itself in the spec
    arrays, spec = parallel.split_callable(np.tanh)
    assert arrays == [] and parallel.join_callable(spec, []) is np.tanh
    with pytest.raises(ValueError, match="array leaves"):
        parallel.join_callable(spec_a, arrays_a[:1])


def _rows(w, key, xb, yb, index):
    """A per-batch function of independent rows: x @ w plus a per-example random number."""
    noise = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), ()))(index)
    return {"z": xb @ w + noise[:, None], "y": yb, "index": index}


def test_sweep_pads_shards_and_unpads_in_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 5)).astype(np.float32)
    y = rng.integers(0, 9, 37).astype(np.int32)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    key = jax.random.key(1)
    noise = np.array([float(jax.random.uniform(jax.random.fold_in(key, i), ())) for i in range(37)])
    ref = x.astype(np.float64) @ w + noise[:, None]
    mesh = parallel.make_mesh()
    placed = parallel.global_from_full(mesh, (x, y))
    for m, bs, inputs in ((None, 10, (x, y)), (None, 1000, (x, y)), (mesh, 1, (x, y)), (mesh, 12, (x, y)),
                          (mesh, 16, placed), (parallel.make_mesh(2), 7, (jax.numpy.asarray(x), y))):
        out = parallel.sweep(_rows, inputs, (w, key), batch_size=bs, mesh=m, with_index=True)
        assert out["z"].shape == (37, 3) and isinstance(out["z"], np.ndarray)
        np.testing.assert_allclose(out["z"], ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out["y"], y)
        np.testing.assert_array_equal(out["index"], np.arange(37))
    # a pytree of batched inputs, no index, outputs of other shapes
    out = parallel.sweep(lambda s, t: {"sum": t["a"] * s, "rev": t["b"][:, ::-1]}, [{"a": x[:, 0], "b": x}], (2.0,),
                         batch_size=8, mesh=mesh)
    np.testing.assert_allclose(out["sum"], 2 * x[:, 0])
    np.testing.assert_array_equal(out["rev"], x[:, ::-1])
    with pytest.raises(ValueError, match="leading axis"):
        parallel.sweep(_rows, (x, y[:5]), (w, key), batch_size=8, with_index=True)
    with pytest.raises(ValueError, match="batch_size"):
        parallel.sweep(_rows, (x, y), (w, key), batch_size=0, with_index=True)
    with pytest.raises(ValueError, match="at least one"):
        parallel.sweep(_rows, (x[:0], y[:0]), (w, key), batch_size=4, with_index=True)


def test_bucketed_sweep_serves_every_size_with_few_programs():
    """With ``bucket``, sets smaller than the batch run in power-of-two calls: the same results
    as unbucketed calls, and sizes 1..N compile at most log2(batch) + 1 call shapes where the
    unbucketed sweep compiles one per size (counted by the shapes the function is traced at)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 9, 40).astype(np.int32)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    key = jax.random.key(3)
    mesh = parallel.make_mesh()
    shapes = {True: set(), False: set()}

    def make(bucketed):
        def fn(w, key, xb, yb, index):  # a distinct function per mode: its own programs
            shapes[bucketed].add(xb.shape[0])
            return _rows(w, key, xb, yb, index)
        return fn

    fns = {b: make(b) for b in (True, False)}
    for n in range(1, 41, 3):
        out = {b: parallel.sweep(fns[b], (x[:n], y[:n]), (w, key), batch_size=32, with_index=True, bucket=b)
               for b in (True, False)}
        sharded = parallel.sweep(_rows, (x[:n], y[:n]), (w, key), batch_size=32, mesh=mesh, with_index=True,
                                 bucket=True)
        for o in (out[True], sharded):
            np.testing.assert_allclose(o["z"], out[False]["z"], rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(o["index"], np.arange(n))
    assert shapes[True] == {1, 4, 8, 16, 32} and len(shapes[False]) == 12  # n = 1, 4, ..., 31, then 32
