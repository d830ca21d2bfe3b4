"""The toroidal grid of the paper's RL experiment (App. D.3): one spec, its MDP env.

An agent walks on a ``size × size`` torus with four deterministic, wrapping moves. Arriving
in cell (x, y) pays a normalized 2-D Gaussian density centred on the middle of the grid.
The MDP observes (x, y); the POMDP (see :class:`envs.registry.ContextObservation`) observes
only x and keeps a belief over y. Every table below, and the gym env's ``step``, is derived
from :meth:`ToroidalGrid.next_state_table` and :meth:`ToroidalGrid.state_reward`, so the env,
its POMDP view and the tabular pomdp-py model cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from gymnasium import spaces

from envs.pair import PomdpMdpPair, deterministic_transitions
from envs.tabular_env import TabularEnv
from imm_ray import checks

if TYPE_CHECKING:
    import torch

#: Action ids 0..3 in order; ``up`` increases y, ``right`` increases x.
ACTION_NAMES = ("up", "down", "left", "right")

# (dx, dy) of each action, indexed like ACTION_NAMES.
_MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))


@dataclass(frozen=True)
class ToroidalGrid(PomdpMdpPair):
    """The grid as a :class:`PomdpMdpPair`: state ``s = x * size + y``, context ``x``."""

    size: int = 11
    """Side of the torus (≥ 2); states are the ``size²`` cells, contexts the ``size`` columns."""
    reward_variance: float = 0.1
    """Variance v (> 0) of the Gaussian reward on each axis, over coordinates in [−2, 2]."""
    trajectory_length: int = 50
    """Steps (≥ 1) after which the gym env truncates a trajectory of this continuing task."""

    def __post_init__(self) -> None:
        # Normalize numpy scalars to Python ones so equal grids hash equally.
        object.__setattr__(self, "size", int(checks.integer("size", self.size, 2, numpy=True)))
        variance = checks.number(
            "reward_variance",
            self.reward_variance,
            above=0,
            numpy=True,
            allowed="a finite number > 0",
        )
        object.__setattr__(self, "reward_variance", float(variance))
        length = checks.integer("trajectory_length", self.trajectory_length, 1, numpy=True)
        object.__setattr__(self, "trajectory_length", int(length))

    @property
    def n_states(self) -> int:
        return self.size * self.size

    @property
    def n_actions(self) -> int:
        return len(ACTION_NAMES)

    @property
    def n_contexts(self) -> int:
        return self.size

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of every state, two int64 arrays of shape ``[S]`` (``s = x * size + y``)."""
        states = np.arange(self.n_states, dtype=np.int64)
        return states // self.size, states % self.size

    def next_state_table(self) -> np.ndarray:
        """``N[a, s]``: the state reached from ``s`` by action ``a`` (moves wrap mod ``size``)."""
        x, y = self.coordinates()
        moves = np.asarray(_MOVES, dtype=np.int64)
        next_x = (x[None, :] + moves[:, :1]) % self.size
        next_y = (y[None, :] + moves[:, 1:]) % self.size
        return next_x * self.size + next_y

    def reward_grid(self) -> np.ndarray:
        """``G[x, y] = exp(−(u_x² + u_y²) / 2v) / (2πv)`` with ``u = linspace(−2, 2, size)``.

        The normalized density of N(0, v·I) at (u_x, u_y); ≈ 1.59 at the centre for v = 0.1.
        """
        u = np.linspace(-2.0, 2.0, self.size)
        v = self.reward_variance
        return np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * v)) / (2 * math.pi * v)

    def state_reward(self) -> np.ndarray:
        """The reward of arriving in each state, shape ``[S]``: :meth:`reward_grid` flattened."""
        return self.reward_grid().reshape(-1)

    def next_reward_table(self) -> np.ndarray:
        """``r[a, s] = r(N[a, s])``: the reward of the cell each step arrives in."""
        return self.state_reward()[self.next_state_table()]

    def transition_matrix(self) -> np.ndarray:
        """``T[a, s, s'] = 1`` iff ``s' = N[a, s]`` (:meth:`next_state_table`)."""
        return deterministic_transitions(self.next_state_table())

    def reward_matrix(self) -> np.ndarray:
        """``R[a, s, s'] = r(s')``: the reward depends on the arrival cell only."""
        shape = (self.n_actions, self.n_states, self.n_states)
        return np.broadcast_to(self.state_reward(), shape).copy()

    def state_context(self) -> np.ndarray:
        """x of every state: the POMDP's restricted context."""
        return self.coordinates()[0]

    def state_observation(self) -> np.ndarray:
        """Rows ``(x, y)``, int64 ``[S, 2]``: what the MDP env observes in each state."""
        return np.stack(self.coordinates(), axis=1)

    def observation_state(self, obs: torch.Tensor) -> torch.Tensor:
        """``x * size + y`` of observations ``[..., 2]`` as long; float inputs are rounded."""
        import torch  # here, not at the top: planning a sweep needs no torch

        obs = torch.as_tensor(obs)
        if obs.is_floating_point():
            obs = obs.round()
        obs = obs.long()
        return obs[..., 0] * self.size + obs[..., 1]


class ToroidalGridEnv(TabularEnv):
    """The grid MDP: observes ``(x, y)``, uniform random start, truncated after
    ``trajectory_length`` steps, never terminated (a continuing task).

    ``reset(options={"state": s})`` starts in state ``s`` instead of a random one.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        size: int = 11,
        reward_variance: float = 0.1,
        trajectory_length: int = 50,
        render_mode: str | None = None,
    ) -> None:
        self.pair = ToroidalGrid(size, reward_variance, trajectory_length)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = spaces.MultiDiscrete([size, size], dtype=np.int64)
        self.action_space = spaces.Discrete(self.pair.n_actions)
        self._start_tables()

    def _random_start(self) -> int:
        # The start is uniform: one integer draw, not the base's inverse-CDF one.
        return int(self.np_random.integers(self.pair.n_states))

    def render(self) -> str | None:
        """With ``render_mode="ansi"``: the grid, y growing upwards, ``A`` marking the agent."""
        if self.render_mode != "ansi":
            return None
        size = self.pair.size
        x, y = divmod(self._state, size)
        rows = [
            " ".join("A" if (col, row) == (x, y) else "." for col in range(size))
            for row in reversed(range(size))
        ]
        return "\n".join(rows) + "\n"
