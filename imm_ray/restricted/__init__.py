"""Restricted models P̂: POMDP solvers (FIB, QMDP), the restricted policies read off them and
their exact values (lower bounds on V*); the modified Kneser–Ney bigram of the language
experiments and its ARPA files.

The language-model half (``arpa``, ``kneser_ney``) runs on torch and loads on first use,
so that the RL and POMDP half imports without torch (a sweep's driver plans on it).
"""

from imm_ray._lazy import lazy_exports
from imm_ray.restricted.bounds import (
    blind_policy_values,
    context_policy_return,
    context_policy_values,
)
from imm_ray.restricted.policy import (
    POLICY_KINDS,
    check_policy_args,
    context_utilities,
    restricted_policy,
    solve_restricted_policy,
    validate_policy_table,
)
from imm_ray.restricted.solvers import (
    SOLVERS,
    AlphaVectors,
    TabularPOMDP,
    as_tables,
    fib,
    qmdp,
    solve,
    tables_from_agent,
    tables_from_pair,
)
from imm_ray.restricted.target import TargetSpec

#: Exports loaded on first access (they import torch).
__getattr__, _ = lazy_exports(
    __name__,
    {
        "imm_ray.restricted.arpa": ("ArpaError", "read_arpa", "write_arpa"),
        "imm_ray.restricted.kneser_ney": (
            "FALLBACK_DISCOUNTS",
            "KneserNeyBigram",
            "estimate_kneser_ney",
        ),
    },
)

__all__ = [
    "FALLBACK_DISCOUNTS",
    "POLICY_KINDS",
    "SOLVERS",
    "AlphaVectors",
    "ArpaError",
    "KneserNeyBigram",
    "TabularPOMDP",
    "TargetSpec",
    "as_tables",
    "blind_policy_values",
    "check_policy_args",
    "context_policy_return",
    "context_policy_values",
    "context_utilities",
    "estimate_kneser_ney",
    "fib",
    "qmdp",
    "read_arpa",
    "restricted_policy",
    "solve",
    "solve_restricted_policy",
    "tables_from_agent",
    "tables_from_pair",
    "validate_policy_table",
    "write_arpa",
]
