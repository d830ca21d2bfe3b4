"""Offline POMDP solvers with one alpha vector per action: Fast Informed Bound and QMDP.

Both are value iterations on ``|A|`` vectors ``α_a ∈ R^S`` (Kochenderfer et al. 2022,
Algorithms for Decision Making, §21.2–21.3); the value of a belief b is ``max_a α_a · b``.

- QMDP:  ``α_a(s) = R(s, a) + γ Σ_s' T(s' | s, a) max_a' α_a'(s')``
- FIB:   ``α_a(s) = R(s, a) + γ Σ_o max_a' Σ_s' O(o | s', a) T(s' | s, a) α_a'(s')``

From the same start both upper-bound the optimal value, QMDP ≥ FIB ≥ V*, at every
horizon (FIB moves the max over next plans inside the sum over states only, QMDP also
inside the sum over observations). The paper solves its grid POMDP with FIB (App. D.3).

Solvers read a model into dense tables once (:class:`TabularPOMDP`): any small pomdp-py
model whose transition, observation and policy models enumerate states, observations and
actions, or a :class:`~envs.pair.PomdpMdpPair` directly. pomdp-py (and the scipy it
imports) loads only when a pomdp-py model or policy is involved: solving a pair, as every
sweep's IMM target does, needs numpy alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.pair import PomdpMdpPair
from imm_ray import checks

if TYPE_CHECKING:
    import pomdp_py

#: The solvers by name, as :func:`solve` and the restricted-policy helpers accept them.
SOLVERS = ("fib", "qmdp")


@dataclass(frozen=True, eq=False)
class TabularPOMDP:
    """A finite POMDP as dense arrays; index ``i`` of an axis is ``states[i]`` etc."""

    states: tuple[Any, ...]
    """The model's states, in table order."""
    actions: tuple[Any, ...]
    """The model's actions, in table order."""
    observations: tuple[Any, ...]
    """The model's observations, in table order."""
    transition: np.ndarray
    """``T[a, s, s'] = P(s' | s, a)``, shape ``[A, S, S]``."""
    observation: np.ndarray
    """``O[a, s', o] = P(o | s', a)``, shape ``[A, S, O]``."""
    reward: np.ndarray
    """Expected immediate reward ``R[s, a] = Σ_s' T(s' | s, a) r(s, a, s')``, shape ``[S, A]``."""

    def __post_init__(self) -> None:
        n_s, n_a, n_o = len(self.states), len(self.actions), len(self.observations)
        shapes = {
            "transition": (self.transition, (n_a, n_s, n_s)),
            "observation": (self.observation, (n_a, n_s, n_o)),
            "reward": (self.reward, (n_s, n_a)),
        }
        for name, (table, shape) in shapes.items():
            # A private read-only copy: the solvers' results must not change under a caller.
            table = np.array(table, dtype=np.float64)
            if table.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {table.shape}")
            if not np.all(np.isfinite(table)):
                raise ValueError(f"{name} must be finite")
            table.setflags(write=False)
            object.__setattr__(self, name, table)
        for name in ("transition", "observation"):
            table = getattr(self, name)
            if np.any(table < 0) or not np.allclose(table.sum(-1), 1.0, atol=1e-6):
                raise ValueError(f"{name} must be non-negative with rows summing to 1")


if TYPE_CHECKING:
    #: What the solvers accept: tables, a pair, or a pomdp-py POMDP / Agent to enumerate.
    Model = TabularPOMDP | PomdpMdpPair | pomdp_py.POMDP | pomdp_py.Agent


class IndexLabels(Sequence):
    """The labels ``kind(0) … kind(n − 1)`` of a pair's tables (``kind``: ``"State"``,
    ``"Action"`` or ``"Observation"`` of :mod:`envs.tabular`), built on first access.

    Those classes are pomdp-py types, so building them imports pomdp-py; the solvers only
    need the count, which :func:`len` gives without. Equal to the tuple of the labels.
    """

    def __init__(self, kind: str, n: int) -> None:
        self._kind, self._n = kind, int(n)
        self._labels: tuple[Any, ...] | None = None

    def _built(self) -> tuple[Any, ...]:
        if self._labels is None:
            import envs.tabular

            cls = getattr(envs.tabular, self._kind)
            self._labels = tuple(cls(i) for i in range(self._n))
        return self._labels

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        return self._built()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._built())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IndexLabels | tuple):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._built())

    def __repr__(self) -> str:
        return f"IndexLabels({self._kind!r}, {self._n})"


def tables_from_pair(pair: PomdpMdpPair) -> TabularPOMDP:
    """The pair's tables, with the index objects of :mod:`envs.tabular` as labels
    (:class:`IndexLabels`: built when first read)."""
    return TabularPOMDP(
        states=IndexLabels("State", pair.n_states),
        actions=IndexLabels("Action", pair.n_actions),
        observations=IndexLabels("Observation", pair.n_contexts),
        transition=pair.transition_matrix(),
        observation=pair.observation_matrix(),
        reward=pair.expected_reward(),
    )


def tables_from_agent(agent: pomdp_py.Agent) -> TabularPOMDP:
    """Enumerates a pomdp-py agent's models into tables (``O(A·S²)`` model calls).

    Rewards come from ``reward_model.sample(s, a, s')``, so they must be deterministic,
    as ``pomdp_py.to_pomdp_file`` assumes too.
    """
    states = tuple(agent.transition_model.get_all_states())
    actions = tuple(agent.policy_model.get_all_actions())
    observations = tuple(agent.observation_model.get_all_observations())
    transition_model, observation_model = agent.transition_model, agent.observation_model

    def table(entry: Callable[[Any, Any, Any], float], rows: tuple, cols: tuple) -> np.ndarray:
        """``[A, len(rows), len(cols)]`` of ``entry(action, row, col)``."""
        return np.array([[[entry(a, r, c) for c in cols] for r in rows] for a in actions])

    transition = table(lambda a, s, t: transition_model.probability(t, s, a), states, states)
    observation = table(
        lambda a, t, o: observation_model.probability(o, t, a), states, observations
    )
    rewards = table(lambda a, s, t: agent.reward_model.sample(s, a, t), states, states)
    return TabularPOMDP(
        states=states,
        actions=actions,
        observations=observations,
        transition=transition,
        observation=observation,
        reward=np.einsum("ast,ast->sa", transition, rewards),
    )


def as_tables(model: Model) -> TabularPOMDP:
    """Dense tables of a model given as tables, a pair, a pomdp-py POMDP or an Agent."""
    if isinstance(model, TabularPOMDP):
        return model
    if isinstance(model, PomdpMdpPair):
        return tables_from_pair(model)
    import pomdp_py

    if isinstance(model, pomdp_py.POMDP):
        return tables_from_agent(model.agent)
    if isinstance(model, pomdp_py.Agent):
        return tables_from_agent(model)
    raise TypeError(
        "model must be a TabularPOMDP, PomdpMdpPair, pomdp_py.POMDP or pomdp_py.Agent, "
        f"got {type(model).__name__}"
    )


@dataclass(frozen=True, eq=False)
class AlphaVectors:
    """One alpha vector per action: ``V(b) = max_a α_a · b``."""

    alphas: np.ndarray
    """``α[a, s]``, shape ``[A, S]`` (read-only)."""
    states: tuple[Any, ...]
    """The states indexing the vectors' entries."""
    actions: tuple[Any, ...]
    """The action of each vector."""
    iterations: int
    """Bellman backups performed."""
    residual: float
    """Max-abs change of the last backup, ``‖α_k − α_{k−1}‖_∞``."""
    converged: bool
    """Whether the residual fell below ``tol`` (always true for a finite horizon)."""
    discount: float
    """The discount γ the vectors were computed with."""

    def utilities(self, beliefs: np.ndarray) -> np.ndarray:
        """``U[n, a] = α_a · b_n`` for beliefs ``[N, S]`` (or ``[S]`` → ``[A]``)."""
        beliefs = np.asarray(beliefs, dtype=np.float64)
        if beliefs.shape[-1] != len(self.states):
            raise ValueError(
                f"beliefs must have {len(self.states)} entries on the last axis, "
                f"got shape {beliefs.shape}"
            )
        return beliefs @ self.alphas.T

    def value(self, belief: np.ndarray) -> float:
        """``V(b) = max_a α_a · b`` of one belief ``[S]``."""
        return float(np.max(self.utilities(np.asarray(belief).reshape(-1))))

    def to_policy(self) -> pomdp_py.AlphaVectorPolicy:
        """The vectors as pomdp-py's ``AlphaVectorPolicy`` (``(vector, action)`` pairs in
        action order: among exactly tied vectors its ``max`` keeps the first action)."""
        import pomdp_py

        vectors = [
            (tuple(map(float, alpha)), a)
            for alpha, a in zip(self.alphas, self.actions, strict=True)
        ]
        return pomdp_py.AlphaVectorPolicy(vectors, list(self.states))


def _check_settings(discount: float, tol: float, max_iterations: int, horizon: int | None) -> None:
    checks.integer(
        "horizon", horizon, 1, optional=True, numpy=True, allowed="None or an integer >= 1"
    )
    if horizon is None:
        checks.number("discount", discount, above=0, below=1, numpy=True, allowed="in (0, 1)")
    else:
        checks.number(
            "discount",
            discount,
            above=0,
            at_most=1,
            numpy=True,
            allowed="in (0, 1] for a finite horizon",
        )
    checks.number("tol", tol, above=0, numpy=True, allowed="a finite number > 0")
    checks.integer("max_iterations", max_iterations, 1, numpy=True)


def _iterate(
    name: str,
    tables: TabularPOMDP,
    backup: Callable[[np.ndarray], np.ndarray],
    discount: float,
    tol: float,
    max_iterations: int,
    horizon: int | None,
) -> AlphaVectors:
    """Backups from ``α = 0``: exactly ``horizon`` of them, or until the residual < ``tol``."""
    _check_settings(discount, tol, max_iterations, horizon)
    alphas = np.zeros((len(tables.actions), len(tables.states)))
    residual, iterations = math.inf, 0
    limit = horizon if horizon is not None else max_iterations
    while iterations < limit and (horizon is not None or residual >= tol):
        updated = backup(alphas)
        residual = float(np.max(np.abs(updated - alphas)))
        alphas, iterations = updated, iterations + 1
    converged = horizon is not None or residual < tol
    if not converged:
        warnings.warn(
            f"{name} stopped after max_iterations={max_iterations} backups with residual "
            f"{residual:.3g} >= tol={tol:.3g}",
            RuntimeWarning,
            stacklevel=3,
        )
    alphas.setflags(write=False)
    return AlphaVectors(
        alphas=alphas,
        states=tables.states,
        actions=tables.actions,
        iterations=iterations,
        residual=residual,
        converged=converged,
        discount=float(discount),
    )


def _ranges(count: np.ndarray) -> np.ndarray:
    """``concatenate([arange(c) for c in count])``, vectorized."""
    ends = np.cumsum(count)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - count, count)


def fib_backup(tables: TabularPOMDP, discount: float) -> Callable[[np.ndarray], np.ndarray]:
    """The FIB Bellman operator on ``α [A, S]`` (module docstring), vectorized.

    Works on the non-zeros of ``M[a, o, s, s'] = O(o | s', a) T(s' | s, a)`` only: sparse
    dynamics (the grid has one successor and one observation per (s, a)) make each backup
    ``O(nnz · A)`` instead of ``O(A² · O · S²)``.
    """
    n_a, n_s, n_o = len(tables.actions), len(tables.states), len(tables.observations)
    # The non-zeros of M, found from those of T and O without the dense [A, O, S, S] array
    # (1.5 GB on Taxi), in np.nonzero's row-major order.
    a_t, s_t, t_t = np.nonzero(tables.transition)
    a_o, t_o, o_o = np.nonzero(tables.observation)
    # The observations of (a, s') are entries starts[k] … starts[k + 1] − 1, k = a·S + s'.
    starts = np.concatenate([[0], np.bincount(a_o * n_s + t_o, minlength=n_a * n_s).cumsum()])
    key = a_t * n_s + t_t
    first, count = starts[key], starts[key + 1] - starts[key]
    pick = np.repeat(first, count) + _ranges(count)
    a_m, s_m, t_m = (np.repeat(x, count) for x in (a_t, s_t, t_t))
    o_m = o_o[pick]
    rows_all = (a_m * n_o + o_m) * n_s + s_m
    order = np.lexsort((t_m, rows_all))
    rows, cols = rows_all[order], t_m[order]
    weights = (tables.observation[a_m, t_m, o_m] * tables.transition[a_m, s_m, t_m])[order][:, None]
    # Rows are sorted, so each row's entries form one contiguous run.
    present, starts = np.unique(rows, return_index=True)
    reward = tables.reward.T

    def backup(alphas: np.ndarray) -> np.ndarray:
        future = np.zeros((n_a * n_o * n_s, n_a))
        future[present] = np.add.reduceat(weights * alphas.T[cols], starts, axis=0)
        # max over the next action a', then sum over observations o.
        best = future.reshape(n_a, n_o, n_s, n_a).max(axis=-1).sum(axis=1)
        return reward + discount * best

    return backup


def qmdp_backup(tables: TabularPOMDP, discount: float) -> Callable[[np.ndarray], np.ndarray]:
    """The QMDP Bellman operator on ``α [A, S]`` (module docstring), vectorized."""
    transition, reward = tables.transition, tables.reward.T

    def backup(alphas: np.ndarray) -> np.ndarray:
        return reward + discount * (transition @ alphas.max(axis=0))

    return backup


def fib(model: Model, discount: float, **options: Any) -> AlphaVectors:
    """Fast Informed Bound alpha vectors of ``model``; options as in :func:`solve`."""
    return solve(model, "fib", discount, **options)


def qmdp(model: Model, discount: float, **options: Any) -> AlphaVectors:
    """QMDP alpha vectors of ``model`` (the MDP's Q-function); options as in :func:`solve`."""
    return solve(model, "qmdp", discount, **options)


def solve(
    model: Model,
    solver: str,
    discount: float,
    tol: float = 1e-8,
    max_iterations: int = 10_000,
    horizon: int | None = None,
) -> AlphaVectors:
    """Alpha vectors of ``model`` by the solver named ``solver`` (one of :data:`SOLVERS`).

    With ``horizon=None``, iterates to a max-abs Bellman residual below ``tol`` (then
    ``‖α − α*‖_∞ ≤ γ·tol / (1 − γ)``); warns and returns ``converged=False`` if
    ``max_iterations`` come first. With an integer horizon H, performs exactly H backups
    from zero: the H-step bound (γ = 1 allowed).
    """
    checks.one_of("solver", solver, SOLVERS)
    backups = {"fib": fib_backup, "qmdp": qmdp_backup}
    tables = as_tables(model)
    return _iterate(
        solver, tables, backups[solver](tables, discount), discount, tol, max_iterations, horizon
    )
