"""RLlib side of imm-ray: REINFORCE on the new API stack and the IMM learner mixin.

Names load on first use (PEP 562), so that code needing only the λ rule or the target
spec (sweep planning, the CLI's checks) does not import RLlib.
"""

from imm_ray._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "imm_ray.restricted.target": ("TargetSpec",),
        "imm_ray.rl.default_reinforce_rl_module": ("DefaultReinforceRLModule",),
        "imm_ray.rl.evaluation": ("EVAL_RETURN_MEAN",),
        "imm_ray.rl.imm_config": ("IMMConfigMixin",),
        "imm_ray.rl.imm_learner": ("IMMLearnerMixin",),
        "imm_ray.rl.lambda_rule": ("paper_lambda", "paper_lambda_ratio"),
        "imm_ray.rl.reinforce": ("Reinforce", "ReinforceConfig", "train_and_evaluate"),
        "imm_ray.rl.reinforce_torch_learner": (
            "IMMReinforceTorchLearner",
            "ReinforceTorchLearner",
        ),
    },
)
