"""A pair's tables as torch tensors: many walkers step through one MDP at once.

Every walker's step is a table look-up, so S seeds × N walkers move as one tensor program:
the start state, each action and (for stochastic pairs) each next state are drawn by
inverse-CDF sampling from uniforms the caller supplies (:mod:`~imm_ray.rl.streams`),
which keeps the randomness of each seed in that seed's own stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.pair import PomdpMdpPair


@dataclass(frozen=True)
class Walk:
    """Walkers' paths, each ``[S, N, T]``: the state before each step, its action, its reward,
    and (for pairs with terminal states) whether the walker was still alive to take it.

    A walker that reaches a terminal state takes no more steps: from then on ``alive`` is
    False and its rewards are 0 (its states and actions there are filler). ``T`` is the
    horizon, or fewer steps if every walker terminated before it. ``alive`` is ``None``
    for pairs without terminal states: every step is alive.
    """

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    alive: torch.Tensor | None = None


class TensorPair:
    """The MDP of a :class:`~envs.pair.PomdpMdpPair`: ``T[a, s, s']``, ``R[a, s, s']`` and the
    initial belief, as tensors.

    A pair whose transitions are all deterministic (the grid) steps by a next-state table
    ``N[a, s]`` and draws one uniform per step (the action); otherwise the next state is
    drawn from ``T[a, s, ·]`` with a second uniform.
    """

    def __init__(self, pair: PomdpMdpPair) -> None:
        transitions = pair.transition_matrix()
        rewards = pair.reward_matrix()
        self.n_states, self.n_actions = pair.n_states, pair.n_actions
        self.start_cdf = torch.as_tensor(np.cumsum(pair.initial_belief()), dtype=torch.float32)
        terminal = pair.terminal_states()
        self.terminal = torch.as_tensor(terminal, dtype=torch.bool)
        self.terminates = bool(terminal.any())
        if np.any(pair.initial_belief()[terminal] > 0):
            raise ValueError("initial_belief must put no mass on terminal states")
        self.deterministic = bool(np.all(transitions.max(axis=-1) == 1.0))
        if self.deterministic:
            next_state = transitions.argmax(axis=-1)
            actions, states = np.indices(next_state.shape)
            self.next_state = torch.as_tensor(next_state, dtype=torch.long)
            self.next_reward = torch.as_tensor(
                rewards[actions, states, next_state], dtype=torch.float32
            )
        else:
            self.next_cdf = torch.as_tensor(np.cumsum(transitions, axis=-1), dtype=torch.float32)
            self.reward = torch.as_tensor(rewards, dtype=torch.float32)
        # NumPy views of the same tables (no copies), for walk().
        names = ["start_cdf", "terminal"]
        names += ["next_state", "next_reward"] if self.deterministic else ["next_cdf", "reward"]
        self._tables = {name: getattr(self, name).numpy() for name in names}

    @property
    def uniforms_per_step(self) -> int:
        """Uniforms a walker consumes per step: the action, plus the next state if stochastic."""
        return 1 if self.deterministic else 2

    def walk(self, policy_cdf: torch.Tensor, u_start: torch.Tensor, u_steps: torch.Tensor) -> Walk:
        """Up to ``H`` steps of ``S × N`` walkers under per-seed policies; a walker stops at
        a terminal state (see :class:`Walk`).

        Step t of every walker reads the uniforms of step t, dead or alive, so a walker's
        path never depends on when the walkers beside it terminate.

        The steps run on NumPy copies of the tables: a step is a handful of operations on
        arrays of S × N elements, where NumPy's per-call cost (≈ 1 µs) is a fifth of
        torch's. Draws are those of :func:`~imm_ray.rl.streams.inverse_cdf`: the same
        float32 product ``u · total`` and the count of cumulative sums at or below it.

        Args:
            policy_cdf: ``[S, n_states, A]``, cumulative sums of π_s(a | state) of seed s.
            u_start: ``[S, N]`` uniforms for the start states.
            u_steps: ``[S, N, H, uniforms_per_step]`` uniforms for the steps.
        """
        tables = self._tables
        seeds, walkers, horizon, _ = u_steps.shape
        # One flat table so that a (seed, state) pair is a single index.
        flat_cdf = policy_cdf.detach().cpu().numpy().reshape(seeds * self.n_states, -1)
        offset = np.arange(seeds)[:, None] * self.n_states
        u_all = u_steps.cpu().numpy()
        state = _draw(tables["start_cdf"], u_start.cpu().numpy())
        terminal = tables["terminal"] if self.terminates else None
        alive = ~terminal[state] if terminal is not None else None
        states, actions, rewards, alives = [], [], [], []
        for t in range(horizon):
            if alive is not None and not alive.any():
                break
            action = _draw(flat_cdf[offset + state], u_all[:, :, t, 0])
            if self.deterministic:
                next_state = tables["next_state"][action, state]
                reward = tables["next_reward"][action, state]
            else:
                next_state = _draw(tables["next_cdf"][action, state], u_all[:, :, t, 1])
                reward = tables["reward"][action, state, next_state]
            if alive is not None:
                reward = np.where(alive, reward, np.float32(0.0))
                alives.append(alive)
                alive = alive & ~terminal[next_state]
            states.append(state), actions.append(action), rewards.append(reward)
            state = next_state
        paths = [torch.from_numpy(np.stack(x, axis=-1)) for x in (states, actions, rewards)]
        alive_path = torch.from_numpy(np.stack(alives, axis=-1)) if alives else None
        return Walk(*paths, alive=alive_path)


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """:func:`~imm_ray.rl.streams.inverse_cdf` in NumPy (int64 indices): ``cdf`` is
    ``[..., K]`` (one row per uniform, or a single row for all), ``u`` is ``[...]``."""
    scaled = u[..., None] * cdf[..., -1:]
    index = np.count_nonzero(cdf <= scaled, axis=-1)
    return np.minimum(index, cdf.shape[-1] - 1).astype(np.int64, copy=False)
