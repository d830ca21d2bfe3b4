"""FIB and QMDP: tables from any pomdp-py model, bounds against exact values, convergence."""

from __future__ import annotations

import time

import numpy as np
import pomdp_py
import pytest

from envs import ToroidalGrid
from envs.tabular import build_problem
from imm_ray.restricted import as_tables, fib, qmdp, solve, tables_from_agent, tables_from_pair
from imm_ray.restricted.solvers import AlphaVectors, TabularPOMDP

# ---- a Tiger problem written directly against pomdp-py's interfaces ----------------------

LISTEN_ACCURACY = 0.85


class Name:
    """A hashable named state, action or observation."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name


class TigerState(Name, pomdp_py.State):
    pass


class TigerAction(Name, pomdp_py.Action):
    pass


class TigerObservation(Name, pomdp_py.Observation):
    pass


STATES = [TigerState("tiger-left"), TigerState("tiger-right")]
ACTIONS = [TigerAction("listen"), TigerAction("open-left"), TigerAction("open-right")]
OBSERVATIONS = [TigerObservation("hear-left"), TigerObservation("hear-right")]


class TigerTransition(pomdp_py.TransitionModel):
    def probability(self, next_state, state, action):
        if action.name == "listen":
            return float(next_state == state)
        return 0.5  # opening a door resets the tiger uniformly

    def get_all_states(self):
        return STATES


class TigerObservationModel(pomdp_py.ObservationModel):
    def probability(self, observation, next_state, action):
        if action.name != "listen":
            return 0.5
        correct = observation.name.split("-")[1] == next_state.name.split("-")[1]
        return LISTEN_ACCURACY if correct else 1 - LISTEN_ACCURACY

    def get_all_observations(self):
        return OBSERVATIONS


class TigerReward(pomdp_py.RewardModel):
    def sample(self, state, action, next_state):
        if action.name == "listen":
            return -1.0
        opened = action.name.split("-")[1]
        return -100.0 if state.name == f"tiger-{opened}" else 10.0


class TigerPolicy(pomdp_py.RolloutPolicy):
    def get_all_actions(self, state=None, history=None):
        return ACTIONS


def tiger_agent() -> pomdp_py.Agent:
    return pomdp_py.Agent(
        pomdp_py.Histogram({STATES[0]: 0.5, STATES[1]: 0.5}),
        TigerPolicy(),
        TigerTransition(),
        TigerObservationModel(),
        TigerReward(),
    )


def exact_value(agent: pomdp_py.Agent, discount: float, horizon: int) -> float:
    """pomdp-py's exact H-step value of the agent's belief (full belief-tree search)."""
    return pomdp_py.value(
        agent.belief,
        list(agent.all_states),
        list(agent.all_actions),
        list(agent.all_observations),
        agent.transition_model,
        agent.observation_model,
        agent.reward_model,
        discount,
        horizon=horizon,
    )


def belief_vector(agent: pomdp_py.Agent, states) -> np.ndarray:
    return np.array([agent.belief[s] for s in states])


# ---- reading models into tables -----------------------------------------------------------


def test_tiger_tables() -> None:
    tables = as_tables(tiger_agent())
    assert tables.states == tuple(STATES) and tables.actions == tuple(ACTIONS)
    assert np.array_equal(tables.transition[0], np.eye(2))
    assert np.allclose(tables.observation[0], [[0.85, 0.15], [0.15, 0.85]])
    assert np.array_equal(tables.reward, [[-1, -100, 10], [-1, 10, -100]])
    assert not tables.transition.flags.writeable


def test_pair_and_pomdp_py_routes_give_identical_tables() -> None:
    pair = ToroidalGrid(size=3, reward_variance=0.3)
    direct = tables_from_pair(pair)
    problem = build_problem(pair, seed=0)
    for enumerated in (tables_from_agent(problem.agent), as_tables(problem)):
        assert enumerated.states == direct.states
        assert enumerated.actions == direct.actions
        assert enumerated.observations == direct.observations
        for name in ("transition", "observation", "reward"):
            assert np.array_equal(getattr(enumerated, name), getattr(direct, name)), name


def test_tables_are_checked_and_copied() -> None:
    def tables(transition, observation=None, reward=None) -> TabularPOMDP:
        observation = np.ones((1, 2, 1)) if observation is None else observation
        reward = np.zeros((2, 1)) if reward is None else reward
        return TabularPOMDP(("s", "t"), ("a",), ("o",), transition, observation, reward)

    transition = np.full((1, 2, 2), 0.5)
    checked = tables(transition)
    transition[0, 0, 0] = 7.0
    assert checked.transition[0, 0, 0] == 0.5
    with pytest.raises(ValueError, match=r"transition must have shape \(1, 2, 2\)"):
        tables(np.ones((2, 2)))
    with pytest.raises(ValueError, match="transition must be non-negative with rows summing"):
        tables(transition)
    with pytest.raises(ValueError, match="observation must be non-negative with rows summing"):
        tables(checked.transition, observation=np.full((1, 2, 1), 2.0))
    with pytest.raises(ValueError, match="reward must be finite"):
        tables(checked.transition, reward=np.full((2, 1), np.nan))
    with pytest.raises(TypeError, match="model must be a TabularPOMDP"):
        fib("tiger", 0.9)


# ---- bounds: QMDP_H ≥ FIB_H ≥ V*_H ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "discount", "horizons"), [("tiger", 0.95, range(1, 6)), ("grid", 0.9, range(1, 4))]
)
def test_finite_horizon_bounds_against_exact_values(name, discount, horizons) -> None:
    """At the same horizon H (H backups from zero), QMDP ≥ FIB ≥ the exact optimum; one
    backup is the immediate reward for all three."""
    agent = tiger_agent() if name == "tiger" else build_problem(ToroidalGrid(size=3)).agent
    tables = as_tables(agent)
    belief = belief_vector(agent, tables.states)
    gaps = []
    for horizon in horizons:
        exact = exact_value(agent, discount, horizon)
        upper = fib(tables, discount, horizon=horizon).value(belief)
        looser = qmdp(tables, discount, horizon=horizon).value(belief)
        assert looser >= upper - 1e-9 and upper >= exact - 1e-9, (horizon, looser, upper, exact)
        if horizon == 1:
            assert looser == pytest.approx(exact) and upper == pytest.approx(exact)
        gaps.append((looser - upper, upper - exact))
    # Not vacuous: on Tiger FIB is strictly tighter than QMDP, and both bounds are loose.
    assert max(g[1] for g in gaps) > 1e-3
    if name == "tiger":
        assert max(g[0] for g in gaps) > 1e-3


@pytest.mark.parametrize("model", ["tiger", "grid"])
def test_infinite_horizon_qmdp_dominates_fib(model) -> None:
    tables = as_tables(tiger_agent()) if model == "tiger" else tables_from_pair(ToroidalGrid())
    upper, looser = fib(tables, 0.95), qmdp(tables, 0.95)
    assert upper.converged and looser.converged
    assert np.all(looser.alphas >= upper.alphas - 1e-6)


def test_on_the_deterministic_grid_fib_is_qmdp() -> None:
    """With T and O both deterministic each (s, a) has one observation, so FIB's
    Σ_o max_a' collapses to QMDP's max_a' over the one successor."""
    grid = ToroidalGrid(size=5)
    assert np.allclose(fib(grid, 0.9).alphas, qmdp(grid, 0.9).alphas, atol=1e-9)


# ---- convergence ---------------------------------------------------------------------------


def _fib_residual(alphas: np.ndarray, tables: TabularPOMDP, discount: float) -> float:
    """max |B(α) − α| with FIB's backup written out index by index."""
    inner = np.einsum("ato,ast,bt->asob", tables.observation, tables.transition, alphas)
    backed_up = tables.reward.T + discount * inner.max(axis=-1).sum(axis=-1)
    return float(np.max(np.abs(backed_up - alphas)))


@pytest.mark.parametrize("model", ["tiger", "grid"])
def test_fib_converges_below_tol(model) -> None:
    tables = as_tables(tiger_agent()) if model == "tiger" else tables_from_pair(ToroidalGrid())
    result = fib(tables, 0.9, tol=1e-8)
    assert result.converged and result.residual < 1e-8
    assert _fib_residual(result.alphas, tables, 0.9) < 1e-8
    assert result.discount == 0.9 and result.alphas.shape == (
        len(tables.actions),
        len(tables.states),
    )


def test_qmdp_is_the_mdp_q_function() -> None:
    tables = as_tables(tiger_agent())
    result = qmdp(tables, 0.9, tol=1e-10)
    backed_up = tables.reward.T + 0.9 * tables.transition @ result.alphas.max(axis=0)
    assert np.allclose(backed_up, result.alphas, atol=1e-9)


def test_max_iterations_warns_and_reports_not_converged() -> None:
    with pytest.warns(RuntimeWarning, match="fib stopped after max_iterations=3"):
        result = fib(tiger_agent(), 0.95, max_iterations=3)
    assert not result.converged and result.iterations == 3 and result.residual > 1e-8


def test_the_11x11_grid_solves_fast() -> None:
    start = time.perf_counter()
    result = fib(ToroidalGrid(), 0.9)
    assert time.perf_counter() - start < 1.0
    assert result.alphas.shape == (4, 121) and result.converged


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"discount": 1.0}, r"discount must be in \(0, 1\), got 1.0"),
        ({"discount": 0}, r"discount must be in \(0, 1\), got 0"),
        ({"discount": 1.5, "horizon": 3}, r"discount must be in \(0, 1\] for a finite horizon"),
        ({"discount": 0.9, "tol": 0.0}, "tol must be a finite number > 0, got 0.0"),
        ({"discount": 0.9, "max_iterations": 0}, "max_iterations must be an integer >= 1, got 0"),
        ({"discount": 0.9, "horizon": 0}, "horizon must be None or an integer >= 1, got 0"),
        ({"discount": 0.9, "horizon": 2.0}, "horizon must be None or an integer >= 1, got 2.0"),
    ],
)
def test_bad_settings_name_the_field_and_range(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        fib(tiger_agent(), **kwargs)
    with pytest.raises(ValueError, match=message):
        qmdp(tiger_agent(), **kwargs)


def test_undiscounted_finite_horizon_is_allowed() -> None:
    result = fib(tiger_agent(), 1.0, horizon=2)
    assert result.iterations == 2 and result.converged


def test_solve_dispatches_by_name() -> None:
    grid = ToroidalGrid(size=3)
    assert np.array_equal(solve(grid, "qmdp", 0.9).alphas, qmdp(grid, 0.9).alphas)
    with pytest.raises(ValueError, match="solver must be one of fib, qmdp, got 'pbvi'"):
        solve(grid, "pbvi", 0.9)


# ---- reading the vectors -------------------------------------------------------------------


def test_values_and_utilities() -> None:
    vectors = AlphaVectors(
        alphas=np.array([[1.0, 0.0], [0.0, 2.0]]),
        states=("s", "t"),
        actions=("a", "b"),
        iterations=1,
        residual=0.0,
        converged=True,
        discount=0.5,
    )
    beliefs = np.array([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2]])
    assert np.allclose(vectors.utilities(beliefs), [[1, 0], [0.5, 1], [0.8, 0.4]])
    assert vectors.value(beliefs[1]) == 1.0
    with pytest.raises(ValueError, match="beliefs must have 2 entries"):
        vectors.utilities(np.ones((2, 3)))


def test_pomdp_py_policy_agrees_with_our_utilities() -> None:
    agent = tiger_agent()
    result = fib(agent, 0.95)
    policy = result.to_policy()
    assert isinstance(policy, pomdp_py.AlphaVectorPolicy)
    for p_left in (0.5, 0.02, 0.98, 0.3):
        agent.set_belief(pomdp_py.Histogram({STATES[0]: p_left, STATES[1]: 1 - p_left}))
        belief = np.array([p_left, 1 - p_left])
        assert policy.plan(agent) == ACTIONS[int(np.argmax(result.utilities(belief)))]
        assert policy.value(agent.belief) == pytest.approx(result.value(belief))
    assert policy.plan(agent) == ACTIONS[0]  # unsure: listen


def test_grid_policy_moves_towards_the_centre_column() -> None:
    grid = ToroidalGrid()
    result = fib(grid, 0.9)
    utilities = result.utilities(grid.context_belief())
    best = utilities.argmax(axis=1)
    assert all(best[x] == 3 for x in range(5))  # right
    assert all(best[x] == 2 for x in range(6, 11))  # left
    assert best[5] in (0, 1) and utilities[5, 0] == pytest.approx(utilities[5, 1], abs=1e-12)


def test_fib_follows_each_successors_own_observations() -> None:
    """Successor states that emit different sets of observations (s' = 0 shows o0 or o1,
    s' = 1 shows o1 or o2): each (a, s') must pair with its own observations in the sparse
    backup. Two backups against FIB's operator written out index by index."""
    transition = np.array([[[0.7, 0.3], [0.2, 0.8]], [[0.5, 0.5], [1.0, 0.0]]])
    observation = np.array([[[0.6, 0.4, 0.0], [0.0, 0.1, 0.9]], [[0.3, 0.7, 0.0], [0.0, 0.5, 0.5]]])
    reward = np.array([[1.0, 0.0], [0.0, 2.0]])
    tables = TabularPOMDP(
        ("s", "t"), ("a", "b"), ("o0", "o1", "o2"), transition, observation, reward
    )
    one = reward.T
    inner = np.einsum("ato,ast,bt->asob", observation, transition, one)
    two = reward.T + 0.9 * inner.max(axis=-1).sum(axis=-1)
    assert np.allclose(fib(tables, 0.9, horizon=2).alphas, two, atol=1e-12)


def test_value_reads_a_belief_of_any_shape_with_one_entry_per_state() -> None:
    vectors = AlphaVectors(
        np.array([[1.0, 0.0], [0.0, 2.0]]), ("s", "t"), ("a", "b"), 1, 0.0, True, 0.5
    )
    assert vectors.value(np.array([[0.25], [0.75]])) == 1.5


def test_a_policy_needs_one_action_per_vector() -> None:
    vectors = AlphaVectors(np.zeros((2, 2)), ("s", "t"), ("a", "b", "c"), 1, 0.0, True, 0.5)
    with pytest.raises(ValueError, match="zip"):
        vectors.to_policy()


def test_pair_labels_hash_as_their_tuple() -> None:
    labels = tables_from_pair(ToroidalGrid(size=3)).states
    assert labels == tuple(labels) and hash(labels) == hash(tuple(labels))
    assert len({labels, tuple(labels)}) == 1


def test_tables_become_private_read_only_float64_arrays() -> None:
    transition, observation = np.eye(2, dtype=np.int64)[None], np.ones((1, 2, 1), dtype=np.int64)
    tables = TabularPOMDP(("s", "t"), ("a",), ("o",), transition, observation, np.zeros((2, 1)))
    for name, given in (("transition", transition), ("observation", observation)):
        table = getattr(tables, name)
        assert table is not given and table.dtype == np.float64 and not table.flags.writeable
    with pytest.raises(ValueError, match=r"observation must have shape \(1, 2, 1\)"):
        TabularPOMDP(("s", "t"), ("a",), ("o",), transition, np.ones((1, 2, 2)), np.zeros((2, 1)))
    # Rows that sum to 1 through a negative entry are no distribution.
    negative = np.array([[[1.5, -0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="transition must be non-negative"):
        TabularPOMDP(("s", "t"), ("a",), ("o",), negative, observation, np.zeros((2, 1)))


def test_rows_may_miss_one_by_the_stated_tolerance_and_no_more() -> None:
    # np.allclose(sums, 1, atol=1e-6) with its rtol of 1e-5: a row may be off by 1.1e-5
    # (a float32 table read from a file), not by 1.2e-5.
    observation = np.ones((1, 2, 1))
    for off, accepted in ((1.05e-5, True), (-1.05e-5, True), (1.2e-5, False)):
        transition = np.array([[[0.5, 0.5 + off], [0.0, 1.0]]])
        if accepted:
            TabularPOMDP(("s", "t"), ("a",), ("o",), transition, observation, np.zeros((2, 1)))
        else:
            with pytest.raises(ValueError, match="rows summing to 1"):
                TabularPOMDP(("s", "t"), ("a",), ("o",), transition, observation, np.zeros((2, 1)))


def _self_loop(reward: float = 1.0) -> TabularPOMDP:
    """One state, one action, one observation: α_k = r·(1 + γ + … + γ^(k−1))."""
    ones = np.ones((1, 1, 1))
    return TabularPOMDP(("s",), ("a",), ("o",), ones, ones, np.full((1, 1), reward))


def test_backups_go_on_while_the_residual_is_at_least_tol() -> None:
    # γ = 0.5, r = 1: residuals 1, 0.5, 0.25, 0.125 (exact in binary), tol = 0.25.
    result = qmdp(_self_loop(), 0.5, tol=0.25)
    assert result.iterations == 4 and result.residual == 0.125 and result.converged
    assert result.alphas.tolist() == [[1.875]] and not result.alphas.flags.writeable
    with pytest.warns(RuntimeWarning, match="qmdp stopped after max_iterations=3"):
        stopped = qmdp(_self_loop(), 0.5, tol=0.25, max_iterations=3)
    assert stopped.residual == 0.25 and not stopped.converged


def test_default_tolerance_and_iteration_limit() -> None:
    assert 0 < qmdp(_self_loop(), 0.9).residual < 1e-8
    with pytest.warns(RuntimeWarning, match="max_iterations=10000 "):
        slow = qmdp(_self_loop(), 0.9999)
    assert slow.iterations == 10_000


def test_numpy_scalars_are_accepted_as_settings() -> None:
    settings = {"tol": np.float32(1e-6), "max_iterations": np.int64(1000)}
    assert qmdp(_self_loop(), np.float32(0.5), **settings).converged
    assert qmdp(_self_loop(), np.float32(0.5), horizon=np.int64(2)).alphas.tolist() == [[1.5]]
    with pytest.raises(ValueError, match=r"discount must be in \(0, 1\] for a finite horizon"):
        qmdp(_self_loop(), 0.0, horizon=2)
