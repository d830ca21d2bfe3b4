"""Exact IMM for binary models whose logit is additive in the short and extended context.

When the full model's logit splits as z(x̄, x̃) = u(x̄) + v(x̃) (logistic regression on
(x1, x2, x3) with x̄ = x1, x̃ = (x2, x3)) and every row t of a set shares the same k
candidate extensions x̃_1 … x̃_k, all member predictions are
``Q(y = 1 | x̄_t, x̃_i) = σ(u_t + v_i)``, an ``[R, N, k]`` table built from two vectors.
The induced model and the IMM risk are then (Eqs. (22)–(23))

    Q̂(1 | x̄_t) = Σ_i w̃_ti σ(u_t + v_i),     Q̂(0 | x̄_t) = 1 − Q̂(1 | x̄_t),
    IMM_t = −P̂(1 | x̄_t) log Q̂(1 | x̄_t) − P̂(0 | x̄_t) log Q̂(0 | x̄_t),

the same risk as :func:`~imm_ray.imm.imm_loss` on the members' log-probs. Its gradient is
the crosstalk form of Eq. (20) in closed form: with ``g_t = P̂(0)/Q̂(0) − P̂(1)/Q̂(1)``,

    ∂IMM_t / ∂z_ti = g_t · w̃_ti σ(z_ti) σ(−z_ti),

so ∂/∂u_t is its row sum and ∂/∂v_i its column sum. Written out, forward and backward take
a handful of passes over the ``[R, N, k]`` table instead of autograd's dozens over the
two-class log-prob table, which is what lets 300 Monte Carlo runs at every dataset size
train as one tensor program (the logistic experiments). Since the normalized weights sum
to 1, Q̂(0) = 1 − Q̂(1): exact up to rounding (≈ 1e-7 absolute in float32, so use float64
where a target puts mass on a class the model all but rules out); both are clamped at the
dtype's smallest normal number so that the log stays finite.
"""

from __future__ import annotations

import torch

from imm_ray.imm._checks import check_tensor, shape_str

#: Member-table entries per chunk: small enough for a core's cache, large enough that the
#: per-chunk Python cost is noise.
CHUNK_ENTRIES = 1 << 19


def _chunks(runs: int, per_run: int) -> list[slice]:
    size = max(1, CHUNK_ENTRIES // max(per_run, 1))
    return [slice(start, start + size) for start in range(0, runs, size)]


def _induced_probs(
    own: torch.Tensor, other: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q̂(1 | x̄_t), Q̂(0 | x̄_t)), each ``[R, N]`` and clamped at the dtype's smallest
    normal number, summed chunk by chunk; no graph is recorded for the member table."""
    runs, rows = own.shape
    q1 = torch.empty_like(own)
    with torch.no_grad():
        for part in _chunks(runs, rows * other.shape[1]):
            s1 = torch.sigmoid_(own[part].unsqueeze(-1) + other[part].unsqueeze(-2))
            q1[part] = torch.einsum("rnk,rnk->rn", s1, weights[part])
    tiny = torch.finfo(q1.dtype).tiny
    return q1.clamp_min(tiny), (1.0 - q1).clamp_min(tiny)


class _AdditiveBinaryIMM(torch.autograd.Function):
    """Forward and backward both walk the runs in cache-sized chunks and keep no member
    table between them: the backward recomputes σ(z) chunk by chunk, which costs one
    sigmoid and saves the [R, N, k] tables' memory traffic."""

    @staticmethod
    def forward(ctx, own, other, weights, target):  # type: ignore[override]
        q1, q0 = _induced_probs(own, other, weights)
        p1, p0 = target[..., 1], target[..., 0]
        ctx.save_for_backward(own, other, weights, q1, q0, p1, p0)
        return -(_xlogy(p1, q1) + _xlogy(p0, q0))

    @staticmethod
    def backward(ctx, grad_risk):  # type: ignore[override]
        own, other, weights, q1, q0, p1, p0 = ctx.saved_tensors
        g = grad_risk * (_ratio(p0, q0) - _ratio(p1, q1))  # [R, N]
        d_own, d_other = torch.empty_like(own), torch.empty_like(other)
        for part in _chunks(own.shape[0], own.shape[1] * other.shape[1]):
            s1 = torch.sigmoid_(own[part].unsqueeze(-1) + other[part].unsqueeze(-2))
            a1 = s1 * weights[part]
            dz = a1.sub_(s1.mul_(a1)).mul_(g[part].unsqueeze(-1))  # g w̃ σ(z) (1 − σ(z))
            d_own[part] = dz.sum(-1)
            d_other[part] = dz.sum(-2)
        return d_own, d_other, None, None


def _xlogy(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """p·log q with 0·log q = 0."""
    return torch.where(p != 0, p * torch.log(q), torch.zeros_like(q))


def _ratio(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """p/q with 0/q = 0."""
    return torch.where(p != 0, p / q, torch.zeros_like(q))


def additive_binary_imm_loss(
    own_logits: torch.Tensor,
    other_logits: torch.Tensor,
    weights: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """IMM_t of a binary model with logit u_t + v_i, every row sharing k extensions: ``[R, N]``.

    Args:
        own_logits: ``[R, N]``, u(x̄_t), the short context's part of the logit of row t.
        other_logits: ``[R, k]``, v(x̃_i), the part of each candidate extension.
        weights: ``[R, N, k]`` normalized member weights w̃_ti (each row sums to 1; 0 = a
            padded member), e.g. a Laplace kernel exp(−α |x1_t − x1_i|) passed through
            :func:`normalize_member_weights`. No gradient flows into them.
        target: ``[R, N, 2]``, P̂(y | x̄_t) for y = 0, 1.

    Returns the per-row risk (no reduction); its gradient reaches ``own_logits`` and
    ``other_logits`` through the closed form above. R indexes independent problems (e.g.
    Monte Carlo runs), each with its own rows and its own k extensions.
    """
    for value, name in ((own_logits, "own_logits"), (other_logits, "other_logits")):
        check_tensor(value, name)
        if value.dim() != 2:
            raise ValueError(
                f"{name} must have shape [R, N] / [R, k], got {shape_str(value.shape)}"
            )
    runs, rows = own_logits.shape
    k = other_logits.shape[1]
    if other_logits.shape[0] != runs:
        raise ValueError(
            f"other_logits must have shape [R, k] with R = {runs}, got "
            f"{shape_str(other_logits.shape)}"
        )
    check_tensor(weights, "weights")
    if tuple(weights.shape) != (runs, rows, k):
        raise ValueError(
            f"weights must have shape [R, N, k] = [{runs}, {rows}, {k}], got "
            f"{shape_str(weights.shape)}"
        )
    check_tensor(target, "target")
    if tuple(target.shape) != (runs, rows, 2):
        raise ValueError(
            f"target must have shape [R, N, 2] = [{runs}, {rows}, 2], got {shape_str(target.shape)}"
        )
    return _AdditiveBinaryIMM.apply(
        own_logits, other_logits, weights.to(own_logits.dtype), target.to(own_logits.dtype)
    )


def normalize_member_weights(weights: torch.Tensor) -> torch.Tensor:
    """w̃_ti = w_ti / Σ_i w_ti for ``[..., k]`` weights, refusing a negative or all-zero row.

    :func:`additive_binary_imm_loss` takes normalized weights so that a trainer that keeps
    them fixed (a kernel over its own data) pays for this once, not every step.
    """
    check_tensor(weights, "weights")
    with torch.no_grad():
        total = weights.sum(-1, keepdim=True)
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("weights must be finite and non-negative (zero marks padding)")
        if bool((total <= 0).any()):
            raise ValueError("weights must have a positive sum in every row (a row is all padding)")
        return weights / total


def additive_binary_induced_log_probs(
    own_logits: torch.Tensor, other_logits: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """log Q̂(y | x̄_t) of the additive binary model, ``[R, N, 2]``, without gradient.

    The induced model of :func:`additive_binary_imm_loss` (Eq. (22)) with normalized
    ``weights [R, N, k]``, computed in cache-sized chunks; e.g. the stale Q̂† of serialized
    IMM's correction (Eq. (13)).
    """
    q1, q0 = _induced_probs(own_logits, other_logits, weights)
    return torch.stack((torch.log(q0), torch.log(q1)), -1)
