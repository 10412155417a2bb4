"""Datasets that are not jaxhfc's (jaxhfc.sources through datasets.load_dataset): .npz files of
real digit images (scikit-learn's 8x8 digits), image folders of PNG files, TFDS datasets
(a genuinely prepared array_record dir, and tfds.testing.mock_data); bad data gives one
clear error naming the file. References are the arrays written into the files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from data_fixtures import make_cifar_arrays, write_tfds_cifar10
from jaxhfc import datasets


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's real 8x8 digit images as uint8 0..255 (1797 images, 10 classes)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * 255.0 / 16.0).round().astype(np.uint8), d.target.astype(np.int64)


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory, digits):
    x, y = digits
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    np.savez(path, x_train=x[:1500], y_train=y[:1500], x_test=x[1500:], y_test=y[1500:])
    return path


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- specs


def test_slug_and_spec_parsing():
    assert datasets.dataset_slug("npz:/x/digits.npz") == "npz-digits"
    assert datasets.dataset_slug("folder:~/data/pets/") == "folder-pets"
    assert datasets.dataset_slug("tfds:imagenette/160px-v2") == "tfds-imagenette-160px-v2"
    assert datasets.dataset_slug("npz:d.npz?channels=1&size=32") == "npz-d-c1-s32"
    assert datasets.dataset_slug("cifar10") == "cifar10" and datasets.dataset_slug("synthetic") == "synthetic"
    assert datasets.parse_spec("npz:a.npz?size=16") == datasets.Spec("npz", "a.npz", 3, 16)
    for bad in ("npz:", "npz:a.npz?size=0", "npz:a.npz?colour=1", "cifar100", "mnist:x"):
        with pytest.raises(ValueError):
            datasets.parse_spec(bad)
    assert datasets.dataset_arg("tfds:cifar100") == "tfds:cifar100"
    assert datasets.dataset_arg("npz:d/x.npz?size=8") == f"npz:{os.path.abspath('d/x.npz')}?size=8"


def test_experiments_parser_and_results_folder(tmp_path, monkeypatch):
    from experiments import common

    p = common.parser("x")
    assert p.parse_args(["--dataset", "npz:/x/digits.npz"]).dataset == "npz:/x/digits.npz"
    assert p.parse_args(["--dataset", "cifar10"]).dataset == "cifar10"
    with pytest.raises(SystemExit):
        p.parse_args(["--dataset", "imagenet"])
    monkeypatch.chdir(tmp_path)
    ctx = common.Context(dataset="npz:/x/digits.npz", scale="tiny")
    assert ctx.out == common.Path("results") / "npz-digits"
    assert not (tmp_path / "results").exists()  # nothing is written until a driver writes


# ----------------------------------------------------------------------------- npz


def test_npz_real_digits(digits_npz, digits):
    x, y = digits
    train = datasets.load_dataset(f"npz:{digits_npz}", split="train")
    test = datasets.load_dataset(f"npz:{digits_npz}", split="test")
    assert train.images.shape == (1500, 8, 8, 3) and train.images.dtype == np.uint8
    for c in range(3):  # grey becomes 3 equal channels
        np.testing.assert_array_equal(train.images[..., c], x[:1500])
    np.testing.assert_array_equal(test.labels, y[1500:])
    assert train.num_classes == 10 and train.class_names == tuple("0123456789") and train.name == "npz-digits"
    grey = datasets.load_dataset(f"npz:{digits_npz}?channels=1", split="test")
    np.testing.assert_array_equal(grey.images[..., 0], x[1500:])
    sub = datasets.load_dataset(f"npz:{digits_npz}", split="train", num_train=100, seed=3)
    assert len(sub) == 100 and np.all(np.bincount(sub.labels, minlength=10) == 10)
    whole = datasets.load_dataset(f"npz:{digits_npz}", split="test", num_test=10_000)  # more than there is: all
    np.testing.assert_array_equal(whole.labels, y[1500:])


def test_npz_rgb_class_names_labels_column_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 6, 6, 3), dtype=np.uint8)
    y = (np.arange(12) % 3).reshape(-1, 1)  # keras' (N, 1) labels
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:5], y_test=y[:5], class_names=np.array(["a", "b", "c"]))
    ds = datasets.load_dataset(f"npz:{path}", split="train")
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, np.arange(12) % 3)
    assert ds.class_names == ("a", "b", "c")
    grey = datasets.load_dataset(f"npz:{path}?channels=1", split="test").images[..., 0]
    ref = np.clip(np.rint(x[:5, ..., 0] * 0.299 + x[:5, ..., 1] * 0.587 + x[:5, ..., 2] * 0.114), 0, 255)
    np.testing.assert_array_equal(grey, ref.astype(np.uint8))
    const = np.full((4, 6, 6, 3), 77, np.uint8)
    np.savez(path, x_train=const, y_train=np.zeros(4, np.int64), x_test=const, y_test=np.zeros(4, np.int64))
    big = datasets.load_dataset(f"npz:{path}?size=20", split="train")
    assert big.images.shape == (4, 20, 20, 3) and np.all(big.images == 77)


def _write(path, **arrays):
    base = dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4) % 2,
                x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([0, 1]))
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{path}"


@pytest.mark.parametrize("change, expected", [
    (dict(y_test=None), "missing keys ['y_test']"),
    (dict(x_train=np.zeros((4, 8, 8), np.float32)), "must be uint8"),
    (dict(x_train=np.zeros((4, 8, 8, 5), np.uint8)), "(N, H, W) or (N, H, W, C)"),
    (dict(x_train=np.zeros((0, 8, 8), np.uint8), y_train=np.zeros(0, np.int64)), "empty"),
    (dict(y_train=np.array([0, 1, -1, 0])), "labels must lie in"),
    (dict(y_train=np.array([0.0, 1.0, 0.0, 1.0])), "labels must be integers"),
    (dict(y_train=np.array([0, 1, 0])), "4 images but 3 labels"),
    (dict(y_train=np.array([0, 1, 2, 3]), class_names=np.array(["a", "b"])), "labels must lie in [0, 2)"),
])
def test_npz_bad_data(tmp_path, change, expected):
    path = tmp_path / "bad.npz"
    spec = _write(path, **change)
    with pytest.raises(datasets.CorruptDatasetError) as err:
        datasets.load_dataset(spec, split="train")
    msg = _one_line(err)
    assert str(path) in msg and expected in msg


def test_npz_missing_and_not_npz(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError) as err:
        datasets.load_dataset(f"npz:{tmp_path / 'none.npz'}", split="train")
    assert "none.npz" in _one_line(err) and "x_train" in str(err.value)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(datasets.CorruptDatasetError) as err:
        datasets.load_dataset(f"npz:{tmp_path / 'junk.npz'}", split="test")
    assert "junk.npz" in _one_line(err)
    np.savez(tmp_path / "obj.npz", x_train=np.array([{}], dtype=object), y_train=[0], x_test=[0], y_test=[0])
    with pytest.raises(datasets.CorruptDatasetError) as err:
        datasets.load_dataset(f"npz:{tmp_path / 'obj.npz'}", split="train")
    assert "obj.npz" in _one_line(err)
    assert list(tmp_path.iterdir()) and not any(p.name.startswith("tmp") for p in tmp_path.iterdir())


# ----------------------------------------------------------------------------- folders


@pytest.fixture()
def digit_folder(tmp_path, digits):
    """root/train/<class>/*.png and root/test/<class>/*.png from real digit images."""
    x, y = digits
    names = {0: "zero", 1: "one", 2: "two"}
    written = {"train": [], "test": []}
    for split, idx in (("train", range(0, 60)), ("test", range(60, 90))):
        for i in idx:
            if y[i] not in names:
                continue
            d = tmp_path / split / names[y[i]]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i], "L").save(d / f"{i:04d}.png")
            written[split].append(i)
    (tmp_path / "train" / "one" / "notes.txt").write_text("not an image, ignored")
    return tmp_path, written


def test_folder_real_digits(digit_folder, digits):
    root, written = digit_folder
    x, y = digits
    for split in ("train", "test"):
        ds = datasets.load_dataset(f"folder:{root}", split=split)
        assert ds.class_names == ("one", "two", "zero")  # sorted sub-folders
        # files are read class by class, each class in file-name order
        order = sorted(written[split], key=lambda i: (["one", "two", "zero"].index({0: "zero", 1: "one", 2: "two"}[y[i]]), i))
        np.testing.assert_array_equal(ds.images[..., 1], x[order])
        np.testing.assert_array_equal(ds.labels, [{1: 0, 2: 1, 0: 2}[y[i]] for i in order])
        assert ds.images.shape[-1] == 3 and ds.name == f"folder-{os.path.basename(root)}"
    grey = datasets.load_dataset(f"folder:{root}?channels=1&size=16", split="test")
    assert grey.images.shape[1:] == (16, 16, 1)


def test_folder_reads_16_bit_pngs_scaled(tmp_path):
    """A folder of 16-bit grey PNGs: uint8 images equal to round(v * 255 / 65535), not PIL's
    clipping at 255 (which would make almost every pixel white)."""
    rng = np.random.default_rng(7)
    wide = {}
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            w = rng.integers(0, 65536, size=(6, 5)).astype(np.uint16)
            Image.fromarray(w).save(tmp_path / split / cls / "x.png")
            wide[split, cls] = w
    ds = datasets.load_dataset(f"folder:{tmp_path}", split="test")
    want = np.stack([np.rint(wide["test", c] / 65535.0 * 255.0) for c in ("a", "b")]).astype(np.uint8)
    np.testing.assert_array_equal(ds.images[..., 0], want)
    np.testing.assert_array_equal(ds.images[..., 2], want)
    grey = datasets.load_dataset(f"folder:{tmp_path}?channels=1", split="train")
    np.testing.assert_array_equal(grey.images[..., 0], np.stack([np.rint(wide["train", c] / 65535.0 * 255.0)
                                                                  for c in ("a", "b")]).astype(np.uint8))


def test_folder_applies_exif_orientation(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 ("rotate 90 degrees clockwise to
    view") is read the way viewers show it: equal to the upright picture, and of the same size
    as the untagged upright images beside it (instead of a size-mismatch error)."""
    rng = np.random.default_rng(8)
    upright = {}
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            up = rng.integers(0, 256, size=(6, 4, 3)).astype(np.uint8)  # portrait, 4 wide
            upright[split, cls] = up
            if cls == "a":  # stored landscape, tagged
                exif = Image.Exif()
                exif[0x0112] = 6
                Image.fromarray(np.ascontiguousarray(np.rot90(up, k=1))).save(tmp_path / split / cls / "x.png",
                                                                               exif=exif)
            else:
                Image.fromarray(up).save(tmp_path / split / cls / "x.png")
    ds = datasets.load_dataset(f"folder:{tmp_path}", split="test")
    np.testing.assert_array_equal(ds.images, np.stack([upright["test", "a"], upright["test", "b"]]))


def test_folder_bad_data(digit_folder):
    root, _ = digit_folder
    (root / "train" / "empty").mkdir()
    with pytest.raises(datasets.CorruptDatasetError) as err:
        datasets.load_dataset(f"folder:{root}", split="train")
    assert str(root / "train" / "empty") in _one_line(err) and "empty class folder" in str(err.value)
    (root / "train" / "empty").rmdir()
    (root / "test" / "extra").mkdir()
    with pytest.raises(datasets.CorruptDatasetError) as err:
        datasets.load_dataset(f"folder:{root}", split="test")
    assert "extra" in _one_line(err)
    (root / "test" / "extra").rmdir()
    bad = root / "train" / "two" / "broken.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(datasets.CorruptDatasetError) as err:
        datasets.load_dataset(f"folder:{root}", split="train")
    assert str(bad) in _one_line(err)
    bad.unlink()
    big = root / "train" / "two" / "big.png"
    Image.new("L", (9, 9)).save(big)
    with pytest.raises(datasets.CorruptDatasetError) as err:
        datasets.load_dataset(f"folder:{root}", split="train")
    assert str(big) in _one_line(err) and "size=N" in str(err.value)
    assert datasets.load_dataset(f"folder:{root}?size=8", split="train").images.shape[1:] == (8, 8, 3)
    with pytest.raises(datasets.DatasetNotFoundError) as err:
        datasets.load_dataset(f"folder:{root / 'nowhere'}", split="train")
    assert "nowhere" in _one_line(err)


# ----------------------------------------------------------------------------- TFDS


def test_tfds_prepared_dir_without_tensorflow(tmp_path):
    arrays = make_cifar_arrays(n_per_batch=3, n_test=5, seed=1)
    write_tfds_cifar10(tmp_path, arrays)
    for split in ("train", "test"):
        ds = datasets.load_dataset("tfds:cifar10", split=split, data_dir=str(tmp_path))
        np.testing.assert_array_equal(ds.images, arrays[f"{split}_images"])  # source order restored from `id`
        np.testing.assert_array_equal(ds.labels, arrays[f"{split}_labels"])
        assert ds.class_names == arrays["class_names"] and ds.name == "tfds-cifar10"
    with pytest.raises(datasets.DatasetNotFoundError) as err:
        datasets.load_dataset("tfds:cifar100", split="train", data_dir=str(tmp_path))
    assert "not prepared" in _one_line(err) and "download_and_prepare" in str(err.value)
    with pytest.raises(datasets.DatasetNotFoundError) as err:
        datasets.load_dataset("tfds:no_such_dataset_xyz", split="train", data_dir=str(tmp_path))
    assert "no_such_dataset_xyz" in _one_line(err)


def test_tfds_cifar100_and_mnist_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        ds = datasets.load_dataset("tfds:cifar100", split="train")
        ref = tfds.data_source("cifar100", split="train")
        order = np.argsort([ref[i]["id"] for i in range(12)], kind="stable")
        ref_images = np.stack([ref[int(i)]["image"] for i in order])
        ref_labels = np.asarray([ref[int(i)]["label"] for i in order])
        mnist = datasets.load_dataset("tfds:mnist", split="test", num_test=None)
        mnist_ref = tfds.data_source("mnist", split="test")
        mnist_img = np.stack([mnist_ref[i]["image"] for i in range(12)])
    assert ds.images.shape == (12, 32, 32, 3) and ds.num_classes == 100 and len(ds.class_names) == 100
    np.testing.assert_array_equal(ds.images, ref_images)
    np.testing.assert_array_equal(ds.labels, ref_labels)
    assert mnist.images.shape == (12, 28, 28, 3) and mnist.num_classes == 10
    assert all(np.array_equal(mnist.images[..., c], mnist.images[..., 0]) for c in (1, 2))
    assert sorted(map(bytes, mnist.images[..., :1])) == sorted(map(bytes, mnist_img))


# ----------------------------------------------------------------------------- drivers


@pytest.mark.slow
def test_table1_driver_on_npz_digits(digits_npz, tmp_path):
    """python -m experiments.table1 --dataset npz:PATH --tiny (about 30 s on 2 CPU cores). Quick
    variants: the parser/results-folder test above, and tests/test_cli_analyze.py, which trains
    on the same digits .npz through `jaxhfc train`."""
    import json

    from experiments import table1

    table1.main(["--dataset", f"npz:{digits_npz}", "--tiny", "--out", str(tmp_path), "--no-progress"])
    table = json.loads((tmp_path / "table1" / "table.json").read_text())
    assert len(table["rows"]) == 4 and "npz:" in (tmp_path / "table1" / "table.md").read_text()
    # the 32x32 radii 4 and 12 scaled to the 8x8 digits: 1 and 3 (12 would be beyond the corner)
    assert [r["r"] for r in table["rows"]] == [1, 3, 1, 3]


def test_driver_radii_adapt_to_the_image_size(digits_npz, tmp_path):
    """The drivers' radii are written for 32x32 images; on 8x8 digits they scale by 8/32, on the
    built-in 32x32 data they stay as written (same configs, same cached runs)."""
    from experiments.common import Context

    small = Context(dataset=f"npz:{digits_npz}", scale="quick", out=tmp_path / "a", progress=False)
    assert small.setup.image_size == 8
    assert [small.setup.radius(r) for r in (4, 8, 12, 16, 6)] == [1, 2, 3, 4, 1.5]
    assert small.setup.config().eval_radii == (1, 2, 3, 4)
    same = Context(dataset="synthetic", scale="quick", out=tmp_path / "b", progress=False)
    assert same.setup.config().eval_radii == (4, 8, 12, 16) and same.setup.radius(12) == 12
