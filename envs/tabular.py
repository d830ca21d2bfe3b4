"""Any :class:`~envs.pair.PomdpMdpPair` as a tabular pomdp-py model.

States, actions and observations are index wrappers; every model reads the pair's arrays
(``T[a, s, s']``, ``O[a, s', c]``, ``R[a, s, s']``), so the model the solvers plan on is the
world the gym env simulates. The POMDP observes the restricted context of the state it
lands in. Samplers draw from one ``random.Random`` per problem, so a seed fixes a rollout.
"""

from __future__ import annotations

import random
from os import PathLike
from typing import Any

import numpy as np
import pomdp_py

from envs.pair import PomdpMdpPair


class _Indexed:
    """Hashable by ``(type, index)``; printed as ``<prefix><index>``, a blank-free name
    that the .pomdp file format accepts."""

    prefix = ""

    def __init__(self, index: int) -> None:
        self.index = int(index)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.index == self.index

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.index))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.index})"

    def __str__(self) -> str:
        return f"{self.prefix}{self.index}"


class State(_Indexed, pomdp_py.State):
    """State ``s`` of the pair."""

    prefix = "s"


class Action(_Indexed, pomdp_py.Action):
    """Action ``a`` of the pair."""

    prefix = "a"


class Observation(_Indexed, pomdp_py.Observation):
    """Observation = restricted context ``c`` of the state landed in."""

    prefix = "o"


class _RowSampler:
    """Draws from the rows ``table[a, x, ·]`` of an ``[A, X, Y]`` table of distributions, by
    inverse CDF with one ``random.Random``."""

    def _sample_rows_of(self, table: np.ndarray, rng: random.Random | None) -> None:
        self.table = table
        self._cumulative = np.cumsum(table, axis=-1)
        self._rng = rng if rng is not None else random.Random()

    def _sample_row(self, a: int, x: int) -> int:
        """An index ``y`` drawn with probability ``table[a, x, y]``."""
        cumulative = self._cumulative[a, x]
        u = self._rng.random() * cumulative[-1]
        index = int(np.searchsorted(cumulative, u, side="right"))
        return min(index, len(cumulative) - 1)


class TransitionModel(_RowSampler, pomdp_py.TransitionModel):
    """``P(s' | s, a) = T[a, s, s']`` from :meth:`PomdpMdpPair.transition_matrix`."""

    def __init__(self, pair: PomdpMdpPair, rng: random.Random | None = None) -> None:
        self._sample_rows_of(pair.transition_matrix(), rng)
        self._states = [State(s) for s in range(pair.n_states)]

    def probability(self, next_state: State, state: State, action: Action) -> float:
        return float(self.table[action.index, state.index, next_state.index])

    def sample(self, state: State, action: Action) -> State:
        return self._states[self._sample_row(action.index, state.index)]

    def get_all_states(self) -> list[State]:
        return list(self._states)


class ObservationModel(_RowSampler, pomdp_py.ObservationModel):
    """``P(c | s', a) = O[a, s', c]`` from :meth:`PomdpMdpPair.observation_matrix`."""

    def __init__(self, pair: PomdpMdpPair, rng: random.Random | None = None) -> None:
        self._sample_rows_of(pair.observation_matrix(), rng)
        self._observations = [Observation(c) for c in range(pair.n_contexts)]

    def probability(self, observation: Observation, next_state: State, action: Action) -> float:
        return float(self.table[action.index, next_state.index, observation.index])

    def sample(self, next_state: State, action: Action) -> Observation:
        return self._observations[self._sample_row(action.index, next_state.index)]

    def get_all_observations(self) -> list[Observation]:
        return list(self._observations)


class RewardModel(pomdp_py.RewardModel):
    """Deterministic ``r = R[a, s, s']`` from :meth:`PomdpMdpPair.reward_matrix`."""

    def __init__(self, pair: PomdpMdpPair) -> None:
        self.table = pair.reward_matrix()

    def sample(self, state: State, action: Action, next_state: State) -> float:
        return float(self.table[action.index, state.index, next_state.index])

    def argmax(self, state: State, action: Action, next_state: State) -> float:
        return self.sample(state, action, next_state)

    def probability(self, reward: float, state: State, action: Action, next_state: State) -> float:
        return float(reward == self.sample(state, action, next_state))


class PolicyModel(pomdp_py.RolloutPolicy):
    """Uniformly random actions: the rollout policy of sampling planners (POMCP, POUCT)."""

    def __init__(self, pair: PomdpMdpPair, rng: random.Random | None = None) -> None:
        self._actions = [Action(a) for a in range(pair.n_actions)]
        self._rng = rng if rng is not None else random.Random()

    def sample(self, state: Any = None) -> Action:
        return self._rng.choice(self._actions)

    def probability(self, action: Action, state: Any = None) -> float:
        return 1.0 / len(self._actions)

    def rollout(self, state: Any = None, history: Any = None) -> Action:
        return self.sample(state)

    def get_all_actions(self, state: Any = None, history: Any = None) -> list[Action]:
        return list(self._actions)


def build_problem(
    pair: PomdpMdpPair, init_state: int | State | None = None, seed: int | None = None
) -> pomdp_py.POMDP:
    """The pair as a ``pomdp_py.POMDP``: an Agent starting from the Histogram of
    :meth:`PomdpMdpPair.initial_belief` (over every state, zeros included, so belief
    updates can reach any state) and an Environment in ``init_state``, drawn from that
    belief when not given. ``seed`` seeds the one generator every sampler shares.
    """
    rng = random.Random(seed)
    belief = pair.initial_belief()
    if init_state is None:
        init_state = rng.choices(range(pair.n_states), weights=belief.tolist())[0]
    start = init_state if isinstance(init_state, State) else State(init_state)
    if not 0 <= start.index < pair.n_states:
        raise ValueError(f"init_state must be in [0, {pair.n_states}), got {start.index}")
    transition = TransitionModel(pair, rng)
    reward = RewardModel(pair)
    agent = pomdp_py.Agent(
        pomdp_py.Histogram({State(s): float(p) for s, p in enumerate(belief)}),
        PolicyModel(pair, rng),
        transition,
        ObservationModel(pair, rng),
        reward,
    )
    env = pomdp_py.Environment(start, transition, reward)
    return pomdp_py.POMDP(agent, env, name=type(pair).__name__)


def export_pomdp_file(
    pair: PomdpMdpPair, path: str | PathLike[str], discount_factor: float
) -> tuple[list[State], list[Action], list[Observation]]:
    """Writes the pair in Cassandra's .pomdp format (``pomdp_py.to_pomdp_file``), for
    external solvers (pomdp-solve, SARSOP). Returns states, actions and observations in
    file order. The file has ``2·A·S² + A·S·C`` lines: use it on small pairs.
    """
    if not 0.0 < discount_factor <= 1.0:
        raise ValueError(f"discount_factor must be in (0, 1], got {discount_factor!r}")
    agent = build_problem(pair, seed=0).agent
    return pomdp_py.to_pomdp_file(agent, str(path), discount_factor=discount_factor)
