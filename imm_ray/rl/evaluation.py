"""Policy evaluation as in the paper (App. D.3): sampled rollouts, undiscounted return.

Evaluation draws its starts and its actions from generators keyed by (seed, epoch), apart
from training's: evaluating at 50 epochs and training on to 100 gives the same 100-epoch
policy as not evaluating at all, and a seed's figure at E epochs is the same whichever
other epoch counts were evaluated before.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

import envs
from imm_ray.rl.streams import EVAL_STREAM, stream_seed

#: Evaluation rollout length on an env that is not a registered pair (the paper's 22).
DEFAULT_EVALUATION_HORIZON = 22


def evaluation_horizon_for(horizon: int | None, env: object, env_config: dict | None) -> int:
    """The steps of an evaluation rollout: ``horizon`` if set, else the registered pair's
    ``evaluation_horizon`` (22 on the grid, a whole 200-step episode on Taxi), else 22."""
    if horizon is not None:
        return int(horizon)
    if isinstance(env, str) and env in envs.known_env_ids():
        return int(envs.make_pair(env, env_config).evaluation_horizon)
    return DEFAULT_EVALUATION_HORIZON


class RolloutEvaluator:
    """Runs ``num_rollouts`` parallel rollouts of ``horizon`` steps with sampled actions.

    Every rollout starts from the env's own reset distribution (uniform on the grid).
    Returns are undiscounted sums; a rollout that terminates or truncates early stops
    accumulating.
    """

    def __init__(self, make_env: Callable[[], gym.Env], num_rollouts: int, horizon: int) -> None:
        if num_rollouts < 1:
            raise ValueError(f"evaluation_num_rollouts must be >= 1, got {num_rollouts}")
        if horizon < 1:
            raise ValueError(f"evaluation_horizon must be >= 1, got {horizon}")
        self.envs = gym.vector.SyncVectorEnv([make_env] * num_rollouts)
        self.horizon = horizon

    def __call__(self, module: RLModule, seed: int, epoch: int) -> np.ndarray:
        """Undiscounted return of each rollout of ``module`` (trained ``epoch`` epochs of run
        ``seed``), shape ``[num_rollouts]``."""
        key = stream_seed(seed, EVAL_STREAM, epoch)
        generator = torch.Generator().manual_seed(key)
        starts = np.random.SeedSequence(key).generate_state(self.envs.num_envs, np.uint64)
        obs, _ = self.envs.reset(seed=[int(s) for s in starts])
        returns = np.zeros(self.envs.num_envs)
        alive = np.ones(self.envs.num_envs, dtype=bool)
        for _ in range(self.horizon):
            with torch.no_grad():
                logits = module.forward_inference({Columns.OBS: torch.as_tensor(obs)})[
                    Columns.ACTION_DIST_INPUTS
                ]
            actions = torch.multinomial(
                torch.softmax(logits, dim=-1), 1, generator=generator
            ).squeeze(-1)
            obs, rewards, terminated, truncated, _ = self.envs.step(actions.numpy())
            returns += np.where(alive, rewards, 0.0)
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
        return returns

    def close(self) -> None:
        self.envs.close()
