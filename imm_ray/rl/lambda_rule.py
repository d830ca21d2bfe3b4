"""The paper's λ rule for the grid RL experiment (App. D.3), free of RLlib imports so that
sweep planning and the CLI use it without loading RLlib."""

from __future__ import annotations

from imm_ray import checks
from imm_ray.imm.weighting import ratio_to_lambda

#: The paper's hand-set λ for the RL experiment (App. D.3); equals the λ rule below 175 epochs.
PAPER_LAMBDA = 0.25


#: The λ ratios the paper's rule is clipped to: IMM off at 0, never above 0.9.
PAPER_RATIO_RANGE = (0.0, 0.9)


def paper_lambda_ratio(epochs: int) -> float:
    """The paper's λ-ratio rule for the grid: ``r = round(−0.0002 · epochs + 0.1891, 1)``,
    clipped to ``[0, 0.9]``.

    ``epochs`` is the dataset size (one 50-step trajectory per epoch). The paper fitted the
    rule on 10 … 500 epochs, where it gives ``r = 0.2`` up to 175 epochs and ``r = 0.1``
    from 200 to 500. Beyond that it rounds to ``r = 0`` (IMM off) from 696 epochs on and
    would go negative from 1196 epochs; the clip keeps it at 0 there.
    """
    checks.integer("epochs", epochs, 1, numpy=True)
    low, high = PAPER_RATIO_RANGE
    return min(max(round(-0.0002 * int(epochs) + 0.1891, 1), low), high)


def paper_lambda(epochs: int) -> float:
    """λ = r / (1 − r) for the ratio of :func:`paper_lambda_ratio` (the loss is main + λ·IMM);
    0 (IMM off) from 696 epochs on."""
    return ratio_to_lambda(paper_lambda_ratio(epochs))
