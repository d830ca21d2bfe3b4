"""The ``.imm(...)`` section of an RLlib ``AlgorithmConfig``: λ, the target P̂ and the view.

Mix :class:`IMMConfigMixin` into any ``AlgorithmConfig`` subclass (REINFORCE here, PPO in
:mod:`imm_ray.rl.imm_ppo`) and :class:`~imm_ray.rl.imm_learner.IMMLearnerMixin` into its
torch learner. Every value is checked when it is set, so a bad setting fails before any
Ray actor starts; :meth:`IMMConfigMixin.validate` re-checks what depends on the env.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from ray.rllib.algorithms.algorithm_config import NotProvided

from envs import PomdpMdpPair, make_pair
from imm_ray.imm import validate_lambda
from imm_ray.restricted import (
    SOLVERS,
    check_policy_args,
    solve_restricted_policy,
    validate_policy_table,
)

#: The paper's hand-set λ for the RL experiment (App. D.3); equals the λ rule below 175 epochs.
PAPER_LAMBDA = 0.25


#: The λ ratios the paper's rule is clipped to: IMM off at 0, never above 0.9.
PAPER_RATIO_RANGE = (0.0, 0.9)


def paper_lambda_ratio(epochs: int) -> float:
    """The paper's λ-ratio rule for the grid: ``r = round(−0.0002 · epochs + 0.1891, 1)``,
    clipped to ``[0, 0.9]``.

    ``epochs`` is the dataset size (one 50-step trajectory per epoch). The paper fitted the
    rule on 10 … 500 epochs, where it gives ``r = 0.2`` up to 175 epochs and ``r = 0.1``
    from 200 to 500. Beyond that it rounds to ``r = 0`` (IMM off) from 696 epochs on and
    would go negative from 1196 epochs; the clip keeps it at 0 there.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    low, high = PAPER_RATIO_RANGE
    return min(max(round(-0.0002 * int(epochs) + 0.1891, 1), low), high)


def paper_lambda(epochs: int) -> float:
    """λ = r / (1 − r) for the ratio of :func:`paper_lambda_ratio` (the loss is main + λ·IMM);
    0 (IMM off) from 696 epochs on."""
    ratio = paper_lambda_ratio(epochs)
    return ratio / (1.0 - ratio)


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
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if not _finite(self.discount) or not 0.0 < self.discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {self.discount!r}")

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


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class IMMConfigMixin:
    """Adds IMM settings to an RLlib ``AlgorithmConfig`` (see :meth:`imm`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.imm_lambda: float = PAPER_LAMBDA
        self.imm_target: TargetSpec | np.ndarray | None = TargetSpec()
        self.imm_view: PomdpMdpPair | None = None
        self.imm_num_samples: int | None = None

    def imm(
        self,
        *,
        lam: float = NotProvided,
        target: TargetSpec | np.ndarray | None = NotProvided,
        view: PomdpMdpPair | None = NotProvided,
        num_samples: int | None = NotProvided,
    ) -> Self:
        """Sets the Induced Model Matching term added to the learner's loss (paper Eq. 8).

        Args:
            lam: λ ≥ 0, the weight of the IMM risk; 0 turns IMM off.
            target: P̂(a | x̄): a :class:`TargetSpec` solved on the env's POMDP, an explicit
                ``[n_contexts, n_actions]`` table whose rows sum to 1, or ``None`` (no IMM).
            view: the MDP/POMDP pair that projects observations to restricted contexts and
                extends them back; ``None`` looks the pair up from the env id.
            num_samples: ``None`` enumerates every extended context of the belief (exact
                induced model, Eq. 6); ``k`` draws k extended contexts from it (Eq. 12).
        """
        if lam is not NotProvided:
            validate_lambda(lam, field="imm_lambda")
            self.imm_lambda = float(lam)
        if target is not NotProvided:
            if target is not None and not isinstance(target, TargetSpec):
                target = np.array(target, dtype=np.float64)
                if target.ndim != 2:
                    raise ValueError(
                        "imm_target must be a [n_contexts, n_actions] table, "
                        f"got shape {list(target.shape)}"
                    )
                validate_policy_table(target, target.shape[0], target.shape[1], "imm_target")
            self.imm_target = target
        if view is not NotProvided:
            if view is not None and not isinstance(view, PomdpMdpPair):
                raise ValueError(f"imm_view must be a PomdpMdpPair or None, got {view!r}")
            self.imm_view = view
        if num_samples is not NotProvided:
            if num_samples is not None and (
                isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
            ):
                raise ValueError(
                    f"imm_num_samples must be None or an integer >= 1, got {num_samples!r}"
                )
            self.imm_num_samples = num_samples
        return self

    @property
    def imm_enabled(self) -> bool:
        """Whether the learner adds an IMM term at all."""
        return self.imm_target is not None and self.imm_lambda > 0

    def imm_pair(self) -> PomdpMdpPair:
        """The view the IMM term projects and extends with."""
        if self.imm_view is not None:
            return self.imm_view
        if not isinstance(self.env, str):
            raise ValueError(
                f"imm_view is required when env is not a registered id string, got env={self.env!r}"
            )
        return make_pair(self.env, self.env_config)

    def imm_target_table(self, pair: PomdpMdpPair) -> np.ndarray:
        """P̂ as a ``[n_contexts, n_actions]`` table, checked against ``pair``."""
        if self.imm_target is None:
            raise ValueError("imm_target is None: IMM is off")
        table = (
            self.imm_target.table(pair)
            if isinstance(self.imm_target, TargetSpec)
            else self.imm_target
        )
        return validate_policy_table(table, pair.n_contexts, pair.n_actions, "imm_target")

    def validate(self) -> None:
        super().validate()
        if self.imm_enabled:
            self.imm_target_table(self.imm_pair())
