"""Tests of jaxhfc.data: loaders (archive, TFDS, synthetic), transforms, device pipeline."""

from __future__ import annotations

import json
import os
import pickle
import tarfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from data_fixtures import (
    cifar_pickles,
    make_cifar_arrays,
    write_cifar10_archive,
    write_tfds_cifar10,
)
from jaxhfc import datasets, pipeline


def _listing(path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(path):
        out += [os.path.relpath(os.path.join(root, n), path) for n in dirs + files]
    return sorted(out)


def _np_low_pass(x: np.ndarray, r: float) -> np.ndarray:
    """The paper code's filter, per image and channel, in numpy (float64)."""
    n, h, w, c = x.shape
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    mask = np.hypot(i - h // 2, j - w // 2) < r
    out = np.zeros(x.shape)
    for a in range(n):
        for ch in range(c):
            f = np.fft.fftshift(np.fft.fft2(x[a, :, :, ch].astype(np.float64)))
            out[a, :, :, ch] = np.real(np.fft.ifft2(np.fft.ifftshift(f * mask)))
    return out


@pytest.fixture(scope="module")
def cifar_arrays():
    return make_cifar_arrays(n_per_batch=6, n_test=7, seed=0)


# --------------------------------------------------------------------------------------
# Dataset validation
# --------------------------------------------------------------------------------------


def _ds(images=None, labels=None, k=10, names=None):
    images = np.zeros((4, 8, 8, 3), np.uint8) if images is None else images
    labels = np.array([0, 1, 2, 3]) if labels is None else labels
    names = tuple(str(i) for i in range(k)) if names is None else names
    return datasets.Dataset(images, labels, k, "t", names)


def test_dataset_valid_and_coerced():
    ds = _ds(labels=np.array([0, 1, 2, 9], dtype=np.int64))
    assert len(ds) == 4 and ds.labels.dtype == np.int32 and not ds.is_filtered
    assert _ds(images=np.zeros((4, 8, 8, 3), np.float32)).is_filtered
    with pytest.raises(dataclasses_frozen_error()):
        ds.name = "x"


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(images=np.zeros((4, 8, 8), np.uint8)), r"\(N, H, W, C\)"),
        (dict(images=np.zeros((4, 8, 8, 3), np.int16)), "uint8 .* or float32"),
        (dict(images=np.zeros((4, 8, 8, 3), np.float64)), "uint8 .* or float32"),
        (dict(labels=np.array([0.0, 1.0, 2.0, 3.0])), "integers"),
        (dict(labels=np.array([0, 1, 2])), "4 images but 3 labels"),
        (dict(labels=np.array([[0, 1, 2, 3]])), r"shape \(N,\)"),
        (dict(labels=np.array([0, 1, 2, 10])), r"\[0, 10\)"),
        (dict(labels=np.array([0, -1, 2, 3])), r"\[0, 10\)"),
        (dict(names=("a", "b")), "class_names"),
        (dict(k=0, names=()), "num_classes"),
    ],
)
def test_dataset_rejects_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _ds(**kwargs)


# --------------------------------------------------------------------------------------
# CIFAR-10: the archive route
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("extracted", [False, True])
def test_archive_round_trip(tmp_path, cifar_arrays, extracted):
    write_cifar10_archive(tmp_path, cifar_arrays, extracted=extracted)
    before = _listing(tmp_path)
    for split in ("train", "test"):
        ds = datasets.load_dataset("cifar10", split=split, data_dir=str(tmp_path), source="archive")
        np.testing.assert_array_equal(ds.images, cifar_arrays[f"{split}_images"])
        np.testing.assert_array_equal(ds.labels, cifar_arrays[f"{split}_labels"])
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
        assert ds.class_names == datasets.CIFAR10_CLASSES and ds.num_classes == 10
        auto = datasets.load_dataset("cifar10", split=split, data_dir=str(tmp_path))
        np.testing.assert_array_equal(auto.images, ds.images)
    assert _listing(tmp_path) == before  # reading writes nothing


def test_archive_pixel_layout_is_channel_first_rows(tmp_path, cifar_arrays):
    # Independent check of the layout: pixel (y, x, c) is row element c*1024 + y*32 + x.
    files = cifar_pickles(cifar_arrays)
    write_cifar10_archive(tmp_path, cifar_arrays)
    ds = datasets.load_dataset("cifar10", split="test", data_dir=str(tmp_path), source="archive")
    raw = pickle.loads(files["test_batch"], encoding="bytes")[b"data"]
    y, x, c = 5, 17, 2
    assert ds.images[3, y, x, c] == raw[3, c * 1024 + y * 32 + x]
    # every pixel of the written rows, indexed by hand from the source arrays
    src = cifar_arrays["test_images"]
    n, h, w, ch = np.meshgrid(np.arange(len(src)), np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    np.testing.assert_array_equal(raw[n, ch * 1024 + h * 32 + w], src)
    meta = pickle.loads(files["batches.meta"], encoding="bytes")
    assert meta[b"num_cases_per_batch"] == len(cifar_arrays["train_labels"]) // 5 and meta[b"num_vis"] == 3072
    assert pickle.loads(files["data_batch_2"], encoding="bytes")[b"labels"] == [
        int(v) for v in cifar_arrays["train_labels"][6:12]]


def test_generated_archive_is_standard_and_never_overwrites(tmp_path):
    from jaxhfc.datasets import cifar10

    path = cifar10.write_generated_archive(str(tmp_path), num_train=50, num_test=20, seed=1)
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-python.tar.gz", "generated.json"]  # no partial file left
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ["cifar-10-batches-py"] + sorted(
            f"cifar-10-batches-py/{n}" for n in ("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3",
                                                 "data_batch_4", "data_batch_5", "test_batch"))
    train = datasets.load_dataset("cifar10", split="train", data_dir=str(tmp_path), source="archive")
    test = datasets.load_dataset("cifar10", split="test", data_dir=str(tmp_path), source="archive")
    synth_train, synth_test = datasets.make_synthetic(num_train=50, num_test=20, seed=1)
    np.testing.assert_array_equal(train.images, synth_train.images)
    np.testing.assert_array_equal(test.labels, synth_test.labels)
    assert train.class_names == datasets.CIFAR10_CLASSES
    mtime = os.path.getmtime(path)
    assert cifar10.write_generated_archive(str(tmp_path), num_train=50, num_test=20, seed=1) == path  # reused
    assert os.path.getmtime(path) == mtime
    with pytest.raises(FileExistsError, match="never overwritten"):
        cifar10.write_generated_archive(str(tmp_path), num_train=50, num_test=20, seed=2)
    with pytest.raises(ValueError, match="multiple of 5"):
        cifar10.archive_files(datasets.Dataset(synth_train.images[:7], synth_train.labels[:7], 10, "x", synth_train.class_names),
                              synth_test)


def test_archive_subset_is_balanced(tmp_path):
    arrays = make_cifar_arrays(n_per_batch=40, n_test=5, seed=1)
    arrays["train_labels"] = (np.arange(200) % 10).astype(np.int32)
    write_cifar10_archive(tmp_path, arrays)
    ds = datasets.load_dataset("cifar10", split="train", data_dir=str(tmp_path), source="archive",
                           num_train=50, seed=3)
    assert len(ds) == 50 and np.all(np.bincount(ds.labels, minlength=10) == 5)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    for source in ("auto", "archive"):
        with pytest.raises(datasets.DatasetNotFoundError) as e:
            datasets.load_dataset("cifar10", split="train", data_dir=str(tmp_path), source=source)
        msg = str(e.value)
        assert "cifar-10-python.tar.gz" in msg and "jaxhfc[tf]" in msg and str(tmp_path) in msg
    assert _listing(tmp_path) == []


@pytest.mark.skipif(datasets.tfds._have_tensorflow(), reason="checks the no-TensorFlow message")
def test_tfds_without_prepared_dir_or_tensorflow(tmp_path):
    with pytest.raises(ImportError, match=r"pip install jaxhfc\[tf\]"):
        datasets.load_dataset("cifar10", split="train", data_dir=str(tmp_path), source="tfds")
    assert _listing(tmp_path) == []  # nothing half-written


def test_failed_tfds_download_leaves_nothing(tmp_path, monkeypatch):
    # Simulate a download that fails half-way (no network here): whatever the attempt
    # created in the data dir is removed again, and the error propagates.
    import tensorflow_datasets as tfds

    class _FailingBuilder:
        def download_and_prepare(self, **kwargs):
            os.makedirs(tmp_path / "dd" / "downloads" / "extracted")
            (tmp_path / "dd" / "downloads" / "cifar.tar.gz.tmp").write_bytes(b"partial")
            os.makedirs(tmp_path / "dd" / "cifar10" / "incomplete.x")
            raise ConnectionError("network unreachable")

    monkeypatch.setattr(datasets.tfds, "_have_tensorflow", lambda: True)
    monkeypatch.setattr(tfds, "builder", lambda *a, **k: _FailingBuilder())
    (tmp_path / "keep.txt").write_text("user file")
    with pytest.raises(ConnectionError):
        datasets.load_dataset("cifar10", split="train", data_dir=str(tmp_path / "dd"), source="tfds")
    assert _listing(tmp_path) == ["keep.txt"]
    os.makedirs(tmp_path / "dd" / "downloads")  # pre-existing: kept, with its old files
    (tmp_path / "dd" / "downloads" / "old.bin").write_bytes(b"x")
    with pytest.raises(ConnectionError):
        datasets.load_dataset("cifar10", split="train", data_dir=str(tmp_path / "dd"), source="tfds")
    assert _listing(tmp_path / "dd") == ["downloads", "downloads/old.bin"]


def _corrupt_cases(arrays):
    good = cifar_pickles(arrays)
    bad_shape = dict(good)
    d = pickle.loads(good["test_batch"], encoding="bytes")
    d[b"data"] = d[b"data"][:, :3000]
    bad_shape["test_batch"] = pickle.dumps(d, protocol=2)
    bad_dtype = dict(good)
    d = pickle.loads(good["test_batch"], encoding="bytes")
    d[b"data"] = d[b"data"].astype(np.float32)
    bad_dtype["test_batch"] = pickle.dumps(d, protocol=2)
    bad_label = dict(good)
    d = pickle.loads(good["test_batch"], encoding="bytes")
    d[b"labels"][2] = 10
    bad_label["test_batch"] = pickle.dumps(d, protocol=2)
    short_labels = dict(good)
    d = pickle.loads(good["test_batch"], encoding="bytes")
    d[b"labels"] = d[b"labels"][:-1]
    short_labels["test_batch"] = pickle.dumps(d, protocol=2)
    missing = {k: v for k, v in good.items() if k != "test_batch"}
    evil = dict(good)
    evil["test_batch"] = pickle.dumps(_Evil(), protocol=2)
    garbage = dict(good)
    garbage["test_batch"] = b"not a pickle"
    return {
        "shape": (bad_shape, r"\(N, 3072\)"),
        "dtype": (bad_dtype, r"uint8"),
        "label": (bad_label, r"\[0, 10\)"),
        "short_labels": (short_labels, r"b'labels' must be 7"),
        "missing": (missing, r"lacks .*test_batch"),
        "evil": (evil, r"refusing to unpickle"),
        "garbage": (garbage, r"cannot unpickle"),
    }


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


@pytest.mark.parametrize("case", ["shape", "dtype", "label", "short_labels", "missing", "evil", "garbage"])
def test_malformed_archive_raises(tmp_path, cifar_arrays, case):
    files, match = _corrupt_cases(cifar_arrays)[case]
    write_cifar10_archive(tmp_path, cifar_arrays, files=files)
    before = _listing(tmp_path)
    with pytest.raises(datasets.CorruptDatasetError, match=match):
        datasets.load_dataset("cifar10", split="test", data_dir=str(tmp_path), source="archive")
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("cut", [0.5, 0.97, 20])
def test_truncated_or_corrupt_archive_raises(tmp_path, cifar_arrays, cut):
    path = write_cifar10_archive(tmp_path, cifar_arrays)
    raw = open(path, "rb").read()
    if cut == 20:  # not a gzip at all
        raw = b"\x00garbage" * 20
    else:
        raw = raw[: int(len(raw) * cut)]
    with open(path, "wb") as f:
        f.write(raw)
    with pytest.raises(datasets.CorruptDatasetError, match="corrupt or truncated"):
        datasets.load_dataset("cifar10", split="test", data_dir=str(tmp_path), source="archive")
    assert _listing(tmp_path) == ["cifar-10-python.tar.gz"]


# --------------------------------------------------------------------------------------
# CIFAR-10: the TFDS route (a genuinely prepared array_record dir, no TensorFlow)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, cifar_arrays):
    d = tmp_path_factory.mktemp("tfds")
    write_tfds_cifar10(d, cifar_arrays)
    return d


def test_tfds_route_equals_archive_route(tmp_path, tfds_dir, cifar_arrays):
    write_cifar10_archive(tmp_path, cifar_arrays)
    for split in ("train", "test"):
        via_tfds = datasets.load_dataset("cifar10", split=split, data_dir=str(tfds_dir), source="tfds")
        via_auto = datasets.load_dataset("cifar10", split=split, data_dir=str(tfds_dir))
        via_archive = datasets.load_dataset("cifar10", split=split, data_dir=str(tmp_path), source="archive")
        for ds in (via_tfds, via_auto):
            np.testing.assert_array_equal(ds.images, via_archive.images)
            np.testing.assert_array_equal(ds.labels, via_archive.labels)
            assert ds.class_names == via_archive.class_names and ds.name == "cifar10"
        np.testing.assert_array_equal(via_tfds.images, cifar_arrays[f"{split}_images"])


def test_tfds_stores_shuffled_but_reader_restores_order(tfds_dir, cifar_arrays):
    import tensorflow_datasets as tfds

    src = tfds.data_source("cifar10", split="train", data_dir=str(tfds_dir), download=False)
    ids = [src[i]["id"] for i in range(len(src))]
    assert sorted(ids) != ids  # TFDS's own order differs from the archive's ...
    ds = datasets.load_dataset("cifar10", split="train", data_dir=str(tfds_dir), source="tfds")
    np.testing.assert_array_equal(ds.labels, cifar_arrays["train_labels"])  # ... ours does not


def test_tfds_tfrecord_dir_without_tensorflow(tmp_path, cifar_arrays):
    if datasets.tfds._have_tensorflow():
        pytest.skip("checks the no-TensorFlow message")
    root = write_tfds_cifar10(tmp_path, cifar_arrays)
    info_path = os.path.join(root, "dataset_info.json")
    info = json.load(open(info_path))
    info["fileFormat"] = "tfrecord"
    json.dump(info, open(info_path, "w"))
    with pytest.raises(ImportError, match=r"jaxhfc\[tf\].*array_record"):
        datasets.load_dataset("cifar10", split="test", data_dir=str(tmp_path), source="tfds")


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------


def _nearest_class_mean(xtr, ytr, xte, yte, k=10):
    a, b = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    means = np.stack([a[ytr == c].mean(0) for c in range(k)])
    d = (b ** 2).sum(1)[:, None] - 2 * b @ means.T + (means ** 2).sum(1)[None]
    return float(np.mean(d.argmin(1) == yte))


def _ridge_probe(xtr, ytr, xte, yte, k=10, lam=100.0):
    a = np.c_[xtr.reshape(len(xtr), -1), np.ones(len(xtr))]
    b = np.c_[xte.reshape(len(xte), -1), np.ones(len(xte))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ np.eye(k)[ytr])
    return float(np.mean((b @ w).argmax(1) == yte))


@pytest.mark.slow
def test_synthetic_full_size_in_seconds():
    t = time.perf_counter()
    train, test = datasets.make_synthetic()
    assert len(train) == 50_000 and len(test) == 10_000
    assert time.perf_counter() - t < 60


# --------------------------------------------------------------------------------------
# Whole-dataset transforms
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(10), 12)  # 12 per class
    rng.shuffle(labels)
    images = rng.integers(0, 256, (120, 8, 8, 3), dtype=np.uint8)
    return datasets.Dataset(images, labels, 10, "tiny", tuple("abcdefghij"))


@pytest.mark.parametrize("n", [50, 53, 120])
def test_balanced_subset(tiny, n):
    sub = datasets.balanced_subset(tiny, n, seed=1)
    counts = np.bincount(sub.labels, minlength=10)
    assert len(sub) == n and counts.max() - counts.min() <= 1 and counts.sum() == n
    # Every row is a distinct row of the source with its own label.
    src = {tiny.images[i].tobytes(): tiny.labels[i] for i in range(len(tiny))}
    rows = [sub.images[i].tobytes() for i in range(n)]
    assert len(set(rows)) == n and all(src[r] == y for r, y in zip(rows, sub.labels))
    again = datasets.balanced_subset(tiny, n, seed=1)
    np.testing.assert_array_equal(again.images, sub.images)
    if n < 120:
        other = datasets.balanced_subset(tiny, n, seed=2)
        assert not np.array_equal(other.images, sub.images)


def test_balanced_subset_errors(tiny):
    for n in (0, 121, 2.5):
        with pytest.raises(ValueError):
            datasets.balanced_subset(tiny, n, seed=0)
    skewed = tiny.replace(labels=np.where(tiny.labels == 3, 4, tiny.labels))
    with pytest.raises(ValueError, match="class 3"):
        datasets.balanced_subset(skewed, 100, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_shuffle_labels_fraction_changed(tiny, fraction):
    out = datasets.shuffle_labels(tiny, fraction=fraction, seed=3)
    changed = out.labels != tiny.labels
    assert changed.sum() == round(fraction * len(tiny))
    np.testing.assert_array_equal(np.sort(out.labels), np.sort(tiny.labels))  # a permutation
    np.testing.assert_array_equal(out.images, tiny.images)
    again = datasets.shuffle_labels(tiny, fraction=fraction, seed=3)
    np.testing.assert_array_equal(again.labels, out.labels)
    if fraction == 1.0:
        # Not a relabelling of classes: class-0 examples get many different labels.
        assert len(set(out.labels[tiny.labels == 0])) >= 5


def test_shuffle_labels_errors(tiny):
    for f in (-0.1, 1.5, "all", True):
        with pytest.raises(ValueError, match="fraction"):
            datasets.shuffle_labels(tiny, fraction=f, seed=0)
    one = datasets.Dataset(tiny.images[:10], np.zeros(10, np.int32), 1, "one", ("a",))
    with pytest.raises(ValueError, match="more than half"):
        datasets.shuffle_labels(one, fraction=1.0, seed=0)


@pytest.mark.parametrize("kind", ["low", "high"])
def test_filter_dataset_matches_numpy(tiny, kind):
    ds = tiny.replace(images=np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8),
                      labels=np.arange(7))
    out = datasets.filter_dataset(ds, kind, 8, chunk_size=3)  # 3 chunks, the last one padded
    low = _np_low_pass(ds.images, 8)
    ref = low if kind == "low" else ds.images - low
    assert out.images.dtype == np.float32 and out.name == f"tiny/{kind}_r8"
    np.testing.assert_allclose(out.images, ref, atol=2e-3)
    np.testing.assert_array_equal(out.labels, ds.labels)
    whole = datasets.filter_dataset(ds, kind, 8)
    np.testing.assert_allclose(whole.images, out.images, atol=1e-4)


def test_filter_dataset_none_and_errors(tiny):
    assert datasets.filter_dataset(tiny, "none", 4) is tiny
    assert datasets.filter_dataset(tiny, None, 4) is tiny
    for kind, r in (("band", 4), ("low", -1), ("low", float("inf")), ("high", "x")):
        with pytest.raises(ValueError):
            datasets.filter_dataset(tiny, kind, r)
    with pytest.raises(ValueError, match="chunk_size"):
        datasets.filter_dataset(tiny, "low", 4, chunk_size=0)


def test_to_model_input_scalings():
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    filt = rng.normal(0, 40, (5, 4, 4, 3)).astype(np.float32)
    filt[0] = 0.0  # empty image (e.g. LFC at r=0)
    filt[1] = 1e-6 * rng.normal(size=(4, 4, 3))  # float rounding only (HFC beyond the corner)
    ds = datasets.Dataset(orig, np.arange(5), 10, "o", tuple("abcdefghij"))
    np.testing.assert_allclose(datasets.to_model_input(ds), orig / 255.0, rtol=1e-6)
    np.testing.assert_allclose(datasets.to_model_input(orig, scaling="unit"), orig / 255.0, rtol=1e-6)
    out = datasets.to_model_input(filt)
    ref = filt[2:] / filt[2:].max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out[2:], ref, rtol=1e-6)
    assert np.all(out[:2] == 0.0) and out.dtype == np.float32
    assert np.allclose(out[2:].max(axis=(1, 2, 3)), 1.0) and out.min() < 0  # HFC keeps negatives
    np.testing.assert_allclose(datasets.to_model_input(filt, scaling="unit"), filt / 255.0, rtol=1e-6)
    np.testing.assert_allclose(datasets.to_model_input(filt, filtered=False), filt / 255.0, rtol=1e-6)
    forced = datasets.to_model_input(orig, filtered=True)
    np.testing.assert_allclose(forced, orig / orig.max(axis=(1, 2, 3), keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match="scaling"):
        datasets.to_model_input(orig, scaling="std")
    with pytest.raises(ValueError, match="N, H, W, C"):
        datasets.to_model_input(orig[0])
    with pytest.raises(ValueError, match="dtype"):
        datasets.to_model_input(orig.astype(np.int16))


def test_normalize_matches_numpy_and_jits():
    x = np.random.default_rng(0).random((2, 4, 4, 3)).astype(np.float32)
    ref = (x - np.array(datasets.CIFAR10_MEAN)) / np.array(datasets.CIFAR10_STD)
    np.testing.assert_allclose(np.asarray(pipeline.normalize(x)), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(pipeline.normalize)(x)), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pipeline.normalize(x, (0.5,) * 3, (0.25,) * 3)), (x - 0.5) * 4, rtol=1e-6)


# --------------------------------------------------------------------------------------
# Device-side pipeline
# --------------------------------------------------------------------------------------


def _find_window(out, img, p):
    """All (dy, dx, flipped) such that `out` is that window of the zero-padded `img`."""
    h, w = img.shape[:2]
    padded = np.pad(img, ((p, p), (p, p), (0, 0)))
    hits = []
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            win = padded[dy:dy + h, dx:dx + w]
            if np.array_equal(out, win):
                hits.append((dy, dx, False))
            if np.array_equal(out, win[:, ::-1]):
                hits.append((dy, dx, True))
    return hits


_aug = jax.jit(pipeline.augment, static_argnames=("crop_pad", "flip"))
_SHAPE = (256, 12, 12, 3)  # one shape for all augment tests: few compilations


def test_augment_is_a_shifted_window_and_flip():
    key = jax.random.key(0)
    x = jax.random.uniform(jax.random.key(1), _SHAPE) + 0.1  # no zeros inside
    out = np.asarray(_aug(key, x, crop_pad=4, flip=True))
    xn = np.asarray(x)
    found = [_find_window(out[i], xn[i], 4) for i in range(len(xn))]
    assert all(len(h) == 1 for h in found)  # each output is exactly one window (+ flip)
    dys = [h[0][0] for h in found]
    dxs = [h[0][1] for h in found]
    flips = [h[0][2] for h in found]
    assert min(dys) == 0 and max(dys) == 8 and min(dxs) == 0 and max(dxs) == 8
    assert 0.35 < np.mean(flips) < 0.65
    assert len(set(zip(dys, dxs))) > 50  # offsets are per example


def test_augment_flip_only_and_determinism():
    x = jax.random.normal(jax.random.key(2), _SHAPE)
    xn = np.asarray(x)
    out = np.asarray(_aug(jax.random.key(3), x, crop_pad=0, flip=True))
    is_same = np.all(out == xn, axis=(1, 2, 3))
    is_flip = np.all(out == xn[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(is_same ^ is_flip) and 90 < is_flip.sum() < 166
    np.testing.assert_array_equal(np.asarray(_aug(jax.random.key(3), x, crop_pad=0, flip=True)), out)
    a = np.asarray(_aug(jax.random.key(4), x, crop_pad=4, flip=True))
    b = np.asarray(_aug(jax.random.key(4), x, crop_pad=4, flip=True))
    c = np.asarray(_aug(jax.random.key(5), x, crop_pad=4, flip=True))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == x.shape and a.dtype == x.dtype
    with pytest.raises(ValueError):
        pipeline.augment(jax.random.key(0), x[0])
    with pytest.raises(ValueError):
        pipeline.augment(jax.random.key(0), x, crop_pad=-1)


def test_augment_keeps_labels_aligned():
    # Image i is filled with its label + 1: after crop (pad 4) and flip, the centre pixel
    # (which always comes from inside the image) still carries it: order is unchanged.
    n = _SHAPE[0]
    labels = np.random.default_rng(0).integers(0, 10, n)
    x = jnp.asarray(np.broadcast_to((labels + 1.0)[:, None, None, None], _SHAPE), jnp.float32)
    images, y = jax.jit(pipeline.gather_batch)(x, jnp.asarray(labels), jnp.arange(n)[::-1])
    out = np.asarray(_aug(jax.random.key(0), images, crop_pad=4, flip=True))
    np.testing.assert_array_equal(out[:, 6, 6, 0], np.asarray(y) + 1.0)
    np.testing.assert_array_equal(np.asarray(y), labels[::-1])


def test_mixup_is_a_convex_combination():
    b = 16
    x = jax.random.normal(jax.random.key(0), (b, 4, 4, 3))
    y = jax.nn.one_hot(jnp.arange(b), b)  # distinct labels, so perm and lambda can be read
    keys = jax.random.split(jax.random.key(1), 400)
    mix = jax.jit(jax.vmap(lambda kk: pipeline.mixup(kk, x, y, alpha=1.0)))
    xms, yms = (np.asarray(a) for a in mix(keys))
    xn = np.asarray(x)
    np.testing.assert_allclose(yms.sum(-1), 1.0, rtol=1e-5)
    lams = []
    for xm, ym in zip(xms[:20], yms[:20]):
        own = np.diag(ym)
        moved = own < 1 - 1e-6  # examples paired with another one: own weight is lambda
        assert moved.sum() >= 2
        lam = own[moved][0]
        np.testing.assert_allclose(own[moved], lam, rtol=1e-5)  # one lambda for the batch
        perm = np.where(moved, np.argmax(ym - np.diag(own), axis=1), np.arange(b))
        assert sorted(perm) == list(range(b))  # a permutation of the batch
        np.testing.assert_allclose(xm, lam * xn + (1 - lam) * xn[perm], rtol=1e-5, atol=1e-5)
    # One lambda per batch, Beta(alpha, alpha): mean 1/2, variance 1/12 for alpha = 1.
    diag = np.diagonal(yms, axis1=1, axis2=2)  # (400, b)
    lams = np.array([d[d < 1 - 1e-6][0] for d in diag])
    assert abs(np.mean(lams) - 0.5) < 0.05 and abs(np.var(lams) - 1 / 12) < 0.02
    # Deterministic per key, and different keys give different draws.
    xms2, _ = mix(keys)
    np.testing.assert_array_equal(np.asarray(xms2), xms)
    assert len(np.unique(lams)) == len(lams)
    with pytest.raises(ValueError, match="alpha"):
        pipeline.mixup(jax.random.key(0), x, y, alpha=0.0)


def test_epoch_indices():
    epoch = jax.jit(pipeline.epoch_indices, static_argnums=(1, 2))
    idx = np.asarray(epoch(jax.random.key(0), 103, 10))
    assert idx.shape == (10, 10) and idx.dtype == np.int32
    flat = idx.ravel()
    assert len(set(flat.tolist())) == 100 and flat.min() >= 0 and flat.max() < 103
    again = np.asarray(pipeline.epoch_indices(jax.random.key(0), 103, 10))  # eager == jit
    np.testing.assert_array_equal(again, idx)
    other = np.asarray(epoch(jax.random.key(1), 103, 10))
    assert not np.array_equal(other, idx)
    assert np.asarray(pipeline.epoch_indices(jax.random.key(0), 100, 100)).shape == (1, 100)
    for n, gb in ((10, 11), (0, 1), (10, 0)):
        with pytest.raises(ValueError):
            pipeline.epoch_indices(jax.random.key(0), n, gb)


@pytest.mark.parametrize("n", [1, 37, 100])
@pytest.mark.parametrize("devices,local", [(1, 5), (2, 4), (4, 3), (8, 16)])
def test_eval_indices_count_each_example_once(n, devices, local):
    gb = devices * local
    idx, mask = pipeline.eval_indices(n, gb)
    assert idx.shape == mask.shape == (-(-n // gb), gb) and idx.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(idx[mask], minlength=n), np.ones(n))
    assert np.all(idx[~mask] == 0) and mask.sum() == n
    # On `devices` devices: a replicated split, index rows sharded over 'data', each device
    # gathers its rows and sums masked values; the psum must count each example once.
    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
    values = jnp.arange(1, n + 1, dtype=jnp.int32)

    def body(vals, ix, mk):
        x, _ = pipeline.gather_batch(vals, vals, ix)
        total = jnp.sum(jnp.where(mk, x, 0))
        count = jnp.sum(mk.astype(jnp.int32))
        return jax.lax.psum(total, "data"), jax.lax.psum(count, "data")

    f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), P(None, "data"), P(None, "data")),
                              out_specs=(P(), P())))
    total, count = f(values, jnp.asarray(idx), jnp.asarray(mask))
    assert int(count) == n and int(total) == n * (n + 1) // 2


def test_eval_indices_errors():
    for n, gb in ((0, 4), (4, 0), (4.0, 2)):
        with pytest.raises(ValueError):
            pipeline.eval_indices(n, gb)
