"""Restricted policies P̂(a | x̄) read off alpha vectors: argmax, softmax, ε mixing, checks."""

from __future__ import annotations

import numpy as np
import pytest

from envs import ToroidalGrid
from imm_ray.restricted import (
    AlphaVectors,
    context_utilities,
    fib,
    restricted_policy,
    solve_restricted_policy,
    validate_policy_table,
)

UTILITIES = np.array([[1.0, 3.0, 2.0], [-1.0, -2.0, 0.0]])


def test_argmax_is_one_hot_of_the_best_action() -> None:
    assert np.array_equal(restricted_policy(UTILITIES), [[0, 1, 0], [0, 0, 1]])


def test_near_ties_go_to_the_lowest_action_index() -> None:
    big = 1e6
    utilities = np.array(
        [
            [1.0, 1.0 + 1e-12, 0.0],  # float noise: tied, action 0 wins
            [1.0, 1.0 + 1e-6, 0.0],  # a real difference: action 1 wins
            [big, big * (1 + 5e-10), 0.0],  # the tolerance scales with |max|
            [0.0, 0.0, 0.0],
        ]
    )
    assert restricted_policy(utilities).argmax(axis=1).tolist() == [0, 1, 0, 0]


def test_softmax_with_temperature() -> None:
    policy = restricted_policy(UTILITIES, kind="softmax", temperature=0.5)
    expected = np.exp(UTILITIES / 0.5)
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(policy, expected, atol=1e-15)
    flat = restricted_policy(UTILITIES, kind="softmax", temperature=1e6)
    assert np.allclose(flat, 1 / 3, atol=1e-5)
    huge = restricted_policy(UTILITIES * 1e4, kind="softmax", temperature=1e-3)
    assert np.isfinite(huge).all() and np.array_equal(huge, restricted_policy(UTILITIES))


def test_epsilon_mixes_with_uniform() -> None:
    mixed = restricted_policy(UTILITIES, epsilon=0.3)
    assert np.allclose(mixed, 0.7 * np.array([[0, 1, 0], [0, 0, 1]]) + 0.1)
    assert np.allclose(restricted_policy(UTILITIES, kind="softmax", epsilon=1.0), 1 / 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "max"}, "kind must be one of argmax, softmax, got 'max'"),
        ({"temperature": 0.0}, r"temperature must be > 0, got 0.0"),
        ({"temperature": float("inf")}, r"temperature must be > 0, got inf"),
        ({"epsilon": 1.5}, r"epsilon must be in \[0, 1\], got 1.5"),
        ({"epsilon": -0.1}, r"epsilon must be in \[0, 1\], got -0.1"),
    ],
)
def test_bad_policy_settings(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        restricted_policy(UTILITIES, **kwargs)
    with pytest.raises(ValueError, match=message):
        solve_restricted_policy(ToroidalGrid(size=3), **kwargs)


def test_bad_utilities() -> None:
    with pytest.raises(ValueError, match=r"utilities must have shape \[C, A\]"):
        restricted_policy(np.ones(3))
    with pytest.raises(ValueError, match="utilities must be finite"):
        restricted_policy(np.array([[1.0, np.nan]]))


def test_context_utilities_average_over_the_hidden_coordinate() -> None:
    grid = ToroidalGrid(size=3)
    alphas = fib(grid, 0.9)
    utilities = context_utilities(grid, alphas)
    assert utilities.shape == (3, 4)
    assert np.allclose(utilities[1], alphas.alphas[:, 3:6].mean(axis=1))
    wrong = AlphaVectors(np.zeros((4, 4)), (), (), 0, 0.0, True, 0.9)
    with pytest.raises(ValueError, match=r"alphas must have shape \(4, 9\)"):
        context_utilities(grid, wrong)


def test_validate_policy_table() -> None:
    table = [[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]]
    checked = validate_policy_table(table, 3, 2)
    assert checked.dtype == np.float64 and checked.flags.writeable
    assert np.array_equal(checked, table)
    source = np.array(table)
    assert validate_policy_table(source, 3, 2) is not source


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (np.full((2, 2), 0.5), r"my_target must have shape \(3, 2\), got \(2, 2\)"),
        (np.full(6, 0.5), r"my_target must have shape \(3, 2\), got \(6,\)"),
        ([[0.5, 0.5], [np.inf, 0.0], [0.5, 0.5]], "my_target must be finite"),
        ([[0.5, 0.5], [0.5, 0.5], [1.5, -0.5]], "my_target must be non-negative, row 2"),
        ([[0.5, 0.5], [0.5, 0.4], [0.5, 0.5]], "my_target rows must sum to 1, row 1 sums to 0.9"),
        ([["a", "b"]] * 3, "my_target must be a numeric array"),
    ],
)
def test_validate_policy_table_errors(table, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_policy_table(table, 3, 2, field="my_target")


def test_grid_target_moves_towards_the_centre_and_up_at_the_centre() -> None:
    table = solve_restricted_policy(ToroidalGrid())
    assert table.shape == (11, 4) and np.allclose(table.sum(axis=1), 1.0)
    # right (3) left of the centre column, left (2) right of it; up (0) wins the exact
    # up/down tie at x = 5 by the lowest-index rule.
    assert table.argmax(axis=1).tolist() == [3] * 5 + [0] + [2] * 5
    assert np.array_equal(table, np.eye(4)[table.argmax(axis=1)])


def test_softmax_grid_target_is_symmetric_in_up_and_down() -> None:
    table = solve_restricted_policy(ToroidalGrid(), kind="softmax", temperature=0.5)
    assert np.allclose(table[:, 0], table[:, 1]) and np.allclose(table.sum(axis=1), 1.0)
    assert np.allclose(table[3, [0, 1, 3, 2]], table[7], atol=1e-9)  # mirror x → 10 − x
    assert (table[:5, 3] > 0.5).all() and (table[6:, 2] > 0.5).all()


def test_solutions_are_cached_and_read_only() -> None:
    grid = ToroidalGrid(size=5)
    first = solve_restricted_policy(grid, solver="qmdp", epsilon=0.1)
    assert solve_restricted_policy(ToroidalGrid(size=5), solver="qmdp", epsilon=0.1) is first
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0
    assert np.allclose(first.min(), 0.1 / 4)
