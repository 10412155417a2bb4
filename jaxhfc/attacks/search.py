"""The paper code's minimal-eps search, on a grid of radii.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np


from jaxhfc.attacks.base import LogitsFn
from jaxhfc.attacks.evaluation import Attack, robust_accuracy, standard_attacks


def _increasing_grid(eps_grid: Sequence[float]) -> list[float]:
    grid = [float(e) for e in eps_grid]
    if not grid or any(e <= 0 for e in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"eps_grid must be increasing positive radii, got {list(eps_grid)!r}")
    return grid


def _search_result(grid: list[float], min_eps: np.ndarray) -> dict:
    """The grid, the per-example minimal eps and the robust accuracy at each radius."""
    return {"eps_grid": np.asarray(grid, np.float32), "min_eps": min_eps,
            "accuracy": np.asarray([(min_eps > e).mean() for e in grid], np.float64)}


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
    grid = _increasing_grid(eps_grid)
    attacks = standard_attacks() if attacks is None else attacks
    results = [robust_accuracy(logits_fn, x, y, key, eps=e, batch_size=batch_size, attacks=attacks,
                               **kwargs) for e in grid]
    n = results[0].n
    min_eps = np.full(n, np.inf, np.float32)
    for e, r in zip(reversed(grid), reversed(results)):
        min_eps = np.where(~r.robust_correct, np.float32(e), min_eps)
    min_eps = np.where(results[0].clean_correct, min_eps, np.float32(0.0))
    return {**_search_result(grid, min_eps), "results": results}


def doubling_grid(eps_max: float, points: int) -> tuple[float, ...]:
    """``points`` radii doubling up to ``eps_max``: ``eps_max / 2**(points-1), ..., eps_max / 2,
    eps_max`` (the grid of :func:`ascending_minimal_eps`; one grid step is a factor of 2)."""
    if not (np.isfinite(eps_max) and eps_max > 0) or int(points) < 1:
        raise ValueError(f"need eps_max > 0 and points >= 1, got {eps_max!r} and {points!r}")
    return tuple(float(eps_max) / 2.0 ** k for k in range(int(points) - 1, -1, -1))


def ascending_minimal_eps(
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
    """Per-example smallest eps of an increasing grid at which the attacks break the example,
    attacking at each radius only the examples no smaller radius broke (the balls are nested,
    so an example broken at ``eps_a`` counts as broken at every larger radius): the minimal eps
    of :func:`minimal_eps` at a fraction of its cost, without the sanity checks (run them at
    the radii a table reports).

    Args:
      logits_fn, x, y, key, batch_size, attacks: as :func:`robust_accuracy` (default attacks:
        :func:`standard_attacks`); ``kwargs`` go to it too (e.g. ``mesh``, ``unroll``). Radius
        ``k`` uses the key ``fold_in(key, k)``.
      eps_grid: increasing positive radii (e.g. :func:`doubling_grid`).

    Returns:
      ``{"eps_grid": (E,), "min_eps": (N,) float32`` (0 for examples wrong before any attack,
      ``inf`` when no radius of the grid breaks them), ``"accuracy": (E,)`` robust accuracy at
      each radius (the share of examples whose minimal eps is above it)``}``.
    """
    grid = _increasing_grid(eps_grid)
    attacks = standard_attacks() if attacks is None else attacks
    for k in ("checks", "logit_scale", "more_steps"):
        kwargs.pop(k, None)
    x, y = np.asarray(x), np.asarray(y)
    min_eps = np.full(len(y), np.inf, np.float32)
    alive = np.arange(len(y))
    for k, e in enumerate(grid):
        if alive.size == 0:
            break
        r = robust_accuracy(logits_fn, x[alive], y[alive], jax.random.fold_in(key, k), eps=e, batch_size=batch_size,
                            attacks=attacks, checks=False, logit_scale=None, more_steps=None, **kwargs)
        if k == 0:
            min_eps[~r.clean_correct] = 0.0
        broken = ~r.robust_correct
        min_eps[alive[broken & (min_eps[alive] != 0.0)]] = np.float32(e)
        alive = alive[~broken]
    return _search_result(grid, min_eps)


def median_min_eps(min_eps, *, above: float) -> float:
    """The median of per-example minimal eps (:func:`ascending_minimal_eps`: 0 for examples wrong
    clean, ``inf`` for those no radius broke): the radius at which robust accuracy falls to
    one half. Examples above the grid count as ``above`` (pass the next radius past the grid,
    e.g. twice its largest on a doubling grid); a median equal to ``above`` says more than half
    the examples survive the whole grid."""
    m = np.asarray(min_eps, np.float64)
    if m.ndim != 1 or m.size == 0 or np.isnan(m).any():
        raise ValueError(f"min_eps must be a non-empty 1-D array without NaN, got shape {m.shape}")
    return float(np.median(np.where(np.isfinite(m), m, float(above))))
