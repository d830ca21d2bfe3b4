"""The IMM learner mixin on RLlib's own PPO learner."""

from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.utils.metrics import LEARNER_RESULTS

from imm_ray.rl.evaluation import EVAL_RETURN_MEAN, EVAL_RETURNS
from imm_ray.rl.imm_learner import IMM_LOSS_KEY
from imm_ray.rl.imm_ppo import IMMPPO, IMMPPOConfig, IMMPPOTorchLearner


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


def test_ppo_evaluates_out_of_the_box_as_the_paper_does(ray_session):
    config = IMMPPOConfig().debugging(seed=1).env_runners(num_env_runners=0).imm(lam=1.0)
    algo = config.build_algo()
    try:
        first = algo.evaluate()
        again = algo.evaluate()
    finally:
        algo.stop()
    assert isinstance(algo, IMMPPO)
    # The paper's evaluation: 10 rollouts × 22 steps; the same (seed, iteration), the same draw.
    assert len(first[EVAL_RETURNS]) == 10 and first == again
    assert first[EVAL_RETURN_MEAN] == pytest.approx(np.mean(first[EVAL_RETURNS]))
    assert 0 < first[EVAL_RETURN_MEAN] < 22 * 1.6
