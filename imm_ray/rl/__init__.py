"""RLlib side of imm-ray: REINFORCE on the new API stack and the IMM learner mixin.

Names load on first use (PEP 562), so that code needing only the λ rule or the target
spec (sweep planning, the CLI's checks) does not import RLlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EVAL_RETURN_MEAN": "imm_ray.rl.evaluation",
    "DefaultReinforceRLModule": "imm_ray.rl.default_reinforce_rl_module",
    "IMMConfigMixin": "imm_ray.rl.imm_config",
    "IMMLearnerMixin": "imm_ray.rl.imm_learner",
    "IMMReinforceTorchLearner": "imm_ray.rl.reinforce_torch_learner",
    "Reinforce": "imm_ray.rl.reinforce",
    "ReinforceConfig": "imm_ray.rl.reinforce",
    "ReinforceTorchLearner": "imm_ray.rl.reinforce_torch_learner",
    "TargetSpec": "imm_ray.restricted.target",
    "paper_lambda": "imm_ray.rl.lambda_rule",
    "paper_lambda_ratio": "imm_ray.rl.lambda_rule",
    "train_and_evaluate": "imm_ray.rl.reinforce",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'imm_ray.rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
