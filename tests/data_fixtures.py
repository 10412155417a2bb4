"""Small CIFAR-10 files in the real on-disk formats, written from known arrays.

* :func:`write_cifar10_archive`: ``cifar-10-python.tar.gz`` (or the extracted
  ``cifar-10-batches-py`` folder) with the layout of the real archive: pickled dicts
  ``data_batch_1..5``, ``test_batch`` (``b'data'`` ``(N, 3072)`` uint8, rows channel-first
  row-major; ``b'labels'`` a list of ints; ``b'batch_label'``; ``b'filenames'``) and
  ``batches.meta`` (``b'label_names'``, ``b'num_cases_per_batch'``, ``b'num_vis'``).
* :func:`write_tfds_cifar10`: a genuinely prepared TFDS data dir (``cifar10/3.0.2`` with
  ``dataset_info.json`` and ``array_record`` shards) made by TFDS's own builder machinery,
  without TensorFlow: the real ``Cifar10`` builder class with only its example source
  replaced (PNG bytes encoded with Pillow, so TFDS never calls ``tf.image.encode_png``).
  The ``id`` feature is ``train_00042``-style, as in the real preparation.
"""

from __future__ import annotations

import io

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_cifar_arrays(*, n_per_batch: int = 6, n_test: int = 7, seed: int = 0) -> dict:
    """Random CIFAR-shaped arrays: train (5 * n_per_batch) and test images/labels."""
    rng = np.random.default_rng(seed)
    n_train = 5 * n_per_batch
    return {
        "train_images": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train).astype(np.int32),
        "test_images": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.int32),
        "class_names": CLASSES,
    }


def _datasets(arrays: dict):
    from jaxhfc.datasets import Dataset

    return (Dataset(arrays["train_images"], arrays["train_labels"], 10, "cifar10", tuple(arrays["class_names"])),
            Dataset(arrays["test_images"], arrays["test_labels"], 10, "cifar10", tuple(arrays["class_names"])))


def cifar_pickles(arrays: dict) -> dict[str, bytes]:
    """The pickled files of the real archive, as ``{filename: bytes}`` (the library's writer,
    ``jaxhfc.datasets.cifar10.archive_files``; tests/test_sources.py checks its bytes by hand)."""
    from jaxhfc.datasets import cifar10

    return cifar10.archive_files(*_datasets(arrays))


def write_cifar10_archive(data_dir, arrays: dict, *, extracted: bool = False, files=None) -> str:
    """Writes ``cifar-10-python.tar.gz`` (or the extracted folder) into ``data_dir``.

    ``files`` (``{name: bytes}``) overrides the pickles, to build malformed archives.
    Returns the path written.
    """
    from jaxhfc.datasets import cifar10

    return cifar10.write_archive_files(str(data_dir), cifar_pickles(arrays) if files is None else files,
                                       extracted=extracted)


def write_tfds_cifar10(data_dir, arrays: dict) -> str:
    """Prepares a TFDS ``cifar10`` data dir (array_record) holding ``arrays``; no TF needed."""
    import tensorflow_datasets as tfds
    from PIL import Image
    from tensorflow_datasets.image_classification.cifar import Cifar10

    def png(img: np.ndarray) -> io.BytesIO:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        buf.seek(0)
        return buf

    with tfds.core.registered.skip_registration():

        class _Cifar10FromArrays(Cifar10):
            name = "cifar10"  # the real dataset's name, version and features

            def _split_generators(self, dl_manager):
                self.info.features["label"].names = list(arrays["class_names"])
                return {s: self._examples(s) for s in ("train", "test")}

            def _examples(self, split):
                images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
                for i in range(len(images)):
                    yield i, {"id": f"{split}_{i:05d}", "image": png(images[i]), "label": int(labels[i])}

        builder = _Cifar10FromArrays(data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare()
    return str(builder.data_dir)
