"""Hand-made RL batches and the hand computations they are checked against, shared by the
REINFORCE loss tests (``test_reinforce_loss.py``), the Taxi training tests
(``test_taxi_training.py``) and the total-loss tests (``test_total_loss.py``).

Two 3-step trajectories on the 11 × 11 torus (A and B) with their returns-to-go at γ = 0.9,
and a 4-step two-seed Taxi batch in which seed 0's episode terminates; the learners' layers
as (W1, b1, W2, b2), and the REINFORCE loss and its gradient worked out in float64 numpy.
"""

from __future__ import annotations

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from imm_ray.rl.seeds.tensor_env_runner import SeedTrajectories

GAMMA = 0.9  # the configs' default, which every test sets explicitly

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

# A 4-step batch: seed 0's episode moves (−1), then delivers (+20) and terminates at step 2;
# seed 1's runs all 4 steps, one of them an illegal dropoff (−10).
TAXI_REWARDS = [[-1.0, 20.0, 0.0, 0.0], [-1.0, -1.0, -10.0, -1.0]]
TAXI_ALIVE = [[True, True, False, False], [True, True, True, True]]
# Seed 0: G_1 = 20, G_0 = −1 + 0.9·20 = 17, nothing after termination.
# Seed 1: G_3 = −1, G_2 = −10 − 0.9 = −10.9, G_1 = −1 − 9.81 = −10.81, G_0 = −10.729.
TAXI_RETURNS = [[17.0, 20.0, 0.0, 0.0], [-10.729, -10.81, -10.9, -1.0]]
# Taxi states (row, col, passenger, destination): seed 0 drives the passenger from (1, 0)
# north to stand R and drops them there; seed 1 wanders with the passenger waiting at Y.
TAXI_OBS = [
    [(1, 0, 4, 0), (0, 0, 4, 0), (0, 0, 0, 0), (0, 0, 0, 0)],
    [(2, 2, 2, 1), (1, 2, 2, 1), (1, 2, 2, 1), (2, 2, 2, 1)],
]
TAXI_ACTIONS = [[1, 5, 0, 0], [1, 5, 0, 0]]


def single_params_of(learner) -> dict[str, torch.nn.Parameter]:
    """The single-seed module's layers as (W1, b1, W2, b2), ``nn.Linear`` layout."""
    pi = learner.module[DEFAULT_MODULE_ID].pi
    params = {"w1": pi[0].weight, "b1": pi[0].bias, "w2": pi[2].weight, "b2": pi[2].bias}
    assert set(map(id, learner.module[DEFAULT_MODULE_ID].parameters())) == set(
        map(id, params.values())
    )
    return params


def seed_params_of(learner) -> dict[str, torch.nn.Parameter]:
    """The batched module's layers, each with a leading seed axis."""
    module = learner.module[DEFAULT_MODULE_ID]
    w, b = module.weights, module.biases
    params = {"w1": w[0], "b1": b[0], "w2": w[1], "b2": b[1]}
    assert set(map(id, module.parameters())) == set(map(id, params.values()))
    return params


def randomize(params: dict[str, torch.nn.Parameter], seed: int) -> None:
    """Weights large enough that π is far from uniform and tanh is far from linear."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=generator))


def make_episode(env, obs, actions, rewards) -> SingleAgentEpisode:
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


def make_trajectories(*trajectories) -> SeedTrajectories:
    """One (obs, actions, rewards) trajectory per seed; the final observation is dropped."""
    return SeedTrajectories(
        obs=torch.tensor([obs[:-1] for obs, _, _ in trajectories]),
        actions=torch.tensor([actions for _, actions, _ in trajectories]),
        rewards=torch.tensor([rewards for _, _, rewards in trajectories], dtype=torch.float32),
    )


def train_batch(learner, episodes) -> dict[str, torch.Tensor]:
    """The learner's own connector pipeline on ``episodes``: the module's train batch."""
    batch = learner._learner_connector(
        rl_module=learner.module,
        batch={},
        episodes=episodes,
        shared_data={},
        metrics=learner.metrics,
    )
    return batch[DEFAULT_MODULE_ID]


def hand_reinforce(weights, inputs, actions, returns) -> tuple[float, dict[str, np.ndarray]]:
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


def weights_of(params, seed=None) -> dict[str, np.ndarray]:
    return {
        k: (p if seed is None else p[seed]).detach().numpy().astype(np.float64)
        for k, p in params.items()
    }
