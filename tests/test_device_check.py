"""benchmarks/device_check.py run the way the lent GPU machine runs it: a plain Python with jax,
jaxhfc not installed but on ``PYTHONPATH=<repo>``, the repository as the working folder, and
tensorflow-datasets unimportable; each stage in its own process under a time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import device_check
from jaxhfc import compat
from jaxhfc.datasets import idx

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def lent_env(tmp_path):
    """Environment of a lent machine: ``PYTHONPATH`` = a folder whose ``tensorflow_datasets``
    raises ImportError, then the repository; nothing else of the test run's path."""
    block = tmp_path / "block"
    (block / "tensorflow_datasets").mkdir(parents=True)
    (block / "tensorflow_datasets" / "__init__.py").write_text(
        "raise ImportError('tensorflow_datasets is not installed on this machine')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS", "JAXHFC_LOOPS")}
    env.update(PYTHONPATH=os.pathsep.join([str(block), str(ROOT)]), JAX_PLATFORMS="cpu")
    return env


@pytest.fixture()
def fmnist_dir(tmp_path):
    """A small Fashion-MNIST in IDX files (random images, balanced labels): 400 + 200 images."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for stem, n in (("train", 400), ("t10k", 200)):
        idx.write_idx(str(folder / f"{stem}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        idx.write_idx(str(folder / f"{stem}-labels-idx1-ubyte.gz"), (np.arange(n) % 10).astype(np.uint8))
    return str(tmp_path / "data")


def _run(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "benchmarks.device_check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_tfds_blocker_really_blocks(lent_env):
    code = "import jaxhfc, experiments.reproduce_all\ntry:\n import tensorflow_datasets\nexcept ImportError:\n print('blocked')"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=lent_env, capture_output=True, text=True)
    assert res.stdout.strip() == "blocked", res.stderr


def test_tiny_run_of_the_first_and_last_stages(tmp_path, lent_env, fmnist_dir):
    """The quick variant of the test below: versions, attacks and the Fashion-MNIST epoch."""
    out = tmp_path / "out"
    res = _run(lent_env, "--tiny", "--out", str(out), "--data-dir", fmnist_dir,
               "--only", "versions", "attacks", "fmnist_epoch")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [device_check.stage_path(out, s).name for s in ("versions", "attacks", "fmnist_epoch")] + [device_check.SUMMARY])
    for name in ("versions", "attacks", "fmnist_epoch"):
        assert json.loads(device_check.stage_path(out, name).read_text())["status"] == "ok", name
    assert "jaxhfc environment: ok" in res.stdout


@pytest.mark.slow  # 1-3 min on 2 shared cores (60 s alone); quick variant: the test above
def test_tiny_run_writes_every_stage_into_out(tmp_path, lent_env, fmnist_dir):
    out = tmp_path / "out"
    res = _run(lent_env, "--tiny", "--out", str(out), "--data-dir", fmnist_dir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([device_check.stage_path(out, s).name for s in device_check.STAGES]
                           + [device_check.SUMMARY])
    summary = json.loads((out / device_check.SUMMARY).read_text())
    for name in device_check.STAGES:
        record = json.loads(device_check.stage_path(out, name).read_text())
        assert record["status"] == "ok", (name, record)
        assert summary["stages"][name]["status"] == "ok"
    versions = json.loads(device_check.stage_path(out, "versions").read_text())
    assert versions["errors"] == [] and versions["conv"]["value_ok"]
    step = json.loads(device_check.stage_path(out, "train_step").read_text())
    assert {(r["dtype"], r["batch"]) for r in step["rows"]} == {(d, b) for d in ("float32", "bfloat16")
                                                                for b in (8, 16)}
    assert all(r["flops_per_image"] > 0 and r["norm"] == "none" and r["optimizer"] == "adam" for r in step["rows"])
    att = json.loads(device_check.stage_path(out, "attacks").read_text())
    assert [r["attack"] for r in att["rows"]] == ["pgd_rolled", "apgd_ce"]
    pop = json.loads(device_check.stage_path(out, "populations").read_text())
    assert [r["models"] for r in pop["rows"]] == [1, 2] and not pop["population_failed"]
    epoch = json.loads(device_check.stage_path(out, "fmnist_epoch").read_text())
    assert epoch["input_shape"] == [28, 28, 1] and 0 <= epoch["accuracy"]["test"] <= 1
    assert epoch["test_images"] == 192  # the tiny recipe's test subset, drawn from the 200 written
    # nothing written into the checkout by the run
    assert not (ROOT / "benchmarks" / "results" / "device-check.json").exists()


def test_a_stage_past_its_limit_is_killed_and_recorded(tmp_path, lent_env):
    out = tmp_path / "out"
    res = _run(lent_env, "--tiny", "--out", str(out), "--only", "versions", "populations", "--cap", "populations=1",
               timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    first = json.loads(device_check.stage_path(out, "versions").read_text())
    killed = json.loads(device_check.stage_path(out, "populations").read_text())
    assert first["status"] == "ok"
    assert killed["status"] == "timeout" and killed["limit_s"] == 1
    assert json.loads((out / device_check.SUMMARY).read_text())["stages"]["populations"]["status"] == "timeout"


def test_a_stage_that_exits_is_recorded(tmp_path, monkeypatch):
    def leaves(**_):
        raise SystemExit("a driver gave up")

    monkeypatch.setitem(device_check.STAGE_FUNCS, "attacks", leaves)
    assert device_check.run_stage("attacks", out=tmp_path, tiny=True, data_dir=None, work=tmp_path / "w") == 1
    record = json.loads(device_check.stage_path(tmp_path, "attacks").read_text())
    assert record["status"] == "error" and "a driver gave up" in record["error"]


def test_spent_budget_skips_and_bad_arguments_are_one_line(tmp_path, capsys):
    summary = device_check.run(out=tmp_path, tiny=True, budget_s=1, only=("attacks",))
    assert summary["stages"]["attacks"]["status"] == "skipped"
    for bad in (["--budget-s", "0"], ["--cap", "nothing=3"], ["--cap", "attacks=soon"]):
        with pytest.raises(SystemExit):
            device_check.main(["--out", str(tmp_path)] + bad)
        assert "error: " in capsys.readouterr().err.strip().splitlines()[-1]


def test_compat_reports_versions_in_one_line():
    v = compat.versions()
    errors, notes = compat.problems(v)
    assert errors == []
    assert compat.summary(errors, notes).startswith("jaxhfc environment: ok")
    newer = dict(v, jax="0.11.2")
    errors, notes = compat.problems(newer)
    assert errors == [] and any("jax 0.11.2 is newer" in n for n in notes)
    old = dict(v, jax="0.9.1", optax=None)
    errors, _ = compat.problems(old)
    line = compat.summary(errors, [])
    assert "INCOMPATIBLE" in line and "jax 0.9.1 is older" in line and "optax is not installed" in line
    assert "\n" not in line
    assert compat.version_tuple("0.11.2rc1") == (0, 11, 2)
    with pytest.raises(ValueError, match="not a version"):
        compat.version_tuple("dev")
