"""The REINFORCE loss against a hand computation: returns-to-go, −mean(log π · G), gradients.

Hand-made 3-step trajectories go through each learner's real connector pipeline (RLlib's
``ComputeReturnsToGo`` for the single-seed learner, ``SeedReturnsToGo`` for the seed learner).
The returns-to-go are checked against literal numbers (γ = 0.9), and the learner's loss and
its autograd gradient against log π and the analytic REINFORCE gradient, both worked out in
float64 numpy from the module's weights: one-hot(x·11 + y) selects column i of W1, then
tanh, W2 and log-softmax. IMM is off (``imm(target=None)``), so the loss is the policy term.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hand_batches import (
    ACTIONS_A,
    ACTIONS_B,
    GAMMA,
    INPUTS_A,
    INPUTS_B,
    OBS_A,
    OBS_B,
    RETURNS_A,
    RETURNS_B,
    REWARDS_A,
    REWARDS_B,
    hand_reinforce,
    make_episode,
    make_trajectories,
    randomize,
    seed_params_of,
    single_params_of,
    train_batch,
    weights_of,
)
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from imm_ray.rl import ReinforceConfig
from imm_ray.rl.reinforce_torch_learner import POLICY_LOSS_KEY
from imm_ray.rl.seeds import SeedReinforceConfig

# float32 learner vs float64 hand computation.
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _single_learner(grid_env):
    config = ReinforceConfig().training(gamma=GAMMA).imm(target=None)
    assert not config.imm_enabled
    return config.build_learner(env=grid_env)


def _seed_learner(grid_env, seeds):
    config = SeedReinforceConfig().training(seeds=seeds, gamma=GAMMA).imm(target=None)
    assert not config.imm_enabled
    return config.build_learner(env=grid_env)


def _loss_and_grads(learner, batch, params) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The learner's loss on ``batch`` and the gradients its ``compute_gradients`` takes."""
    fwd_out = learner.module[DEFAULT_MODULE_ID].forward_train(batch)
    losses = learner.compute_losses(
        fwd_out={DEFAULT_MODULE_ID: fwd_out}, batch={DEFAULT_MODULE_ID: batch}
    )
    learner.compute_gradients(losses)
    return losses[DEFAULT_MODULE_ID], {k: p.grad.detach().clone() for k, p in params.items()}


def _assert_grads(actual: dict[str, torch.Tensor], expected: dict[str, np.ndarray]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(
            actual[key].double(), torch.from_numpy(value), **TOL, msg=lambda m, k=key: f"{k}: {m}"
        )


# ---------------------------------------------------------------- single-seed learner


def test_rllib_returns_to_go_are_the_hand_discounted_sums_per_episode(grid_env):
    learner = _single_learner(grid_env)
    batch = train_batch(learner, [make_episode(grid_env, OBS_A, ACTIONS_A, REWARDS_A)])
    torch.testing.assert_close(batch[Columns.OBS], torch.tensor(OBS_A[:-1]))
    torch.testing.assert_close(batch[Columns.ACTIONS], torch.tensor(ACTIONS_A))
    torch.testing.assert_close(
        batch[Columns.RETURNS_TO_GO].double(), torch.tensor(RETURNS_A, dtype=torch.float64), **TOL
    )

    # Two episodes in one batch: G stops at each episode's end (no leak from B into A).
    both = train_batch(
        learner,
        [
            make_episode(grid_env, OBS_A, ACTIONS_A, REWARDS_A),
            make_episode(grid_env, OBS_B, ACTIONS_B, REWARDS_B),
        ],
    )
    torch.testing.assert_close(both[Columns.OBS], torch.tensor(OBS_A[:-1] + OBS_B[:-1]))
    torch.testing.assert_close(
        both[Columns.RETURNS_TO_GO].double(),
        torch.tensor(RETURNS_A + RETURNS_B, dtype=torch.float64),
        **TOL,
    )


def test_single_seed_policy_loss_is_minus_mean_log_prob_times_return(grid_env):
    learner = _single_learner(grid_env)
    params = single_params_of(learner)
    randomize(params, seed=11)
    episode = make_episode(grid_env, OBS_A, ACTIONS_A, REWARDS_A)
    expected, _ = hand_reinforce(weights_of(params), INPUTS_A, ACTIONS_A, RETURNS_A)
    # Clearly nonzero and positive (log π < 0, most G > 0): a zero policy term or a flipped
    # sign (+mean) cannot pass the equality below.
    assert expected > 0.5

    loss, _ = _loss_and_grads(learner, train_batch(learner, [episode]), params)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    logged = learner.metrics.peek((DEFAULT_MODULE_ID, POLICY_LOSS_KEY))
    assert float(logged) == pytest.approx(expected, rel=1e-5)

    # The full update path (connector → MultiAgentBatch → _update) logs the same loss
    # (computed before the optimizer step).
    results = learner.update(episodes=[episode])
    assert results[DEFAULT_MODULE_ID][POLICY_LOSS_KEY].peek() == pytest.approx(expected, rel=1e-5)


def test_single_seed_gradient_is_the_hand_reinforce_gradient(grid_env):
    learner = _single_learner(grid_env)
    params = single_params_of(learner)
    randomize(params, seed=12)
    _, grads = _loss_and_grads(
        learner, train_batch(learner, [make_episode(grid_env, OBS_A, ACTIONS_A, REWARDS_A)]), params
    )
    _, expected = hand_reinforce(weights_of(params), INPUTS_A, ACTIONS_A, RETURNS_A)
    assert np.abs(expected["w2"]).max() > 1e-2 and np.abs(expected["w1"]).max() > 1e-2
    _assert_grads(grads, expected)
    # Only the visited states' columns of W1 get a gradient.
    visited = sorted(set(INPUTS_A))
    assert torch.count_nonzero(grads["w1"].abs().sum(0)).item() == len(visited)


# ---------------------------------------------------------------- seed-vectorized learner


def test_seed_returns_to_go_are_each_seeds_hand_discounted_sums(grid_env):
    learner = _seed_learner(grid_env, seeds=[0, 1])
    trajectory_a = (OBS_A, ACTIONS_A, REWARDS_A)
    trajectory_b = (OBS_B, ACTIONS_B, REWARDS_B)
    batch = train_batch(learner, [make_trajectories(trajectory_a, trajectory_b)])
    torch.testing.assert_close(batch[Columns.OBS], torch.tensor([OBS_A[:-1], OBS_B[:-1]]))
    torch.testing.assert_close(batch[Columns.ACTIONS], torch.tensor([ACTIONS_A, ACTIONS_B]))
    torch.testing.assert_close(
        batch[Columns.RETURNS_TO_GO].double(),
        torch.tensor([RETURNS_A, RETURNS_B], dtype=torch.float64),
        **TOL,
    )

    # Two trajectories per seed are joined in time, each with its own G (no leak across).
    joined = train_batch(
        learner,
        [
            make_trajectories(trajectory_a, trajectory_b),
            make_trajectories(trajectory_b, trajectory_a),
        ],
    )
    torch.testing.assert_close(
        joined[Columns.RETURNS_TO_GO].double(),
        torch.tensor([RETURNS_A + RETURNS_B, RETURNS_B + RETURNS_A], dtype=torch.float64),
        **TOL,
    )
    torch.testing.assert_close(
        joined[Columns.OBS], torch.tensor([OBS_A[:-1] + OBS_B[:-1], OBS_B[:-1] + OBS_A[:-1]])
    )
    torch.testing.assert_close(
        joined[Columns.ACTIONS], torch.tensor([ACTIONS_A + ACTIONS_B, ACTIONS_B + ACTIONS_A])
    )


def test_seed_loss_is_the_sum_of_each_seeds_hand_mean_and_logs_their_mean(grid_env):
    learner = _seed_learner(grid_env, seeds=[0, 1])
    params = seed_params_of(learner)
    randomize(params, seed=13)
    trajectories = make_trajectories((OBS_A, ACTIONS_A, REWARDS_A), (OBS_B, ACTIONS_B, REWARDS_B))
    loss_a, _ = hand_reinforce(weights_of(params, 0), INPUTS_A, ACTIONS_A, RETURNS_A)
    loss_b, _ = hand_reinforce(weights_of(params, 1), INPUTS_B, ACTIONS_B, RETURNS_B)
    assert loss_a > 0.5 and loss_b > 0.5 and abs(loss_a - loss_b) > 1e-2

    loss, _ = _loss_and_grads(learner, train_batch(learner, [trajectories]), params)
    assert loss.item() == pytest.approx(loss_a + loss_b, rel=1e-5)
    logged = learner.metrics.peek((DEFAULT_MODULE_ID, POLICY_LOSS_KEY))
    assert float(logged) == pytest.approx((loss_a + loss_b) / 2, rel=1e-5)

    results = learner.update(episodes=[trajectories])
    assert results[DEFAULT_MODULE_ID][POLICY_LOSS_KEY].peek() == pytest.approx(
        (loss_a + loss_b) / 2, rel=1e-5
    )


def test_each_seeds_gradient_is_its_own_hand_reinforce_gradient(grid_env):
    learner = _seed_learner(grid_env, seeds=[0, 1])
    params = seed_params_of(learner)
    randomize(params, seed=14)
    batch = train_batch(
        learner,
        [make_trajectories((OBS_A, ACTIONS_A, REWARDS_A), (OBS_B, ACTIONS_B, REWARDS_B))],
    )
    _, grads = _loss_and_grads(learner, batch, params)
    for seed, (inputs, actions, returns) in enumerate(
        [(INPUTS_A, ACTIONS_A, RETURNS_A), (INPUTS_B, ACTIONS_B, RETURNS_B)]
    ):
        _, expected = hand_reinforce(weights_of(params, seed), inputs, actions, returns)
        _assert_grads({k: g[seed] for k, g in grads.items()}, expected)

    # Seed 1 gets other data: seed 0's gradient stays exactly the same, seed 1's changes.
    other = train_batch(
        learner,
        [make_trajectories((OBS_A, ACTIONS_A, REWARDS_A), (OBS_A, ACTIONS_A, REWARDS_B))],
    )
    _, other_grads = _loss_and_grads(learner, other, params)
    for key in grads:
        assert torch.equal(other_grads[key][0], grads[key][0]), key
    assert not torch.allclose(other_grads["w2"][1], grads["w2"][1])


# ---------------------------------------------------------------- one seed = single seed


def test_one_seed_learner_and_single_seed_learner_agree_for_the_same_weights(grid_env):
    single = _single_learner(grid_env)
    seeded = _seed_learner(grid_env, seeds=[0])
    single_params, seed_params = single_params_of(single), seed_params_of(seeded)
    randomize(single_params, seed=15)
    initial = seed_params["w1"][0].detach().clone()
    with torch.no_grad():
        for key, p in single_params.items():
            seed_params[key][0].copy_(p)
    assert not torch.equal(seed_params["w1"][0], initial)  # the seed's own weights are gone

    single_loss, single_grads = _loss_and_grads(
        single,
        train_batch(single, [make_episode(grid_env, OBS_A, ACTIONS_A, REWARDS_A)]),
        single_params,
    )
    seed_loss, seed_grads = _loss_and_grads(
        seeded,
        train_batch(seeded, [make_trajectories((OBS_A, ACTIONS_A, REWARDS_A))]),
        seed_params,
    )
    expected, _ = hand_reinforce(weights_of(single_params), INPUTS_A, ACTIONS_A, RETURNS_A)
    assert single_loss.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(seed_loss, single_loss, rtol=1e-6, atol=1e-7)
    assert float(seeded.metrics.peek((DEFAULT_MODULE_ID, POLICY_LOSS_KEY))) == pytest.approx(
        float(single.metrics.peek((DEFAULT_MODULE_ID, POLICY_LOSS_KEY))), rel=1e-6
    )
    for key in single_grads:
        assert seed_grads[key].shape == (1, *single_grads[key].shape), key
        torch.testing.assert_close(seed_grads[key][0], single_grads[key], rtol=1e-5, atol=1e-7)
