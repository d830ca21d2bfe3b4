"""How the IMM risk is weighed against the main loss: λ (Eq. (8)) or the ratio r = λ/(1+λ).

The paper adds λ·IMM to the main loss for language models (Eq. (8)) but, in its logistic
and RL code (Appendix D), mixes them as (1 − r)·main + r·IMM. The two differ only by the
overall factor 1 − r = 1/(1 + λ), i.e. a rescaled learning rate. Every λ ↔ r conversion in
the project goes through :func:`lambda_to_ratio` and :func:`ratio_to_lambda`. Plain numbers,
no torch: sweep planning uses them without loading it.
"""

from __future__ import annotations

from imm_ray import checks


def validate_lambda(lam: float, field: str = "imm_lambda") -> float:
    """Returns ``lam`` as a float if it is a finite number ≥ 0, else raises ``ValueError``."""
    checks.number(field, lam, at_least=0, numpy=True, allowed="a finite number >= 0")
    return float(lam)


def validate_ratio(r: float, field: str = "imm_ratio") -> float:
    """Returns ``r`` as a float if it is a number in [0, 1), else raises ``ValueError``."""
    checks.number(field, r, at_least=0, below=1, numpy=True)
    return float(r)


def lambda_to_ratio(lam: float) -> float:
    """r = λ / (1 + λ): the IMM share of the convex mix (1 − r)·main + r·IMM."""
    lam = validate_lambda(lam)
    return lam / (1.0 + lam)


def ratio_to_lambda(r: float) -> float:
    """λ = r / (1 − r), the inverse of :func:`lambda_to_ratio`."""
    r = validate_ratio(r)
    return r / (1.0 - r)
