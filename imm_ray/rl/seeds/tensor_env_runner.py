"""An EnvRunner that steps every seed's copy of a tabular MDP as one tensor program.

Instead of gym envs and per-step connectors, :class:`SeedTensorEnvRunner` walks S × N
walkers through the pair's tables (:class:`~imm_ray.rl.seeds.tensor_pair.TensorPair`).
Within one trajectory the policy is fixed, so it reads every seed's action distribution
at every state off one forward pass of the batched module (``logits_table``) and then
samples with per-seed uniforms: seed s's trajectory depends on seed s's weights and
stream only, never on the seeds beside it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env import INPUT_ENV_SINGLE_SPACES, INPUT_ENV_SPACES
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import (
    EPISODE_RETURN_MEAN,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.typing import StateDict

import envs
from imm_ray.rl.seeds.tensor_pair import TensorPair
from imm_ray.rl.streams import EVAL_STREAM, TRAIN_STREAM, SeedStreams

#: Metric and state key: training epochs (one trajectory per seed each) sampled so far.
NUM_EPOCHS_LIFETIME = "num_epochs_lifetime"
#: State key of the per-seed training generators' states.
TRAIN_STREAMS = "train_streams"


@dataclass(frozen=True)
class SeedTrajectories:
    """One trajectory per seed, the unit the learner's connector turns into a train batch.

    ``obs [S, T, *obs_shape]`` is the observation before each step, ``actions [S, T]``
    the action taken there and ``rewards [S, T]`` the reward received for it. On a pair
    with terminal states episodes vary in length: ``alive [S, T]`` marks the steps seed
    s's episode took (after its termination rewards are 0 and obs / actions filler);
    ``None`` means every step was taken.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    alive: torch.Tensor | None = None

    def __len__(self) -> int:
        """Env steps over all seeds (RLlib counts sampled and trained steps with it)."""
        return self.actions.numel() if self.alive is None else int(self.alive.sum())


class SeedTensorEnvRunner(EnvRunner, Checkpointable):
    """Samples one trajectory per seed per :meth:`sample` call and evaluates every seed.

    Reads from the config: ``env`` / ``env_config`` (a registered pair's MDP id),
    ``seeds``, ``trajectory_length`` and the RL module spec (a batched module with
    ``logits_table`` and ``input_index``).
    """

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self.pair = envs.make_pair(config.env, config.env_config)
        self.tensor_pair = TensorPair(self.pair)
        env = gym.make(config.env, **dict(config.env_config))
        self._spaces = (env.observation_space, env.action_space)
        env.close()
        # One walker per run: seeds, once per λ group (SeedReinforceConfig.run_seeds).
        self.seeds = config.run_seeds
        self.trajectory_length = config.trajectory_length_for(self.pair)
        self.epochs = 0
        self._weights_seq_no = 0
        self._train_streams = SeedStreams(self.seeds, TRAIN_STREAM)
        self._state_obs = torch.as_tensor(self.pair.state_observation())
        self.make_module()

    def make_module(self) -> None:
        spec = self.config.get_rl_module_spec(spaces=self.get_spaces(), inference_only=True)
        self.module = spec.build()
        self._state_input = self.module.input_index(self._state_obs.unsqueeze(0))[0]

    def get_spaces(self) -> dict[str, tuple[gym.Space, gym.Space]]:
        return {
            INPUT_ENV_SPACES: self._spaces,
            INPUT_ENV_SINGLE_SPACES: self._spaces,
            DEFAULT_MODULE_ID: self._spaces,
        }

    def assert_healthy(self) -> None:
        assert self.module is not None and len(self.seeds) > 0

    def policy_cdf(self) -> torch.Tensor:
        """``[S, n_states, A]``: cumulative sums of every seed's π(a | s) at every state."""
        with torch.no_grad():
            logits = self.module.logits_table()[:, :, self._state_input]
            return torch.softmax(logits, dim=1).cumsum(dim=1).transpose(1, 2).contiguous()

    def _walk(self, streams: SeedStreams, walkers: int, horizon: int):
        per_step = self.tensor_pair.uniforms_per_step
        u = streams.uniform(walkers * (1 + horizon * per_step))
        u_start = u[:, :walkers]
        u_steps = u[:, walkers:].reshape(len(self.seeds), walkers, horizon, per_step)
        return self.tensor_pair.walk(self.policy_cdf(), u_start, u_steps)

    def sample(self, **kwargs: Any) -> list[SeedTrajectories]:
        """One trajectory per seed from a start drawn from the initial belief (uniform on
        the grid), actions sampled from the policy: ``trajectory_length`` steps, or fewer
        where the episode terminates first."""
        walk = self._walk(self._train_streams, 1, self.trajectory_length)
        trajectories = SeedTrajectories(
            obs=self._state_obs[walk.states[:, 0]],
            actions=walk.actions[:, 0],
            rewards=walk.rewards[:, 0],
            alive=None if walk.alive is None else walk.alive[:, 0],
        )
        self.epochs += 1
        steps = len(trajectories)
        self.num_env_steps_sampled_lifetime += steps
        returns = trajectories.rewards.sum(dim=-1)
        self.metrics.log_value(EPISODE_RETURN_MEAN, float(returns.mean()), window=1)
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED, steps, reduce="sum")
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, steps, reduce="lifetime_sum")
        self.metrics.log_value(NUM_EPISODES, len(self.seeds), reduce="sum")
        self.metrics.log_value(NUM_EPISODES_LIFETIME, len(self.seeds), reduce="lifetime_sum")
        return [trajectories]

    def evaluate(self, num_rollouts: int, horizon: int) -> np.ndarray:
        """Every seed's mean undiscounted return over ``num_rollouts`` rollouts of
        ``horizon`` steps (fewer where an episode terminates) with sampled actions, ``[S]``.

        The uniforms come from a stream keyed by (seed, epoch), apart from training's, so
        evaluating never changes training and a seed's evaluation at an epoch is the same
        whichever seeds run beside it and however often it was evaluated before.
        """
        streams = SeedStreams(self.seeds, EVAL_STREAM, self.epochs)
        walk = self._walk(streams, num_rollouts, horizon)
        return walk.rewards.sum(dim=-1).mean(dim=-1).numpy()

    def get_metrics(self) -> dict[str, Any]:
        self.metrics.log_value(NUM_EPOCHS_LIFETIME, self.epochs, window=1)
        return self.metrics.reduce()

    def get_state(
        self,
        components: str | Collection[str] | None = None,
        *,
        not_components: str | Collection[str] | None = None,
        **kwargs: Any,
    ) -> StateDict:
        state: StateDict = {
            NUM_ENV_STEPS_SAMPLED_LIFETIME: self.num_env_steps_sampled_lifetime,
            NUM_EPOCHS_LIFETIME: self.epochs,
            TRAIN_STREAMS: self._train_streams.get_state(),
        }
        if self._check_component(COMPONENT_RL_MODULE, components, not_components):
            state[COMPONENT_RL_MODULE] = self.module.get_state(**kwargs)
            state[WEIGHTS_SEQ_NO] = self._weights_seq_no
        return state

    def set_state(self, state: StateDict) -> None:
        if COMPONENT_RL_MODULE in state:
            seq_no = state.get(WEIGHTS_SEQ_NO, 0)
            # Whatever the number (see RestoresWeightsMixin): a restored state's weights
            # may be older than this runner's, or as new and another member's.
            module_state = state[COMPONENT_RL_MODULE]
            self.module.set_state(module_state.get(DEFAULT_MODULE_ID, module_state))
            self._weights_seq_no = seq_no
        if NUM_ENV_STEPS_SAMPLED_LIFETIME in state:
            self.num_env_steps_sampled_lifetime = state[NUM_ENV_STEPS_SAMPLED_LIFETIME]
        if NUM_EPOCHS_LIFETIME in state:
            self.epochs = state[NUM_EPOCHS_LIFETIME]
        if TRAIN_STREAMS in state:
            self._train_streams.set_state(state[TRAIN_STREAMS])

    def get_ctor_args_and_kwargs(self) -> tuple[tuple, dict[str, Any]]:
        return (), {"config": self.config}

    def get_checkpointable_components(self) -> list[tuple[str, Checkpointable]]:
        return [(COMPONENT_RL_MODULE, self.module)]
