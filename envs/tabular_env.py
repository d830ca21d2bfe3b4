"""What every pair's gymnasium MDP env shares: the current state, ``reset`` with an optional
fixed start (``options={"state": s}``), and the action check. A pair's env subclasses
:class:`TabularEnv`, draws its own random start and steps with its pair's tables.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import gymnasium as gym
import numpy as np

from envs.pair import PomdpMdpPair


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int if it is an integer >= ``minimum``, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class TabularEnv(gym.Env):
    """Base of a pair's MDP env: set ``self.pair`` and ``self.action_space``, call
    :meth:`_start_tables`, and implement :meth:`_random_start` and ``step``."""

    pair: PomdpMdpPair

    def _start_tables(self) -> None:
        self._observation = self.pair.state_observation()
        self._state = 0
        self._steps = 0

    @property
    def state(self) -> int:
        """The current state id."""
        return self._state

    def _random_start(self) -> int:
        """A start state drawn from the env's start distribution with ``self.np_random``."""
        raise NotImplementedError

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = (options or {}).get("state")
        if start is None:
            self._state = self._random_start()
        else:
            self._state = check_int("options['state']", start, 0)
            if self._state >= self.pair.n_states:
                raise ValueError(
                    f"options['state'] must be < {self.pair.n_states}, got {self._state}"
                )
        self._steps = 0
        return self._observation[self._state].copy(), {}

    def _check_action(self, action: Any) -> int:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in [0, {self.pair.n_actions}), got {action!r}")
        return int(action)
