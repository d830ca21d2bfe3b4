"""The toroidal grid: its spec's tables, the gym MDP env and its POMDP view."""

from __future__ import annotations

import math
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs import ACTION_NAMES, ContextObservation, ToroidalGrid, ToroidalGridEnv


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 1}, "size must be an integer >= 2, got 1"),
        ({"size": 3.0}, "size must be an integer >= 2, got 3.0"),
        ({"size": True}, "size must be an integer >= 2, got True"),
        ({"reward_variance": -1.0}, "reward_variance must be a finite number > 0, got -1.0"),
        ({"reward_variance": math.inf}, "reward_variance must be a finite number > 0, got inf"),
        ({"reward_variance": "0.1"}, "reward_variance must be a finite number > 0, got '0.1'"),
        ({"trajectory_length": 0}, "trajectory_length must be an integer >= 1, got 0"),
    ],
)
def test_bad_parameters_name_the_field_and_range(kwargs, message) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ToroidalGrid(**kwargs)
    with pytest.raises(ValueError, match="must be"):
        ToroidalGridEnv(**kwargs)


def test_numpy_scalars_give_the_same_hashable_pair() -> None:
    grid = ToroidalGrid(np.int64(5), np.float32(0.5), np.int64(7))
    assert grid == ToroidalGrid(5, 0.5, 7) and hash(grid) == hash(ToroidalGrid(5, 0.5, 7))
    assert type(grid.size) is int and type(grid.reward_variance) is float


def test_sizes() -> None:
    grid = ToroidalGrid(size=4)
    assert (grid.n_states, grid.n_actions, grid.n_contexts) == (16, 4, 4)
    assert ACTION_NAMES == ("up", "down", "left", "right")


def test_moves_wrap_around_the_torus() -> None:
    grid = ToroidalGrid(size=4)
    nxt = grid.next_state_table()

    def state(x: int, y: int) -> int:
        return x * 4 + y

    assert [nxt[a, state(1, 2)] for a in range(4)] == [
        state(1, 3),
        state(1, 1),
        state(0, 2),
        state(2, 2),
    ]
    assert [nxt[a, state(0, 0)] for a in range(4)] == [
        state(0, 1),
        state(0, 3),
        state(3, 0),
        state(1, 0),
    ]
    assert [nxt[a, state(3, 3)] for a in range(4)] == [
        state(3, 0),
        state(3, 2),
        state(2, 3),
        state(0, 3),
    ]


def test_transitions_are_deterministic_and_follow_the_next_state_table() -> None:
    grid = ToroidalGrid(size=5)
    table = grid.transition_matrix()
    assert table.shape == (4, 25, 25)
    assert np.array_equal(table.sum(-1), np.ones((4, 25)))
    assert np.array_equal(table.argmax(-1), grid.next_state_table())


def test_reward_is_the_normalized_gaussian_density() -> None:
    grid = ToroidalGrid()
    rewards = grid.reward_grid()
    assert rewards.shape == (11, 11)
    assert rewards[5, 5] == pytest.approx(1 / (2 * math.pi * 0.1))  # ≈ 1.59
    assert rewards[5, 5] == pytest.approx(1.5915, abs=1e-4)
    u = np.linspace(-2, 2, 11)
    expected = math.exp(-(u[2] ** 2 + u[9] ** 2) / 0.2) / (0.2 * math.pi)
    assert rewards[2, 9] == pytest.approx(expected, rel=1e-12)
    # linspace is symmetric only up to rounding, hence allclose.
    assert np.array_equal(rewards, rewards.T) and np.allclose(rewards, rewards[::-1], rtol=1e-12)


def test_reward_depends_on_the_arrival_state_only() -> None:
    grid = ToroidalGrid(size=3, reward_variance=0.3)
    table = grid.reward_matrix()
    assert np.array_equal(table, np.broadcast_to(grid.state_reward(), (4, 9, 9)))
    expected = grid.state_reward()[grid.next_state_table()].T
    assert np.allclose(grid.expected_reward(), expected)


def test_observations_project_and_invert() -> None:
    grid = ToroidalGrid(size=4)
    obs = grid.state_observation()
    assert obs.dtype == np.int64 and obs.shape == (16, 2)
    assert obs[4 * 2 + 3].tolist() == [2, 3]
    assert np.array_equal(grid.state_context(), obs[:, 0])
    states = torch.arange(16)
    assert torch.equal(grid.observation_state(torch.as_tensor(obs)), states)
    assert torch.equal(grid.observation_state(torch.as_tensor(obs, dtype=torch.float32)), states)
    batched = torch.as_tensor(obs).reshape(2, 8, 2)
    assert torch.equal(grid.observation_state(batched), states.reshape(2, 8))


def test_context_belief_is_uniform_over_y() -> None:
    grid = ToroidalGrid(size=3)
    belief = grid.context_belief()
    assert np.allclose(belief[1], [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    states, weights = grid.extension_table
    assert states.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert np.allclose(weights, 1 / 3)


def test_env_steps_with_the_spec_and_truncates() -> None:
    env = ToroidalGridEnv(size=5, trajectory_length=3)
    obs, info = env.reset(seed=0, options={"state": 2 * 5 + 4})
    assert obs.tolist() == [2, 4] and info == {}
    obs, reward, terminated, truncated, _ = env.step(0)  # up wraps y = 4 → 0
    assert obs.tolist() == [2, 0] and env.state == 10
    assert reward == env.pair.reward_grid()[2, 0] and not terminated and not truncated
    obs, _, _, truncated, _ = env.step(np.int64(2))
    assert obs.tolist() == [1, 0] and not truncated
    _, _, terminated, truncated, _ = env.step(3)
    assert truncated and not terminated


def test_reset_is_seeded_and_covers_the_grid() -> None:
    env = ToroidalGridEnv(size=3)
    starts = [tuple(env.reset(seed=seed)[0]) for seed in range(200)]
    assert starts[:20] == [tuple(env.reset(seed=seed)[0]) for seed in range(20)]
    assert len(set(starts)) == 9


def test_env_rejects_bad_actions_render_modes_and_starts() -> None:
    env = ToroidalGridEnv(size=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be in"):
        env.step(4)
    with pytest.raises(ValueError, match="render_mode must be None or 'ansi'"):
        ToroidalGridEnv(render_mode="human")
    with pytest.raises(ValueError, match=r"options\['state'\] must be < 9, got 9"):
        env.reset(options={"state": 9})


def test_ansi_render_marks_the_agent() -> None:
    env = ToroidalGridEnv(size=3, render_mode="ansi")
    env.reset(options={"state": 1 * 3 + 2})
    assert env.render() == ". A .\n. . .\n. . .\n"


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped")
@pytest.mark.filterwarnings("ignore:.*Not able to test alternative render modes")
@pytest.mark.parametrize("render_mode", [None, "ansi"])
def test_gymnasium_env_checker_passes(render_mode) -> None:
    check_env(ToroidalGridEnv(size=5, render_mode=render_mode))
    check_env(ContextObservation(ToroidalGridEnv(size=5, render_mode=render_mode)))


def test_pomdp_view_observes_x_only() -> None:
    env = ContextObservation(ToroidalGridEnv(size=5))
    assert env.observation_space == gym.spaces.Discrete(5)
    obs, _ = env.reset(options={"state": 3 * 5 + 1})
    assert obs == 3 and isinstance(obs, np.int64)
    obs, *_ = env.step(0)
    assert obs == 3
    obs, *_ = env.step(3)
    assert obs == 4


def test_pomdp_view_needs_a_pair() -> None:
    with pytest.raises(TypeError, match="unwrapped.pair is a PomdpMdpPair"):
        ContextObservation(gym.make("CartPole-v1"))


def test_registered_ids_make_both_views_with_kwargs() -> None:
    mdp = gym.make(envs.MDP_ENV_ID, size=5, trajectory_length=7)
    assert mdp.unwrapped.pair == ToroidalGrid(size=5, trajectory_length=7)
    assert mdp.observation_space == gym.spaces.MultiDiscrete([5, 5])
    pomdp = gym.make(envs.POMDP_ENV_ID, size=5)
    assert pomdp.observation_space == gym.spaces.Discrete(5)
    obs, _ = pomdp.reset(seed=1)
    assert pomdp.observation_space.contains(obs)
