"""The full-scale Fashion-MNIST path a lent GPU runs first: its config, the way its 28x28 grey
images enter the CIFAR ResNet18, its cost plan's step counts and README block, and the
one-line refusal of an incompatible jax stack."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import plan as P
from experiments import readme_blocks, reproduce_all
from experiments.common import Context


@pytest.fixture()
def fmnist_full(tmp_path):
    return Context(dataset="fashion_mnist", scale="full", out=tmp_path / "fm", seeds=1, progress=False)


def test_full_scale_fashion_mnist_config_is_the_papers_recipe(fmnist_full):
    c = fmnist_full.setup.config()
    assert (c.net.name, c.net.norm, c.net.normalize) == ("resnet18", "none", False)
    assert (c.optim.name, c.optim.learning_rate, c.optim.batch_size, c.optim.epochs) == ("adam", 1e-4, 100, 100)
    assert c.data.num_train is None  # the whole 60,000-image train split, less the validation split
    # 100 epochs of (60,000 - 5,000) // 100 steps; the test set and its LFC/HFC copies at 4 radii plus
    # the training subset and its LFC copies, every epoch
    assert P._steps(c) == 100 * (60_000 - c.data.num_val) // 100
    per, count = P._eval_images(c)
    n_train_eval = min(c.evaluation.train_subset or 55_000, 55_000)
    assert per == 10_000 * (1 + 2 * 4) + n_train_eval * (1 + 4) and count == 100
    cifar = Context(dataset="cifar10", scale="full", out=fmnist_full.out / "c", seeds=1, progress=False).setup.config()
    assert P._steps(cifar) == 100 * (50_000 - cifar.data.num_val) // 100


def test_grey_28x28_images_enter_the_cifar_resnet18_as_they_are(fmnist_full):
    """No padding, resizing or channel copying: the stem takes 1 channel, the stages give 28 -> 14
    -> 7 -> 4, and global average pooling leaves 512 features whatever the size."""
    from jaxhfc.step import build_model

    model = build_model(fmnist_full.setup.config(), 10)
    x = jnp.asarray(np.random.default_rng(0).random((2, 28, 28, 1)), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert variables["params"]["conv_init"]["kernel"].shape == (3, 3, 1, 64)
    out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert out.shape == (2, 10)


def test_plan_blocks_are_per_dataset(tmp_path, fmnist_full):
    assert readme_blocks.plan_markers("cifar10") == (readme_blocks.PLAN_START, readme_blocks.PLAN_END)
    start, end = readme_blocks.plan_markers("fashion_mnist")
    assert start == "<!-- plan:fashion_mnist:start -->" and end == "<!-- plan:fashion_mnist:end -->"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{readme_blocks.PLAN_START}\nkeep\n{readme_blocks.PLAN_END}\n{start}\nold\n{end}\n")
    fmnist_full.out.mkdir(parents=True)
    (fmnist_full.out / "timings.json").write_text('{"table1": 90.0}')
    env = {"processor": "cpu x", "backend": "cpu", "versions": {"jax": "0.10.2"}, "git_commit": "abcdef0123",
           "time": "2026-12-06T00:00:00"}
    readme_blocks.update_plan_section(fmnist_full, "| plan |", env, readme=readme)
    text = readme.read_text()
    assert "keep" in text and "old" not in text
    assert "--dataset fashion_mnist --plan" in text and "1 min 30 s" in text
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="plan:fashion_mnist:start"):
        readme_blocks.update_plan_section(fmnist_full, "| plan |", env, readme=readme)


def test_an_incompatible_stack_is_refused_in_one_line(monkeypatch, capsys, tmp_path):
    from jaxhfc import compat

    monkeypatch.setattr(compat, "problems", lambda: (["jax 0.9.1 is older than 0.10.0"], []))
    with pytest.raises(SystemExit):
        reproduce_all.main(["--tiny", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert "INCOMPATIBLE: jax 0.9.1 is older than 0.10.0" in err[-1]
    assert not (tmp_path / "r").exists()  # refused before anything was written
