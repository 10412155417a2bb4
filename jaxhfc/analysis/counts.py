"""The paper's Fig. 1/2 counts: test images right or wrong from their LFC and from their HFC.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxhfc.analysis.base import _check_labels


#: ``(key, label)`` of the counts in the paper's Fig. 1/2 table, in display order.
COUNT_COLUMNS = (
    ("low_right_high_wrong", "LFC right, HFC wrong"),
    ("low_wrong_high_right", "LFC wrong, HFC right"),
    ("both_right", "both right"),
    ("both_wrong", "both wrong"),
    ("low_right", "LFC right"),
    ("high_right", "HFC right"),
)




def prediction_counts(pred_low, pred_high, labels, *, pred_orig=None) -> dict[str, Any]:
    """Counts of test images in each cell of {LFC right, wrong} x {HFC right, wrong}.

    Args:
      pred_low: ``(N,)`` or ``(R, N)`` int predictions on the LFC versions (``R`` radii).
      pred_high: same shape as ``pred_low``, predictions on the HFC versions.
      labels: ``(N,)`` int true labels.
      pred_orig: optional ``(N,)`` int predictions on the original images; adds the same
        four cells with "right" meaning "agrees with the original prediction".

    Returns:
      dict of int64 numpy arrays of shape ``pred_low.shape[:-1]`` (scalars for 1-D input):
      ``low_right_high_wrong``, ``low_wrong_high_right``, ``both_right``, ``both_wrong``
      (these four add up to ``N``), ``low_right``, ``high_right``, and ``n`` (int). With
      ``pred_orig``: ``orig_right`` (int) and ``agree_low_only``, ``agree_high_only``,
      ``agree_both``, ``agree_neither`` (adding up to ``N``), ``low_agree``, ``high_agree``.

    Raises:
      ValueError: mismatched shapes or non-integer predictions.
    """
    lo, hi = np.asarray(pred_low), np.asarray(pred_high)
    if lo.shape != hi.shape or lo.ndim not in (1, 2):
        raise ValueError(
            f"pred_low and pred_high must have one shape (N,) or (R, N); got {lo.shape} and {hi.shape}"
        )
    if lo.dtype.kind not in "iu" or hi.dtype.kind not in "iu":
        raise ValueError(f"predictions must be int labels, got {lo.dtype} and {hi.dtype}")
    n = lo.shape[-1]
    y = _check_labels(labels, n)

    def cells(a_ok, b_ok, prefix_a, prefix_b, names):
        return {
            names[0]: np.sum(a_ok & ~b_ok, axis=-1),
            names[1]: np.sum(~a_ok & b_ok, axis=-1),
            names[2]: np.sum(a_ok & b_ok, axis=-1),
            names[3]: np.sum(~a_ok & ~b_ok, axis=-1),
            prefix_a: np.sum(a_ok, axis=-1),
            prefix_b: np.sum(b_ok, axis=-1),
        }

    out = cells(lo == y, hi == y, "low_right", "high_right",
                ("low_right_high_wrong", "low_wrong_high_right", "both_right", "both_wrong"))
    out["n"] = int(n)
    if pred_orig is not None:
        po = np.asarray(pred_orig)
        if po.shape != (n,) or po.dtype.kind not in "iu":
            raise ValueError(f"pred_orig must be an int array of shape ({n},), got {po.dtype} {po.shape}")
        out.update(cells(lo == po, hi == po, "low_agree", "high_agree",
                         ("agree_low_only", "agree_high_only", "agree_both", "agree_neither")))
        out["orig_right"] = int(np.sum(po == y))
    return out


_CELLS = {
    "low_right_high_wrong": lambda a, b: a & ~b,
    "low_wrong_high_right": lambda a, b: ~a & b,
    "both_right": lambda a, b: a & b,
    "both_wrong": lambda a, b: ~a & ~b,
}


def cell_indices(pred_low, pred_high, labels, cell: str = "low_wrong_high_right") -> np.ndarray:
    """Indices of the images in one cell of :func:`prediction_counts` (one radius).

    Args:
      pred_low, pred_high, labels: ``(N,)`` int arrays.
      cell: ``"low_wrong_high_right"`` (the paper's examples: the HFC is classified right,
        the LFC wrong), ``"low_right_high_wrong"``, ``"both_right"`` or ``"both_wrong"``.

    Returns:
      ``(M,)`` int64 increasing indices.
    """
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {tuple(_CELLS)}, got {cell!r}")
    lo, hi = np.asarray(pred_low), np.asarray(pred_high)
    if lo.ndim != 1 or lo.shape != hi.shape:
        raise ValueError(f"pred_low and pred_high must be (N,) arrays, got {lo.shape} and {hi.shape}")
    y = _check_labels(labels, lo.shape[0])
    return np.flatnonzero(_CELLS[cell](lo == y, hi == y))
