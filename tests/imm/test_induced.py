"""The induced model log Q̂ (Eq. (10)/(12), (18)) and the crosstalk weights (Eq. (20))."""

from __future__ import annotations

import math

import pytest
import torch

from imm_ray.imm import crosstalk_weights, induced_log_probs

# Two rows, three members, two classes; row 1's last member is padding (weight 0).
PROBS = torch.tensor(
    [
        [[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]],
        [[0.9, 0.1], [0.3, 0.7], [0.25, 0.75]],
    ],
    dtype=torch.float64,
)
WEIGHTS = torch.tensor([[1.0, 3.0, 0.0], [2.0, 2.0, 0.0]], dtype=torch.float64)


def test_uniform_weights_average_the_member_probabilities() -> None:
    expected = PROBS.mean(dim=1)
    assert torch.allclose(induced_log_probs(PROBS.log()).exp(), expected, atol=1e-15)


def test_weights_are_normalized_per_row() -> None:
    # Row 0: (1·[0.2, 0.8] + 3·[0.6, 0.4]) / 4; row 1: ([0.9, 0.1] + [0.3, 0.7]) / 2.
    expected = torch.tensor([[0.5, 0.5], [0.6, 0.4]], dtype=torch.float64)
    got = induced_log_probs(PROBS.log(), WEIGHTS).exp()
    assert torch.allclose(got, expected, atol=1e-15)
    assert torch.allclose(induced_log_probs(PROBS.log(), 7.0 * WEIGHTS).exp(), expected)


def test_padded_member_contributes_nothing_even_as_garbage() -> None:
    garbage = PROBS.log().clone()
    garbage[:, 2] = torch.tensor([float("nan"), 1e30], dtype=torch.float64)
    garbage.requires_grad_(True)
    induced = induced_log_probs(garbage, WEIGHTS)
    assert torch.allclose(induced, induced_log_probs(PROBS.log(), WEIGHTS))
    induced.sum().backward()
    assert torch.isfinite(garbage.grad).all()
    assert torch.equal(garbage.grad[:, 2], torch.zeros(2, 2, dtype=torch.float64))


def test_stable_for_very_negative_log_probs() -> None:
    # exp(-2000) underflows to 0 in float64; the induced log-prob must not become -inf.
    members = torch.tensor([[[-2000.0], [-2000.0 + math.log(3.0)]]], dtype=torch.float64)
    got = induced_log_probs(members)
    assert torch.allclose(got, torch.tensor([[-2000.0 + math.log(2.0)]], dtype=torch.float64))


def test_integer_weights_are_accepted() -> None:
    got = induced_log_probs(PROBS.log(), torch.tensor([[1, 3, 0], [2, 2, 0]]))
    assert torch.allclose(got, induced_log_probs(PROBS.log(), WEIGHTS))


def test_crosstalk_matches_hand_values_and_sums_to_one() -> None:
    crosstalk = crosstalk_weights(PROBS.log(), WEIGHTS)
    # Row 0, y = 0: w̃Q = [0.25·0.2, 0.75·0.6, 0] = [0.05, 0.45, 0] → [0.1, 0.9, 0].
    # Row 0, y = 1: [0.25·0.8, 0.75·0.4, 0] = [0.2, 0.3, 0] → [0.4, 0.6, 0].
    # Row 1, y = 0: [0.45, 0.15, 0] → [0.75, 0.25, 0]; y = 1: [0.05, 0.35, 0] → [0.125, 0.875, 0].
    expected = torch.tensor(
        [
            [[0.1, 0.4], [0.9, 0.6], [0.0, 0.0]],
            [[0.75, 0.125], [0.25, 0.875], [0.0, 0.0]],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(crosstalk, expected, atol=1e-15)
    generator = torch.Generator().manual_seed(0)
    random = torch.log_softmax(torch.randn(5, 4, 6, generator=generator, dtype=torch.float64), -1)
    sums = crosstalk_weights(random, torch.rand(5, 4, generator=generator)).sum(dim=1)
    assert torch.allclose(sums, torch.ones(5, 6, dtype=torch.float64), atol=1e-14)


def test_crosstalk_is_detached() -> None:
    members = PROBS.log().requires_grad_(True)
    assert not crosstalk_weights(members, WEIGHTS).requires_grad


@pytest.mark.parametrize(
    ("members", "weights", "message"),
    [
        (torch.zeros(2, 3), None, r"member_log_probs must have shape \[B, k, C\], got \[2, 3\]"),
        (torch.zeros(2, 0, 3), None, "k >= 1 members"),
        (
            torch.zeros(2, 3, 4, dtype=torch.long),
            None,
            "^member_log_probs must be a floating-point",
        ),
        (torch.zeros(2, 3, 4), torch.ones(2, 2), r"weights must have shape \[B, k\] = \[2, 3\]"),
        (torch.zeros(2, 3, 4), torch.tensor([[1.0, -1.0, 1.0]] * 2), "non-negative"),
        (torch.zeros(2, 3, 4), torch.tensor([[1.0, 1.0, 1.0], [0, 0, 0]]), "positive sum"),
        (torch.zeros(2, 3, 4), torch.tensor([[1.0, float("inf"), 1.0]] * 2), "finite"),
        (torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), "real-valued"),
        (torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.complex64), "real-valued"),
    ],
)
def test_invalid_inputs_are_rejected(
    members: torch.Tensor, weights: torch.Tensor | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        induced_log_probs(members, weights)
    with pytest.raises(ValueError, match=message):
        crosstalk_weights(members, weights)


def test_weights_are_taken_in_the_log_probs_dtype() -> None:
    # float32 weights 1 : 2 are normalized in float64 (1/3 is not a float32 number) ...
    thirds = torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]])
    got = induced_log_probs(PROBS.log(), thirds)
    share = torch.tensor([[1 / 3], [2 / 3]], dtype=torch.float64)
    expected = torch.log((PROBS[:, :2] * share).sum(1))
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)
    # ... and float64 weights do not promote float32 log-probs.
    assert induced_log_probs(PROBS.log().float(), WEIGHTS).dtype == torch.float32


def test_a_padded_weight_that_requires_grad_gets_a_finite_gradient() -> None:
    # log 0 of the padded weight is never formed: its gradient would be 0 · ∞ = NaN.
    weights = WEIGHTS.clone().requires_grad_()
    induced_log_probs(PROBS.log(), weights).sum().backward()
    assert torch.isfinite(weights.grad).all(), weights.grad
