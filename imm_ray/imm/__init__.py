"""Induced Model Matching on plain torch tensors: induced models, IMM risks, baselines.

Shapes: member log-probs ``[B, k, C]`` (log Q(y | x̄, x̃ᵢ)), member weights ``[B, k]``
(unnormalized, 0 = padding), targets ``[B, C]`` (P̂(y | x̄)). No Ray here: RLlib learners
and supervised trainers call these functions.
"""

from imm_ray.imm.crosstalk import imm_backward_memory_bounded
from imm_ray.imm.induced import crosstalk_weights, induced_log_probs
from imm_ray.imm.losses import imm_loss, interpolate_log_probs, noising_loss
from imm_ray.imm.serialized import StaleSnapshot, serialized_correction, serialized_imm_loss
from imm_ray.imm.weighting import (
    COMBINE_MODES,
    combine,
    lambda_to_ratio,
    ratio_to_lambda,
    validate_lambda,
    validate_ratio,
)

__all__ = [
    "COMBINE_MODES",
    "StaleSnapshot",
    "combine",
    "crosstalk_weights",
    "imm_backward_memory_bounded",
    "imm_loss",
    "induced_log_probs",
    "interpolate_log_probs",
    "lambda_to_ratio",
    "noising_loss",
    "ratio_to_lambda",
    "serialized_correction",
    "serialized_imm_loss",
    "validate_lambda",
    "validate_ratio",
]
