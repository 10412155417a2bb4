"""`jaxhfc analyze` on a run folder and on params files, for a model trained by `jaxhfc train`
on real digit images (an .npz, not jaxhfc's data). Its accuracies must equal the ones the
training run logged through a different path (datasets.filter_dataset + evaluate); a
missing dataset, a corrupt checkpoint or params that do not fit are one line and exit 2."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from jaxhfc import cli, results

TRAIN = ["train", "--quick", "--epochs", "2", "--num-train", "384", "--num-test", "160", "--batch-size", "64",
         "--width", "8", "--eval-radii", "2", "4", "--no-progress"]


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.images * 255.0 / 16.0).round().astype(np.uint8), d.target
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=x[:1500], y_train=y[:1500], x_test=x[1500:], y_test=y[1500:])
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits_npz):
    out = tmp_path_factory.mktemp("analyze") / "run"
    assert cli.main([*TRAIN, "--dataset", f"npz:{digits_npz}", "--out", str(out)]) == 0
    return out


def _logged(run_dir):
    return results.read_jsonl(run_dir / "metrics.jsonl")[-1]["accuracy"]


def test_analyze_run_folder_matches_logged_accuracies(run_dir, capsys):
    out = run_dir / "analyze"
    argv = ["analyze", str(run_dir), "--radii", "0", "2", "4", "8", "--heatmap-images", "16", "--batch-size", "64"]
    assert cli.main(argv) == 0
    assert "cross at r" in capsys.readouterr().out
    res = results.read_json(out / "analysis.json")
    logged = _logged(run_dir)
    n = res["n"]
    assert n == 160 and res["image_shape"] == [8, 8, 3] and res["class_names"] == list("0123456789")
    assert res["acc_orig"] == pytest.approx(logged["test"], abs=1e-9)
    assert res["acc_low"][1] == pytest.approx(logged["test_low_2"], abs=1e-9)
    assert res["acc_high"][2] == pytest.approx(logged["test_high_4"], abs=1e-9)
    assert res["acc_low"][2] == pytest.approx(logged["test_low_4"], abs=1e-9)
    c = res["counts"]
    for i in range(4):
        cells = c["low_right_high_wrong"][i] + c["low_wrong_high_right"][i] + c["both_right"][i] + c["both_wrong"][i]
        assert cells == n and c["low_right"][i] == round(res["acc_low"][i] * n)
    assert res["scaling"] == "paper"
    grid = np.load(out / "heatmap.npy")
    assert grid.shape == (8, 8) and np.allclose(grid * 16, np.round(grid * 16))
    assert res["heatmap"]["mean_error"] == pytest.approx(grid.mean()) and res["heatmap"]["n"] == 16
    assert res["heatmap"]["eps"] == pytest.approx(1.0)  # 4 * sqrt(8 * 8) / 32
    assert {"accuracy_radius.png", "prediction_counts.png", "heatmap.png"} <= {p.name for p in out.iterdir()}


def test_analyze_params_files(run_dir, digits_npz, tmp_path):
    from flax import serialization
    import jax

    from jaxhfc.runs import load_run

    _, state, _ = load_run(run_dir)
    variables = jax.device_get(state.variables())
    msgpack = tmp_path / "vars.msgpack"
    msgpack.write_bytes(serialization.to_bytes(variables))
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(variables)}
    npz = tmp_path / "vars.npz"
    np.savez(npz, **flat)
    logged = _logged(run_dir)
    common = ["--model", "small_cnn", "--width", "8", "--dataset", f"npz:{digits_npz}", "--num-test", "160",
              "--heatmap-images", "0"]
    assert cli.main(["analyze", str(msgpack), *common, "--radii", "2", "4", "--out", str(tmp_path / "a")]) == 0
    res = results.read_json(tmp_path / "a" / "analysis.json")
    assert res["acc_orig"] == pytest.approx(logged["test"], abs=1e-9)
    assert res["acc_high"][1] == pytest.approx(logged["test_high_4"], abs=1e-9)
    # r=8 is beyond the 8x8 spectrum's corner (5.66): with unit scaling the LFC is the image itself
    assert cli.main(["analyze", str(npz), *common, "--radii", "8", "--scaling", "unit", "--out", str(tmp_path / "b")]) == 0
    res = results.read_json(tmp_path / "b" / "analysis.json")
    assert res["acc_orig"] == pytest.approx(logged["test"], abs=1e-9) and res["scaling"] == "unit"
    assert res["acc_low"][0] == res["acc_orig"] and res["counts"]["agree_low_only"][0] + res["counts"]["agree_both"][0] == 160


def test_errors_are_one_line_exit_2(run_dir, digits_npz, tmp_path, capsys):
    def fails(argv, *needles):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err
        for s in needles:
            assert s in err

    missing = tmp_path / "missing.npz"
    fails(["analyze", str(run_dir), "--dataset", f"npz:{missing}"], str(missing))
    fails([*TRAIN, "--dataset", f"npz:{missing}", "--out", str(tmp_path / "r")], str(missing))
    fails(["eval", str(tmp_path / "nothing")], "nothing")
    fails(["analyze", str(tmp_path / "nothing")], "nothing")
    junk = tmp_path / "junk.msgpack"
    junk.write_bytes(b"\x00garbage")
    fails(["analyze", str(junk), "--dataset", f"npz:{digits_npz}"], str(junk))
    wrong = tmp_path / "wrong.msgpack"
    from flax import serialization
    import jax

    from jaxhfc.runs import load_run

    wrong.write_bytes(serialization.to_bytes(jax.device_get(load_run(run_dir)[1].variables())))
    fails(["analyze", str(wrong), "--width", "16", "--dataset", f"npz:{digits_npz}"], str(wrong), "--width")
    broken = tmp_path / "broken_run"
    shutil.copytree(run_dir, broken)
    for f in (broken / "checkpoints").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"corrupt")
    fails(["eval", str(broken)], "checkpoint")
    fails(["analyze", str(broken)], "checkpoint")


def test_cli_package_has_no_import_cycle():
    """Subcommand modules import only jaxhfc.cli._errors (and analyze_cmd the train_cmd helper),
    never the package itself; each imports on its own in a fresh interpreter."""
    import ast
    import pathlib
    import subprocess
    import sys

    pkg = pathlib.Path(cli.__file__).parent
    allowed = {"jaxhfc.cli._errors", "jaxhfc.cli.train_cmd"}
    for f in pkg.glob("*.py"):
        if f.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxhfc.cli"):
                assert node.module in allowed, (f.name, node.module)
            if isinstance(node, ast.ImportFrom) and node.module == "jaxhfc":
                assert "cli" not in {a.name for a in node.names}, f.name
    for mod in ("jaxhfc.cli.train_cmd", "jaxhfc.cli.analyze_cmd", "jaxhfc.cli.filter_cmd"):
        subprocess.run([sys.executable, "-c", f"import {mod}"], check=True)
