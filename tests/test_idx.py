"""IDX datasets (fashion_mnist, mnist): files written byte by byte here, broken ones, the real
Fashion-MNIST files when installed, and the per-seed data draw of the drivers on them."""

import gzip
import hashlib
import os
import struct

import numpy as np
import pytest

from jaxhfc import datasets
from jaxhfc.datasets import idx

REAL = "/usr/share/datasets/fashion-mnist"
HAVE_REAL = all(os.path.isfile(os.path.join(REAL, f + ".gz")) for f in
                ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"))


def _idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    """IDX bytes made by hand: 2 zero bytes, the type byte, ndim, big-endian uint32 sizes, data."""
    head = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return head + array.astype(np.uint8).tobytes()


def _write(path, payload: bytes):
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def _fake(tmp_path, n_train=30, n_test=20, *, gz=True, sub=None, seed=0):
    rng = np.random.default_rng(seed)
    folder = tmp_path if sub is None else tmp_path / sub
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(y)
        ext = ".gz" if gz else ""
        _write(folder / f"{stem}-images-idx3-ubyte{ext}", _idx_bytes(x))
        _write(folder / f"{stem}-labels-idx1-ubyte{ext}", _idx_bytes(y))
        arrays[split] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_reads_hand_written_files(tmp_path, gz):
    arrays = _fake(tmp_path, gz=gz)
    for split in ("train", "test"):
        ds = datasets.load_dataset("fashion_mnist", split=split, data_dir=str(tmp_path))
        x, y = arrays[split]
        assert ds.images.shape == (len(x), 28, 28, 1) and ds.images.dtype == np.uint8
        np.testing.assert_array_equal(ds.images[..., 0], x)
        np.testing.assert_array_equal(ds.labels, y.astype(np.int32))
        assert ds.num_classes == 10 and ds.class_names[9] == "Ankle boot"


def test_subfolder_and_mnist_names(tmp_path):
    arrays = _fake(tmp_path, sub="mnist")
    ds = datasets.load_dataset("mnist", split="test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds.labels, arrays["test"][1])
    assert ds.class_names == tuple(str(d) for d in range(10))


def test_balanced_subset_by_seed(tmp_path):
    _fake(tmp_path, n_train=60)
    a = datasets.load_dataset("fashion_mnist", split="train", data_dir=str(tmp_path), num_train=20, seed=1)
    b = datasets.load_dataset("fashion_mnist", split="train", data_dir=str(tmp_path), num_train=20, seed=2)
    assert len(a) == 20 and np.bincount(a.labels, minlength=10).tolist() == [2] * 10
    assert not np.array_equal(a.images, b.images)


def test_write_idx_matches_hand_written_bytes(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    idx.write_idx(str(tmp_path / "a"), x)
    assert (tmp_path / "a").read_bytes() == _idx_bytes(x)
    idx.write_idx(str(tmp_path / "b.gz"), x)
    assert gzip.decompress((tmp_path / "b.gz").read_bytes()) == _idx_bytes(x)


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "search_dirs", lambda name, data_dir=None: [str(tmp_path)])
    with pytest.raises(datasets.DatasetNotFoundError, match=r"train-images-idx3-ubyte.*apt-get install dataset-fashion-mnist"):
        datasets.load_dataset("fashion_mnist", split="train", data_dir=str(tmp_path))
    msg = ""
    try:
        datasets.load_dataset("fashion_mnist", split="train")
    except datasets.DatasetNotFoundError as err:
        msg = str(err)
    assert "\n" not in msg and str(tmp_path) in msg


def _corrupt_case(tmp_path, case):
    _fake(tmp_path, n_train=20, n_test=10, gz=False)
    img = tmp_path / "train-images-idx3-ubyte"
    lab = tmp_path / "train-labels-idx1-ubyte"
    if case == "magic":
        b = bytearray(img.read_bytes())
        b[2] = 0x0D  # float type
        img.write_bytes(bytes(b))
        return img.name, "magic number"
    if case == "truncated":
        img.write_bytes(img.read_bytes()[:-100])
        return img.name, "truncated"
    if case == "short header":
        img.write_bytes(b"\x00\x00\x08\x03\x00")
        return img.name, "truncated header"
    if case == "count":
        lab.write_bytes(_idx_bytes(np.zeros(19, np.uint8)))
        return lab.name, "20 images but .* 19 labels"
    if case == "label range":
        lab.write_bytes(_idx_bytes(np.full(20, 10, np.uint8)))
        return lab.name, "label 10 out of range"
    if case == "bad gzip":
        (tmp_path / "train-images-idx3-ubyte").unlink()
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
        return "train-images-idx3-ubyte.gz", "cannot read it"
    if case == "shape":
        img.write_bytes(_idx_bytes(np.zeros((20, 32, 32), np.uint8)))
        return img.name, r"\(32, 32\), expected \(28, 28\)"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["magic", "truncated", "short header", "count", "label range", "bad gzip", "shape"])
def test_corrupt_files_are_one_line_errors(tmp_path, case):
    fname, pattern = _corrupt_case(tmp_path, case)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(datasets.CorruptDatasetError, match=pattern) as info:
        datasets.load_dataset("fashion_mnist", split="train", data_dir=str(tmp_path))
    assert fname in str(info.value) and "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == before  # reading wrote nothing


def test_driver_cli_turns_corrupt_file_into_exit_2(tmp_path, capsys):
    _corrupt_case(tmp_path, "truncated")
    from experiments import table1

    with pytest.raises(SystemExit) as info:
        table1.main(["--dataset", "fashion_mnist", "--tiny", "--data-dir", str(tmp_path), "--out",
                     str(tmp_path / "out"), "--no-progress", "--cpu-devices", "1"])
    assert info.value.code == 2
    assert "truncated" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_REAL, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    """The installed files decode to the published dataset: 6,000 / 1,000 images per class and
    the pixel mean and std the dataset's authors list (0.2860, 0.3530 on [0, 1]), and the
    decoded arrays hash to the values recorded when these tests were written."""
    train = datasets.load_dataset("fashion_mnist", split="train")
    test = datasets.load_dataset("fashion_mnist", split="test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    x = train.images.astype(np.float64) / 255
    assert abs(x.mean() - 0.2860) < 5e-5 and abs(x.std() - 0.3530) < 5e-5
    sha = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()  # noqa: E731
    assert sha(train.images) == "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012"
    assert sha(train.labels.astype(np.uint8)) == "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"
    assert sha(test.images) == "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a"
    assert sha(test.labels.astype(np.uint8)) == "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"


def test_seeds_draw_their_own_training_data(tmp_path):
    """On a real dataset each seed draws its own training subset and validation split, and all
    seeds share one test subset; eps is on the dataset's scale."""
    _fake(tmp_path, n_train=200, n_test=60)
    from experiments.common import Context
    from jaxhfc.prepare import load_splits, load_validation

    ctx = Context(dataset="fashion_mnist", scale="tiny", out=tmp_path / "out", data_dir=str(tmp_path), seeds=2)
    cfgs = [ctx.setup.config(seed=s, data={"num_train": 100, "num_val": 20, "num_test": 30}) for s in ctx.setup.seed_list]
    assert [c.data.seed for c in cfgs] == list(ctx.setup.seed_list) and {c.data.test_seed for c in cfgs} == {0}
    (tr0, te0), (tr1, te1) = (load_splits(c) for c in cfgs)
    assert not np.array_equal(tr0.images, tr1.images)
    np.testing.assert_array_equal(te0.images, te1.images)
    v0, v1 = (load_validation(c) for c in cfgs)
    assert not np.array_equal(v0.images, v1.images)
    assert ctx.setup.eps(0.03) == pytest.approx(0.1) and ctx.setup.eps(0.09) == pytest.approx(0.3)
    adv = ctx.setup.adversarial_overrides()
    assert adv["adversary"]["eps"] == pytest.approx(0.1)
    assert ctx.setup.image_size == 28 and ctx.setup.radius(8) == 7
    full = Context(dataset="fashion_mnist", scale="full", out=tmp_path / "full", data_dir=str(tmp_path))
    c = full.setup.config(seed=1009)
    assert c.net.name == "resnet18" and c.optim.epochs == 100 and c.data.seed == 1009 and c.data.test_seed == 0
    assert c.evaluation.radii == (3.5, 7, 10.5, 14)
    assert full.setup.adversarial_overrides()["adversary"]["step_size"] == pytest.approx(0.01)
    syn = Context(dataset="synthetic", scale="tiny", out=tmp_path / "syn")
    assert syn.setup.eps(0.03) == 0.03 and syn.setup.config(seed=5).data.seed == 0
