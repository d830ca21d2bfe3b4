"""RLlib side of imm-ray: REINFORCE on the new API stack and the IMM learner mixin."""

from imm_ray.rl.default_reinforce_rl_module import DefaultReinforceRLModule
from imm_ray.rl.imm_config import IMMConfigMixin, TargetSpec, paper_lambda, paper_lambda_ratio
from imm_ray.rl.imm_learner import IMMLearnerMixin
from imm_ray.rl.reinforce import (
    EVAL_RETURN_MEAN,
    Reinforce,
    ReinforceConfig,
    train_and_evaluate,
)
from imm_ray.rl.reinforce_torch_learner import IMMReinforceTorchLearner, ReinforceTorchLearner

__all__ = [
    "EVAL_RETURN_MEAN",
    "DefaultReinforceRLModule",
    "IMMConfigMixin",
    "IMMLearnerMixin",
    "IMMReinforceTorchLearner",
    "Reinforce",
    "ReinforceConfig",
    "ReinforceTorchLearner",
    "TargetSpec",
    "paper_lambda",
    "paper_lambda_ratio",
    "train_and_evaluate",
]
