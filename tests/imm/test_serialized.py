"""Serialized IMM (Section 5, Eq. (13), Algorithm 2) against the exact IMM risk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from one_hot_models import N_CLASSES, N_EXTENDED, N_SHORT, make_model

from imm_ray.imm import (
    StaleSnapshot,
    crosstalk_weights,
    imm_loss,
    induced_log_probs,
    serialized_correction,
    serialized_imm_loss,
)

# A dataset of (x̄_t, x̃_t) pairs whose short contexts repeat, some pairs more than once.
SHORT = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 2])
EXTENDED = torch.tensor([0, 1, 0, 2, 3, 1, 1, 0, 3, 2, 3, 0])
TARGET_TABLE = torch.tensor(
    [[0.6, 0.4, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], dtype=torch.float64
)


def extend_table() -> tuple[torch.Tensor, torch.Tensor]:
    """extend(x̄_t) for every row t (Eq. (10)): ``[n, m]`` extended contexts and a 0/1 mask."""
    groups = [EXTENDED[SHORT == s] for s in range(N_SHORT)]
    width = max(len(g) for g in groups)
    contexts = torch.zeros(N_SHORT, width, dtype=torch.long)
    mask = torch.zeros(N_SHORT, width, dtype=torch.float64)
    for s, group in enumerate(groups):
        contexts[s, : len(group)] = group
        mask[s, : len(group)] = 1.0
    return contexts[SHORT], mask[SHORT]


def log_probs(model: torch.nn.Module, short: torch.Tensor, extended: torch.Tensor) -> torch.Tensor:
    features = torch.cat((F.one_hot(short, N_SHORT), F.one_hot(extended, N_EXTENDED)), dim=-1)
    return torch.log_softmax(model(features.to(torch.float64)), dim=-1)


def member_log_probs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    contexts, mask = extend_table()
    short = SHORT.unsqueeze(1).expand_as(contexts)
    return log_probs(model, short, contexts), mask


def grad_of(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def serialized_grad(model: torch.nn.Module, snapshot: StaleSnapshot) -> torch.Tensor:
    """Mean over the dataset of ∇ ĨMM_t with the correction from the snapshot (Algorithm 2)."""
    stale_members, mask = member_log_probs(snapshot.module)
    correction = serialized_correction(
        log_probs(snapshot.module, SHORT, EXTENDED), induced_log_probs(stale_members, mask)
    )
    loss = serialized_imm_loss(log_probs(model, SHORT, EXTENDED), TARGET_TABLE[SHORT], correction)
    return grad_of(model, loss)


def exact_imm_grad(model: torch.nn.Module) -> torch.Tensor:
    members, mask = member_log_probs(model)
    return grad_of(model, imm_loss(members, TARGET_TABLE[SHORT], mask))


def test_serialized_gradient_averages_to_exact_imm_gradient() -> None:
    model = make_model(0)
    snapshot = StaleSnapshot(refresh_every=5)
    snapshot.maybe_refresh(model, step=0)
    serialized = serialized_grad(model, snapshot)
    exact = exact_imm_grad(model)
    assert torch.allclose(serialized, exact, atol=1e-10, rtol=0)
    assert exact.abs().max() > 1e-3
    # Per row, ĨMM_t is not the IMM risk: only the dataset average of the gradients agrees.
    stale_members, mask = member_log_probs(model)
    correction = serialized_correction(
        log_probs(model, SHORT, EXTENDED), induced_log_probs(stale_members, mask)
    )
    one_row = serialized_imm_loss(
        log_probs(model, SHORT, EXTENDED)[:1], TARGET_TABLE[SHORT][:1], correction[:1]
    )
    exact_one_row = imm_loss(stale_members[:1], TARGET_TABLE[SHORT][:1], mask[:1])
    assert not torch.allclose(grad_of(model, one_row), grad_of(model, exact_one_row))


def test_stale_snapshot_gives_the_crosstalk_gradient_of_the_snapshot() -> None:
    # With Q† ≠ Q, Eq. (13) averages to −(1/n) Σ_t Σ_y P̂ Σᵢ C†_{t,i}(y) ∇ log Q(y | x̄_t, x̃ᵢ):
    # the crosstalk gradient of Eq. (20) with the crosstalk taken from the snapshot.
    model = make_model(1)
    snapshot = StaleSnapshot(refresh_every=10)
    snapshot.maybe_refresh(model, step=0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.sin(torch.arange(parameter.numel()).view_as(parameter)))
    assert not snapshot.maybe_refresh(model, step=3)

    stale_members, mask = member_log_probs(snapshot.module)
    stale_crosstalk = crosstalk_weights(stale_members, mask)
    members, _ = member_log_probs(model)
    target = TARGET_TABLE[SHORT].unsqueeze(1)
    predicted = grad_of(model, -(target * stale_crosstalk * members).sum(dim=(1, 2)).mean())

    serialized = serialized_grad(model, snapshot)
    assert torch.allclose(serialized, predicted, atol=1e-12, rtol=0)
    assert not torch.allclose(serialized, exact_imm_grad(model), atol=1e-3)


def test_correction_averages_to_one_within_each_short_context() -> None:
    snapshot_model = make_model(2)
    stale_members, mask = member_log_probs(snapshot_model)
    correction = serialized_correction(
        log_probs(snapshot_model, SHORT, EXTENDED), induced_log_probs(stale_members, mask)
    )
    assert not correction.requires_grad
    for s in range(N_SHORT):
        mean = correction[SHORT == s].mean(dim=0)
        assert torch.allclose(mean, torch.ones(N_CLASSES, dtype=torch.float64), atol=1e-14)


def test_snapshot_is_frozen_and_refreshed_every_r_steps() -> None:
    model = make_model(3)
    snapshot = StaleSnapshot(refresh_every=3)
    with pytest.raises(RuntimeError, match="call maybe_refresh first"):
        snapshot(torch.zeros(1, N_SHORT + N_EXTENDED, dtype=torch.float64))
    refreshed = [snapshot.maybe_refresh(model, step) for step in range(1, 8)]
    # The first call always snapshots; afterwards only steps divisible by 3 do.
    assert refreshed == [True, False, True, False, False, True, False]
    frozen = snapshot.module
    assert frozen is not model and not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in model.parameters())

    x = torch.ones(2, N_SHORT + N_EXTENDED, dtype=torch.float64)
    before = snapshot(x)
    with torch.no_grad():
        model.bias.add_(1.0)
    assert torch.equal(snapshot(x), before)  # training Q does not move Q†
    assert not snapshot(x).requires_grad
    snapshot.maybe_refresh(model, step=9)
    assert torch.allclose(snapshot(x), model(x))


@pytest.mark.parametrize("refresh_every", [0, -2, 1.5, True])
def test_snapshot_rejects_bad_refresh_period(refresh_every: object) -> None:
    with pytest.raises(ValueError, match="refresh_every must be an integer >= 1"):
        StaleSnapshot(refresh_every)  # type: ignore[arg-type]


def test_serialized_shape_errors() -> None:
    q = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"correction must have shape \[B, C\] = \[4, 3\]"):
        serialized_imm_loss(q, q.exp() / 3, torch.ones(4, 2))
    with pytest.raises(
        ValueError, match=r"stale_induced_log_probs must have shape \[B, C\] = \[4, 3\], got \[4\]"
    ):
        serialized_correction(q, q[:, 0])
    with pytest.raises(ValueError, match=r"^stale_log_probs must have shape \[B, C\], got \[4\]"):
        serialized_correction(q[:, 0], q)
    with pytest.raises(ValueError, match="^stale_log_probs must be a floating-point tensor"):
        serialized_correction(q.long(), q)


def test_stale_snapshot_passes_keyword_arguments_to_the_snapshot() -> None:
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    snapshot = StaleSnapshot(refresh_every=1)
    snapshot.maybe_refresh(model, step=0)
    x = torch.arange(6, dtype=torch.float64).view(2, 3)
    out = snapshot(input=x)
    torch.testing.assert_close(out, model(x).detach())
    assert not out.requires_grad
