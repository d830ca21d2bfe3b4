"""The shared gym env steps any deterministic pair from its tables: a new pair writes no
``step``, and the tables it reads default to what its transition and reward matrices say."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from envs import Taxi, ToroidalGrid
from envs.pair import PomdpMdpPair
from envs.tabular_env import TabularEnv


@dataclass(frozen=True)
class Chain(PomdpMdpPair):
    """Three states in a row: action 1 moves right (paying 2 when it reaches the terminal
    state 2), action 0 stays (paying -1). Only the abstract tables are written."""

    trajectory_length: int = 4
    stochastic: bool = False

    n_states = 3
    n_actions = 2
    n_contexts = 1

    def transition_matrix(self) -> np.ndarray:
        table = np.zeros((2, 3, 3))
        table[0] = np.eye(3)
        table[1] = np.eye(3, k=1)
        table[1, 2, 2] = 1.0
        if self.stochastic:
            table[1, 0] = [0.5, 0.5, 0.0]
        return table

    def reward_matrix(self) -> np.ndarray:
        table = np.zeros((2, 3, 3))
        table[0, :2] = -1.0
        table[1, 1, 2] = 2.0
        return table

    def terminal_states(self) -> np.ndarray:
        return np.array([False, False, True])

    def initial_belief(self) -> np.ndarray:
        return np.array([0.25, 0.75, 0.0])

    def state_context(self) -> np.ndarray:
        return np.zeros(3, dtype=np.int64)

    def state_observation(self) -> np.ndarray:
        return np.arange(3, dtype=np.int64)[:, None]

    def observation_state(self, obs):
        return obs[..., 0]


class ChainEnv(TabularEnv):
    metadata = {"render_modes": []}

    def __init__(self, trajectory_length: int = 4, stochastic: bool = False) -> None:
        self.pair = Chain(trajectory_length, stochastic)
        self.observation_space = spaces.MultiDiscrete([3], dtype=np.int64)
        self.action_space = spaces.Discrete(2)
        self._start_tables()


def test_default_tables_come_from_the_matrices() -> None:
    pair = Chain()
    assert pair.next_state_table().tolist() == [[0, 1, 2], [1, 2, 2]]
    assert pair.next_reward_table().tolist() == [[-1.0, -1.0, 0.0], [0.0, 2.0, 0.0]]
    with pytest.raises(ValueError, match="Chain has stochastic transitions"):
        Chain(stochastic=True).next_state_table()


@pytest.mark.parametrize("pair", [ToroidalGrid(size=5), Taxi()], ids=["grid", "taxi"])
def test_overrides_equal_the_defaults(pair) -> None:
    assert np.array_equal(pair.next_state_table(), PomdpMdpPair.next_state_table(pair))
    assert np.array_equal(pair.next_reward_table(), PomdpMdpPair.next_reward_table(pair))


def test_a_pair_without_a_step_steps_terminates_and_truncates() -> None:
    env = ChainEnv()
    obs, info = env.reset(options={"state": 0})
    assert obs.tolist() == [0] and info == {}
    assert env.step(0)[1:] == (-1.0, False, False, {})
    obs, reward, terminated, truncated, _ = env.step(1)
    assert (obs.tolist(), reward, terminated, truncated) == ([1], 0.0, False, False)
    obs, reward, terminated, truncated, _ = env.step(1)
    assert (obs.tolist(), reward, terminated, truncated) == ([2], 2.0, True, False)
    obs, reward, terminated, truncated, _ = env.step(0)  # absorbing, pays 0
    assert (obs.tolist(), reward, terminated, truncated) == ([2], 0.0, True, True)


@pytest.mark.filterwarnings("ignore:.*Not able to test alternative render modes")
def test_random_starts_follow_the_initial_belief() -> None:
    env = ChainEnv()
    starts = np.array([env.reset(seed=seed)[0][0] for seed in range(400)])
    assert set(starts.tolist()) == {0, 1}
    assert 0.65 < (starts == 1).mean() < 0.85
    assert check_env(ChainEnv()) is None
