"""The `jaxhfc filter` command: files written, values equal to the library's filter, errors."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxhfc import cli, fourier


def test_filter_npy_batch(tmp_path):
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(3, 16, 16, 3)).astype(np.uint8)
    np.save(tmp_path / "batch.npy", batch)
    out = tmp_path / "out"
    assert cli.main(["filter", str(tmp_path / "batch.npy"), "--radius", "2", "5", "--out", str(out)]) == 0
    data = np.load(out / "filtered.npz")
    assert data["low"].shape == (2, 3, 16, 16, 3)
    np.testing.assert_allclose(data["low"][1], np.asarray(fourier.low_pass(batch.astype(np.float32), 5)), atol=1e-4)
    np.testing.assert_allclose(data["low"] + data["high"], np.broadcast_to(batch, (2, 3, 16, 16, 3)), atol=1e-3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frequencies_kept_per_channel"] == {"2": fourier.kept_count(16, 16, 2), "5": fourier.kept_count(16, 16, 5)}
    assert (out / "figure.png").stat().st_size > 1000
    assert (out / "hfc_r5_2.png").exists()


def test_filter_png_and_default_photo(tmp_path):
    img = (np.arange(20 * 24 * 3) % 251).reshape(20, 24, 3).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    assert cli.main(["filter", str(tmp_path / "x.png"), "-r", "3", "--out", str(tmp_path / "o")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "o" / "filtered.npz")["images"][0], img)
    # no input: matplotlib's sample photo, resized to CIFAR size, default radii 4 8 12 16
    assert cli.main(["filter", "--resize", "32", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["radii"] == [4, 8, 12, 16]


@pytest.mark.parametrize(
    "content,name,match",
    [
        (None, "missing.png", "not found"),
        (b"not an image at all", "bad.png", "could not read"),
        (b"garbage", "bad.npy", "could not read"),
        (b"x", "file.txt", "unsupported"),
    ],
)
def test_filter_errors(tmp_path, capsys, content, name, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["filter", str(path), "--out", str(tmp_path / "o")]) == 2
    assert match in capsys.readouterr().err


def test_filter_bad_radius(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((8, 8, 3), np.float32))
    assert cli.main(["filter", str(tmp_path / "a.npy"), "-r", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "radius" in capsys.readouterr().err


def test_filter_reads_wide_and_float_images_on_the_0_255_scale(tmp_path, capsys):
    """16-bit grey PNGs are scaled by 255/65535 (PIL's convert clips them at 255), float TIFFs
    in 0..1 by 255; RGBA drops alpha; a float image on no known scale is a one-line error."""
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 65536, size=(12, 10)).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "g16.png")
    unit = rng.random((9, 11)).astype(np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tiff")
    rgba = rng.integers(0, 256, size=(8, 8, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    for name, want in (("g16.png", wide / 65535.0 * 255.0), ("unit.tiff", unit.astype(np.float64) * 255.0),
                       ("rgba.png", rgba[..., :3])):
        assert cli.main(["filter", str(tmp_path / name), "-r", "2", "--out", str(tmp_path / name[:-4])]) == 0
        got = np.load(tmp_path / name[:-4] / "filtered.npz")["images"][0]
        want = want if want.ndim == 3 else np.repeat(want[..., None], 3, axis=-1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    Image.fromarray(unit * 1000.0 - 500.0).save(tmp_path / "odd.tiff")
    assert cli.main(["filter", str(tmp_path / "odd.tiff"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected 0..1, 0..255 or 0..65535" in err and len(err.splitlines()) == 1
