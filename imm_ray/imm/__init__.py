"""Induced Model Matching on plain torch tensors: induced models, IMM risks, baselines.

Shapes: member log-probs ``[B, k, C]`` (log Q(y | x̄, x̃ᵢ)), member weights ``[B, k]``
(unnormalized, 0 = padding), targets ``[B, C]`` (P̂(y | x̄)). No Ray here: RLlib learners
and supervised trainers call these functions.

Names load on first use (PEP 562), so that code needing only the λ ↔ r conversion of
:mod:`imm_ray.imm.weighting` (sweep planning) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StaleSnapshot": "imm_ray.imm.serialized",
    "crosstalk_weights": "imm_ray.imm.induced",
    "imm_backward_memory_bounded": "imm_ray.imm.crosstalk",
    "imm_loss": "imm_ray.imm.losses",
    "induced_log_probs": "imm_ray.imm.induced",
    "interpolate_log_probs": "imm_ray.imm.losses",
    "lambda_to_ratio": "imm_ray.imm.weighting",
    "noising_loss": "imm_ray.imm.losses",
    "ratio_to_lambda": "imm_ray.imm.weighting",
    "serialized_correction": "imm_ray.imm.serialized",
    "serialized_imm_loss": "imm_ray.imm.serialized",
    "validate_lambda": "imm_ray.imm.weighting",
    "validate_ratio": "imm_ray.imm.weighting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'imm_ray.imm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
