"""Gymnasium's Taxi-v3 with the destination hidden: the second MDP/POMDP pair.

The world is gymnasium's own: every table here is read from
``gymnasium.make("Taxi-v3").unwrapped`` (its ``P`` and ``initial_state_distrib``), never
retyped. A state is gymnasium's id ``s = ((row · 5 + col) · 5 + passenger) · 4 +
destination`` (passenger 0–3: waiting at one of the four stands R, G, Y, B; 4: in the
taxi). Six actions (south, north, east, west, pickup, dropoff), reward −1 per step, +20
for the dropoff at the destination (which ends the episode), −10 for an illegal pickup or
dropoff; episodes are truncated after ``trajectory_length`` steps (200, as gymnasium's
``TimeLimit``).

The MDP observes the whole state ``(row, col, passenger, destination)``. The POMDP view
observes the context ``(row, col, passenger)`` (125 contexts, ``c = s // 4``): a legacy
dispatcher that never saw where the passenger wants to go.

What the grid never needed, and the pair contract now carries:

- terminal states: the passenger at its destination (reached only by the successful
  dropoff). They are absorbing with reward 0 in :meth:`Taxi.transition_matrix` and
  :meth:`Taxi.reward_matrix`, so solvers value them 0 and walkers stop there;
- rewards on ``(s, a)``: ``R[a, s, s']`` repeats gymnasium's reward of ``(s, a)``;
- a start distribution that is not uniform: gymnasium's (any taxi cell, the passenger
  waiting at a stand, a destination at one of the other three);
- a belief over the hidden destination given a context, :meth:`Taxi.context_belief`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.pair import PomdpMdpPair, deterministic_transitions
from envs.tabular_env import TabularEnv
from imm_ray import checks

if TYPE_CHECKING:
    import torch

#: Gymnasium's Taxi id the tables are read from.
GYMNASIUM_TAXI_ID = "Taxi-v3"
#: Action ids 0..5 in gymnasium's order.
TAXI_ACTION_NAMES = ("south", "north", "east", "west", "pickup", "dropoff")
#: Sizes of the observation's coordinates: taxi row, taxi column, passenger, destination.
TAXI_NVEC = (5, 5, 5, 4)
#: The passenger coordinate's value while the passenger rides in the taxi.
IN_TAXI = 4


@dataclass(frozen=True)
class _GymnasiumTables:
    next_state: np.ndarray  # [S, A] int64
    reward: np.ndarray  # [S, A] float64
    terminated: np.ndarray  # [S, A] bool
    initial: np.ndarray  # [S] float64


@functools.cache
def gymnasium_taxi_tables() -> _GymnasiumTables:
    """Gymnasium's Taxi-v3 tables: ``P[s][a]`` as arrays, and ``initial_state_distrib``.

    Taxi-v3 without rain is deterministic: every ``P[s][a]`` holds one transition of
    probability 1, which is checked here.
    """
    env = gym.make(GYMNASIUM_TAXI_ID).unwrapped
    n_states, n_actions = env.observation_space.n, env.action_space.n
    next_state = np.zeros((n_states, n_actions), dtype=np.int64)
    reward = np.zeros((n_states, n_actions))
    terminated = np.zeros((n_states, n_actions), dtype=bool)
    for s in range(n_states):
        for a in range(n_actions):
            ((prob, s_next, r, done),) = env.P[s][a]
            if prob != 1.0:
                raise ValueError(f"{GYMNASIUM_TAXI_ID}: P[{s}][{a}] is not deterministic")
            next_state[s, a], reward[s, a], terminated[s, a] = s_next, r, done
    initial = np.asarray(env.initial_state_distrib, dtype=np.float64).copy()
    env.close()
    for table in (next_state, reward, terminated, initial):
        table.setflags(write=False)
    return _GymnasiumTables(next_state, reward, terminated, initial)


@dataclass(frozen=True)
class Taxi(PomdpMdpPair):
    """Taxi-v3 as a :class:`PomdpMdpPair`: state = gymnasium's id, context ``s // 4``."""

    trajectory_length: int = 200
    """Steps (≥ 1) after which an episode is truncated (gymnasium's ``TimeLimit``: 200)."""

    def __post_init__(self) -> None:
        length = checks.integer("trajectory_length", self.trajectory_length, 1, numpy=True)
        object.__setattr__(self, "trajectory_length", int(length))

    n_states = 500
    n_actions = len(TAXI_ACTION_NAMES)
    n_contexts = 125

    @property
    def evaluation_horizon(self) -> int:
        """Evaluation rollouts are whole episodes, up to ``trajectory_length`` steps."""
        return self.trajectory_length

    def coordinates(self) -> np.ndarray:
        """``(row, col, passenger, destination)`` of every state, int64 ``[S, 4]``."""
        return np.stack(np.unravel_index(np.arange(self.n_states), TAXI_NVEC), axis=1)

    def terminal_states(self) -> np.ndarray:
        """The passenger at its destination: only the successful dropoff arrives there."""
        _, _, passenger, destination = self.coordinates().T
        return passenger == destination

    def next_state_table(self) -> np.ndarray:
        """``N[a, s]``: gymnasium's next state; a terminal state stays where it is."""
        table = gymnasium_taxi_tables().next_state.T.copy()
        terminal = self.terminal_states()
        table[:, terminal] = np.flatnonzero(terminal)
        return table

    def transition_matrix(self) -> np.ndarray:
        """``T[a, s, s'] = 1`` iff ``s' = N[a, s]`` (:meth:`next_state_table`)."""
        return deterministic_transitions(self.next_state_table())

    def state_action_reward(self) -> np.ndarray:
        """``r[s, a]``, shape ``[S, A]``: gymnasium's rewards, 0 in terminal states."""
        reward = gymnasium_taxi_tables().reward.copy()
        reward[self.terminal_states()] = 0.0
        return reward

    def next_reward_table(self) -> np.ndarray:
        """``r[a, s]``: :meth:`state_action_reward` transposed (the reward is on ``(s, a)``)."""
        return self.state_action_reward().T.copy()

    def reward_matrix(self) -> np.ndarray:
        """``R[a, s, s'] = r[s, a]`` (:meth:`state_action_reward`) for every ``s'``."""
        shape = (self.n_actions, self.n_states, self.n_states)
        return np.broadcast_to(self.state_action_reward().T[:, :, None], shape).copy()

    def initial_belief(self) -> np.ndarray:
        """Gymnasium's ``initial_state_distrib``: uniform over the 300 states whose passenger
        waits at a stand other than its destination."""
        return gymnasium_taxi_tables().initial.copy()

    def state_context(self) -> np.ndarray:
        """``(row, col, passenger)`` as one id ``s // 4``: everything but the destination."""
        return np.arange(self.n_states) // TAXI_NVEC[-1]

    def context_belief(self) -> np.ndarray:
        """``π(s | c)``: the destination's distribution given where the passenger is.

        The POMDP agent is memoryless: it knows only the taxi's cell and the passenger's
        place. While the passenger waits at stand p, the destination is distributed as at
        the start given p (uniform over the three other stands: the start distribution
        never puts them together, and a delivered passenger has ended the episode). While
        the passenger rides, the stand it was picked up at is forgotten, so the belief is
        the start distribution's marginal of the destination (uniform over all four).

        The default (the start distribution conditioned on the context) would fail here:
        no episode starts with the passenger in the taxi.
        """
        _, _, passenger, destination = self.coordinates().T
        initial = self.initial_belief()
        by_place = np.zeros((TAXI_NVEC[2], TAXI_NVEC[3]))
        np.add.at(by_place, (passenger, destination), initial)
        by_place[IN_TAXI] = by_place.sum(axis=0)
        by_place /= by_place.sum(axis=1, keepdims=True)
        belief = np.zeros((self.n_contexts, self.n_states))
        belief[self.state_context(), np.arange(self.n_states)] = by_place[passenger, destination]
        return belief

    def state_observation(self) -> np.ndarray:
        """Rows ``(row, col, passenger, destination)``, int64 ``[S, 4]``."""
        return self.coordinates()

    def observation_state(self, obs: torch.Tensor) -> torch.Tensor:
        """Gymnasium's state id of observations ``[..., 4]`` as long; floats are rounded."""
        import torch  # here, not at the top: planning a sweep needs no torch

        obs = torch.as_tensor(obs)
        if obs.is_floating_point():
            obs = obs.round()
        obs = obs.long()
        row, col, passenger, destination = obs.unbind(-1)
        return ((row * 5 + col) * 5 + passenger) * 4 + destination


class TaxiEnv(TabularEnv):
    """The Taxi MDP, stepped by :class:`TabularEnv` with :class:`Taxi`'s tables: observes
    ``(row, col, passenger, destination)``, starts from gymnasium's start distribution,
    terminates on the successful dropoff and truncates after ``trajectory_length`` steps.

    With the same seed and actions it produces gymnasium's Taxi-v3 states, rewards and
    terminations (the start is drawn as gymnasium draws it). ``reset(options={"state": s})``
    starts in state ``s``. Stepping on after termination stays put and pays 0.
    """

    metadata = {"render_modes": []}

    def __init__(self, trajectory_length: int = 200) -> None:
        self.pair = Taxi(trajectory_length)
        self.observation_space = spaces.MultiDiscrete(TAXI_NVEC, dtype=np.int64)
        self.action_space = spaces.Discrete(self.pair.n_actions)
        self._start_tables()
