"""jaxhfc.results: atomic JSON, JSON lines robust to a killed writer, tables, hashes."""

import dataclasses
import json

import numpy as np
import pytest

from jaxhfc import results


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 1e-4
    radii: tuple = (4, 8)


def test_json_roundtrip_and_jsonable(tmp_path):
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": (1, 2), "nan": float("nan"), "cfg": Cfg()}
    results.write_json(tmp_path / "x.json", obj)
    back = results.read_json(tmp_path / "x.json")
    assert back == {"a": 0.5, "b": [0, 1, 2], "c": [1, 2], "nan": None, "cfg": {"lr": 1e-4, "radii": [4, 8]}}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_read_json_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        results.read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt"):
        results.read_json(tmp_path / "bad.json")


def test_jsonl_truncated_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    for k in range(3):
        results.append_jsonl(p, {"epoch": k})
    with open(p, "a") as fh:
        fh.write('{"epoch": 3, "acc')  # killed mid-write
    assert [r["epoch"] for r in results.read_jsonl(p)] == [0, 1, 2]
    assert results.read_jsonl(tmp_path / "absent.jsonl") == []


def test_config_hash_stable():
    import hashlib

    # the hash of the canonical JSON (sorted keys, no spaces), worked out here by hand
    assert results.config_hash({"b": 1, "a": [2, 3.5]}) == hashlib.sha256(b'{"a":[2,3.5],"b":1}').hexdigest()[:12]
    assert results.config_hash(Cfg(), length=16) == results.config_hash(dataclasses.asdict(Cfg()), length=16)
    assert results.config_hash(Cfg()) != results.config_hash(Cfg(lr=1e-3))
    assert results.config_hash({"b": 1, "a": 2}) == results.config_hash({"a": 2, "b": 1})


def test_tables():
    rows = results.comparison_rows({"r=4": 0.6, "r=8": None}, {"r=4": 0.64, "r=8": 0.79}, key_name="radius")
    assert rows[0]["difference"] == pytest.approx(-0.04)
    assert rows[1]["difference"] is None
    md = results.markdown_table(rows, digits=2)
    lines = md.strip().splitlines()
    assert lines[0] == "| radius | paper | ours | difference |"
    assert lines[2] == "| r=4 | 0.64 | 0.60 | -0.04 |"
    assert lines[3] == "| r=8 | 0.79 | — | — |"


def test_environment_info(tmp_path):
    info = results.environment_info()
    assert info["device_count"] == 8 and info["versions"]["jax"]
    json.dumps(info)


def test_outcomes_roundtrip_and_errors(tmp_path):
    outcomes = {"seed 0|vanilla|test": np.array([True, False, True]), "seed 0|x|high": np.array([0.5, 0.25])}
    path = results.write_outcomes(tmp_path / "a" / "outcomes.npz", outcomes)
    back = results.read_outcomes(path)
    assert set(back) == set(outcomes)
    for k, v in outcomes.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    assert [p.name for p in path.parent.iterdir()] == ["outcomes.npz"]  # no temporary file left
    with pytest.raises(ValueError, match="1-D"):
        results.write_outcomes(tmp_path / "b.npz", {"x": np.zeros((2, 2))})
    assert not (tmp_path / "b.npz").exists()
    with pytest.raises(FileNotFoundError, match="per-example outcomes"):
        results.read_outcomes(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="corrupt"):
        results.read_outcomes(bad)
