"""Shape and value checks shared by the public entry points of :mod:`imm_ray.imm`.

Every IMM function takes plain tensors whose axes are positional ([B, k, C] members,
[B, k] weights, [B, C] targets), so a transposed or mis-sliced argument would otherwise
broadcast silently into a wrong loss. The checks name the argument and both shapes.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def shape_str(shape: torch.Size | tuple[int, ...]) -> str:
    """``torch.Size([4, 3])`` → ``"[4, 3]"``, the notation the error messages use."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_tensor(value: object, name: str) -> torch.Tensor:
    """Raises unless ``value`` is a floating-point tensor (log-probs and targets must be)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_members(member_log_probs: torch.Tensor) -> tuple[int, int, int]:
    """Checks ``member_log_probs`` is ``[B, k, C]`` with k ≥ 1 and C ≥ 1; returns (B, k, C)."""
    check_tensor(member_log_probs, "member_log_probs")
    if member_log_probs.dim() != 3:
        raise ValueError(
            f"member_log_probs must have shape [B, k, C], got {shape_str(member_log_probs.shape)}"
        )
    rows, k, classes = member_log_probs.shape
    if k < 1 or classes < 1:
        raise ValueError(
            "member_log_probs needs k >= 1 members and C >= 1 classes, "
            f"got {shape_str(member_log_probs.shape)}"
        )
    return rows, k, classes


def check_rows(value: torch.Tensor, name: str, rows: int, classes: int) -> None:
    """Checks a ``[B, C]`` tensor (target, log-probs, correction) against the expected B and C."""
    check_tensor(value, name)
    if tuple(value.shape) != (rows, classes):
        raise ValueError(
            f"{name} must have shape [B, C] = [{rows}, {classes}], got {shape_str(value.shape)}"
        )


def check_pair(
    log_probs: torch.Tensor,
    target: torch.Tensor,
    name: str = "log_probs",
    target_name: str = "target",
) -> None:
    """Checks ``log_probs`` is ``[B, C]`` and ``target`` has the same shape."""
    check_tensor(log_probs, name)
    if log_probs.dim() != 2:
        raise ValueError(f"{name} must have shape [B, C], got {shape_str(log_probs.shape)}")
    check_rows(target, target_name, *log_probs.shape)


def check_weights(weights: torch.Tensor, rows: int, k: int) -> None:
    """Checks ``weights`` is ``[B, k]``, finite, non-negative, with a positive sum in every row.

    Reading the values forces one device-to-host sync; it is the price of refusing a
    negative or all-padding row, which would otherwise give a silently wrong induced model.
    """
    if not isinstance(weights, torch.Tensor):
        raise ValueError(f"weights must be a torch.Tensor or None, got {type(weights).__name__}")
    if tuple(weights.shape) != (rows, k):
        raise ValueError(
            f"weights must have shape [B, k] = [{rows}, {k}], got {shape_str(weights.shape)}"
        )
    if weights.dtype == torch.bool or weights.is_complex():
        raise ValueError(f"weights must be a real-valued tensor, got dtype {weights.dtype}")
    with torch.no_grad():
        if not bool(torch.isfinite(weights).all()):
            raise ValueError("weights must be finite")
        if bool((weights < 0).any()):
            raise ValueError("weights must be non-negative (zero marks a padded member)")
        if bool((weights.sum(dim=-1) <= 0).any()):
            raise ValueError("weights must have a positive sum in every row (a row is all padding)")


def check_reduction(reduction: str) -> None:
    """Raises unless ``reduction`` is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce(per_row: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduces a per-row ``[B]`` loss: mean over rows, their sum, or the ``[B]`` tensor itself."""
    if reduction == "mean":
        return per_row.mean()
    if reduction == "sum":
        return per_row.sum()
    return per_row


def cross_entropy(coefficients: torch.Tensor, log_values: torch.Tensor) -> torch.Tensor:
    """``−Σ_y c(y) log v(y)`` over the last axis, with ``0 · log v = 0`` whatever ``log v`` is.

    Masking (rather than multiplying) keeps a zero coefficient from turning a ``-inf`` or
    garbage ``log v`` into NaN, in the value and in the gradient alike. The coefficients
    take the dtype of ``log v``, so a float64 target does not promote a float32 loss.
    """
    coefficients = coefficients.to(log_values.dtype)
    terms = torch.where(coefficients != 0, coefficients * log_values, torch.zeros_like(log_values))
    return -terms.sum(dim=-1)
