"""Restricted models P̂: POMDP solvers (FIB, QMDP) and the restricted policies read off them."""

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

__all__ = [
    "POLICY_KINDS",
    "SOLVERS",
    "AlphaVectors",
    "TabularPOMDP",
    "as_tables",
    "check_policy_args",
    "context_utilities",
    "fib",
    "qmdp",
    "restricted_policy",
    "solve",
    "solve_restricted_policy",
    "tables_from_agent",
    "tables_from_pair",
    "validate_policy_table",
]
