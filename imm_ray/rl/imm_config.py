"""The ``.imm(...)`` section of an RLlib ``AlgorithmConfig``: λ, the target P̂ and the view.

Mix :class:`IMMConfigMixin` into any ``AlgorithmConfig`` subclass (REINFORCE here, PPO in
:mod:`imm_ray.rl.imm_ppo`) and :class:`~imm_ray.rl.imm_learner.IMMLearnerMixin` into its
torch learner. Every value is checked when it is set, so a bad setting fails before any
Ray actor starts; :meth:`IMMConfigMixin.validate` re-checks what depends on the env.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from ray.rllib.algorithms.algorithm_config import NotProvided

from envs import PomdpMdpPair, make_pair
from imm_ray import checks
from imm_ray.imm import validate_lambda
from imm_ray.restricted import TargetSpec, validate_policy_table
from imm_ray.rl.lambda_rule import PAPER_LAMBDA, paper_lambda, paper_lambda_ratio

__all__ = ["IMMConfigMixin", "PolicyTable", "TargetSpec", "paper_lambda", "paper_lambda_ratio"]


class PolicyTable:
    """P̂ given as a ``[n_contexts, n_actions]`` table (e.g. solved once by a sweep's
    driver), where a :class:`TargetSpec` would be solved: :meth:`table` hands it out.

    The config holds the array inside this object, not bare: RLlib compares every config
    value with a sentinel string (``AlgorithmConfig.get_state``, run by ``build_algo``),
    which an array answers element by element.
    """

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def table(self, pair: PomdpMdpPair) -> np.ndarray:
        return self.values

    def __repr__(self) -> str:
        return f"PolicyTable(shape={list(self.values.shape)})"


class IMMConfigMixin:
    """Adds IMM settings to an RLlib ``AlgorithmConfig`` (see :meth:`imm`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.imm_lambda: float = PAPER_LAMBDA
        self.imm_target: TargetSpec | PolicyTable | None = TargetSpec()
        self.imm_view: PomdpMdpPair | None = None
        self.imm_num_samples: int | None = None

    def imm(
        self,
        *,
        lam: float = NotProvided,
        target: TargetSpec | PolicyTable | np.ndarray | None = NotProvided,
        view: PomdpMdpPair | None = NotProvided,
        num_samples: int | None = NotProvided,
    ) -> Self:
        """Sets the Induced Model Matching term added to the learner's loss (paper Eq. 8).

        Args:
            lam: λ ≥ 0, the weight of the IMM risk; 0 turns IMM off.
            target: P̂(a | x̄): a :class:`TargetSpec` solved on the env's POMDP, an explicit
                ``[n_contexts, n_actions]`` table whose rows sum to 1 (kept as a
                :class:`PolicyTable`), or ``None`` (no IMM).
            view: the MDP/POMDP pair that projects observations to restricted contexts and
                extends them back; ``None`` looks the pair up from the env id.
            num_samples: ``None`` enumerates every extended context of the belief (exact
                induced model, Eq. 6); ``k`` draws k extended contexts from it (Eq. 12).
        """
        if lam is not NotProvided:
            validate_lambda(lam, field="imm_lambda")
            self.imm_lambda = float(lam)
        if target is not NotProvided:
            if target is not None and not isinstance(target, TargetSpec | PolicyTable):
                target = np.array(target, dtype=np.float64)
                if target.ndim != 2:
                    raise ValueError(
                        "imm_target must be a [n_contexts, n_actions] table, "
                        f"got shape {list(target.shape)}"
                    )
                validate_policy_table(target, target.shape[0], target.shape[1], "imm_target")
                target = PolicyTable(target)
            self.imm_target = target
        if view is not NotProvided:
            if view is not None and not isinstance(view, PomdpMdpPair):
                raise ValueError(f"imm_view must be a PomdpMdpPair or None, got {view!r}")
            self.imm_view = view
        if num_samples is not NotProvided:
            checks.integer(
                "imm_num_samples",
                num_samples,
                1,
                optional=True,
                allowed="None or an integer >= 1",
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
        table = self.imm_target.table(pair)
        return validate_policy_table(table, pair.n_contexts, pair.n_actions, "imm_target")

    def validate(self) -> None:
        super().validate()
        if self.imm_enabled:
            self.imm_target_table(self.imm_pair())
