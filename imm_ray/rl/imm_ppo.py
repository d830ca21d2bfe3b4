"""PPO + IMM: the same learner mixin on RLlib's own PPO torch learner.

Nothing here is PPO-specific beyond the class composition, which is the point: any RLlib
torch learner gains the IMM term by ``class X(IMMLearnerMixin, ThatLearner)`` and its
config by ``class XConfig(IMMConfigMixin, ThatConfig)``.
"""

from __future__ import annotations

from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

import envs
from imm_ray.rl.default_reinforce_rl_module import DEFAULT_MODEL_CONFIG, DefaultReinforceRLModule
from imm_ray.rl.env_runner import TrajectorySeededEnvRunner
from imm_ray.rl.evaluation import RolloutEvaluationConfigMixin, RolloutEvaluationMixin
from imm_ray.rl.imm_config import IMMConfigMixin
from imm_ray.rl.imm_learner import IMMLearnerMixin
from imm_ray.rl.shared import RestoresWeightsMixin


class IMMPPOTorchLearner(RestoresWeightsMixin, IMMLearnerMixin, PPOTorchLearner):
    """RLlib's PPO loss plus λ·IMM (paper Eq. 8)."""


class IMMPPO(RolloutEvaluationMixin, PPO):
    """RLlib's PPO whose ``evaluate()`` is the paper's (10 rollouts × 22 steps), as
    :class:`~imm_ray.rl.Reinforce`'s, with no evaluation env runners to configure."""

    @classmethod
    def get_default_config(cls) -> IMMPPOConfig:
        return IMMPPOConfig()


class IMMPPOConfig(IMMConfigMixin, RolloutEvaluationConfigMixin, PPOConfig):
    """PPO with IMM on the toroidal grid by default; the policy/value net one-hots the state."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or IMMPPO)
        self.environment(env=envs.MDP_ENV_ID)
        self.env_runner_cls = TrajectorySeededEnvRunner

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(
            module_class=DefaultReinforceRLModule,
            model_config={**DEFAULT_MODEL_CONFIG, "value_head": True},
        )

    def get_default_learner_class(self) -> type:
        return IMMPPOTorchLearner
