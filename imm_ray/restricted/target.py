"""How the RL target P̂(a | x̄) is solved for and read off: a :class:`TargetSpec`.

A frozen, hashable description (solver, argmax or softmax, temperature, ε) that a sweep
can store and a learner can turn into a ``[n_contexts, n_actions]`` table for any pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.pair import PomdpMdpPair
from imm_ray import checks
from imm_ray.restricted.policy import check_policy_args, solve_restricted_policy
from imm_ray.restricted.solvers import SOLVERS


@dataclass(frozen=True)
class TargetSpec:
    """How the restricted target P̂(a | x̄) is solved for and read off (paper App. D.3–D.4)."""

    kind: str = "argmax"
    """``"argmax"`` (best quality) or ``"softmax"`` over the utilities at the uniform belief."""
    temperature: float = 1.0
    """Softmax temperature T > 0; larger T gives a lower-quality target."""
    epsilon: float = 0.0
    """Mix the target with the uniform policy: (1 − ε)·P̂ + ε/|A|, ε ∈ [0, 1]."""
    solver: str = "fib"
    """POMDP solver giving the alpha vectors: ``"fib"`` (Fast Informed Bound) or ``"qmdp"``."""
    discount: float = 0.9
    """Discount of the POMDP the solver plans on, in (0, 1)."""

    def __post_init__(self) -> None:
        check_policy_args(self.kind, self.temperature, self.epsilon)
        checks.one_of("solver", self.solver, SOLVERS)
        checks.number("discount", self.discount, above=0, below=1, allowed="in (0, 1)")

    def table(self, pair: PomdpMdpPair) -> np.ndarray:
        """Solve ``pair``'s POMDP and return P̂ as a ``[n_contexts, n_actions]`` table."""
        return solve_restricted_policy(
            pair,
            solver=self.solver,
            discount=self.discount,
            kind=self.kind,
            temperature=self.temperature,
            epsilon=self.epsilon,
        )
