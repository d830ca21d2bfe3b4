"""Seed-vectorized IMM-REINFORCE: many independent seeds in one RLlib algorithm.

Files follow the data flow: per-seed random streams → a pair's tables as tensors →
the batched policy module → the tensor EnvRunner → the returns-to-go learner connector →
the learner → the algorithm and its config.
"""

from imm_ray.rl.seeds.batched_module import LOGITS_TABLE, BatchedReinforceRLModule
from imm_ray.rl.seeds.seed_learner import SeedReinforceTorchLearner
from imm_ray.rl.seeds.seed_reinforce import (
    EVAL_SEED_RETURNS,
    SeedReinforce,
    SeedReinforceConfig,
    train_and_evaluate_seeds,
)
from imm_ray.rl.seeds.tensor_env_runner import SeedTensorEnvRunner, SeedTrajectories

__all__ = [
    "EVAL_SEED_RETURNS",
    "LOGITS_TABLE",
    "BatchedReinforceRLModule",
    "SeedReinforce",
    "SeedReinforceConfig",
    "SeedReinforceTorchLearner",
    "SeedTensorEnvRunner",
    "SeedTrajectories",
    "train_and_evaluate_seeds",
]
