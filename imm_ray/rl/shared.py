"""What the single-seed (:mod:`imm_ray.rl`) and seed-vectorized (:mod:`imm_ray.rl.seeds`)
REINFORCE paths share: the paper's config defaults and their checks.

Each path calls these instead of keeping its own copy, so the two compute the same thing
with the same operations in the same order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import envs


def fail(field: str, value: Any, allowed: str) -> None:
    """Raises the configs' one error form: ``{field} must be {allowed}, got {value!r}``."""
    raise ValueError(f"{field} must be {allowed}, got {value!r}")


def check_int(field: str, value: Any, minimum: int) -> None:
    """Fails unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        fail(field, value, f"an integer >= {minimum}")


def set_paper_defaults(config: Any) -> None:
    """The paper's RL setting (App. D.3) on an ``AlgorithmConfig``: the grid MDP, Adam at
    lr 1e-2, γ = 0.9, sampling on the local EnvRunner."""
    config.environment(env=envs.MDP_ENV_ID)
    config.lr = 1e-2
    config.gamma = 0.9
    config.num_env_runners = 0


def check_lr_and_gamma(config: Any) -> None:
    """Fails unless ``config.lr > 0`` (a schedule is RLlib's to check) and γ ∈ [0, 1]."""
    if isinstance(config.lr, int | float) and not config.lr > 0:
        fail("lr", config.lr, "> 0")
    if not 0.0 <= config.gamma <= 1.0:
        fail("gamma", config.gamma, "in [0, 1]")
