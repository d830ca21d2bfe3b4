"""The contract every MDP/POMDP pair fulfils: one world, seen fully and through a restricted
context.

A pair is the single source of truth for an environment. Its tables feed three consumers
that must never disagree:

- the gymnasium MDP env (observes the whole state) and its POMDP view (observes the
  restricted context only),
- the tabular pomdp-py model that the restricted solvers (FIB, QMDP) plan on,
- the IMM learner, which projects a full observation to its restricted context x̄ and
  extends x̄ back to full observations weighted by the belief π(x̃ | x̄) (paper Eq. 4).

Indices: states ``s ∈ [0, n_states)``, actions ``a ∈ [0, n_actions)``, restricted contexts
``c ∈ [0, n_contexts)``. To add a new pair, subclass :class:`PomdpMdpPair`, fill in the
abstract tables, and register it in :mod:`envs.registry`.

Beyond the abstract tables a pair may override what the grid never needed: terminal
states (:meth:`PomdpMdpPair.terminal_states`; episodes then end early and vary in length),
a start distribution that is not uniform (:meth:`PomdpMdpPair.initial_belief`), and the
belief over the hidden part given a context (:meth:`PomdpMdpPair.context_belief`). Rewards
are on transitions ``(s, a, s')``, which covers rewards on arrival (the grid) and on
``(s, a)`` (Taxi). :mod:`envs.taxi` is the worked example.

The gym env (:class:`envs.tabular_env.TabularEnv`) steps a deterministic pair with
:meth:`PomdpMdpPair.next_state_table` and :meth:`PomdpMdpPair.next_reward_table`, which
default to what the transition and reward matrices say; a pair overrides them only to
build them cheaper.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def deterministic_transitions(next_state: np.ndarray) -> np.ndarray:
    """``T[a, s, s'] = 1`` iff ``s' = N[a, s]``: the transition matrix ``[A, S, S]`` of a
    deterministic pair whose next-state table is ``N`` (``[A, S]``)."""
    n_actions, n_states = next_state.shape
    table = np.zeros((n_actions, n_states, n_states))
    actions, states = np.indices(next_state.shape)
    table[actions, states, next_state] = 1.0
    return table


class PomdpMdpPair(ABC):
    """A finite MDP together with the restricted context its POMDP view observes."""

    n_states: int
    n_actions: int
    n_contexts: int

    @abstractmethod
    def transition_matrix(self) -> np.ndarray:
        """``T[a, s, s'] = P(s' | s, a)``, shape ``[A, S, S]``; rows sum to 1."""

    @abstractmethod
    def reward_matrix(self) -> np.ndarray:
        """``R[a, s, s']``: the reward of the transition ``s --a--> s'``, shape ``[A, S, S]``."""

    @abstractmethod
    def state_context(self) -> np.ndarray:
        """The restricted context x̄ of every state, int array of shape ``[S]``."""

    @abstractmethod
    def state_observation(self) -> np.ndarray:
        """The MDP's observation of every state, shape ``[S, *obs_shape]``."""

    @abstractmethod
    def observation_state(self, obs: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`state_observation`: a batch ``[B, *obs_shape]`` → state ids ``[B]``."""

    #: Steps of one evaluation rollout (the paper's grid: 22); pairs may override.
    evaluation_horizon: int = 22

    def terminal_states(self) -> np.ndarray:
        """Bool ``[S]``: arriving in a terminal state ends the episode (``terminated``).

        None by default (a continuing task). A pair with terminal states must make them
        absorbing with reward 0 in its tables (``T[a, s, s] = 1``, ``R[a, s, ·] = 0``), so
        the solvers value them 0 and a walker that stops there collects nothing more.
        """
        return np.zeros(self.n_states, dtype=bool)

    def next_state_table(self) -> np.ndarray:
        """``N[a, s]``, int64 ``[A, S]``: the state action ``a`` leads to from ``s``.

        Read off :meth:`transition_matrix`, so only a deterministic pair (every
        ``T[a, s, ·]`` one-hot) has one; the gym env steps with it. A pair may override it
        with a cheaper table (the grid and Taxi do).
        """
        transitions = self.transition_matrix()
        if not np.all(transitions.max(axis=-1) == 1.0):
            raise ValueError(
                f"{type(self).__name__} has stochastic transitions: no next-state table"
            )
        return transitions.argmax(axis=-1)

    def next_reward_table(self) -> np.ndarray:
        """``r[a, s] = R[a, s, N[a, s]]``, shape ``[A, S]``: the reward of the step from ``s``
        by ``a`` (:meth:`next_state_table`). A pair may override it with a cheaper table."""
        actions, states = np.indices((self.n_actions, self.n_states))
        return self.reward_matrix()[actions, states, self.next_state_table()]

    def observation_matrix(self) -> np.ndarray:
        """``O[a, s', c] = P(c | s', a)``: the POMDP observes the context of the state landed in."""
        obs = np.zeros((self.n_actions, self.n_states, self.n_contexts))
        obs[:, np.arange(self.n_states), self.state_context()] = 1.0
        return obs

    def expected_reward(self) -> np.ndarray:
        """``R[s, a] = Σ_s' T[a, s, s'] R[a, s, s']``, shape ``[S, A]``."""
        return np.einsum("ast,ast->sa", self.transition_matrix(), self.reward_matrix())

    def initial_belief(self) -> np.ndarray:
        """Distribution of the start state, shape ``[S]``; uniform unless a pair says otherwise."""
        return np.full(self.n_states, 1.0 / self.n_states)

    def context_belief(self) -> np.ndarray:
        """``B[c, s] = π(s | x̄ = c)``, shape ``[C, S]``: the extender of paper Eq. (4).

        By default the initial belief conditioned on the context; a pair whose belief over
        the hidden part drifts with time should override this.
        """
        belief = np.zeros((self.n_contexts, self.n_states))
        belief[self.state_context(), np.arange(self.n_states)] = self.initial_belief()
        mass = belief.sum(axis=1, keepdims=True)
        if np.any(mass <= 0):
            missing = np.flatnonzero(mass[:, 0] <= 0).tolist()
            raise ValueError(f"contexts {missing} have no state with positive initial belief")
        return belief / mass

    @cached_property
    def extension_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Every context's support, padded: ``(states [C, K], weights [C, K])``.

        ``K`` is the largest support; padding entries repeat a supported state with weight 0,
        so a batched forward pass over all ``K`` members stays valid.
        """
        belief = self.context_belief()
        support = [np.flatnonzero(row > 0) for row in belief]
        width = max(len(s) for s in support)
        states = np.zeros((self.n_contexts, width), dtype=np.int64)
        weights = np.zeros((self.n_contexts, width))
        for c, s in enumerate(support):
            states[c, : len(s)] = s
            states[c, len(s) :] = s[0]
            weights[c, : len(s)] = belief[c, s]
        return states, weights
