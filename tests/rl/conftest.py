"""The environments of the hand-made batches (:mod:`hand_batches`), one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import pytest

import envs


def _made(env_id: str) -> Iterator[gym.Env]:
    env = gym.make(env_id)
    yield env
    env.close()


@pytest.fixture(scope="module")
def grid_env() -> Iterator[gym.Env]:
    """The 11 × 11 torus MDP (``envs.MDP_ENV_ID``)."""
    yield from _made(envs.MDP_ENV_ID)


@pytest.fixture(scope="module")
def taxi_env() -> Iterator[gym.Env]:
    """Taxi's MDP (``envs.TAXI_MDP_ENV_ID``)."""
    yield from _made(envs.TAXI_MDP_ENV_ID)
