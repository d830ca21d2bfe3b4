"""The IMM gradient three ways: autograd through logsumexp, the memory-bounded crosstalk
passes of Appendix C.2 (Eq. (20)), and central finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from one_hot_models import N_CLASSES, N_EXTENDED, N_SHORT, make_model

from imm_ray.imm import crosstalk_weights, imm_backward_memory_bounded, imm_loss

SHORT = torch.tensor([0, 1, 2, 0])
EXTENDED = torch.tensor([[0, 1, 2], [3, 3, 1], [2, 0, 3], [1, 2, 0]])
# Non-uniform, with padded members (weight 0) in rows 1 and 3.
WEIGHTS = torch.tensor(
    [[1.0, 2.0, 0.5], [0.3, 0.0, 1.2], [1.0, 1.0, 1.0], [0.0, 2.0, 0.0]], dtype=torch.float64
)
TARGET = torch.tensor(
    [[0.2, 0.5, 0.3], [0.0, 0.6, 0.4], [0.7, 0.1, 0.2], [0.3, 0.3, 0.4]], dtype=torch.float64
)


def member(model: torch.nn.Module, i: int) -> torch.Tensor:
    """``[B, C]`` log Q(y | x̄_b, x̃_{b,i})."""
    features = torch.cat(
        (F.one_hot(SHORT, N_SHORT), F.one_hot(EXTENDED[:, i], N_EXTENDED)), dim=-1
    ).to(torch.float64)
    return torch.log_softmax(model(features), dim=-1)


def members(model: torch.nn.Module) -> torch.Tensor:
    return torch.stack([member(model, i) for i in range(EXTENDED.shape[1])], dim=1)


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def batched_grad(model: torch.nn.Module, reduction: str = "mean") -> torch.Tensor:
    model.zero_grad()
    loss = imm_loss(members(model), TARGET, WEIGHTS, reduction)
    (loss.sum() if reduction == "none" else loss).backward()
    return flat_grad(model)


def finite_difference_grad(model: torch.nn.Module, eps: float = 1e-6) -> torch.Tensor:
    grads = []
    with torch.no_grad():
        for parameter in model.parameters():
            flat = parameter.view(-1)
            for j in range(flat.numel()):
                original = float(flat[j])
                flat[j] = original + eps
                plus = float(imm_loss(members(model), TARGET, WEIGHTS))
                flat[j] = original - eps
                minus = float(imm_loss(members(model), TARGET, WEIGHTS))
                flat[j] = original
                grads.append((plus - minus) / (2 * eps))
    return torch.tensor(grads, dtype=torch.float64)


def test_batched_memory_bounded_and_finite_difference_gradients_agree() -> None:
    model = make_model()
    batched = batched_grad(model)
    model.zero_grad()
    risk = imm_backward_memory_bounded(
        lambda i: member(model, i), EXTENDED.shape[1], TARGET, WEIGHTS
    )
    memory_bounded = flat_grad(model)
    numeric = finite_difference_grad(model)
    assert torch.allclose(batched, memory_bounded, atol=1e-13, rtol=0)
    assert torch.allclose(batched, numeric, atol=1e-8, rtol=0)
    assert batched.abs().max() > 1e-3  # the check is not vacuous
    assert torch.allclose(risk, imm_loss(members(model), TARGET, WEIGHTS), atol=1e-15)
    assert not risk.requires_grad


def test_gradient_is_the_crosstalk_weighted_sum_of_member_gradients() -> None:
    # Eq. (20) written out: Σᵢ ∇(−Σ_y P̂ C_{t,i}(y) log Qᵢ(y)) with C held constant.
    model = make_model(1)
    crosstalk = crosstalk_weights(members(model), WEIGHTS)
    model.zero_grad()
    surrogate = -(TARGET.unsqueeze(1) * crosstalk * members(model)).sum(dim=(1, 2)).mean()
    surrogate.backward()
    assert torch.allclose(flat_grad(model), batched_grad(model), atol=1e-13, rtol=0)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_memory_bounded_reductions_and_scale(reduction: str) -> None:
    model = make_model(2)
    expected = batched_grad(model, reduction)
    model.zero_grad()
    risk = imm_backward_memory_bounded(
        lambda i: member(model, i), 3, TARGET, WEIGHTS, reduction=reduction, scale=0.25
    )
    assert torch.allclose(flat_grad(model), 0.25 * expected, atol=1e-13, rtol=0)
    assert risk.shape == imm_loss(members(model), TARGET, WEIGHTS, reduction).shape


def test_memory_bounded_accumulates_and_backprops_one_member_at_a_time() -> None:
    model = make_model(3)
    expected = batched_grad(model)
    model.zero_grad()
    grad_seen: list[torch.Tensor | None] = []

    def member_fn(i: int) -> torch.Tensor:
        if torch.is_grad_enabled():
            grad = model.weight.grad
            grad_seen.append(None if grad is None else grad.clone())
        return member(model, i)

    imm_backward_memory_bounded(member_fn, 3, TARGET, WEIGHTS)
    imm_backward_memory_bounded(member_fn, 3, TARGET, WEIGHTS)
    assert torch.allclose(flat_grad(model), 2 * expected, atol=1e-13, rtol=0)
    # Member i's backward has run before member i + 1 is evaluated with gradient.
    assert grad_seen[0] is None
    for before, after in zip(grad_seen[1:], grad_seen[2:], strict=False):
        assert not torch.equal(before, after)


def test_memory_bounded_ignores_garbage_in_padded_members() -> None:
    model = make_model(5)
    expected = batched_grad(model)
    model.zero_grad()

    def member_fn(i: int) -> torch.Tensor:
        log_probs = member(model, i)
        # Rows 1 and 3 pad members 1 and 0/2: poison them (the graph still reaches the model).
        poison = torch.zeros_like(log_probs)
        if i == 1:
            poison[1] = float("nan")
        else:
            poison[3] = float("inf")
        return log_probs + poison

    imm_backward_memory_bounded(member_fn, 3, TARGET, WEIGHTS)
    assert torch.allclose(flat_grad(model), expected, atol=1e-13, rtol=0)


def test_class_ruled_out_by_every_member_and_the_target_gives_finite_gradients() -> None:
    # A masked action: log-prob -inf in every member of row 1, where P̂ is 0 too.
    model = make_model(6)
    ruled_out = torch.zeros(4, N_CLASSES, dtype=torch.float64)
    ruled_out[1, 0] = float("-inf")

    def member_fn(i: int) -> torch.Tensor:
        return torch.log_softmax(member(model, i) + ruled_out, dim=-1)

    model.zero_grad()
    imm_loss(torch.stack([member_fn(i) for i in range(3)], dim=1), TARGET, WEIGHTS).backward()
    batched = flat_grad(model)
    model.zero_grad()
    imm_backward_memory_bounded(member_fn, 3, TARGET, WEIGHTS)
    assert torch.isfinite(batched).all()
    assert torch.allclose(flat_grad(model), batched, atol=1e-13, rtol=0)


def test_member_padded_in_every_row_is_not_reevaluated() -> None:
    model = make_model(4)
    weights = WEIGHTS.clone()
    weights[:, 2] = 0.0
    calls: list[tuple[int, bool]] = []

    def member_fn(i: int) -> torch.Tensor:
        calls.append((i, torch.is_grad_enabled()))
        return member(model, i)

    imm_backward_memory_bounded(member_fn, 3, TARGET, weights)
    assert calls == [(0, False), (1, False), (2, False), (0, True), (1, True)]


def test_memory_bounded_errors() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        imm_backward_memory_bounded(lambda i: member(model, i), 0, TARGET)
    with pytest.raises(ValueError, match=r"member_log_probs_fn\(0\) must have shape"):
        imm_backward_memory_bounded(lambda i: member(model, i)[:, :2], 3, TARGET)
    with pytest.raises(ValueError, match="does not require grad"):
        imm_backward_memory_bounded(lambda i: member(model, i).detach(), 3, TARGET)
    with pytest.raises(ValueError, match=r"weights must have shape \[B, k\] = \[4, 3\]"):
        imm_backward_memory_bounded(lambda i: member(model, i), 3, TARGET, WEIGHTS[:, :2])
    for k in (True, 2.0):
        with pytest.raises(ValueError, match="k must be an integer >= 1"):
            imm_backward_memory_bounded(lambda i: member(model, i), k, TARGET)
    with pytest.raises(ValueError, match="^target must be a floating-point tensor"):
        imm_backward_memory_bounded(lambda i: member(model, i), 3, TARGET.long())
    with pytest.raises(ValueError, match=r"must return \[B, C\] log-probs, got \[4\]$"):
        imm_backward_memory_bounded(lambda i: member(model, i)[:, 0], 3, TARGET)
    with pytest.raises(ValueError, match=r"must return \[B, C\] log-probs, got non-tensor$"):
        imm_backward_memory_bounded(lambda i: member(model, i).tolist(), 3, TARGET)


def test_one_member_is_plain_cross_entropy() -> None:
    model = make_model(5)
    model.zero_grad()
    risk = imm_backward_memory_bounded(lambda i: member(model, 1), 1, TARGET)
    expected = -(TARGET * member(model, 1)).sum(dim=1).mean()
    torch.testing.assert_close(risk, expected.detach())
    got = flat_grad(model)
    model.zero_grad()
    expected.backward()
    torch.testing.assert_close(got, flat_grad(model), atol=1e-13, rtol=0)


def test_a_member_padded_in_every_row_is_skipped_and_the_later_ones_still_count() -> None:
    model = make_model(6)
    weights = WEIGHTS.clone()
    weights[:, 1] = 0.0
    weights[3, 2] = 1.5  # row 3 weighted only member 1
    calls: list[tuple[int, bool]] = []

    def member_fn(i: int) -> torch.Tensor:
        calls.append((i, torch.is_grad_enabled()))
        return member(model, i)

    model.zero_grad()
    imm_backward_memory_bounded(member_fn, 3, TARGET, weights)
    assert calls == [(0, False), (1, False), (2, False), (0, True), (2, True)]
    got = flat_grad(model)
    model.zero_grad()
    imm_loss(members(model), TARGET, weights).backward()
    torch.testing.assert_close(got, flat_grad(model), atol=1e-13, rtol=0)
