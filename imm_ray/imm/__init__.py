"""Induced Model Matching on plain torch tensors: induced models, IMM risks, baselines.

Shapes: member log-probs ``[B, k, C]`` (log Q(y | x̄, x̃ᵢ)), member weights ``[B, k]``
(unnormalized, 0 = padding), targets ``[B, C]`` (P̂(y | x̄)). No Ray here: RLlib learners
and supervised trainers call these functions.

Names load on first use (PEP 562), so that code needing only the λ ↔ r conversion of
:mod:`imm_ray.imm.weighting` (sweep planning) does not import torch.
"""

from imm_ray._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "imm_ray.imm.crosstalk": ("imm_backward_memory_bounded",),
        "imm_ray.imm.induced": ("crosstalk_weights", "induced_log_probs"),
        "imm_ray.imm.losses": ("imm_loss", "interpolate_log_probs", "noising_loss"),
        "imm_ray.imm.serialized": (
            "StaleSnapshot",
            "serialized_correction",
            "serialized_imm_loss",
        ),
        "imm_ray.imm.weighting": (
            "lambda_to_ratio",
            "ratio_to_lambda",
            "validate_lambda",
            "validate_ratio",
        ),
    },
)
