"""Memory-bounded IMM gradients: one member's graph at a time (Appendix C.2).

The IMM risk holds a log of a sum over k members, so backpropagating it keeps all k
members' graphs alive together. Eq. (20) splits its gradient into k cross-entropies,

    ∇ IMM_t(Q) = Σᵢ ∇(−Σ_y P̂(y | x̄) C_{t,i}(y) log Q(y | x̄, x̃ᵢ)),

with the crosstalk C_{t,i} held constant. Here they are computed without gradient in a
first pass, then each member is re-evaluated and back-propagated on its own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from imm_ray import checks
from imm_ray.imm._checks import check_reduction, check_rows, check_tensor, cross_entropy, shape_str
from imm_ray.imm.induced import member_log_weights
from imm_ray.imm.losses import imm_loss


def imm_backward_memory_bounded(
    member_log_probs_fn: Callable[[int], torch.Tensor],
    k: int,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
    scale: float = 1.0,
) -> torch.Tensor:
    """Accumulates ``scale · ∇ imm_loss`` into ``.grad`` member by member (Eq. (20), App. C.2).

    Pass 1 evaluates all k members under ``torch.no_grad()`` and forms the crosstalk
    C_{t,i}(y) (:func:`~imm_ray.imm.crosstalk_weights`). Pass 2 re-evaluates member i
    with gradient and calls ``.backward()`` on
    ``scale · (−Σ_y P̂(y | x̄) C_{t,i}(y) log Q(y | x̄, x̃ᵢ))``, reduced over rows like
    :func:`~imm_ray.imm.imm_loss`, so at most one member's graph is alive at a time. The
    summed gradients equal those of ``scale * imm_loss(...)`` exactly.

    Gradients *accumulate* into the parameters' ``.grad``, as ``loss.backward()`` does:
    zero them before if needed, and do not call this where a framework zeroes the
    gradients and runs its own ``backward`` afterwards. Call it outside any enclosing
    autograd graph you intend to backprop separately: each member's ``backward`` frees
    the graph it reaches, so tensors shared with another loss (an LSTM state carried
    with gradient, say) must be detached inside ``member_log_probs_fn``.

    Args:
        member_log_probs_fn: ``i ↦ [B, C]`` log Q(y | x̄, x̃ᵢ) of member i. It runs twice
            per member and must return the same values both times (no dropout, or a
            fixed seed), otherwise the crosstalk does not match the gradient pass.
        k: number of members, ≥ 1.
        target: ``[B, C]``, P̂(y | x̄), treated as a constant (no gradient reaches it).
        weights: ``[B, k]`` unnormalized member weights (0 = padding) or ``None`` (1/k).
            A member whose weight is 0 in every row is not re-evaluated in pass 2.
        reduction: ``"mean"`` or ``"sum"`` over rows, or ``"none"``; with ``"none"`` the
            gradient is that of the sum over rows.
        scale: multiplies every member's loss before ``backward`` (pass λ here).

    Returns:
        The IMM risk (detached), reduced like ``imm_loss``, without ``scale``.
    """
    checks.integer("k", k, 1)
    check_tensor(target, "target")
    if target.dim() != 2:
        raise ValueError(f"target must have shape [B, C], got {shape_str(target.shape)}")
    check_reduction(reduction)
    with torch.no_grad():
        members = torch.stack([_member(member_log_probs_fn, i, target) for i in range(k)], dim=1)
        risk = imm_loss(members, target, weights, reduction)
        # Classes with P̂ = 0 are masked so that a class every member rules out (log-prob
        # -inf) gives a zero coefficient instead of 0 · NaN.
        relevant = target.detach() != 0
        crosstalk = torch.softmax(member_log_weights(members, weights, relevant), dim=1)
        coefficients = target.detach().unsqueeze(1).to(crosstalk.dtype) * crosstalk
        live = (coefficients != 0).any(dim=2).any(dim=0).tolist()
    del members
    for i in range(k):
        if not live[i]:
            continue
        log_probs = _member(member_log_probs_fn, i, target)
        if not log_probs.requires_grad:
            raise ValueError(
                f"member_log_probs_fn({i}) returned a tensor that does not require grad; "
                "call imm_backward_memory_bounded with gradients enabled"
            )
        member_loss = cross_entropy(coefficients[:, i], log_probs)
        if reduction == "mean":
            member_loss = member_loss.mean()
        else:
            member_loss = member_loss.sum()
        (scale * member_loss).backward()
    return risk


def _member(fn: Callable[[int], torch.Tensor], i: int, target: torch.Tensor) -> torch.Tensor:
    """Calls ``fn(i)`` and checks it returned the ``[B, C]`` log-probs matching ``target``."""
    log_probs = fn(i)
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 2:
        shape = shape_str(log_probs.shape) if isinstance(log_probs, torch.Tensor) else "non-tensor"
        raise ValueError(f"member_log_probs_fn({i}) must return [B, C] log-probs, got {shape}")
    check_rows(log_probs, f"member_log_probs_fn({i})", *target.shape)
    return log_probs
