"""Property tests for the Pareto front, hypervolume and pick, against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autogram.report.pareto import hypervolume, pareto_front, pick

DIRECTIONS = st.sampled_from(["maximize", "minimize"])


def _brute_front(values: np.ndarray, directions: list[str]) -> list[int]:
    def better_eq(a: float, b: float, d: str) -> bool:
        return a >= b if d == "maximize" else a <= b

    def strictly(a: float, b: float, d: str) -> bool:
        return a > b if d == "maximize" else a < b

    front = []
    for i, vi in enumerate(values):
        dominated = any(
            all(better_eq(vj[k], vi[k], d) for k, d in enumerate(directions))
            and any(strictly(vj[k], vi[k], d) for k, d in enumerate(directions))
            for j, vj in enumerate(values)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, list[str]]:
    m = draw(st.integers(2, 4))
    n = draw(st.integers(0, 25))
    # Few distinct values per coordinate, so ties and duplicate rows are common.
    grid = st.integers(0, 4).map(float)
    rows = draw(st.lists(st.lists(grid, min_size=m, max_size=m), min_size=n, max_size=n))
    directions = draw(st.lists(DIRECTIONS, min_size=m, max_size=m))
    return np.array(rows, dtype=float).reshape(n, m), directions


@settings(max_examples=300, deadline=None)
@given(problems())
def test_pareto_front_equals_brute_force(problem: tuple[np.ndarray, list[str]]) -> None:
    values, directions = problem
    assert pareto_front(values, directions) == _brute_front(values, directions)


def _grid_hypervolume(values: np.ndarray, directions: list[str], reference: list[float]) -> float:
    """Brute force on integer points: count unit cells dominated by some point."""
    if len(values) == 0:
        return 0.0
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    points, ref = values * signs, np.array(reference) * signs
    lows = [int(np.floor(min(points[:, k].min(), ref[k]))) for k in range(len(ref))]
    count = 0
    for cell in itertools.product(*[range(lo, int(ref[k])) for k, lo in enumerate(lows)]):
        corner = np.array(cell, dtype=float)  # the cell [corner, corner + 1)
        if np.any(np.all(points <= corner, axis=1)):
            count += 1
    return float(count)


@settings(max_examples=150, deadline=None)
@given(problems().filter(lambda p: p[0].shape[1] <= 3))
def test_hypervolume_equals_cell_count_in_2d_and_3d(problem: tuple[np.ndarray, list[str]]) -> None:
    values, directions = problem
    reference = [-1.0 if d == "maximize" else 5.0 for d in directions]
    assert hypervolume(values, directions, reference) == pytest.approx(_grid_hypervolume(values, directions, reference))


def test_hypervolume_known_values() -> None:
    # Two rectangles 2x1 and 1x2 overlapping in a 1x1 square: 2 + 2 - 1 = 3.
    assert hypervolume([[1, 2], [2, 1]], ["minimize", "minimize"], [3, 3]) == pytest.approx(3.0)
    # One maximise, one minimise column: accuracy 0.9 at cost 10, reference (0, 20) -> 0.9 * 10.
    assert hypervolume([[0.9, 10.0]], ["maximize", "minimize"], [0.0, 20.0]) == pytest.approx(9.0)
    # A unit cube corner in 3-D and a dominated point that adds nothing.
    assert hypervolume([[0, 0, 0], [0.5, 0.5, 0.5]], ["minimize"] * 3, [1, 1, 1]) == pytest.approx(1.0)
    # 4-D: two boxes [0,2]x[0,1]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1]x[0,1] -> 2 + 2 - 1.
    four = hypervolume([[0, 1, 1, 1], [1, 0, 1, 1]], ["minimize"] * 4, [2, 2, 2, 2])
    assert four == pytest.approx(3.0)
    # A point outside the reference box contributes nothing.
    assert hypervolume([[4, 0]], ["minimize", "minimize"], [3, 3]) == 0.0
    assert hypervolume([], ["minimize", "minimize"], [3, 3]) == 0.0


def test_pick_by_objective_weights_and_knee() -> None:
    names = ["accuracy", "robustness", "cost"]
    directions = ["maximize", "maximize", "minimize"]
    values = np.array(
        [
            [0.95, 0.60, 900.0],  # most accurate
            [0.90, 0.80, 500.0],  # balanced: the knee
            [0.70, 0.50, 100.0],  # cheapest
            [0.80, 0.55, 950.0],  # dominated by row 0
            [0.89, 0.81, 520.0],  # most robust
        ]
    )
    assert pick(values, directions, by="accuracy", names=names) == 0
    assert pick(values, directions, by=1) == 4
    assert pick(values, directions, by="cost", names=names) == 2
    assert pick(values, directions, by="knee") == 1
    assert pick(values, directions, by="weights", weights=[0, 0, 1]) == 2
    assert pick(values, directions, by="weights", weights=[1, 0, 0]) == 0
    # Filters: only rows with cost <= 600 may be chosen.
    assert pick(values, directions, by="accuracy", names=names, mask=values[:, 2] <= 600) == 1
    with pytest.raises(ValueError, match="no row is allowed"):
        pick(values, directions, mask=values[:, 2] < 0)
    with pytest.raises(ValueError, match="unknown objective 'speed'"):
        pick(values, directions, by="speed", names=names)
    with pytest.raises(ValueError, match="one number per objective"):
        pick(values, directions, by="weights", weights=[1, 1])


def test_bad_directions_are_refused() -> None:
    with pytest.raises(ValueError, match="direction must be"):
        pareto_front([[1.0, 2.0]], ["max", "minimize"])
