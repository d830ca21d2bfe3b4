"""Taxi: the pair's tables are gymnasium's Taxi-v3, its env replays gymnasium's, its POMDP
view hides the destination, and its belief respects the start distribution."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.pair import PomdpMdpPair
from envs.tabular import Action, State, build_problem
from envs.taxi import IN_TAXI, TAXI_NVEC


@pytest.fixture(scope="module")
def pair() -> envs.Taxi:
    return envs.Taxi()


@pytest.fixture(scope="module")
def gym_taxi():
    env = gym.make("Taxi-v3")
    yield env
    env.close()


def test_tables_are_gymnasiums_p(pair, gym_taxi):
    p = gym_taxi.unwrapped.P
    next_state, reward = pair.next_state_table(), pair.state_action_reward()
    terminal = pair.terminal_states()
    assert terminal.sum() == 100  # 25 cells × the passenger at each of its 4 destinations
    transition = pair.transition_matrix()
    for s in np.flatnonzero(~terminal):
        for a in range(pair.n_actions):
            ((prob, s_next, r, done),) = p[s][a]
            assert (prob, next_state[a, s], reward[s, a]) == (1.0, s_next, r)
            assert done == terminal[s_next]
            assert transition[a, s, s_next] == 1.0
    np.testing.assert_array_equal(pair.initial_belief(), gym_taxi.unwrapped.initial_state_distrib)


def test_terminal_states_are_absorbing_with_reward_zero(pair):
    terminal = np.flatnonzero(pair.terminal_states())
    transition, reward = pair.transition_matrix(), pair.reward_matrix()
    assert np.all(transition[:, terminal, terminal] == 1.0)
    assert np.all(reward[:, terminal] == 0.0)
    np.testing.assert_allclose(transition.sum(axis=-1), 1.0)
    # The reward is on (s, a): the same for every s'.
    assert np.all(reward == reward[:, :, :1])


def test_start_distribution_is_not_uniform(pair):
    start = pair.initial_belief()
    _, _, passenger, destination = pair.coordinates().T
    assert np.count_nonzero(start) == 300
    assert np.all(start[passenger == IN_TAXI] == 0) and np.all(start[passenger == destination] == 0)
    np.testing.assert_allclose(start[start > 0], 1 / 300)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_env_replays_gymnasium_taxi_on_random_actions(gym_taxi, seed):
    ours = gym.make(envs.TAXI_MDP_ENV_ID)
    rng = np.random.default_rng(seed)
    state, _ = gym_taxi.reset(seed=seed)
    obs, _ = ours.reset(seed=seed)
    ends = 0
    for _ in range(600):
        assert ours.unwrapped.pair.observation_state(obs[None])[0] == state
        assert tuple(obs) == tuple(gym_taxi.unwrapped.decode(state))
        action = int(rng.integers(6))
        state, reward, terminated, truncated, _ = gym_taxi.step(action)
        obs, our_reward, our_terminated, our_truncated, _ = ours.step(action)
        assert (our_reward, our_terminated, our_truncated) == (reward, terminated, truncated)
        if terminated or truncated:
            ends += 1
            reset_seed = int(rng.integers(2**31))
            state, _ = gym_taxi.reset(seed=reset_seed)
            obs, _ = ours.reset(seed=reset_seed)
    assert ends >= 2  # 600 random steps cross at least the 200-step truncation twice


def test_replay_covers_termination(gym_taxi):
    """From a state next to delivery both envs terminate with +20 on the dropoff."""
    ours = envs.TaxiEnv()
    row, col = 0, 0  # stand R
    start = gym_taxi.unwrapped.encode(row, col, IN_TAXI, 0)
    ours.reset(options={"state": start})
    gym_taxi.reset(seed=0)
    gym_taxi.unwrapped.s = start
    assert gym_taxi.step(5)[1:3] == ours.step(5)[1:3] == (20, True)
    assert ours.step(0)[1:3] == (0.0, True)  # stepping on stays put and pays nothing


def test_pomdp_view_hides_the_destination(pair):
    pomdp = gym.make(envs.TAXI_POMDP_ENV_ID)
    assert pomdp.observation_space == gym.spaces.Discrete(125)
    context, _ = pomdp.reset(seed=4)
    row, col, passenger, _ = pomdp.unwrapped._observation[pomdp.unwrapped.state]
    assert context == (row * 5 + col) * 5 + passenger
    np.testing.assert_array_equal(pair.state_context(), np.arange(500) // 4)


def test_context_belief_respects_the_start_distribution(pair):
    belief = pair.context_belief()
    coords = pair.coordinates()
    np.testing.assert_allclose(belief.sum(axis=1), 1.0)
    assert np.all(belief[:, pair.terminal_states()] == 0)
    for c in range(pair.n_contexts):
        support = coords[belief[c] > 0]
        passenger = c % 5
        assert np.all(support[:, 2] == passenger) and len(np.unique(support[:, :2], axis=0)) == 1
        if passenger == IN_TAXI:  # the pickup stand is forgotten: any destination
            np.testing.assert_allclose(belief[c][belief[c] > 0], 1 / 4)
            assert sorted(support[:, 3]) == [0, 1, 2, 3]
        else:  # never where the passenger waits
            np.testing.assert_allclose(belief[c][belief[c] > 0], 1 / 3)
            assert passenger not in support[:, 3]
    states, weights = pair.extension_table
    assert states.shape == (125, TAXI_NVEC[-1])
    # The default (start distribution given the context) has nothing for in-taxi contexts.
    with pytest.raises(ValueError, match="have no state with positive initial belief"):
        PomdpMdpPair.context_belief(pair)


def test_tabular_model_reads_the_same_tables(pair):
    problem = build_problem(pair, init_state=pair.coordinates().tolist().index([0, 0, 4, 0]))
    agent = problem.agent
    s = State(((1 * 5 + 1) * 5 + 0) * 4 + 1)  # taxi at (1, 1), passenger waiting at R
    next_state = int(pair.next_state_table()[0, s.index])
    assert agent.transition_model.probability(State(next_state), s, Action(0)) == 1.0
    assert agent.reward_model.sample(s, Action(4), s) == -10.0  # no passenger here to pick up
    assert agent.reward_model.sample(s, Action(0), State(next_state)) == -1.0


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="trajectory_length must be an integer >= 1, got 0"):
        envs.Taxi(trajectory_length=0)
    with pytest.raises(ValueError, match="allowed keys: trajectory_length"):
        envs.make_pair(envs.TAXI_MDP_ENV_ID, {"size": 5})
    assert envs.make_pair(envs.TAXI_POMDP_ENV_ID, {"trajectory_length": 30}) == envs.Taxi(30)
