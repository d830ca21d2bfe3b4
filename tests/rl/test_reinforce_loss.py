"""The REINFORCE loss against a hand computation: returns-to-go, −mean(log π · G), gradients.

Hand-made 3-step trajectories go through each learner's real connector pipeline (RLlib's
``ComputeReturnsToGo`` for the single-seed learner, ``SeedReturnsToGo`` for the seed learner).
The returns-to-go are checked against literal numbers (γ = 0.9), and the learner's loss and
its autograd gradient against log π and the analytic REINFORCE gradient, both worked out in
float64 numpy from the module's weights: one-hot(x·11 + y) selects column i of W1, then
tanh, W2 and log-softmax. IMM is off (``imm(target=None)``), so the loss is the policy term.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

import envs
from imm_ray.rl import ReinforceConfig
from imm_ray.rl.reinforce_torch_learner import POLICY_LOSS_KEY
from imm_ray.rl.seeds import SeedReinforceConfig
from imm_ray.rl.seeds.tensor_env_runner import SeedTrajectories

GAMMA = 0.9  # the configs' default, set explicitly below

# Trajectory A on the 11 × 11 torus: (2,3) right → (3,3) left → (2,3) up → (2,4). State
# (2,3) is visited twice, so its column of W1 collects two steps' gradients.
OBS_A = [(2, 3), (3, 3), (2, 3), (2, 4)]  # the last one is the observation after step 2
ACTIONS_A = [3, 2, 0]  # envs.ACTION_NAMES: up, down, left, right
REWARDS_A = [1.0, 0.0, 2.0]
INPUTS_A = [25, 36, 25]  # joint index x·11 + y of the observations before each step
# G_2 = 2, G_1 = 0 + 0.9·2 = 1.8, G_0 = 1 + 0.9·1.8 = 2.62.
RETURNS_A = [2.62, 1.8, 2.0]

# Trajectory B: (7,1) down → (7,0) down (wraps) → (7,10) left → (6,10); a negative reward.
OBS_B = [(7, 1), (7, 0), (7, 10), (6, 10)]
ACTIONS_B = [1, 1, 2]
REWARDS_B = [0.0, 3.0, -1.0]
INPUTS_B = [78, 77, 87]
# G_2 = −1, G_1 = 3 + 0.9·(−1) = 2.1, G_0 = 0 + 0.9·2.1 = 1.89.
RETURNS_B = [1.89, 2.1, -1.0]

# float32 learner vs float64 hand computation.
TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def env():
    env = gym.make(envs.MDP_ENV_ID)
    yield env
    env.close()


def _single_learner(env):
    config = ReinforceConfig().training(gamma=GAMMA).imm(target=None)
    assert not config.imm_enabled
    return config.build_learner(env=env)


def _seed_learner(env, seeds):
    config = SeedReinforceConfig().training(seeds=seeds, gamma=GAMMA).imm(target=None)
    assert not config.imm_enabled
    return config.build_learner(env=env)


def _single_params(learner) -> dict[str, torch.nn.Parameter]:
    """The single-seed module's layers as (W1, b1, W2, b2), ``nn.Linear`` layout."""
    pi = learner.module[DEFAULT_MODULE_ID].pi
    params = {"w1": pi[0].weight, "b1": pi[0].bias, "w2": pi[2].weight, "b2": pi[2].bias}
    assert set(map(id, learner.module[DEFAULT_MODULE_ID].parameters())) == set(
        map(id, params.values())
    )
    return params


def _seed_params(learner) -> dict[str, torch.nn.Parameter]:
    """The batched module's layers, each with a leading seed axis."""
    module = learner.module[DEFAULT_MODULE_ID]
    w, b = module.weights, module.biases
    params = {"w1": w[0], "b1": b[0], "w2": w[1], "b2": b[1]}
    assert set(map(id, module.parameters())) == set(map(id, params.values()))
    return params


def _randomize(params: dict[str, torch.nn.Parameter], seed: int) -> None:
    """Weights large enough that π is far from uniform and tanh is far from linear."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=generator))


def _episode(env, obs, actions, rewards) -> SingleAgentEpisode:
    episode = SingleAgentEpisode(
        observations=[np.array(o) for o in obs],
        actions=list(actions),
        rewards=list(rewards),
        truncated=True,
        observation_space=env.observation_space,
        action_space=env.action_space,
        len_lookback_buffer=0,
    )
    episode.to_numpy()
    return episode


def _trajectories(*trajectories) -> SeedTrajectories:
    """One (obs, actions, rewards) trajectory per seed; the final observation is dropped."""
    return SeedTrajectories(
        obs=torch.tensor([obs[:-1] for obs, _, _ in trajectories]),
        actions=torch.tensor([actions for _, actions, _ in trajectories]),
        rewards=torch.tensor([rewards for _, _, rewards in trajectories], dtype=torch.float32),
    )


def _train_batch(learner, episodes) -> dict[str, torch.Tensor]:
    """The learner's own connector pipeline on ``episodes``: the module's train batch."""
    batch = learner._learner_connector(
        rl_module=learner.module,
        batch={},
        episodes=episodes,
        shared_data={},
        metrics=learner.metrics,
    )
    return batch[DEFAULT_MODULE_ID]


def _loss_and_grads(learner, batch, params) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The learner's loss on ``batch`` and the gradients its ``compute_gradients`` takes."""
    fwd_out = learner.module[DEFAULT_MODULE_ID].forward_train(batch)
    losses = learner.compute_losses(
        fwd_out={DEFAULT_MODULE_ID: fwd_out}, batch={DEFAULT_MODULE_ID: batch}
    )
    learner.compute_gradients(losses)
    return losses[DEFAULT_MODULE_ID], {k: p.grad.detach().clone() for k, p in params.items()}


def _hand(weights, inputs, actions, returns) -> tuple[float, dict[str, np.ndarray]]:
    """L = −(1/T) Σ_t log π(a_t | s_t) G_t and ∂L/∂(W1, b1, W2, b2), by hand in float64.

    ``weights`` are (W1 [H, n], b1 [H], W2 [A, H], b2 [A]); ``inputs`` the one-hot indices.
    """
    w1, b1, w2, b2 = (np.asarray(weights[k], dtype=np.float64) for k in ("w1", "b1", "w2", "b2"))
    inputs, actions = np.asarray(inputs), np.asarray(actions)
    returns = np.asarray(returns, dtype=np.float64)
    steps, n_actions = len(actions), len(b2)
    h = np.tanh(w1[:, inputs].T + b1)  # [T, H]: W1 · one-hot(i) is column i of W1
    logits = h @ w2.T + b2  # [T, A]
    log_pi = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    pi = np.exp(log_pi)
    loss = -np.mean(log_pi[np.arange(steps), actions] * returns)

    # ∂L/∂logits_t = −(G_t / T)(e_{a_t} − π_t); then back through W2, tanh and W1's columns.
    d_logits = -(returns[:, None] / steps) * (np.eye(n_actions)[actions] - pi)
    d_pre = (d_logits @ w2) * (1.0 - h**2)  # [T, H]
    d_w1 = np.zeros_like(w1)
    for t, i in enumerate(inputs):
        d_w1[:, i] += d_pre[t]
    grads = {"w1": d_w1, "b1": d_pre.sum(0), "w2": d_logits.T @ h, "b2": d_logits.sum(0)}
    return float(loss), grads


def _weights_of(params, seed=None) -> dict[str, np.ndarray]:
    return {
        k: (p if seed is None else p[seed]).detach().numpy().astype(np.float64)
        for k, p in params.items()
    }


def _assert_grads(actual: dict[str, torch.Tensor], expected: dict[str, np.ndarray]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(
            actual[key].double(), torch.from_numpy(value), **TOL, msg=lambda m, k=key: f"{k}: {m}"
        )


# ---------------------------------------------------------------- single-seed learner


def test_rllib_returns_to_go_are_the_hand_discounted_sums_per_episode(env):
    learner = _single_learner(env)
    batch = _train_batch(learner, [_episode(env, OBS_A, ACTIONS_A, REWARDS_A)])
    torch.testing.assert_close(batch[Columns.OBS], torch.tensor(OBS_A[:-1]))
    torch.testing.assert_close(batch[Columns.ACTIONS], torch.tensor(ACTIONS_A))
    torch.testing.assert_close(
        batch[Columns.RETURNS_TO_GO].double(), torch.tensor(RETURNS_A, dtype=torch.float64), **TOL
    )

    # Two episodes in one batch: G stops at each episode's end (no leak from B into A).
    both = _train_batch(
        learner,
        [_episode(env, OBS_A, ACTIONS_A, REWARDS_A), _episode(env, OBS_B, ACTIONS_B, REWARDS_B)],
    )
    torch.testing.assert_close(both[Columns.OBS], torch.tensor(OBS_A[:-1] + OBS_B[:-1]))
    torch.testing.assert_close(
        both[Columns.RETURNS_TO_GO].double(),
        torch.tensor(RETURNS_A + RETURNS_B, dtype=torch.float64),
        **TOL,
    )


def test_single_seed_policy_loss_is_minus_mean_log_prob_times_return(env):
    learner = _single_learner(env)
    params = _single_params(learner)
    _randomize(params, seed=11)
    episode = _episode(env, OBS_A, ACTIONS_A, REWARDS_A)
    expected, _ = _hand(_weights_of(params), INPUTS_A, ACTIONS_A, RETURNS_A)
    # Clearly nonzero and positive (log π < 0, most G > 0): a zero policy term or a flipped
    # sign (+mean) cannot pass the equality below.
    assert expected > 0.5

    loss, _ = _loss_and_grads(learner, _train_batch(learner, [episode]), params)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    logged = learner.metrics.peek((DEFAULT_MODULE_ID, POLICY_LOSS_KEY))
    assert float(logged) == pytest.approx(expected, rel=1e-5)

    # The full update path (connector → MultiAgentBatch → _update) logs the same loss
    # (computed before the optimizer step).
    results = learner.update(episodes=[episode])
    assert results[DEFAULT_MODULE_ID][POLICY_LOSS_KEY].peek() == pytest.approx(expected, rel=1e-5)


def test_single_seed_gradient_is_the_hand_reinforce_gradient(env):
    learner = _single_learner(env)
    params = _single_params(learner)
    _randomize(params, seed=12)
    _, grads = _loss_and_grads(
        learner, _train_batch(learner, [_episode(env, OBS_A, ACTIONS_A, REWARDS_A)]), params
    )
    _, expected = _hand(_weights_of(params), INPUTS_A, ACTIONS_A, RETURNS_A)
    assert np.abs(expected["w2"]).max() > 1e-2 and np.abs(expected["w1"]).max() > 1e-2
    _assert_grads(grads, expected)
    # Only the visited states' columns of W1 get a gradient.
    visited = sorted(set(INPUTS_A))
    assert torch.count_nonzero(grads["w1"].abs().sum(0)).item() == len(visited)


# ---------------------------------------------------------------- seed-vectorized learner


def test_seed_returns_to_go_are_each_seeds_hand_discounted_sums(env):
    learner = _seed_learner(env, seeds=[0, 1])
    trajectory_a = (OBS_A, ACTIONS_A, REWARDS_A)
    trajectory_b = (OBS_B, ACTIONS_B, REWARDS_B)
    batch = _train_batch(learner, [_trajectories(trajectory_a, trajectory_b)])
    torch.testing.assert_close(batch[Columns.OBS], torch.tensor([OBS_A[:-1], OBS_B[:-1]]))
    torch.testing.assert_close(batch[Columns.ACTIONS], torch.tensor([ACTIONS_A, ACTIONS_B]))
    torch.testing.assert_close(
        batch[Columns.RETURNS_TO_GO].double(),
        torch.tensor([RETURNS_A, RETURNS_B], dtype=torch.float64),
        **TOL,
    )

    # Two trajectories per seed are joined in time, each with its own G (no leak across).
    joined = _train_batch(
        learner,
        [_trajectories(trajectory_a, trajectory_b), _trajectories(trajectory_b, trajectory_a)],
    )
    torch.testing.assert_close(
        joined[Columns.RETURNS_TO_GO].double(),
        torch.tensor([RETURNS_A + RETURNS_B, RETURNS_B + RETURNS_A], dtype=torch.float64),
        **TOL,
    )


def test_seed_loss_is_the_sum_of_each_seeds_hand_mean_and_logs_their_mean(env):
    learner = _seed_learner(env, seeds=[0, 1])
    params = _seed_params(learner)
    _randomize(params, seed=13)
    trajectories = _trajectories((OBS_A, ACTIONS_A, REWARDS_A), (OBS_B, ACTIONS_B, REWARDS_B))
    loss_a, _ = _hand(_weights_of(params, 0), INPUTS_A, ACTIONS_A, RETURNS_A)
    loss_b, _ = _hand(_weights_of(params, 1), INPUTS_B, ACTIONS_B, RETURNS_B)
    assert loss_a > 0.5 and loss_b > 0.5 and abs(loss_a - loss_b) > 1e-2

    loss, _ = _loss_and_grads(learner, _train_batch(learner, [trajectories]), params)
    assert loss.item() == pytest.approx(loss_a + loss_b, rel=1e-5)
    logged = learner.metrics.peek((DEFAULT_MODULE_ID, POLICY_LOSS_KEY))
    assert float(logged) == pytest.approx((loss_a + loss_b) / 2, rel=1e-5)

    results = learner.update(episodes=[trajectories])
    assert results[DEFAULT_MODULE_ID][POLICY_LOSS_KEY].peek() == pytest.approx(
        (loss_a + loss_b) / 2, rel=1e-5
    )


def test_each_seeds_gradient_is_its_own_hand_reinforce_gradient(env):
    learner = _seed_learner(env, seeds=[0, 1])
    params = _seed_params(learner)
    _randomize(params, seed=14)
    batch = _train_batch(
        learner,
        [_trajectories((OBS_A, ACTIONS_A, REWARDS_A), (OBS_B, ACTIONS_B, REWARDS_B))],
    )
    _, grads = _loss_and_grads(learner, batch, params)
    for seed, (inputs, actions, returns) in enumerate(
        [(INPUTS_A, ACTIONS_A, RETURNS_A), (INPUTS_B, ACTIONS_B, RETURNS_B)]
    ):
        _, expected = _hand(_weights_of(params, seed), inputs, actions, returns)
        _assert_grads({k: g[seed] for k, g in grads.items()}, expected)

    # Seed 1 gets other data: seed 0's gradient stays exactly the same, seed 1's changes.
    other = _train_batch(
        learner,
        [_trajectories((OBS_A, ACTIONS_A, REWARDS_A), (OBS_A, ACTIONS_A, REWARDS_B))],
    )
    _, other_grads = _loss_and_grads(learner, other, params)
    for key in grads:
        assert torch.equal(other_grads[key][0], grads[key][0]), key
    assert not torch.allclose(other_grads["w2"][1], grads["w2"][1])


# ---------------------------------------------------------------- one seed = single seed


def test_one_seed_learner_and_single_seed_learner_agree_for_the_same_weights(env):
    single = _single_learner(env)
    seeded = _seed_learner(env, seeds=[0])
    single_params, seed_params = _single_params(single), _seed_params(seeded)
    _randomize(single_params, seed=15)
    initial = seed_params["w1"][0].detach().clone()
    with torch.no_grad():
        for key, p in single_params.items():
            seed_params[key][0].copy_(p)
    assert not torch.equal(seed_params["w1"][0], initial)  # the seed's own weights are gone

    single_loss, single_grads = _loss_and_grads(
        single, _train_batch(single, [_episode(env, OBS_A, ACTIONS_A, REWARDS_A)]), single_params
    )
    seed_loss, seed_grads = _loss_and_grads(
        seeded,
        _train_batch(seeded, [_trajectories((OBS_A, ACTIONS_A, REWARDS_A))]),
        seed_params,
    )
    expected, _ = _hand(_weights_of(single_params), INPUTS_A, ACTIONS_A, RETURNS_A)
    assert single_loss.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(seed_loss, single_loss, rtol=1e-6, atol=1e-7)
    assert float(seeded.metrics.peek((DEFAULT_MODULE_ID, POLICY_LOSS_KEY))) == pytest.approx(
        float(single.metrics.peek((DEFAULT_MODULE_ID, POLICY_LOSS_KEY))), rel=1e-6
    )
    for key in single_grads:
        assert seed_grads[key].shape == (1, *single_grads[key].shape), key
        torch.testing.assert_close(seed_grads[key][0], single_grads[key], rtol=1e-5, atol=1e-7)
