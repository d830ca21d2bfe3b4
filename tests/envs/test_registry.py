"""Env ids → pairs: both ids of a pair, env configs, errors, and registering a new pair."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

import envs
from envs import ToroidalGrid, ToroidalGridEnv, make_pair, register_pair
from envs import registry as registry_module


def test_known_ids() -> None:
    assert envs.known_env_ids() == (
        envs.MDP_ENV_ID,
        envs.POMDP_ENV_ID,
        envs.TAXI_MDP_ENV_ID,
        envs.TAXI_POMDP_ENV_ID,
    )
    assert envs.MDP_ENV_ID == "imm_ray/ToroidalGrid-v0"
    assert envs.POMDP_ENV_ID == "imm_ray/ToroidalGridPOMDP-v0"
    assert envs.MDP_ENV_ID in gym.registry and envs.POMDP_ENV_ID in gym.registry


@pytest.mark.parametrize("env_id", [envs.MDP_ENV_ID, envs.POMDP_ENV_ID])
def test_both_ids_map_to_the_pair_with_its_config(env_id) -> None:
    assert make_pair(env_id) == ToroidalGrid()
    config = {"size": 5, "reward_variance": 0.3, "trajectory_length": 9, "render_mode": "ansi"}
    assert make_pair(env_id, config) == ToroidalGrid(5, 0.3, 9)


def test_the_pair_is_the_one_the_env_builds() -> None:
    config = {"size": 6, "reward_variance": 0.2}
    assert gym.make(envs.MDP_ENV_ID, **config).unwrapped.pair == make_pair(envs.MDP_ENV_ID, config)


def test_unknown_id_lists_the_known_ones() -> None:
    message = (
        "unknown env id 'foo'; known ids: imm_ray/ToroidalGrid-v0, imm_ray/ToroidalGridPOMDP-v0, "
        "imm_ray/Taxi-v0, imm_ray/TaxiPOMDP-v0"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_pair("foo")


def test_unknown_config_key_lists_the_allowed_ones() -> None:
    message = (
        "unknown env_config key 'sise' for imm_ray/ToroidalGrid-v0; "
        "allowed keys: render_mode, reward_variance, size, trajectory_length"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_pair(envs.MDP_ENV_ID, {"sise": 5})


def test_bad_config_values_fail_in_the_pair() -> None:
    with pytest.raises(ValueError, match="size must be an integer >= 2, got 1"):
        make_pair(envs.POMDP_ENV_ID, {"size": 1})


def test_registering_is_idempotent_and_refuses_conflicts() -> None:
    before = dict(gym.registry)
    register_pair(envs.MDP_ENV_ID, envs.POMDP_ENV_ID, ToroidalGrid, ToroidalGridEnv)
    assert dict(gym.registry) == before
    assert envs.known_env_ids() == (
        envs.MDP_ENV_ID,
        envs.POMDP_ENV_ID,
        envs.TAXI_MDP_ENV_ID,
        envs.TAXI_POMDP_ENV_ID,
    )
    with pytest.raises(ValueError, match="already registered for another pair"):
        register_pair(envs.MDP_ENV_ID, "imm_ray/Other-v0", ToroidalGrid, ToroidalGridEnv)
    assert "imm_ray/Other-v0" not in gym.registry


def test_a_new_pair_is_one_call(monkeypatch) -> None:
    monkeypatch.setattr(registry_module, "_SPECS", dict(registry_module._SPECS))
    ids = ("imm_ray/TestGrid-v0", "imm_ray/TestGridPOMDP-v0")
    try:
        register_pair(*ids, ToroidalGrid, ToroidalGridEnv)
        assert envs.known_env_ids()[-2:] == ids
        assert make_pair(ids[1], {"size": 3}) == ToroidalGrid(size=3)
        assert gym.make(ids[1], size=3).observation_space == gym.spaces.Discrete(3)
    finally:
        for env_id in ids:
            gym.registry.pop(env_id, None)
