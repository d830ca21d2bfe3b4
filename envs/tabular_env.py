"""What every pair's gymnasium MDP env shares: the current state, ``reset`` with an optional
fixed start (``options={"state": s}``), the action check, and ``step``, all driven by the
pair's tables. A pair's env subclasses :class:`TabularEnv`, sets its pair and spaces, and
writes no ``step`` of its own.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.pair import PomdpMdpPair
from imm_ray import checks


class TabularEnv(gym.Env):
    """Base of a pair's MDP env, stepping with the pair's tables: the start drawn from
    :meth:`~envs.pair.PomdpMdpPair.initial_belief`, the step from
    :meth:`~envs.pair.PomdpMdpPair.next_state_table` and
    :meth:`~envs.pair.PomdpMdpPair.next_reward_table` (so the pair must be deterministic),
    ``terminated`` on arriving in one of its
    :meth:`~envs.pair.PomdpMdpPair.terminal_states`, ``truncated`` after its
    ``trajectory_length`` steps. Stepping on after termination stays put and pays 0 (the
    pair's terminal states are absorbing with reward 0).

    A subclass sets ``self.pair``, ``self.observation_space`` and ``self.action_space`` and
    calls :meth:`_start_tables`; it may override :meth:`_random_start`.
    """

    pair: PomdpMdpPair

    def _start_tables(self) -> None:
        self._observation = self.pair.state_observation()
        self._next_state = self.pair.next_state_table()
        self._next_reward = self.pair.next_reward_table()
        self._terminal = self.pair.terminal_states()
        self._start_cdf = np.cumsum(self.pair.initial_belief())
        self._state = 0
        self._steps = 0

    @property
    def state(self) -> int:
        """The current state id."""
        return self._state

    def _random_start(self) -> int:
        """A start state drawn from the pair's initial belief with ``self.np_random``: one
        uniform, as gymnasium's ``categorical_sample`` draws it (the first index whose
        cumulative probability exceeds it)."""
        return int(np.argmax(self._start_cdf > self.np_random.random()))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = (options or {}).get("state")
        if start is None:
            self._state = self._random_start()
        else:
            self._state = int(checks.integer("options['state']", start, 0, numpy=True))
            if self._state >= self.pair.n_states:
                raise ValueError(
                    f"options['state'] must be < {self.pair.n_states}, got {self._state}"
                )
        self._steps = 0
        return self._observation[self._state].copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = self._check_action(action)
        reward = float(self._next_reward[action, self._state])
        self._state = int(self._next_state[action, self._state])
        self._steps += 1
        terminated = bool(self._terminal[self._state])
        truncated = self._steps >= self.pair.trajectory_length
        return self._observation[self._state].copy(), reward, terminated, truncated, {}

    def _check_action(self, action: Any) -> int:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in [0, {self.pair.n_actions}), got {action!r}")
        return int(action)
