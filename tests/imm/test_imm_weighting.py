"""λ and the ratio r = λ/(1+λ): Eq. (8) and the convex mix of the paper's App. D code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imm_ray.imm import (
    lambda_to_ratio,
    ratio_to_lambda,
    validate_lambda,
    validate_ratio,
)


def test_ratio_and_lambda_are_inverse() -> None:
    assert lambda_to_ratio(0.25) == pytest.approx(0.2)
    assert ratio_to_lambda(0.2) == pytest.approx(0.25)
    assert lambda_to_ratio(0) == 0.0
    for lam in (0.0, 0.1, 1.5, 9.0):
        assert ratio_to_lambda(lambda_to_ratio(lam)) == pytest.approx(lam)


def test_validate_lambda() -> None:
    assert validate_lambda(3) == 3.0
    with pytest.raises(ValueError, match=r"^imm_lambda must be a finite number >= 0, got -1.0$"):
        validate_lambda(-1.0)
    for bad in (math.inf, math.nan, True, "0.1", None):
        with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
            validate_lambda(bad, field="lam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="imm_lambda"):
        lambda_to_ratio(-0.5)


def test_validate_ratio() -> None:
    assert validate_ratio(0) == 0.0
    assert validate_ratio(0.99) == 0.99
    for bad in (1.0, -0.1, math.nan, False):
        with pytest.raises(ValueError, match=r"imm_ratio must be a number in \[0, 1\)"):
            validate_ratio(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="imm_ratio"):
        ratio_to_lambda(1.0)


def test_the_conversions_are_the_plain_expressions_bit_for_bit() -> None:
    # Sweeps convert with these (their results must not move by an ulp): an int or a float,
    # 1 − x and 1.0 − x give the same float.
    for r in (0, 0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99, *(i / 10 for i in range(10))):
        assert ratio_to_lambda(r) == r / (1 - r) == r / (1.0 - r)
    for lam in (0, 0.0, 0.25, 1, 1.5, 9, 1e300):
        assert lambda_to_ratio(lam) == lam / (1 + lam) == lam / (1.0 + lam)


def test_numpy_scalars_are_numbers_like_any_other() -> None:
    # λ and r read off a NumPy grid (np.linspace, a sweep's arrays) pass as floats.
    for kind in (np.float32, np.float64):
        assert validate_lambda(kind(0.25)) == 0.25
        assert validate_ratio(kind(0.5)) == 0.5
        assert type(validate_lambda(kind(0.25))) is float
    assert validate_lambda(np.int64(2)) == 2.0
    with pytest.raises(ValueError, match="imm_lambda must be a finite number >= 0"):
        validate_lambda(np.float64(-1))
    with pytest.raises(ValueError, match="imm_ratio must be a number in"):
        validate_ratio(np.float32(1))
