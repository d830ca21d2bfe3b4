"""Seed-epochs per second of S seeds of IMM-REINFORCE in one trial: RLlib vs plain PyTorch.

Both train the same S seeds with the same math: per seed and epoch, one 50-step trajectory
on the 11×11 grid from a uniform random start with actions sampled from the seed's policy
(one-hot(121) → 32 tanh → 4), γ = 0.9 returns-to-go, REINFORCE plus λ·IMM with the exact
induced model over all 11 hidden y (FIB argmax target, λ = 0.25), one Adam step (lr 1e-2).
Both tabulate every seed's policy at every state once per trajectory and per update, both
draw seed s's uniforms from the same per-seed stream and start from the same weights
(``torch.manual_seed(s)`` + ``nn.Linear``), so they train the same policies: the script
reports how many seeds end with the same weights on both paths (float rounding may flip a
rare sampled action, after which that seed's run diverges). Build time is excluded.

    python benchmarks/rl_seeds_throughput.py --seeds 300 --epochs 200
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import numpy as np
import ray
import torch
from torch import nn

import envs
from imm_ray.imm import imm_loss
from imm_ray.restricted import solve_restricted_policy
from imm_ray.rl.seeds import SeedReinforceConfig

LAM, GAMMA, LR, HIDDEN = 0.25, 0.9, 1e-2, 32


def plain_torch(
    seeds: list[int], epochs: int, one_pass: bool = False
) -> tuple[float, list[torch.Tensor]]:
    """(seed-epochs per second, final [W1, b1, W2, b2]) of a seed-vectorized torch loop.

    ``one_pass`` tabulates the policy once per epoch, with grad, and samples from its
    detached copy: the fastest plain form, since sampling and the update use the same
    weights. RLlib's env runner and learner hold separate module copies, so it tabulates
    twice; the default plain form does the same work.
    """
    pair = envs.make_pair(envs.MDP_ENV_ID)
    n, actions, steps = pair.n_states, pair.n_actions, pair.trajectory_length
    count = len(seeds)
    layers = []
    for seed in seeds:
        torch.manual_seed(seed)
        layers.append((nn.Linear(n, HIDDEN), nn.Linear(HIDDEN, actions)))
    w1, b1, w2, b2 = (
        torch.stack([getattr(net[i], name).detach() for net in layers]).requires_grad_()
        for i, name in ((0, "weight"), (0, "bias"), (1, "weight"), (1, "bias"))
    )
    optimizer = torch.optim.Adam([w1, b1, w2, b2], lr=LR)
    generators = [
        torch.Generator().manual_seed(
            int(np.random.SeedSequence([s, 1]).generate_state(1, dtype=np.uint64)[0])
        )
        for s in seeds
    ]
    start_cdf = torch.as_tensor(np.cumsum(pair.initial_belief()), dtype=torch.float32)
    next_state = torch.as_tensor(pair.next_state_table())
    arrival_reward = torch.as_tensor(pair.state_reward(), dtype=torch.float32)
    reward = arrival_reward[next_state]  # [A, S]
    target = torch.tensor(solve_restricted_policy(pair), dtype=torch.float32)
    members, member_weights = (torch.as_tensor(a) for a in pair.extension_table)
    contexts, width = members.shape
    context_of = torch.as_tensor(pair.state_context())
    seed_rows = torch.arange(count)

    def table() -> torch.Tensor:  # [S, A, n]
        return torch.baddbmm(b2.unsqueeze(-1), w2, torch.tanh(w1 + b1.unsqueeze(-1)))

    start = time.perf_counter()
    for _ in range(epochs):
        u = torch.stack([torch.rand(1 + steps, generator=g) for g in generators])
        logits = table() if one_pass else None
        with torch.no_grad():
            sampling = logits.detach() if one_pass else table()
            cdf = torch.softmax(sampling, dim=1).cumsum(dim=1).transpose(1, 2)  # [S, n, A]
        state = torch.searchsorted(start_cdf, u[:, :1] * start_cdf[-1], right=True)[:, 0]
        states, taken, rewards = [], [], []
        for t in range(steps):
            rows = cdf[seed_rows, state]
            a = torch.searchsorted(rows, u[:, 1 + t, None] * rows[:, -1:], right=True)[:, 0]
            a = a.clamp(max=actions - 1)
            states.append(state), taken.append(a), rewards.append(reward[a, state])
            state = next_state[a, state]
        states, taken, rewards = (torch.stack(x, dim=1) for x in (states, taken, rewards))
        returns = torch.empty_like(rewards)
        running = torch.zeros(count)
        for t in reversed(range(steps)):
            running = rewards[:, t] + GAMMA * running
            returns[:, t] = running

        log_probs = torch.log_softmax(logits if one_pass else table(), dim=1)  # [S, A, n]
        chosen = log_probs[seed_rows.unsqueeze(1), taken, states]  # [S, T]
        policy = -(chosen * returns).mean(dim=1)
        member_log_probs = log_probs[:, :, members.reshape(-1)].transpose(1, 2)
        risk = imm_loss(
            member_log_probs.reshape(count * contexts, width, actions),
            target.repeat(count, 1),
            member_weights.float().repeat(count, 1),
            reduction="none",
        ).reshape(count, contexts)
        # IMM_s = mean over the trajectory's steps of its context's risk.
        share = torch.nn.functional.one_hot(context_of[states], contexts).float().mean(dim=1)
        loss = (policy + LAM * (share * risk).sum(dim=1)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rate = count * epochs / (time.perf_counter() - start)
    return rate, [p.detach() for p in (w1, b1, w2, b2)]


def rllib(
    seeds: list[int], epochs: int, epochs_per_iteration: int
) -> tuple[float, float, list[torch.Tensor]]:
    """(seed-epochs per second, build seconds, final weights) of :class:`SeedReinforce`."""
    start = time.perf_counter()
    config = (
        SeedReinforceConfig()
        .training(seeds=seeds, epochs_per_iteration=epochs_per_iteration)
        .imm(lam=LAM)
    )
    algo = config.build_algo()
    built = time.perf_counter()
    algo.train_epochs(epochs)
    rate = len(seeds) * epochs / (time.perf_counter() - built)
    module = algo.get_module()
    weights = [p.detach().clone() for p in (*module.weights, *module.biases)]
    algo.stop()
    w1, w2, b1, b2 = weights
    return rate, built - start, [w1, b1, w2, b2]


def seeds_agreeing(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 1e-4) -> int:
    """How many seeds have every final parameter within ``atol`` on both paths."""
    close = [(x - y).abs().flatten(1).amax(dim=1) <= atol for x, y in zip(a, b, strict=True)]
    return int(torch.stack(close).all(dim=0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300, help="seeds per trial")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--epochs-per-iteration", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    seeds = list(range(args.seeds))
    plain, plain_weights = plain_torch(seeds, args.epochs)
    one_pass, _ = plain_torch(seeds, args.epochs, one_pass=True)
    ray_rate, build, ray_weights = rllib(seeds, args.epochs, args.epochs_per_iteration)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"ray {ray.__version__}"
    )
    print(
        f"{args.seeds} seeds × {args.epochs} epochs, "
        f"epochs_per_iteration={args.epochs_per_iteration}, torch on 1 thread"
    )
    print(f"plain PyTorch (seed-vectorized): {plain:9.1f} seed-epochs/s")
    print(
        f"RLlib SeedReinforce + IMM      : {ray_rate:9.1f} seed-epochs/s "
        f"(build {build:.1f} s, excluded)"
    )
    print(f"plain PyTorch, one table pass  : {one_pass:9.1f} seed-epochs/s")
    print(f"ratio RLlib / plain            : {ray_rate / plain:.3f}")
    print(f"ratio RLlib / plain, one pass  : {ray_rate / one_pass:.3f}")
    agree = seeds_agreeing(plain_weights, ray_weights)
    print(f"seeds with the same final weights on both paths (atol 1e-4): {agree}/{args.seeds}")


if __name__ == "__main__":
    main()
