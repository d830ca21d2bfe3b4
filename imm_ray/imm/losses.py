"""The IMM risk and its two baselines: noising / reverse-KD and test-time interpolation.

All three compare the restricted target P̂(y | x̄) with the learned model; they differ in
*which* learned prediction: IMM uses the induced model Q̂(y | x̄) (Eq. (9)), noising and
reverse-KD the full model Q(y | x) itself (Eq. (14)), and interpolation mixes P̂ into
Q's prediction instead of training against it.
"""

from __future__ import annotations

import math

import torch

from imm_ray import checks
from imm_ray.imm._checks import (
    check_members,
    check_pair,
    check_reduction,
    check_rows,
    cross_entropy,
    reduce,
)
from imm_ray.imm.induced import member_log_weights


def imm_loss(
    member_log_probs: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The IMM risk IMM_t(Q) = −Σ_y P̂(y | x̄) log Q̂(y | x̄), Eq. (9) with Q̂ from Eq. (12).

    Args:
        member_log_probs: ``[B, k, C]``, log Q(y | x̄, x̃ᵢ) of each row's k members.
        target: ``[B, C]``, P̂(y | x̄); zero entries contribute exactly 0 (no NaN gradient).
        weights: ``[B, k]`` unnormalized member weights (0 = padding) or ``None`` (1/k).
        reduction: ``"mean"`` or ``"sum"`` over the B rows, or ``"none"`` for ``[B]``.

    With k members from the whole multiset extend(x̄) this is the exact empirical risk
    (Eq. (6)/(10)); with k samples it is the sampled risk (Eq. (12)). log Q̂ is the
    ``logsumexp`` of :func:`~imm_ray.imm.induced_log_probs`, so autograd yields exactly the
    crosstalk gradient of Eq. (20); :func:`~imm_ray.imm.imm_backward_memory_bounded`
    computes the same gradient one member at a time. Classes with P̂ = 0 are masked out
    before the ``logsumexp``, so a class that every member rules out (log-prob ``-inf``,
    e.g. a masked action) costs nothing instead of a NaN gradient. The risk differs from
    the KL of Eq. (5) by the entropy of P̂ only.
    """
    rows, _, classes = check_members(member_log_probs)
    check_rows(target, "target", rows, classes)
    check_reduction(reduction)
    masked = member_log_weights(member_log_probs, weights, relevant=target != 0)
    return reduce(cross_entropy(target, torch.logsumexp(masked, dim=1)), reduction)


def noising_loss(
    log_probs: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Noising / reverse-KD: −Σ_y P̂(y | x̄) log Q(y | x), the key term of Eq. (14).

    The target is pitted against the *full* model on each row's own extended context,
    which is IMM with a single member (k = 1). By Jensen (Eq. (15)) its expectation
    upper-bounds the IMM risk, and Proposition 6.1 shows its minimizer can miss the true
    model even with infinite data.

    Args:
        log_probs: ``[B, C]``, log Q(y | x) of the full model.
        target: ``[B, C]``, P̂(y | x̄); zero entries contribute exactly 0.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B]``).
    """
    check_pair(log_probs, target)
    check_reduction(reduction)
    return reduce(cross_entropy(target, log_probs), reduction)


def interpolate_log_probs(
    log_probs: torch.Tensor, target: torch.Tensor, weight: float
) -> torch.Tensor:
    """The interpolation baseline: log((1 − w) Q(y | x) + w P̂(y | x̄)), ``[B, C]``.

    This is the "Interpolation with Target Model P̂" of Figure 1 and Section 7: P̂ is mixed
    into the prediction at test time, with no change to training (no equation in the paper).

    Mixing is done in log space (``logsumexp`` of the two shifted terms) so that tiny Q
    keeps its precision. ``weight = 0`` returns ``log_probs`` unchanged and
    ``weight = 1`` returns ``log target`` (``-inf`` where P̂ is 0).
    """
    check_pair(log_probs, target)
    checks.number("weight", weight, at_least=0, at_most=1, numpy=True)
    weight = float(weight)
    if weight == 0:
        return log_probs
    log_target = torch.log(target.to(log_probs.dtype))
    if weight == 1:
        return log_target
    stacked = torch.stack((log_probs + math.log1p(-weight), log_target + math.log(weight)))
    return torch.logsumexp(stacked, dim=0)
