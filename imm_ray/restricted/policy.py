"""Restricted policies P̂(a | x̄): the IMM target of the RL experiment (paper App. D.3–D.4).

The POMDP agent sees only the context x̄ and holds the belief π(s | x̄) of
:meth:`~envs.pair.PomdpMdpPair.context_belief` (on the grid: uniform over y). The utility of
action a at x̄ is ``U(x̄, a) = α_a · π(· | x̄)``; the target is its best action (highest
quality) or ``softmax(U / T)`` (quality lowered by the temperature T, App. D.4), optionally
mixed with the uniform policy.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from envs.pair import PomdpMdpPair
from imm_ray import checks
from imm_ray.restricted.solvers import AlphaVectors, solve

#: The kinds of :func:`restricted_policy`.
POLICY_KINDS = ("argmax", "softmax")

# Relative tolerance under which two utilities count as tied.
_TIE_RTOL = 1e-9


def context_utilities(pair: PomdpMdpPair, alphas: AlphaVectors) -> np.ndarray:
    """``U[c, a] = Σ_s π(s | c) α_a(s)``, shape ``[C, A]``: each action's utility at the
    belief over the hidden part given context c."""
    if alphas.alphas.shape != (pair.n_actions, pair.n_states):
        raise ValueError(
            f"alphas must have shape {(pair.n_actions, pair.n_states)} for this pair, "
            f"got {alphas.alphas.shape}"
        )
    return pair.context_belief() @ alphas.alphas.T


def check_policy_args(kind: str, temperature: float, epsilon: float) -> None:
    """Raises ``ValueError`` naming the first of kind / temperature / epsilon out of range."""
    checks.one_of("kind", kind, POLICY_KINDS)
    checks.number("temperature", temperature, above=0, numpy=True, allowed="> 0")
    checks.number("epsilon", epsilon, at_least=0, at_most=1, numpy=True, allowed="in [0, 1]")


def restricted_policy(
    utilities: np.ndarray, kind: str = "argmax", temperature: float = 1.0, epsilon: float = 0.0
) -> np.ndarray:
    """The policy table ``P[c, a]`` read off utilities ``U [C, A]``, then ``(1 − ε) P + ε / A``.

    - ``"argmax"``: one-hot of the best action. Actions within ``1e-9 · max(1, |max_a U|)``
      of the row's maximum count as tied and the lowest action index wins, so float noise
      never decides between actions that tie in exact arithmetic (on the grid, up and down
      at the centre column: up wins).
    - ``"softmax"``: ``softmax(U / T)`` with temperature ``T > 0``; ``temperature`` is
      ignored by ``"argmax"``.
    """
    check_policy_args(kind, temperature, epsilon)
    utilities = np.asarray(utilities, dtype=np.float64)
    if utilities.ndim != 2 or utilities.shape[1] == 0:
        raise ValueError(f"utilities must have shape [C, A] with A >= 1, got {utilities.shape}")
    if not np.all(np.isfinite(utilities)):
        raise ValueError("utilities must be finite")
    best = utilities.max(axis=1, keepdims=True)
    if kind == "argmax":
        tied = utilities >= best - _TIE_RTOL * np.maximum(1.0, np.abs(best))
        policy = np.zeros_like(utilities)
        policy[np.arange(len(utilities)), tied.argmax(axis=1)] = 1.0
    else:
        logits = np.exp((utilities - best) / temperature)
        policy = logits / logits.sum(axis=1, keepdims=True)
    return (1.0 - epsilon) * policy + epsilon / utilities.shape[1]


def validate_policy_table(
    table: Any, n_contexts: int, n_actions: int, field: str = "imm_target"
) -> np.ndarray:
    """A float64 copy of ``table`` if it is a ``[n_contexts, n_actions]`` table of finite,
    non-negative rows each summing to 1 (within 1e-6); else ``ValueError`` naming ``field``."""
    try:
        array = np.array(table, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{field} must be a numeric array, got {type(table).__name__}") from error
    expected = (n_contexts, n_actions)
    if array.shape != expected:
        raise ValueError(f"{field} must have shape {expected}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{field} must be finite")
    if np.any(array < 0):
        row = int(np.flatnonzero((array < 0).any(axis=1))[0])
        raise ValueError(f"{field} must be non-negative, row {row} has a negative entry")
    sums = array.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"{field} rows must sum to 1, row {row} sums to {float(sums[row]):.9g}")
    return array


@functools.lru_cache(maxsize=64)
def solve_restricted_policy(
    pair: PomdpMdpPair,
    solver: str = "fib",
    discount: float = 0.9,
    kind: str = "argmax",
    temperature: float = 1.0,
    epsilon: float = 0.0,
    tol: float = 1e-8,
) -> np.ndarray:
    """Solve ``pair``'s POMDP, read each context's utilities, return P̂ ``[C, A]``.

    Cached per arguments (pairs are frozen dataclasses), so every trial of a sweep shares
    one solve; the result is read-only: copy it before changing it.
    """
    check_policy_args(kind, temperature, epsilon)
    alphas = solve(pair, solver, discount, tol=tol)
    table = restricted_policy(context_utilities(pair, alphas), kind, temperature, epsilon)
    table.setflags(write=False)
    return table
