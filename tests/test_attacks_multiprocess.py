"""robust_accuracy with an attack list (a cascade attack included) and every sanity check on 2 CPU
processes x 2 devices (jax.distributed over 127.0.0.1) gives the same per-example results as 1
process."""
import json
import pathlib
import sys
import textwrap

import numpy as np
from mp_harness import run_processes


_COMMON = textwrap.dedent(
    """
    import warnings
    import jax, jax.numpy as jnp, numpy as np
    from jax.tree_util import Partial
    from jaxhfc import attacks, parallel

    def apply(p, x):
        h = jax.lax.conv_general_dilated(x, p["conv"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(h).reshape(x.shape[0], -1) @ p["w"]

    def run():
        rng = np.random.default_rng(0)
        p = {"conv": rng.normal(size=(3, 3, 3, 4)).astype(np.float32) * 0.5,
             "w": rng.normal(size=(8 * 8 * 4, 5)).astype(np.float32) * 0.3}
        x = rng.uniform(size=(11, 8, 8, 3)).astype(np.float32)  # 11: a padded last batch
        f = Partial(apply, {k: jnp.asarray(v) for k, v in p.items()})
        y = np.asarray(jnp.argmax(f(jnp.asarray(x)), -1)).astype(np.int32)
        y[::4] = (y[::4] + 1) % 5
        atks = (attacks.fgsm_attack(), attacks.Attack("apgd", "dlr", steps=3),
                attacks.Attack("apgd-t", "dlr", steps=2, targets=2, cascade=True))  # on the survivors
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = attacks.robust_accuracy(f, x, y, jax.random.key(5), batch_size=8,
                                        mesh=parallel.make_mesh(), eps=0.03, attacks=atks,
                                        logit_scale=10.0, more_steps=None)
        return r.per_example(model_id="mp", labels=y), r.summary()
    """
)

_WORKER = textwrap.dedent(
    """
    import json, os, sys
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    from jaxhfc import parallel
    assert parallel.initialize_distributed(f"127.0.0.1:{port}", nproc, pid, initialization_timeout=60)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mp_attacks_common import run
    per_example, summary = run()
    with open(out + f".{pid}", "w") as fh:
        json.dump({"per_example": per_example, "summary": summary}, fh)
    print("process", pid, "of", jax.process_count(), "devices", jax.device_count(), "done", flush=True)
    """
)


def test_robust_accuracy_two_processes_equal_one(tmp_path):
    (tmp_path / "worker.py").write_text(_WORKER)
    (tmp_path / "mp_attacks_common.py").write_text(_COMMON)
    sys.path.insert(0, str(tmp_path))
    try:
        import mp_attacks_common  # noqa: PLC0415
    finally:
        sys.path.remove(str(tmp_path))
    single, single_summary = mp_attacks_common.run()  # this process, all its (8) devices
    out = tmp_path / "result.json"
    logs = run_processes(tmp_path / "worker.py", [out])
    assert "of 2 devices 4 done" in logs[0]
    for pid in range(2):  # every process gets every example, identical to one process
        got = json.loads(pathlib.Path(f"{out}.{pid}").read_text())
        multi, summary = got["per_example"], got["summary"]
        assert [e["index"] for e in multi["examples"]] == list(range(11))
        for a, b in zip(single["examples"], multi["examples"]):
            assert {k: v for k, v in a.items() if k != "perturbation_norm"} == \
                   {k: v for k, v in b.items() if k != "perturbation_norm"}
            np.testing.assert_allclose(a["perturbation_norm"], b["perturbation_norm"], atol=1e-6)
        for k in ("clean_accuracy", "robust_accuracy", "noise_accuracy", "attack_accuracy", "flags"):
            assert summary[k] == single_summary[k], k
        assert summary["checks"]["logit_scale"] == single_summary["checks"]["logit_scale"]
    assert single_summary["robust_accuracy"] < single_summary["clean_accuracy"]  # attacks do something
