"""The additive binary IMM fast path equals the generic IMM core, value and gradient."""

from __future__ import annotations

import pytest
import torch

from imm_ray.imm import binary, imm_loss, induced_log_probs
from imm_ray.imm.binary import (
    additive_binary_imm_loss,
    additive_binary_induced_log_probs,
    normalize_member_weights,
)


def problem(runs=3, rows=5, k=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    own = torch.randn(runs, rows, dtype=torch.float64, generator=gen)
    other = torch.randn(runs, k, dtype=torch.float64, generator=gen)
    weights = torch.rand(runs, rows, k, dtype=torch.float64, generator=gen)
    weights[0, :, 1] = 0  # a padded member
    p1 = torch.rand(runs, rows, dtype=torch.float64, generator=gen)
    p1[-1, 0], p1[-1, -1] = 0.0, 1.0  # one-hot targets: 0·log Q̂ must stay 0
    return own, other, weights, torch.stack((1 - p1, p1), -1)


def generic(own, other, weights, target):
    runs, rows = own.shape
    k = other.shape[1]
    z = own[:, :, None] + other[:, None, :]
    members = torch.stack(
        (torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)), -1
    )
    return imm_loss(
        members.reshape(runs * rows, k, 2),
        target.reshape(runs * rows, 2),
        weights=weights.reshape(runs * rows, k),
        reduction="none",
    ).reshape(runs, rows)


@pytest.mark.parametrize("shape", [(3, 5, 4), (6, 2, 3)])  # (R, N, k): more rows or more runs
@pytest.mark.parametrize("chunk_entries", [1, 7, 1 << 19])
def test_value_and_gradient_equal_the_generic_imm_loss(monkeypatch, chunk_entries, shape):
    monkeypatch.setattr(binary, "CHUNK_ENTRIES", chunk_entries)
    own, other, weights, target = problem(*shape)
    fast_inputs = [own.clone().requires_grad_(), other.clone().requires_grad_()]
    slow_inputs = [own.clone().requires_grad_(), other.clone().requires_grad_()]
    fast = additive_binary_imm_loss(*fast_inputs, normalize_member_weights(weights), target)
    slow = generic(*slow_inputs, weights, target)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    upstream = torch.rand_like(fast)
    fast_grads = torch.autograd.grad((fast * upstream).sum(), fast_inputs)
    slow_grads = torch.autograd.grad((slow * upstream).sum(), slow_inputs)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradient_matches_finite_differences():
    own, other, weights, target = problem(runs=2, rows=3, k=3, seed=1)
    normalized = normalize_member_weights(weights)
    assert torch.autograd.gradcheck(
        lambda u, v: additive_binary_imm_loss(u, v, normalized, target),
        (own.requires_grad_(), other.requires_grad_()),
    )


def test_induced_model_equals_the_generic_induced_model():
    own, other, weights, _ = problem()
    z = own[:, :, None] + other[:, None, :]
    members = torch.stack(
        (torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)), -1
    )
    expected = induced_log_probs(members.reshape(-1, 4, 2), weights.reshape(-1, 4)).reshape(3, 5, 2)
    got = additive_binary_induced_log_probs(own, other, normalize_member_weights(weights))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_bad_shapes_and_weights_are_named():
    own, other, weights, target = problem()
    normalized = normalize_member_weights(weights)
    with pytest.raises(ValueError, match=r"weights must have shape \[R, N, k\] = \[3, 5, 4\]"):
        additive_binary_imm_loss(own, other, normalized[:, :, :3], target)
    with pytest.raises(ValueError, match=r"target must have shape \[R, N, 2\]"):
        additive_binary_imm_loss(own, other, normalized, target[..., :1])
    with pytest.raises(ValueError, match="other_logits must have shape"):
        additive_binary_imm_loss(own, other[:2], normalized, target)
    with pytest.raises(ValueError, match="non-negative"):
        normalize_member_weights(-weights)
    with pytest.raises(ValueError, match="positive sum in every row"):
        normalize_member_weights(torch.zeros(2, 3))


def test_weights_and_target_are_taken_in_the_logits_dtype():
    own, other, weights, target = problem()
    weights, target = normalize_member_weights(weights).float(), target.float()
    got = additive_binary_imm_loss(own, other, weights, target)
    assert got.dtype == torch.float64
    expected = additive_binary_imm_loss(own, other, weights.double(), target.double())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # float32 logits with float64 weights and target: the risk is float32.
    low = additive_binary_imm_loss(own.float(), other.float(), weights.double(), target.double())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, expected.float())


@pytest.mark.parametrize("bad", range(4))
def test_a_non_float_argument_is_refused_by_name(bad):
    arguments = list(problem())
    arguments[2] = normalize_member_weights(arguments[2])
    name = ("own_logits", "other_logits", "weights", "target")[bad]
    arguments[bad] = arguments[bad].long()
    with pytest.raises(ValueError, match=f"^{name} must be a floating-point tensor"):
        additive_binary_imm_loss(*arguments)
    with pytest.raises(ValueError, match="^weights must be a floating-point tensor"):
        normalize_member_weights(torch.ones(2, 3, 4, dtype=torch.long))
