"""λ and the ratio r = λ/(1+λ): Eq. (8) and the convex mix of the paper's App. D code."""

from __future__ import annotations

import math

import pytest
import torch

from imm_ray.imm import (
    COMBINE_MODES,
    combine,
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


def test_combine_modes() -> None:
    main, imm = torch.tensor(2.0), torch.tensor(10.0)
    assert float(combine(main, imm, 0.25)) == pytest.approx(2.0 + 0.25 * 10.0)
    assert float(combine(main, imm, 0.25, mode="convex")) == pytest.approx(0.8 * 2.0 + 0.2 * 10.0)
    # The convex mix is the additive one scaled by 1 − r = 1 / (1 + λ).
    assert float(combine(main, imm, 0.25, "convex")) == pytest.approx(
        float(combine(main, imm, 0.25)) / 1.25
    )
    assert COMBINE_MODES == ("add", "convex")
    with pytest.raises(ValueError, match=r"mode must be one of \('add', 'convex'\), got 'mul'"):
        combine(main, imm, 0.25, mode="mul")


def test_validate_lambda() -> None:
    assert validate_lambda(3) == 3.0
    with pytest.raises(ValueError, match=r"^imm_lambda must be a finite number >= 0, got -1.0$"):
        validate_lambda(-1.0)
    for bad in (math.inf, math.nan, True, "0.1", None):
        with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
            validate_lambda(bad, field="lam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="imm_lambda"):
        combine(torch.tensor(1.0), torch.tensor(1.0), -0.5)


def test_validate_ratio() -> None:
    assert validate_ratio(0) == 0.0
    assert validate_ratio(0.99) == 0.99
    for bad in (1.0, -0.1, math.nan, False):
        with pytest.raises(ValueError, match=r"imm_ratio must be a number in \[0, 1\)"):
            validate_ratio(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="imm_ratio"):
        ratio_to_lambda(1.0)
