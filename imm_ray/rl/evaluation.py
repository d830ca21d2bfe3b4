"""Policy evaluation as in the paper (App. D.3): sampled rollouts, undiscounted return.

Evaluation draws its starts and its actions from generators keyed by (seed, epoch), apart
from training's: evaluating at 50 epochs and training on to 100 gives the same 100-epoch
policy as not evaluating at all, and a seed's figure at E epochs is the same whichever
other epoch counts were evaluated before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

import envs
from imm_ray import checks
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


#: Keys of :meth:`RolloutEvaluationMixin.evaluate`'s result.
EVAL_RETURN_MEAN = "eval_return_mean"
EVAL_RETURNS = "eval_returns"


class RolloutEvaluationConfigMixin:
    """The paper's evaluation settings on an RLlib ``AlgorithmConfig``: 10 rollouts of the
    pair's evaluation horizon (the paper's 22 steps on the grid, whole episodes on Taxi)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.evaluation_num_rollouts = 10
        self.evaluation_horizon: int | None = None

    def evaluation(
        self,
        *,
        evaluation_num_rollouts: int = NotProvided,
        evaluation_horizon: int | None = NotProvided,
        **kwargs: Any,
    ) -> Self:
        """Sets evaluation settings; see ``AlgorithmConfig.evaluation`` for the shared ones.

        Args:
            evaluation_num_rollouts: rollouts per evaluation (paper: 10).
            evaluation_horizon: steps per rollout; ``None`` takes the pair's
                ``evaluation_horizon`` (:func:`evaluation_horizon_for`).
        """
        super().evaluation(**kwargs)
        if evaluation_num_rollouts is not NotProvided:
            self.evaluation_num_rollouts = int(
                checks.integer("evaluation_num_rollouts", evaluation_num_rollouts, 1, numpy=True)
            )
        if evaluation_horizon is not NotProvided:
            self.evaluation_horizon = (
                None
                if evaluation_horizon is None
                else int(checks.integer("evaluation_horizon", evaluation_horizon, 1, numpy=True))
            )
        return self


class RolloutEvaluationMixin:
    """``evaluate()`` for an RLlib ``Algorithm``: the paper's rollouts of its own module, on
    a local copy of the env, with no evaluation env runners to configure.

    The rollouts are keyed by (``config.seed``, training iterations so far), so a seed's
    figure after E iterations does not depend on when else it was evaluated.
    """

    def evaluate(self, parallel_train_future: Any = None) -> dict[str, Any]:
        if getattr(self, "_evaluator", None) is None:
            env_id, env_config = self.config.env, dict(self.config.env_config)
            self._evaluator = RolloutEvaluator(
                lambda: gym.make(env_id, **env_config),
                self.config.evaluation_num_rollouts,
                evaluation_horizon_for(self.config.evaluation_horizon, env_id, env_config),
            )
        returns = self._evaluator(self.get_module(), self.config.seed or 0, self.iteration)
        return {EVAL_RETURN_MEAN: float(returns.mean()), EVAL_RETURNS: returns.tolist()}

    def cleanup(self) -> None:
        if getattr(self, "_evaluator", None) is not None:
            self._evaluator.close()
        super().cleanup()
