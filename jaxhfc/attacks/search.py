"""The paper code's minimal-eps search, on a grid of radii.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np


from jaxhfc.attacks.base import LogitsFn
from jaxhfc.attacks.evaluation import Attack, robust_accuracy, standard_attacks


def minimal_eps(
    logits_fn: LogitsFn,
    x,
    y,
    key: jax.Array,
    *,
    eps_grid: Sequence[float],
    batch_size: int,
    attacks: Sequence[Attack] | None = None,
    **kwargs: Any,
) -> dict:
    """Per-example smallest eps of a grid at which an attack breaks the example, as the
    paper's released code searched it with Foolbox, and the accuracy at each threshold.

    The balls are nested, so an adversarial image found at ``eps_a`` also counts at every
    ``eps_b >= eps_a``: the accuracy at threshold ``t`` is the share of examples whose
    minimal eps is above ``t`` (never higher than :func:`robust_accuracy` at ``t``).

    Args:
      logits_fn, x, y, key, batch_size, attacks: as :func:`robust_accuracy` (default attacks:
        :func:`standard_attacks`); ``kwargs`` go to it too (e.g. ``mesh``, ``checks=False``).
      eps_grid: increasing positive radii.

    Returns:
      ``{"eps_grid": (E,), "min_eps": (N,) float32`` (0 for examples wrong before any attack,
      ``inf`` when no eps of the grid breaks them), ``"accuracy": (E,)`` at each threshold,
      ``"results": [RobustResult per eps]}``.
    """
    grid = [float(e) for e in eps_grid]
    if not grid or any(e <= 0 for e in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"eps_grid must be increasing positive radii, got {list(eps_grid)!r}")
    attacks = standard_attacks() if attacks is None else attacks
    results = [robust_accuracy(logits_fn, x, y, key, eps=e, batch_size=batch_size, attacks=attacks,
                               **kwargs) for e in grid]
    n = results[0].n
    min_eps = np.full(n, np.inf, np.float32)
    for e, r in zip(reversed(grid), reversed(results)):
        min_eps = np.where(~r.robust_correct, np.float32(e), min_eps)
    min_eps = np.where(results[0].clean_correct, min_eps, np.float32(0.0))
    return {"eps_grid": np.asarray(grid, np.float32), "min_eps": min_eps,
            "accuracy": np.asarray([(min_eps > e).mean() for e in grid], np.float64),
            "results": results}
