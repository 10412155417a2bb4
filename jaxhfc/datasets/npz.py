"""``npz:PATH`` datasets: a numpy ``.npz`` with the keras keys ``x_train``, ``y_train``,
``x_test``, ``y_test``: images ``uint8`` ``(N, H, W)`` or ``(N, H, W, C)`` with C in {1, 3},
labels integer ``(N,)`` or ``(N, 1)`` in ``[0, K)``. An optional ``class_names`` key (``K``
strings) names the classes; without it they are ``"0"``, ``"1"``, ...
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from jaxhfc.datasets.core import CorruptDatasetError
from jaxhfc.datasets.specs import check_labels, corrupt, not_found

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read(path: str, split: str):

    if not os.path.isfile(path):
        raise not_found(
            f"{path}: no such .npz file; expected a numpy .npz with keys {', '.join(_NPZ_KEYS)} (keras convention)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in _NPZ_KEYS if k not in keys]
            if missing:
                raise corrupt(
                    f"{path}: missing keys {missing} (has {sorted(keys)}); expected {', '.join(_NPZ_KEYS)} "
                    "(keras .npz convention), optionally class_names"
                )
            x = z[f"x_{split}"]
            y = z[f"y_{split}"]
            y_all = [z["y_train"], z["y_test"]]
            names = z["class_names"] if "class_names" in keys else None
    except CorruptDatasetError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise corrupt(f"{path}: cannot read as a numpy .npz of plain arrays ({type(err).__name__}: {err})") from None
    where = f"{path}[x_{split}]"
    if x.dtype != np.uint8:
        raise corrupt(f"{where}: images must be uint8 (0..255), got dtype {x.dtype}")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise corrupt(f"{where}: images must have shape (N, H, W) or (N, H, W, C) with C in (1, 3), got {x.shape}")
    if x.shape[0] == 0:
        raise corrupt(f"{where}: the {split} split is empty")
    for k, yy in zip(("y_train", "y_test"), y_all):
        yy = np.asarray(yy)
        if yy.size and not np.issubdtype(yy.dtype, np.integer):
            raise corrupt(f"{path}[{k}]: labels must be integers, got dtype {yy.dtype}")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US" or names.size == 0:
            raise corrupt(f"{path}[class_names]: expected a 1-D array of strings, got {names.dtype} {names.shape}")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        k = len(names)
    else:
        k = int(max(int(np.max(yy)) if np.size(yy) else 0 for yy in y_all)) + 1
        names = [str(i) for i in range(k)]
    labels = check_labels(y, x.shape[0], k, f"{path}[y_{split}]")
    return x, labels, names, where


# ---- image folders ----------------------------------------------------------------------
