"""REINFORCE on RLlib's new API stack, with Induced Model Matching built in.

Each ``train()`` call is one epoch of the paper's RL experiment (App. D.3): sample one
trajectory (50 steps on the grid) with the current policy, take one Adam step on the
REINFORCE loss plus λ·IMM, and sync the weights back to the env runners. The number of
epochs is the dataset size.

Example::

    from imm_ray.rl import ReinforceConfig

    algo = ReinforceConfig().debugging(seed=0).imm(lam=0.25).build_algo()
    for _ in range(50):
        algo.train()
    print(algo.evaluate()["eval_return_mean"])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

import gymnasium as gym
import tree
from ray.rllib.algorithms import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

import envs
from imm_ray import checks
from imm_ray.rl.default_reinforce_rl_module import DEFAULT_MODEL_CONFIG, DefaultReinforceRLModule
from imm_ray.rl.env_runner import TrajectorySeededEnvRunner
from imm_ray.rl.evaluation import (
    EVAL_RETURN_MEAN,
    RolloutEvaluationConfigMixin,
    RolloutEvaluationMixin,
)
from imm_ray.rl.imm_config import IMMConfigMixin
from imm_ray.rl.reinforce_torch_learner import IMMReinforceTorchLearner
from imm_ray.rl.shared import check_lr_and_gamma, set_paper_defaults


class ReinforceConfig(IMMConfigMixin, RolloutEvaluationConfigMixin, AlgorithmConfig):
    """REINFORCE settings. Defaults are the paper's RL setting (App. D.3 and its public code).

    Policy one-hot(121) → 32 tanh → 4, Adam lr 1e-2, γ = 0.9 discounted reward-to-go, no
    baseline, one 50-step trajectory and one gradient step per ``train()``; IMM with the
    FIB argmax target and λ = 0.25; evaluation over 10 rollouts of 22 steps (the pair's
    ``evaluation_horizon``: whole episodes on Taxi).
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or Reinforce)
        set_paper_defaults(self)
        self.num_envs_per_env_runner = 1
        self.env_runner_cls = TrajectorySeededEnvRunner
        self.batch_mode = "complete_episodes"
        self.num_episodes_per_train_batch = 1

    def training(
        self,
        *,
        num_episodes_per_train_batch: int = NotProvided,
        **kwargs: Any,
    ) -> Self:
        """Sets training settings; see ``AlgorithmConfig.training`` for the shared ones.

        Args:
            num_episodes_per_train_batch: complete trajectories sampled per gradient step
                (the paper uses 1).
        """
        super().training(**kwargs)
        if num_episodes_per_train_batch is not NotProvided:
            checks.integer(
                "num_episodes_per_train_batch", num_episodes_per_train_batch, 1, numpy=True
            )
            self.num_episodes_per_train_batch = num_episodes_per_train_batch
        return self

    def validate(self) -> None:
        if isinstance(self.env, str) and self.env in envs.known_env_ids():
            envs.make_pair(self.env, self.env_config)  # checks env_config's values and keys
        elif isinstance(self.env, str) and self.env not in gym.registry:
            raise ValueError(
                f"env: unknown env id {self.env!r}; known imm-ray ids: "
                f"{', '.join(envs.known_env_ids())}"
            )
        super().validate()
        check_lr_and_gamma(self)

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(
            module_class=DefaultReinforceRLModule, model_config=dict(DEFAULT_MODEL_CONFIG)
        )

    def get_default_learner_class(self) -> type:
        return IMMReinforceTorchLearner


class Reinforce(RolloutEvaluationMixin, Algorithm):
    """REINFORCE: sample trajectories → one learner update → sync weights."""

    @classmethod
    def get_default_config(cls) -> ReinforceConfig:
        return ReinforceConfig()

    def training_step(self) -> None:
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_metrics = self._sample_episodes()
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
                    )
                },
            )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )

    def _sample_episodes(self) -> tuple[list, list]:
        per_runner = -(
            -self.config.num_episodes_per_train_batch // (self.config.num_env_runners or 1)
        )
        sampled = self.env_runner_group.foreach_env_runner(
            lambda runner: (runner.sample(num_episodes=per_runner), runner.get_metrics()),
            local_env_runner=self.env_runner_group.num_remote_workers() <= 0,
        )
        return tree.flatten([s[0] for s in sampled]), [s[1] for s in sampled]


def train_and_evaluate(config: AlgorithmConfig, eval_epochs: Iterable[int]) -> dict[int, float]:
    """Trains ``config``'s algorithm (one seed, ``config.seed``) to the largest of
    ``eval_epochs`` and returns its mean evaluation return at each of them: the single-seed
    counterpart of :func:`imm_ray.rl.seeds.train_and_evaluate_seeds`."""
    eval_epochs = sorted(set(eval_epochs))
    if not eval_epochs:
        raise ValueError("eval_epochs must name at least one epoch count")
    for epochs in eval_epochs:
        checks.integer("eval_epochs", epochs, 1, numpy=True)
    algo = config.build_algo()
    try:
        results = {}
        for epochs in eval_epochs:
            while algo.iteration < epochs:
                algo.train()
            results[epochs] = algo.evaluate()[EVAL_RETURN_MEAN]
        return results
    finally:
        algo.stop()
