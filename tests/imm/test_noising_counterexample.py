"""Proposition 6.1 (Appendix B.2): noising / reverse-KD is inconsistent, IMM is not.

The joint P(y, x₋₁, x₋₂) of the paper is printed as two 2×2 blocks, one per y, with
x₋₁ on the rows and x₋₂ on the columns: summing over y gives the printed π(x₋₁, x₋₂),
and averaging over x₋₂ gives the printed induced model P̄(y | x₋₁) (indexed [y, x₋₁]);
the other reading of the blocks gives P̄(0 | x₋₁ = 0) = 0.83, not 0.57.
"""

from __future__ import annotations

import math

import torch

from imm_ray.imm import imm_loss, induced_log_probs, noising_loss

# P(y, x₋₁, x₋₂), axes [y, x₋₁, x₋₂].
JOINT = torch.tensor(
    [[[0.396, 0.003], [0.1, 0.05]], [[0.004, 0.297], [0.1, 0.05]]], dtype=torch.float64
)


def paper_quantities() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """π(x₋₁, x₋₂), P(y | x₋₁, x₋₂) as [x₋₁, x₋₂, y], and P̄(y | x₋₁) as [x₋₁, y]."""
    context = JOINT.sum(dim=0)
    conditional = (JOINT / context).permute(1, 2, 0)
    induced = (JOINT.sum(dim=2) / context.sum(dim=1)).T
    return context, conditional, induced


def test_paper_tensors_are_reproduced() -> None:
    context, conditional, induced = paper_quantities()
    assert torch.allclose(context, torch.tensor([[0.4, 0.3], [0.2, 0.1]], dtype=torch.float64))
    printed_conditional = torch.tensor(
        [[[0.99, 0.01], [0.5, 0.5]], [[0.01, 0.99], [0.5, 0.5]]], dtype=torch.float64
    )  # [y, x₋₁, x₋₂], as printed
    assert torch.allclose(conditional.permute(2, 0, 1), printed_conditional)
    printed_induced = torch.tensor([[0.57, 0.5], [0.43, 0.5]], dtype=torch.float64)  # [y, x₋₁]
    assert torch.allclose(induced.T, printed_induced)
    # The library's induced model of P with weights π(x₋₂ | x₋₁) ∝ π(x₋₁, x₋₂) is P̄.
    assert torch.allclose(induced_log_probs(conditional.log(), context).exp(), induced)


def test_noising_regularizer_is_negative_at_uniform_q_but_imm_is_not() -> None:
    """g(Q†) = Σ π(x₋₁, x₋₂) Σ_y P̄(y | x₋₁) log(P(y | x₋₁, x₋₂) / Q†) ≈ −1.1 in nats.

    The paper's −1.1 uses the natural log: in bits the same g is −1.58. Being negative
    while g(P) = 0 means P does not minimize the noising objective (Eq. (14)) for any λ > 0.
    """
    context, conditional, induced = paper_quantities()
    rows_context = context.reshape(4)  # rows (x₋₁, x₋₂) = (0, 0), (0, 1), (1, 0), (1, 1)
    rows_true = conditional.reshape(4, 2).log()
    rows_target = induced.repeat_interleave(2, dim=0)
    rows_uniform = torch.full((4, 2), math.log(0.5), dtype=torch.float64)

    def g(log_q: torch.Tensor) -> float:
        gap = noising_loss(log_q, rows_target, "none") - noising_loss(
            rows_true, rows_target, "none"
        )
        return float((rows_context * gap).sum())

    assert abs(g(rows_uniform) - (-1.1)) < 0.05
    assert abs(g(rows_uniform) / math.log(2) - (-1.1)) > 0.4  # not base 2
    assert abs(g(rows_true)) < 1e-15

    # IMM's regularizer at Q† is Σ π(x₋₁) KL(P̄(· | x₋₁) ‖ Q̂†(· | x₋₁)) ≥ 0 = its value at P.
    short_context = context.sum(dim=1)
    uniform_members = torch.full((2, 2, 2), math.log(0.5), dtype=torch.float64)
    gap = imm_loss(uniform_members, induced, context, "none") - imm_loss(
        conditional.log(), induced, context, "none"
    )
    imm_regularizer = float((short_context * gap).sum())
    kl = float((short_context * (induced * (induced / 0.5).log()).sum(dim=1)).sum())
    assert imm_regularizer >= 0
    assert math.isclose(imm_regularizer, kl, abs_tol=1e-15)
    assert imm_regularizer > 1e-3
