"""The IMM risk (Eq. (9), (12)), noising / reverse-KD (Eq. (14)) and interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imm_ray.imm import imm_loss, interpolate_log_probs, noising_loss

PROBS = torch.tensor(
    [
        [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]],
        [[0.5, 0.25, 0.25], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]],
    ],
    dtype=torch.float64,
)
WEIGHTS = torch.tensor([[2.0, 1.0, 1.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
TARGET = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)


def hand_risk(weights: list[list[float]]) -> list[float]:
    """−Σ_y P̂(y) log(Σᵢ w̃ᵢ Qᵢ(y)) with plain Python floats."""
    risks = []
    for row in range(2):
        total = sum(weights[row])
        risk = 0.0
        for y in range(3):
            averaged = sum(weights[row][i] / total * float(PROBS[row, i, y]) for i in range(3))
            if TARGET[row, y] > 0:
                risk -= float(TARGET[row, y]) * math.log(averaged)
        risks.append(risk)
    return risks


def test_imm_risk_is_cross_entropy_of_averaged_probabilities() -> None:
    expected = hand_risk(WEIGHTS.tolist())
    got = imm_loss(PROBS.log(), TARGET, WEIGHTS, reduction="none")
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-14)
    mean = imm_loss(PROBS.log(), TARGET, WEIGHTS)
    assert math.isclose(float(mean), sum(expected) / 2, abs_tol=1e-14)
    total = imm_loss(PROBS.log(), TARGET, WEIGHTS, reduction="sum")
    assert math.isclose(float(total), sum(expected), abs_tol=1e-14)


def test_uniform_weights_are_the_sampled_estimate() -> None:
    expected = hand_risk([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    got = imm_loss(PROBS.log(), TARGET, reduction="none")
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-14)


def test_zero_target_entries_give_finite_gradients() -> None:
    members = PROBS.log().clone()
    members[0, :, 2] = float("-inf")  # Q̂(y=2) = 0 where P̂(y=2) = 0: 0·log 0 must be 0.
    members.requires_grad_(True)
    loss = imm_loss(members, TARGET, WEIGHTS)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(members.grad).all()
    assert torch.equal(members.grad[0, :, 2], torch.zeros(3, dtype=torch.float64))


def test_padded_member_garbage_reaches_neither_risk_nor_gradient() -> None:
    garbage = PROBS.log().clone()
    garbage[1, 0] = torch.tensor([float("nan"), 1e30, float("-inf")], dtype=torch.float64)
    garbage.requires_grad_(True)
    loss = imm_loss(garbage, TARGET, WEIGHTS)
    loss.backward()
    assert torch.allclose(loss.detach(), imm_loss(PROBS.log(), TARGET, WEIGHTS), atol=1e-15)
    assert torch.isfinite(garbage.grad).all()
    assert torch.equal(garbage.grad[1, 0], torch.zeros(3, dtype=torch.float64))


def test_noising_is_imm_with_one_member() -> None:
    log_probs = PROBS[:, 1].log().requires_grad_(True)
    noising = noising_loss(log_probs, TARGET, reduction="none")
    imm = imm_loss(log_probs.unsqueeze(1), TARGET, reduction="none")
    assert torch.allclose(noising, imm, atol=1e-15)
    expected = -(TARGET * PROBS[:, 1].log()).sum(dim=-1)
    assert torch.allclose(noising, expected, atol=1e-15)
    noising_loss(log_probs, TARGET).backward()
    assert torch.isfinite(log_probs.grad).all()


def test_noising_ignores_ruled_out_classes_with_zero_target() -> None:
    log_probs = torch.tensor([[-0.1, float("-inf"), -2.4]], dtype=torch.float64)
    log_probs.requires_grad_(True)
    target = torch.tensor([[0.7, 0.0, 0.3]], dtype=torch.float64)
    loss = noising_loss(log_probs, target)
    loss.backward()
    assert math.isclose(float(loss.detach()), 0.7 * 0.1 + 0.3 * 2.4, abs_tol=1e-15)
    assert torch.equal(log_probs.grad, -target)


def test_noising_upper_bounds_imm_in_expectation() -> None:
    # Jensen, Eq. (15): the member-averaged noising loss is at least the IMM risk.
    per_member = torch.stack(
        [noising_loss(PROBS[:, i].log(), TARGET, reduction="none") for i in range(3)], dim=1
    )
    assert (per_member.mean(dim=1) >= imm_loss(PROBS.log(), TARGET, reduction="none")).all()


def test_interpolation_endpoints_and_midpoint() -> None:
    log_q = PROBS[:, 0].log()
    assert torch.equal(interpolate_log_probs(log_q, TARGET, 0.0), log_q)
    assert torch.allclose(interpolate_log_probs(log_q, TARGET, 1).exp(), TARGET, atol=1e-15)
    mixed = interpolate_log_probs(log_q, TARGET, 0.25).exp()
    assert torch.allclose(mixed, 0.75 * PROBS[:, 0] + 0.25 * TARGET, atol=1e-15)
    assert torch.allclose(mixed.sum(dim=-1), torch.ones(2, dtype=torch.float64))


def test_interpolation_keeps_precision_of_tiny_probabilities() -> None:
    log_q = torch.tensor([[-1500.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    got = interpolate_log_probs(log_q, target, 0.5)
    assert torch.allclose(got[0, 0], torch.tensor(-1500.0 + math.log(0.5), dtype=torch.float64))


def test_interpolation_takes_a_numpy_weight_as_the_same_float() -> None:
    # A weight read off a NumPy grid (np.linspace) is a number like any other.
    log_q = PROBS[:, 0].log()
    for weight in (np.float32(0.25), np.float64(0.25)):
        got = interpolate_log_probs(log_q, TARGET, weight)  # type: ignore[arg-type]
        assert torch.equal(got, interpolate_log_probs(log_q, TARGET, 0.25))


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_interpolation_rejects_bad_weights(weight: object) -> None:
    with pytest.raises(ValueError, match="weight must be a number in"):
        interpolate_log_probs(PROBS[:, 0].log(), TARGET, weight)  # type: ignore[arg-type]


def test_shape_errors_name_argument_and_shapes() -> None:
    with pytest.raises(
        ValueError, match=r"target must have shape \[B, C\] = \[2, 3\], got \[2, 2\]"
    ):
        imm_loss(PROBS.log(), TARGET[:, :2])
    with pytest.raises(ValueError, match=r"target must have shape \[B, C\] = \[2, 3\], got \[3\]"):
        noising_loss(PROBS[:, 0].log(), TARGET[0])
    with pytest.raises(ValueError, match=r"log_probs must have shape \[B, C\], got \[2, 3, 3\]"):
        noising_loss(PROBS.log(), TARGET)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        imm_loss(PROBS.log(), TARGET, -WEIGHTS)
    with pytest.raises(ValueError, match="reduction must be one of"):
        imm_loss(PROBS.log(), TARGET, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        noising_loss(PROBS[:, 0].log(), TARGET, reduction="batchmean")


def test_interpolation_is_computed_in_the_log_probs_dtype() -> None:
    # A float64 P̂ mixed into float32 log Q gives float32 log-probabilities, at every weight.
    log_q = PROBS[:, 0].log().float()
    for weight in (0.25, 1.0):
        got = interpolate_log_probs(log_q, TARGET, weight)
        assert got.dtype == torch.float32, (weight, got.dtype)
        expected = ((1 - weight) * PROBS[:, 0] + weight * TARGET).float()
        torch.testing.assert_close(got.exp(), expected)


def test_interpolation_names_a_non_float_log_probs() -> None:
    with pytest.raises(ValueError, match="^log_probs must be a floating-point tensor"):
        interpolate_log_probs(PROBS[:, 0].long(), TARGET, 0.5)


def test_a_float64_target_does_not_promote_a_float32_loss() -> None:
    log_q = PROBS.log().float()
    loss = imm_loss(log_q, TARGET, WEIGHTS, reduction="none")
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, imm_loss(log_q, TARGET.float(), WEIGHTS, reduction="none"))
    with pytest.raises(ValueError, match="^target must be a floating-point tensor"):
        imm_loss(log_q, TARGET.long())
    # The same in bfloat16, where the classes P̂ ignores are filled in the log-probs' dtype.
    assert imm_loss(PROBS.log().bfloat16(), TARGET, WEIGHTS).dtype == torch.bfloat16
