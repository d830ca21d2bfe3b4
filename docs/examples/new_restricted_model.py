"""A new restricted model: the grid's optimal MDP policy, averaged over the hidden y.

P̂(a | x) = Σ_y π(y | x) 1{a = π*(x, y)}: what an expert who sees the whole state does, as
seen by someone who knows only its column. It is the optimal policy's own induced model,
so IMM against it is consistent by construction. Any ``[n_contexts, n_actions]`` table
whose rows sum to 1 is a target: ``.imm(target=table)``. Run it from the repository root:
``python docs/examples/new_restricted_model.py``.
"""

from __future__ import annotations

import numpy as np

import envs
from envs.pair import PomdpMdpPair
from imm_ray.cluster import init_ray, shutdown_ray
from imm_ray.console import quiet_library_logs
from imm_ray.restricted import TargetSpec, context_policy_return
from imm_ray.rl import paper_lambda


def induced_expert_policy(pair: PomdpMdpPair, discount: float = 0.9) -> np.ndarray:
    """``P̂[c, a]``: the optimal MDP policy (value iteration) under the belief π(s | c)."""
    transitions, rewards = pair.transition_matrix(), pair.expected_reward()
    values = np.zeros(pair.n_states)
    for _ in range(300):  # 0.9³⁰⁰ ≈ 2e-14: converged
        q = rewards + discount * np.einsum("ast,t->sa", transitions, values)
        values = q.max(axis=1)
    expert = np.eye(pair.n_actions)[q.argmax(axis=1)]  # [S, A], one-hot
    return pair.context_belief() @ expert  # [C, A]


def main() -> None:
    pair = envs.make_pair(envs.MDP_ENV_ID)  # the 11 × 11 torus; the POMDP sees x only
    target = induced_expert_policy(pair)
    fib = TargetSpec(kind="argmax").table(pair)
    horizon = pair.evaluation_horizon
    print(f"target shape: {list(target.shape)}, rows sum to 1: {np.allclose(target.sum(1), 1)}")
    print(f"induced expert alone: {context_policy_return(pair, target, horizon):.3f}")
    print(f"FIB argmax alone: {context_policy_return(pair, fib, horizon):.3f}")

    from imm_ray.rl.seeds import SeedReinforceConfig, train_and_evaluate_seeds

    quiet_library_logs()
    init_ray(num_cpus=1)
    try:
        config = SeedReinforceConfig().training(seeds=range(30))
        none = train_and_evaluate_seeds(config.copy().imm(lam=0.0), [50])[50]
        imm = train_and_evaluate_seeds(config.imm(lam=paper_lambda(50), target=target), [50])[50]
    finally:
        shutdown_ray()
    gain = imm - none  # paired by seed: each seed's runs share their random streams
    se = gain.std(ddof=1) / np.sqrt(len(gain))
    print(f"50 epochs, 30 seeds: no IMM {none.mean():.2f}, IMM {imm.mean():.2f}")
    print(f"IMM gain: {gain.mean():.2f} ± {se:.2f} (paired standard error)")


if __name__ == "__main__":
    main()
