"""Training on Taxi, where episodes terminate: returns-to-go stop at termination, a
terminated walker takes no more steps, the loss averages each seed's own steps, and both
RL paths train with and without IMM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hand_batches import (
    GAMMA,
    TAXI_ACTIONS,
    TAXI_ALIVE,
    TAXI_OBS,
    TAXI_RETURNS,
    TAXI_REWARDS,
)
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics import LEARNER_RESULTS

import envs
from imm_ray.restricted import qmdp
from imm_ray.rl import EVAL_RETURN_MEAN, ReinforceConfig, TargetSpec
from imm_ray.rl.imm_learner import IMM_LOSS_KEY
from imm_ray.rl.reinforce_torch_learner import POLICY_LOSS_KEY
from imm_ray.rl.seeds import SeedReinforceConfig, train_and_evaluate_seeds
from imm_ray.rl.seeds.tensor_env_runner import SeedTrajectories
from imm_ray.rl.seeds.tensor_pair import TensorPair

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _connector_batch(learner, episodes) -> dict[str, torch.Tensor]:
    batch = learner._learner_connector(
        rl_module=learner.module, batch={}, episodes=episodes, shared_data={}, metrics=None
    )
    return batch[DEFAULT_MODULE_ID]


def _two_seed_learner(taxi_env):
    """A seed-vectorized Taxi learner of seeds 0 and 1, without IMM."""
    config = (
        SeedReinforceConfig()
        .environment(env=envs.TAXI_MDP_ENV_ID)
        .training(seeds=[0, 1], gamma=GAMMA)
        .imm(target=None)
    )
    return config.build_learner(env=taxi_env)


def _taxi_trajectories() -> SeedTrajectories:
    """The hand-made batch: seed 0 terminates after 2 steps, seed 1 runs all 4."""
    return SeedTrajectories(
        obs=torch.tensor(TAXI_OBS),
        actions=torch.tensor(TAXI_ACTIONS),
        rewards=torch.tensor(TAXI_REWARDS),
        alive=torch.tensor(TAXI_ALIVE),
    )


def test_seed_returns_to_go_stop_at_termination_and_the_loss_averages_live_steps(taxi_env):
    learner = _two_seed_learner(taxi_env)
    trajectories = _taxi_trajectories()
    assert len(trajectories) == 6  # env steps actually taken
    batch = _connector_batch(learner, [trajectories])
    torch.testing.assert_close(
        batch[Columns.RETURNS_TO_GO].double(), torch.tensor(TAXI_RETURNS).double(), **TOL
    )
    torch.testing.assert_close(batch[Columns.LOSS_MASK], torch.tensor(TAXI_ALIVE))

    module = learner.module[DEFAULT_MODULE_ID]
    fwd_out = module.forward_train(batch)
    log_probs = torch.log_softmax(fwd_out[Columns.ACTION_DIST_INPUTS], dim=-1).gather(
        2, batch[Columns.ACTIONS].unsqueeze(-1)
    )[..., 0]
    # Seed 0's mean is over its 2 steps, seed 1's over its 4; the filler steps count for nothing.
    expected = (
        -(log_probs[0, :2] * torch.tensor(TAXI_RETURNS[0][:2])).sum() / 2
        - (log_probs[1] * torch.tensor(TAXI_RETURNS[1])).sum() / 4
    )
    losses = learner.compute_losses(
        fwd_out={DEFAULT_MODULE_ID: fwd_out}, batch={DEFAULT_MODULE_ID: batch}
    )
    assert losses[DEFAULT_MODULE_ID].item() == pytest.approx(expected.item(), rel=1e-5)


def test_seed_returns_to_go_join_masked_and_unmasked_trajectories_in_time(taxi_env):
    learner = _two_seed_learner(taxi_env)
    masked = _taxi_trajectories()
    # A trajectory in which no seed terminated carries no mask: every one of its steps counts.
    unmasked = SeedTrajectories(
        obs=torch.tensor(TAXI_OBS)[:, :2],
        actions=torch.tensor(TAXI_ACTIONS)[:, :2],
        rewards=torch.tensor([[1.0, 2.0], [0.0, -1.0]]),
    )
    batch = _connector_batch(learner, [masked, unmasked])
    alive = torch.tensor(TAXI_ALIVE)
    torch.testing.assert_close(batch[Columns.LOSS_MASK], torch.cat([alive, alive[:, :2] | True], 1))
    returns = torch.cat([torch.tensor(TAXI_RETURNS), torch.tensor([[2.8, 2.0], [-0.9, -1.0]])], 1)
    torch.testing.assert_close(batch[Columns.RETURNS_TO_GO].double(), returns.double(), **TOL)
    with pytest.raises(ValueError, match="needs SeedTrajectories"):
        _connector_batch(learner, [])


def test_rllib_returns_to_go_stop_at_the_terminated_episodes_end(taxi_env):
    learner = (
        ReinforceConfig()
        .environment(env=envs.TAXI_MDP_ENV_ID)
        .training(gamma=GAMMA)
        .imm(target=None)
        .build_learner(env=taxi_env)
    )

    def episode(obs, actions, rewards, terminated):
        built = SingleAgentEpisode(
            observations=[np.array(o) for o in obs],
            actions=actions,
            rewards=rewards,
            terminated=terminated,
            truncated=not terminated,
            observation_space=taxi_env.observation_space,
            action_space=taxi_env.action_space,
            len_lookback_buffer=0,
        )
        built.to_numpy()
        return built

    delivered = episode(TAXI_OBS[0][:3], TAXI_ACTIONS[0][:2], TAXI_REWARDS[0][:2], terminated=True)
    wandering = episode(
        TAXI_OBS[1] + [TAXI_OBS[1][0]], TAXI_ACTIONS[1], TAXI_REWARDS[1], terminated=False
    )
    batch = _connector_batch(learner, [delivered, wandering])
    torch.testing.assert_close(
        batch[Columns.RETURNS_TO_GO].double(),
        torch.tensor(TAXI_RETURNS[0][:2] + TAXI_RETURNS[1]).double(),
        **TOL,
    )


def test_a_terminated_walker_takes_no_more_steps_and_gets_no_reward():
    pair = envs.Taxi()
    tensor_pair = TensorPair(pair)
    # Every walker follows the MDP's optimal policy, so all deliver within 20 steps.
    best = qmdp(pair, 0.99).alphas.argmax(axis=0)
    policy_cdf = torch.zeros(3, pair.n_states, pair.n_actions)
    policy_cdf[:, np.arange(pair.n_states), best] = 1.0
    policy_cdf = policy_cdf.cumsum(dim=-1)
    generator = torch.Generator().manual_seed(0)
    u_start = torch.rand(3, 4, generator=generator)
    walk = tensor_pair.walk(policy_cdf, u_start, torch.rand(3, 4, 200, 1, generator=generator))
    assert walk.alive is not None and walk.alive.shape[-1] < 200  # stopped once all were done
    assert not walk.alive[..., -1].all()
    env = envs.TaxiEnv()
    for seed in range(3):
        for walker in range(4):
            alive = walk.alive[seed, walker]
            length = int(alive.sum())
            assert alive[:length].all() and not alive[length:].any()  # dead stays dead
            assert torch.all(walk.rewards[seed, walker, length:] == 0)
            assert walk.rewards[seed, walker, length - 1] == 20.0  # the delivery ends it
            env.reset(options={"state": int(walk.states[seed, walker, 0])})
            for t in range(length):
                assert env.state == walk.states[seed, walker, t]
                _, reward, terminated, _, _ = env.step(int(walk.actions[seed, walker, t]))
                assert reward == walk.rewards[seed, walker, t]
                assert terminated == (t == length - 1)


@pytest.mark.parametrize(
    "target", [None, TargetSpec(), TargetSpec(kind="softmax")], ids=["no-imm", "argmax", "softmax"]
)
def test_seed_path_trains_on_taxi_with_and_without_imm(ray_session, target):
    config = (
        SeedReinforceConfig()
        .environment(env=envs.TAXI_MDP_ENV_ID, env_config={"trajectory_length": 60})
        .training(seeds=[0, 1, 2], epochs_per_iteration=4)
        .imm(lam=1.0, target=target)
    )
    algo = config.build_algo()
    try:
        result = algo.train()
        metrics = result[LEARNER_RESULTS][DEFAULT_MODULE_ID]
        assert np.isfinite(metrics[POLICY_LOSS_KEY])
        if target is not None:
            assert np.isfinite(metrics[IMM_LOSS_KEY]) and metrics[IMM_LOSS_KEY] > 0
        returns = algo.evaluate_seeds()
    finally:
        algo.stop()
    # Whole episodes of up to 60 steps: between −10 per step and one +20 delivery.
    assert returns.shape == (3,) and np.all(np.isfinite(returns))
    assert np.all((returns >= -600) & (returns <= 20))


def test_seed_path_results_per_epoch(ray_session):
    config = (
        SeedReinforceConfig()
        .environment(env=envs.TAXI_MDP_ENV_ID, env_config={"trajectory_length": 40})
        .training(seeds=[0, 1])
        .imm(lam=1.0, target=TargetSpec(kind="softmax"))
    )
    results = train_and_evaluate_seeds(config, [2, 3])
    assert sorted(results) == [2, 3] and all(np.isfinite(v).all() for v in results.values())


@pytest.mark.parametrize("imm", [False, True], ids=["no-imm", "imm"])
def test_single_seed_path_trains_on_taxi_with_complete_episodes(ray_session, imm):
    config = (
        ReinforceConfig()
        .environment(env=envs.TAXI_MDP_ENV_ID, env_config={"trajectory_length": 30})
        .training(num_episodes_per_train_batch=2)
        .evaluation(evaluation_num_rollouts=3)
        .debugging(seed=0)
        .imm(lam=1.0, target=TargetSpec() if imm else None)
    )
    algo = config.build_algo()
    try:
        for _ in range(2):
            result = algo.train()
        metrics = result[LEARNER_RESULTS][DEFAULT_MODULE_ID]
        assert np.isfinite(metrics[POLICY_LOSS_KEY])
        assert (IMM_LOSS_KEY in metrics) == imm
        evaluation = algo.evaluate()
    finally:
        algo.stop()
    assert np.isfinite(evaluation[EVAL_RETURN_MEAN])
    assert -300 <= evaluation[EVAL_RETURN_MEAN] <= 20
