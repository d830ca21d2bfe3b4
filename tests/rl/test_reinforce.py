"""REINFORCE + IMM on RLlib: defaults, the loss the learner computes, and what it logs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.utils.metrics import LEARNER_RESULTS

import envs
from imm_ray.rl import (
    EVAL_RETURN_MEAN,
    ReinforceConfig,
    TargetSpec,
    paper_lambda,
    paper_lambda_ratio,
)
from imm_ray.rl.evaluation import evaluation_horizon_for
from imm_ray.rl.imm_learner import IMM_LAMBDA_KEY, IMM_LOSS_KEY
from imm_ray.rl.reinforce_torch_learner import POLICY_LOSS_KEY


@pytest.fixture(scope="module")
def imm_algo(ray_session):
    algo = ReinforceConfig().debugging(seed=3).imm(lam=0.25).build_algo()
    yield algo
    algo.stop()


def test_defaults_are_the_paper_setting():
    config = ReinforceConfig()
    assert config.env == envs.MDP_ENV_ID
    assert (config.lr, config.gamma) == (1e-2, 0.9)
    assert config.num_episodes_per_train_batch == 1
    assert (config.evaluation_num_rollouts, config.evaluation_horizon) == (10, None)
    assert evaluation_horizon_for(None, config.env, config.env_config) == 22
    assert config.imm_lambda == 0.25 and config.imm_target == TargetSpec()
    assert config.get_default_rl_module_spec().model_config["hidden"] == [32]


@pytest.mark.parametrize(
    ("epochs", "ratio"),
    [(10, 0.2), (50, 0.2), (175, 0.2), (200, 0.1), (500, 0.1), (695, 0.1), (696, 0.0)],
)
def test_paper_lambda_rule(epochs, ratio):
    assert paper_lambda(epochs) == pytest.approx(ratio / (1 - ratio))


@pytest.mark.parametrize("epochs", [700, 1200, 5000])
def test_paper_lambda_rule_is_clipped_to_zero_beyond_its_range(epochs):
    # Unclipped, round(-0.0002·1200 + 0.1891, 1) = -0.1: a negative λ.
    assert paper_lambda_ratio(epochs) == 0.0 and paper_lambda(epochs) == 0.0
    assert ReinforceConfig().imm(lam=paper_lambda(epochs)).imm_enabled is False


def test_one_epoch_is_one_trajectory_and_logs_the_losses(imm_algo):
    result = imm_algo.train()
    metrics = result[LEARNER_RESULTS][DEFAULT_MODULE_ID]
    assert np.isfinite(metrics[POLICY_LOSS_KEY])
    assert metrics[IMM_LOSS_KEY] > 0
    assert metrics[IMM_LAMBDA_KEY] == 0.25
    assert result["env_runners"]["num_env_steps_sampled"] == 50


def test_learner_imm_risk_is_the_induced_policy_cross_entropy(imm_algo):
    """Recompute Eq. (9) by hand: average π(a|x, y') over all 11 y', then −Σ P̂ log Q̂."""
    learner = imm_algo.learner_group._learner
    module = learner.module[DEFAULT_MODULE_ID]
    pair = envs.make_pair(envs.MDP_ENV_ID)
    obs = torch.tensor([[0, 0], [5, 3], [5, 9], [10, 7]])
    risk = learner.compute_imm_risk(DEFAULT_MODULE_ID, {Columns.OBS: obs}, None)

    target = imm_algo.config.imm_target_table(pair)
    expected = []
    with torch.no_grad():
        for x, _ in obs.tolist():
            full = torch.tensor([[x, y] for y in range(11)])
            probs = torch.softmax(
                module.forward_train({Columns.OBS: full})["action_dist_inputs"], -1
            )
            induced = probs.mean(0).numpy()
            expected.append(-(target[x] * np.log(induced)).sum())
    assert risk.item() == pytest.approx(float(np.mean(expected)), rel=1e-5)


def test_sampled_extension_matches_exact_on_average(imm_algo):
    learner = imm_algo.learner_group._learner
    obs = torch.tensor([[2, 4], [8, 1]])
    exact = learner.compute_imm_risk(DEFAULT_MODULE_ID, {Columns.OBS: obs}, None).item()
    torch.manual_seed(0)
    with torch.no_grad():
        sampled = [
            learner.compute_imm_risk(DEFAULT_MODULE_ID, {Columns.OBS: obs}, 64).item()
            for _ in range(20)
        ]
    # log of a sample mean is biased low (Jensen), but with k = 64 only slightly.
    assert np.mean(sampled) == pytest.approx(exact, rel=0.05)


def test_evaluating_midway_leaves_training_alone(ray_session):
    def run(evaluate_midway: bool) -> tuple[list[float], float]:
        algo = ReinforceConfig().debugging(seed=11).imm(target=None).build_algo()
        try:
            for epoch in range(6):
                algo.train()
                if evaluate_midway and epoch == 2:
                    algo.evaluate()
            weights = algo.learner_group._learner.module[DEFAULT_MODULE_ID].pi[0].weight
            return algo.evaluate()["eval_returns"], float(weights.detach().sum())
        finally:
            algo.stop()

    returns_a, w_a = run(evaluate_midway=False)
    returns_b, w_b = run(evaluate_midway=True)
    assert w_a == w_b
    assert len(returns_a) == 10 and all(r >= 0 for r in returns_a)


def test_no_imm_logs_no_imm_loss(ray_session):
    algo = ReinforceConfig().debugging(seed=0).imm(target=None).build_algo()
    try:
        metrics = algo.train()[LEARNER_RESULTS][DEFAULT_MODULE_ID]
        assert IMM_LOSS_KEY not in metrics and POLICY_LOSS_KEY in metrics
        assert EVAL_RETURN_MEAN in algo.evaluate()
    finally:
        algo.stop()


def test_evaluation_interval_puts_the_eval_reward_in_train_results(ray_session):
    algo = ReinforceConfig().debugging(seed=0).evaluation(evaluation_interval=2).build_algo()
    try:
        first, second = algo.train(), algo.train()
    finally:
        algo.stop()
    assert "evaluation" not in first
    assert len(second["evaluation"]["eval_returns"]) == 10
    assert second["evaluation"][EVAL_RETURN_MEAN] == pytest.approx(
        np.mean(second["evaluation"]["eval_returns"])
    )
