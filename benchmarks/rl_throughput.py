"""Seed-epochs per second of one IMM-REINFORCE seed: the RLlib path vs a plain PyTorch loop.

Both do the same work per epoch: sample one 50-step trajectory on the 11×11 grid with the
current policy (one-hot(121) → 32 tanh → 4), compute γ = 0.9 returns-to-go, add λ·IMM with
the exact induced model over all 11 hidden y, and take one Adam step. Algorithm build time
is reported separately and excluded from the rate.

    python benchmarks/rl_throughput.py --epochs 200
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import gymnasium as gym
import numpy as np
import ray
import torch

import envs
from imm_ray.imm import imm_loss
from imm_ray.restricted import solve_restricted_policy
from imm_ray.rl import ReinforceConfig


def plain_torch(epochs: int, seed: int, lam: float = 0.25, gamma: float = 0.9) -> float:
    """Epochs per second of a hand-written loop doing the RLlib path's work."""
    torch.manual_seed(seed)
    env = gym.make(envs.MDP_ENV_ID)
    pair = env.unwrapped.pair
    n = pair.n_states
    policy = torch.nn.Sequential(
        torch.nn.Linear(n, 32), torch.nn.Tanh(), torch.nn.Linear(32, pair.n_actions)
    )
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    target = torch.tensor(solve_restricted_policy(pair), dtype=torch.float32)
    ext_states, ext_weights = (torch.as_tensor(a) for a in pair.extension_table)
    contexts_of = torch.as_tensor(pair.state_context())
    eye = torch.eye(n)
    obs, _ = env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(epochs):
        states, actions, rewards = [], [], []
        done = False
        while not done:
            s = int(pair.observation_state(torch.as_tensor(obs)[None])[0])
            with torch.no_grad():
                a = int(torch.multinomial(torch.softmax(policy(eye[s]), -1), 1))
            obs, r, terminated, truncated, _ = env.step(a)
            states.append(s), actions.append(a), rewards.append(r)
            done = terminated or truncated
        obs, _ = env.reset()
        returns = np.zeros(len(rewards))
        running = 0.0
        for t in reversed(range(len(rewards))):
            running = rewards[t] + gamma * running
            returns[t] = running
        s_t = torch.as_tensor(states)
        logp = torch.log_softmax(policy(eye[s_t]), -1)
        main = -(
            logp[torch.arange(len(actions)), torch.as_tensor(actions)]
            * torch.as_tensor(returns, dtype=torch.float32)
        ).mean()
        c = contexts_of[s_t]
        members = torch.log_softmax(policy(eye[ext_states[c]]), -1)
        loss = main + lam * imm_loss(members, target[c], ext_weights[c].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return epochs / (time.perf_counter() - start)


def rllib(epochs: int, seed: int) -> tuple[float, float]:
    """(epochs per second, build seconds) of :class:`imm_ray.rl.Reinforce` with IMM on."""
    start = time.perf_counter()
    algo = ReinforceConfig().debugging(seed=seed).imm(lam=0.25).build_algo()
    built = time.perf_counter()
    for _ in range(epochs):
        algo.train()
    rate = epochs / (time.perf_counter() - built)
    algo.stop()
    return rate, built - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    plain = plain_torch(args.epochs, args.seed)
    ray_rate, build = rllib(args.epochs, args.seed)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"plain PyTorch loop : {plain:8.1f} seed-epochs/s")
    print(f"RLlib Reinforce+IMM: {ray_rate:8.1f} seed-epochs/s (build {build:.1f} s, excluded)")
    print(f"ratio RLlib / plain: {ray_rate / plain:.3f}")


if __name__ == "__main__":
    main()
