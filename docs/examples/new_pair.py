"""A new MDP/POMDP pair: a ring corridor whose goal the POMDP agent cannot see.

The MDP observes (cell, goal); the POMDP observes the cell only. Once registered, the
solvers, the restricted policies and both RL paths work on it unchanged. Run it from the
repository root: ``python docs/examples/new_pair.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import envs
from envs.pair import PomdpMdpPair, deterministic_transitions
from envs.tabular_env import TabularEnv
from imm_ray.cluster import init_ray, shutdown_ray
from imm_ray.console import quiet_library_logs
from imm_ray.restricted import TargetSpec, context_policy_return

MOVES = {"left": -1, "right": 1, "stay": 0}


@dataclass(frozen=True)
class Ring(PomdpMdpPair):
    """``length`` cells in a ring; the goal is at a quarter or at three quarters of it.

    State ``s = goal · length + cell``; the POMDP's context is the cell. Arriving at (or
    staying on) the goal's cell pays 1.
    """

    length: int = 8
    trajectory_length: int = 20

    @property
    def n_states(self) -> int:
        return 2 * self.length

    @property
    def n_actions(self) -> int:
        return len(MOVES)

    @property
    def n_contexts(self) -> int:
        return self.length

    def goal_cells(self) -> np.ndarray:
        return np.array([self.length // 4, 3 * self.length // 4])

    def goal_and_cell(self) -> tuple[np.ndarray, np.ndarray]:
        return np.divmod(np.arange(self.n_states), self.length)

    def next_state_table(self) -> np.ndarray:
        goal, cell = self.goal_and_cell()
        moved = (cell[None, :] + np.array(list(MOVES.values()))[:, None]) % self.length
        return goal[None, :] * self.length + moved

    def transition_matrix(self) -> np.ndarray:
        return deterministic_transitions(self.next_state_table())

    def reward_matrix(self) -> np.ndarray:
        goal, cell = self.goal_and_cell()
        arrival = (cell == self.goal_cells()[goal]).astype(float)  # reward of landing in s'
        return np.broadcast_to(arrival, (self.n_actions, self.n_states, self.n_states)).copy()

    def state_context(self) -> np.ndarray:
        return self.goal_and_cell()[1]

    def state_observation(self) -> np.ndarray:
        goal, cell = self.goal_and_cell()
        return np.stack([cell, goal], axis=1)

    def observation_state(self, obs):
        import torch

        obs = torch.as_tensor(obs)
        obs = (obs.round() if obs.is_floating_point() else obs).long()
        return obs[..., 1] * self.length + obs[..., 0]


class RingEnv(TabularEnv):
    """The ring's MDP env: ``reset`` and ``step`` come from the pair's tables."""

    def __init__(self, length: int = 8, trajectory_length: int = 20) -> None:
        self.pair = Ring(length, trajectory_length)
        self.observation_space = spaces.MultiDiscrete([length, 2], dtype=np.int64)
        self.action_space = spaces.Discrete(len(MOVES))
        self._start_tables()


envs.register_pair("docs/Ring-v0", "docs/RingPOMDP-v0", Ring, RingEnv)


def main() -> None:
    mdp, pomdp = gym.make("docs/Ring-v0"), gym.make("docs/RingPOMDP-v0")
    print("MDP observation:", mdp.reset(options={"state": 9})[0].tolist())  # goal 1, cell 1
    pomdp.reset(options={"state": 9})
    observation, reward, *_ = pomdp.step(list(MOVES).index("right"))
    print("POMDP observation:", int(observation), "reward:", reward)  # cell 2, the other goal

    pair = envs.make_pair("docs/Ring-v0", {"length": 8})
    target = TargetSpec(kind="argmax").table(pair)  # FIB at the belief over the goal
    names = list(MOVES)
    print("restricted policy:", " ".join(names[a] for a in target.argmax(axis=1)))
    alone = context_policy_return(pair, target, pair.evaluation_horizon)
    print(f"restricted policy alone: {alone:.3f}")

    # Both RL paths run on it unchanged; here the seed-vectorized one, IMM against that
    # target, on an embedded Ray (as imm-ray starts it).
    from imm_ray.rl.seeds import SeedReinforceConfig, train_and_evaluate_seeds

    quiet_library_logs()
    init_ray(num_cpus=1)
    try:
        config = SeedReinforceConfig().environment("docs/Ring-v0").training(seeds=range(10))
        rewards = train_and_evaluate_seeds(config.imm(lam=1.0, target=target), [20])[20]
    finally:
        shutdown_ray()
    print(f"IMM, 20 epochs: mean reward {rewards.mean():.3f} over {len(rewards)} seeds")


if __name__ == "__main__":
    main()
