"""Pareto fronts, hypervolume and picking a point: numpy only.

Every function takes an ``n x m`` array of objective values and one direction per
column (``"maximize"`` or ``"minimize"``). Internally everything is turned into
minimisation by negating maximised columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pareto_front", "hypervolume", "pick", "dominates", "pareto_ranks", "crowding_distance"]

_DIRECTIONS = ("maximize", "minimize")


def _as_min(values: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        array = array.reshape(len(array), -1) if array.size else np.empty((0, len(directions)))
    if array.shape[1] != len(directions):
        raise ValueError(f"{array.shape[1]} objective columns but {len(directions)} directions")
    bad = [d for d in directions if d not in _DIRECTIONS]
    if bad:
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {bad[0]!r}")
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return array * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` dominates ``b`` (both already in minimisation form)."""
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_front(values: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str]) -> list[int]:
    """Indices (ascending) of the rows no other row dominates. Equal rows are all kept."""
    points = _as_min(values, directions)
    n = len(points)
    if n == 0:
        return []
    # dominated[i] if some j is <= in every column and < in at least one.
    le = np.all(points[:, None, :] <= points[None, :, :], axis=2)  # le[j, i]: j <= i everywhere
    lt = np.any(points[:, None, :] < points[None, :, :], axis=2)
    dominated = np.any(le & lt, axis=0)
    return [int(i) for i in np.flatnonzero(~dominated)]


def pareto_ranks(values: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str]) -> list[int]:
    """Non-dominated sorting: 0 for the rows on the front, 1 for the front of the rest, ..."""
    points = _as_min(values, directions)
    ranks = [-1] * len(points)
    left = list(range(len(points)))
    rank = 0
    while left:
        front = [left[i] for i in pareto_front(points[left], ["minimize"] * points.shape[1])]
        for i in front:
            ranks[i] = rank
        left = [i for i in left if ranks[i] < 0]
        rank += 1
    return ranks


def crowding_distance(values: Sequence[Sequence[float]] | np.ndarray, members: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each row in ``members`` (one front) among themselves: the
    sum over objectives of the normalised gap between its two neighbours; the ends of each
    objective get infinity, so the extremes of a front are kept first."""
    points = np.asarray(values, dtype=float)
    distance = {int(i): 0.0 for i in members}
    if len(members) < 3:
        return {i: float("inf") for i in distance}
    for column in range(points.shape[1]):
        order = sorted(members, key=lambda i: points[i, column])
        low, high = points[order[0], column], points[order[-1], column]
        distance[int(order[0])] = distance[int(order[-1])] = float("inf")
        if high == low:
            continue
        for before, row, after in zip(order[:-2], order[1:-1], order[2:], strict=True):
            distance[int(row)] += (points[after, column] - points[before, column]) / (high - low)
    return distance


def _hv_min(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume of minimisation ``points`` that all strictly dominate ``reference``."""
    if len(points) == 0:
        return 0.0
    m = points.shape[1]
    if m == 1:
        return float(reference[0] - points[:, 0].min())
    if m == 2:
        order = np.argsort(points[:, 0], kind="stable")
        volume, best_y = 0.0, reference[1]
        for x, y in points[order]:
            if y < best_y:
                volume += (reference[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    # Slice along the last objective: between consecutive levels, the covered region is the
    # (m-1)-dimensional hypervolume of every point at or below that level.
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    levels = np.append(points[:, -1], reference[-1])
    volume = 0.0
    for i in range(len(points)):
        height = levels[i + 1] - levels[i]
        if height > 0:
            volume += height * _hv_min(points[: i + 1, :-1], reference[:-1])
    return float(volume)


def hypervolume(
    values: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str], reference: Sequence[float]
) -> float:
    """Exact volume dominated by ``values`` and bounded by ``reference`` (any number of objectives;
    meant for 2-4). Points that do not strictly beat the reference in every objective add nothing."""
    points = _as_min(values, directions)
    ref = _as_min([list(reference)], directions)[0]
    if len(points) == 0:
        return 0.0
    points = points[np.all(points < ref, axis=1)]
    if len(points) == 0:
        return 0.0
    points = points[pareto_front(points, ["minimize"] * points.shape[1])]
    return _hv_min(np.unique(points, axis=0), ref)


def pick(
    values: Sequence[Sequence[float]] | np.ndarray,
    directions: Sequence[str],
    by: int | str = "knee",
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
    mask: Sequence[bool] | np.ndarray | None = None,
) -> int:
    """Choose one row of the Pareto front of the rows allowed by ``mask``; returns its index.

    ``by`` is an objective (column index, or a name from ``names``): the best row in it,
    ties broken by the other objectives in order. ``"weights"``: the best weighted sum of
    objectives normalised to [0, 1] over the front (1 = best). ``"knee"``: the front row
    closest (Euclidean) to the ideal point after that same normalisation.
    """
    points = _as_min(values, directions)
    allowed = np.ones(len(points), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    candidates = np.flatnonzero(allowed)
    if len(candidates) == 0:
        raise ValueError("no row is allowed by the filter")
    front = candidates[pareto_front(points[candidates], ["minimize"] * points.shape[1])]
    sub = points[front]
    if isinstance(by, str) and by not in ("knee", "weights"):
        if names is None or by not in names:
            raise ValueError(f"unknown objective {by!r}" + (f" (have: {', '.join(names)})" if names else ""))
        by = list(names).index(by)
    if isinstance(by, (int, np.integer)):
        if not 0 <= by < points.shape[1]:
            raise ValueError(f"objective index {by} out of range")
        keys = [sub[:, j] for j in reversed([k for k in range(points.shape[1]) if k != by])] + [sub[:, by]]
        return int(front[np.lexsort(keys)[0]])
    low, high = sub.min(axis=0), sub.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    normalised = (sub - low) / span  # 0 = best on the front, 1 = worst
    if by == "weights":
        if weights is None or len(weights) != points.shape[1]:
            raise ValueError(f"weights must give one number per objective ({points.shape[1]})")
        scores = (1.0 - normalised) @ np.asarray(weights, dtype=float)
        return int(front[int(np.argmax(scores))])
    return int(front[int(np.argmin(np.linalg.norm(normalised, axis=1)))])
