"""Adding a dataset takes a reader and a profile, and nothing else: a toy dataset registered from
this file runs a driver end to end, with its image size scaling the radii, its eps scaling the
attacks, and its own seeds and base seed. A context writes nothing until a driver writes."""

import json

import numpy as np
import pytest

from experiments import common, prediction_counts, profiles
from jaxhfc import datasets
from jaxhfc.datasets.core import Dataset

SIZE, CLASSES = 20, 4


def _toy_reader(split, *, data_dir, source, seed, n):
    """4 classes of 20x20 images: a horizontal grating of a class-given frequency, plus noise."""
    if source != "auto":
        raise ValueError("toy has only the source 'auto'")
    count = n or (600 if split == "train" else 200)
    rng = np.random.default_rng(seed * 2 + (split == "test"))
    labels = np.arange(count) % CLASSES
    rows = np.arange(SIZE)[None, :, None, None]
    freq = (1 + 2 * labels)[:, None, None, None]
    grating = np.cos(2 * np.pi * freq * rows / SIZE)
    images = 128 + 60 * grating + rng.normal(0, 20, (count, SIZE, SIZE, 3))
    return Dataset(np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int32), CLASSES, "toy",
                   tuple(f"f{k}" for k in range(CLASSES)))


@pytest.fixture
def toy(monkeypatch):
    """The toy dataset registered (and removed after the test)."""
    monkeypatch.setitem(datasets.READERS, "toy", _toy_reader)
    prof = profiles.DatasetProfile(name="toy", title="Toy gratings", image_size=SIZE, eps=0.06, base_seed=5,
                                   seeds={"tiny": 2}, deviations=("Toy data: gratings.",),
                                   blurb="**Toy gratings.**", summary="toy gratings at `{scale}` scale")
    monkeypatch.setitem(profiles.PROFILES, "toy", prof)
    return prof


def test_a_registered_dataset_runs_a_driver(toy, tmp_path):
    args = common.parser("toy").parse_args(["--dataset", "toy", "--tiny", "--out", str(tmp_path / "out"),
                                            "--no-progress"])
    ctx = common.context_from_args(args)
    assert not (tmp_path / "out").exists()  # nothing written on construction
    assert ctx.setup.seed_list == (5, 5 + 1009)  # the profile's base seed and tiny seeds
    assert ctx.setup.radius(4) == 2.5 and ctx.setup.radius(16) == 10  # 20 / 32 of the paper's radii
    assert ctx.setup.eps(0.03) == pytest.approx(0.06) and ctx.setup.eps(0.09) == pytest.approx(0.18)
    config = ctx.setup.config()
    assert config.data.name == "toy" and config.data.seed == 5 and config.data.test_seed == 0  # draws per seed
    assert config.evaluation.radii == (2.5,)
    ctx.setup.artefact = prediction_counts.NAME
    out = prediction_counts.run(ctx)
    table = json.loads((ctx.out / "prediction_counts" / "table.json").read_text())
    assert table["seeds"] == [5, 1014] and table["rows"]
    saved = json.loads((ctx.out / "prediction_counts" / "config.json").read_text())
    assert saved["dataset"] == "toy"
    run_configs = [json.loads(p.read_text()) for p in (ctx.out / "runs").glob("*/config.json")]
    assert run_configs and {c["config"]["data"]["name"] for c in run_configs} == {"toy"}
    # the trained models saw 20x20 images of 4 classes
    trained = ctx.models.vanillas()
    x, y = ctx.models.test_arrays(trained[0].config)
    assert x.shape[1:3] == (SIZE, SIZE) and set(np.unique(y)) == set(range(CLASSES))
    assert out["claims"]


def test_the_results_readme_takes_the_profile_words(toy, tmp_path):
    from experiments import reporting

    ctx = common.Context(dataset="toy", scale="tiny", out=tmp_path, progress=False)
    text = reporting.write_readme(ctx, {}).read_text()
    assert "**Toy gratings.**" in text and "- Toy data: gratings." in text


def test_a_name_without_a_profile_gets_the_default(tmp_path):
    p = profiles.profile("npz:/nowhere/x.npz")
    assert p.image_size is None and p.eps is None and p.base_seed == 0 and p.draws_data
    assert p.seeds_at("quick") == profiles.DEFAULT_SEEDS["quick"]


@pytest.mark.parametrize("bad", [dict(image_size=2), dict(eps=0.0), dict(eps=3.0), dict(seeds={"huge": 2}),
                                 dict(seeds={"quick": 0})])
def test_a_bad_profile_is_refused(bad):
    with pytest.raises(ValueError, match="profile 'x'"):
        profiles.DatasetProfile(name="x", title="x", **bad)


def test_register_reader_refuses_spec_like_names_and_non_callables():
    with pytest.raises(ValueError, match="without ':'"):
        datasets.register_reader("npz:x", _toy_reader)
    with pytest.raises(TypeError, match="callable"):
        datasets.register_reader("fine", 3)
