"""The induced model Q̂(y | x̄): the full model averaged over extended contexts.

Given the k members Q(y | x̄, x̃ᵢ) of one short context x̄ and their weights wᵢ, the
induced model is the weighted mixture

    Q̂(y | x̄) = Σᵢ w̃ᵢ Q(y | x̄, x̃ᵢ),   w̃ᵢ = wᵢ / Σⱼ wⱼ,

which is Eq. (4) with π(x̃ | x̄) ∝ w, the dictionary form Eq. (10) when the members are
the multiset extend(x̄) with unit weights, and the k-sample estimate Eq. (12)/(18) when
they are k draws from it (w̃ᵢ = 1/k). Everything here works in log space.
"""

from __future__ import annotations

import math

import torch

from imm_ray.imm._checks import check_members, check_weights


def member_log_weights(
    member_log_probs: torch.Tensor,
    weights: torch.Tensor | None,
    relevant: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log Q(y | x̄, x̃ᵢ) + log w̃ᵢ`` as ``[B, k, C]``, ``-inf`` exactly where ``wᵢ = 0``.

    A padded member (``wᵢ = 0``) is masked with ``torch.where`` instead of adding
    ``log 0``, so its log-probs may hold anything (even NaN or +inf) without reaching the
    value or the gradient.

    ``relevant`` (``[B, C]`` bool, the classes with P̂(y | x̄) > 0) lets a loss replace the
    classes it ignores by 0 in every member: their logsumexp then stays finite, so classes
    that every member gives log-prob ``-inf`` (masked actions) cannot turn the ignored
    ``0 · log 0`` into a NaN gradient. Their values are meaningless; only losses use this.
    """
    rows, k, _ = check_members(member_log_probs)
    if weights is None:
        shifted = member_log_probs - math.log(k)
        if relevant is None:
            return shifted
        return torch.where(relevant.unsqueeze(1), shifted, torch.zeros_like(shifted))
    check_weights(weights, rows, k)
    weights = weights.to(member_log_probs.dtype)
    normalized = weights / weights.sum(dim=-1, keepdim=True)
    present = (normalized > 0).unsqueeze(-1)
    # log of a padded weight is replaced by log 1 before masking so that its gradient
    # (1/w) is never formed, even when the weights require grad.
    log_w = torch.log(torch.where(normalized > 0, normalized, torch.ones_like(normalized)))
    shifted = member_log_probs + log_w.unsqueeze(-1)
    if relevant is None:
        return torch.where(present, shifted, torch.full_like(shifted, float("-inf")))
    # One [B, k, C] select for both masks; the fill is only [B, 1, C].
    relevant = relevant.unsqueeze(1)
    fill = torch.where(relevant, float("-inf"), 0.0).to(shifted.dtype)
    return torch.where(present & relevant, shifted, fill)


def induced_log_probs(
    member_log_probs: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """log Q̂(y | x̄) = log Σᵢ w̃ᵢ Q(y | x̄, x̃ᵢ), Eq. (10)/(12), (18), as ``[B, C]``.

    Args:
        member_log_probs: ``[B, k, C]``, log Q(y | x̄, x̃ᵢ) for the k extended contexts
            of each of the B short contexts.
        weights: ``[B, k]`` non-negative and unnormalized (zero marks a padded member,
            which contributes nothing), or ``None`` for the uniform 1/k of Eq. (12).

    The sum is a ``torch.logsumexp`` over the member axis, exact for log-probs far below
    the float range of ``exp``.
    """
    return torch.logsumexp(member_log_weights(member_log_probs, weights), dim=1)


def crosstalk_weights(
    member_log_probs: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The crosstalk C_{t,i}(y) = w̃ᵢ Q(y | x̄, x̃ᵢ) / Σⱼ w̃ⱼ Q(y | x̄, x̃ⱼ) of Eq. (20), ``[B, k, C]``.

    For every row and class y the weights sum to 1 over the k members (a padded member
    gets exactly 0). They are returned detached: Eq. (20) holds them constant, so that
    ``∇ IMM_t = Σᵢ ∇(−Σ_y P̂(y | x̄) C_{t,i}(y) log Q(y | x̄, x̃ᵢ))``.
    """
    with torch.no_grad():
        return torch.softmax(member_log_weights(member_log_probs.detach(), weights), dim=1)
