"""Exact values of restricted policies, and lower bounds that FIB must stay above.

FIB and QMDP (:mod:`imm_ray.restricted.solvers`) upper-bound the optimal POMDP value V*.
Two lower bounds below it, computed exactly on the pair's tables (no sampling):

- **blind policies** (Hauskrecht 2000): ``β_a = (I − γ T_a)⁻¹ R_a`` is the value of always
  taking action a, whatever is observed, so ``max_a β_a · b ≤ V*(b)`` at every belief b;
- **a context policy** π(a | c) (the restricted policy the POMDP agent runs, memoryless):
  ``V^π = (I − γ T^π)⁻¹ r^π``. An agent that knows its context can run π, so
  ``b · V^π ≤ V*(b)`` at every belief b supported on one context — the beliefs
  π(s | x̄) the restricted policies are read off.

:func:`context_policy_return` is the restricted policy's own mean return under the
evaluation protocol of the RL experiments (undiscounted, from the start distribution, a
fixed horizon): the paper's "POMDP policy alone", computed exactly instead of sampled.
"""

from __future__ import annotations

import numpy as np

from envs.pair import PomdpMdpPair
from imm_ray import checks
from imm_ray.restricted.policy import validate_policy_table


def _check_discount(discount: float) -> float:
    return float(checks.number("discount", discount, above=0, below=1, allowed="in (0, 1)"))


def blind_policy_values(pair: PomdpMdpPair, discount: float) -> np.ndarray:
    """``β[a, s]``, shape ``[A, S]``: the discounted value of always taking action a."""
    discount = _check_discount(discount)
    transition, reward = pair.transition_matrix(), pair.expected_reward()
    eye = np.eye(pair.n_states)
    return np.stack(
        [
            np.linalg.solve(eye - discount * transition[a], reward[:, a])
            for a in range(pair.n_actions)
        ]
    )


def _policy_chain(pair: PomdpMdpPair, policy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(T^π [S, S], r^π [S])`` of the context policy ``policy [C, A]``."""
    policy = validate_policy_table(policy, pair.n_contexts, pair.n_actions, "policy")
    per_state = policy[pair.state_context()]  # [S, A]
    chain = np.einsum("sa,ast->st", per_state, pair.transition_matrix())
    reward = np.einsum("sa,sa->s", per_state, pair.expected_reward())
    return chain, reward


def context_policy_values(pair: PomdpMdpPair, policy: np.ndarray, discount: float) -> np.ndarray:
    """``V^π [S]``: the discounted value of running the context policy ``policy [C, A]``."""
    discount = _check_discount(discount)
    chain, reward = _policy_chain(pair, policy)
    return np.linalg.solve(np.eye(pair.n_states) - discount * chain, reward)


def context_policy_return(pair: PomdpMdpPair, policy: np.ndarray, horizon: int) -> float:
    """The expected undiscounted return of ``policy [C, A]`` over ``horizon`` steps from
    :meth:`~envs.pair.PomdpMdpPair.initial_belief`: episodes end at a terminal state
    (absorbing, reward 0) or after ``horizon`` steps."""
    checks.integer("horizon", horizon, 1, numpy=True)
    chain, reward = _policy_chain(pair, policy)
    value = np.zeros(pair.n_states)
    for _ in range(int(horizon)):
        value = reward + chain @ value
    return float(pair.initial_belief() @ value)
