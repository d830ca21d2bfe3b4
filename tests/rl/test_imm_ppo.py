"""The IMM learner mixin on RLlib's own PPO learner."""

from __future__ import annotations

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.utils.metrics import LEARNER_RESULTS

from imm_ray.rl.imm_learner import IMM_LOSS_KEY
from imm_ray.rl.imm_ppo import IMMPPOConfig, IMMPPOTorchLearner


def test_ppo_with_imm_drives_the_imm_risk_down(ray_session):
    config = (
        IMMPPOConfig()
        .debugging(seed=0)
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=4, lr=1e-2)
        .imm(lam=1.0)
    )
    algo = config.build_algo()
    try:
        assert isinstance(algo.learner_group._learner, IMMPPOTorchLearner)
        risks = [algo.train()[LEARNER_RESULTS][DEFAULT_MODULE_ID][IMM_LOSS_KEY] for _ in range(6)]
    finally:
        algo.stop()
    # Untrained, the induced policy is near uniform: risk ≈ log 4 ≈ 1.39 for a one-hot target.
    assert risks[0] > 1.0
    assert risks[-1] < 0.6 * risks[0], risks
