"""The extra losses of BERT fine-tuning (Table 2's columns), checked, without importing
transformers (so that sweeps can be planned and validated cheaply)."""

from __future__ import annotations

from dataclasses import dataclass

from imm_ray import checks
from imm_ray.imm import validate_lambda

METHODS = ("base", "mlm", "imm")


@dataclass(frozen=True)
class BertIMMConfig:
    """The extra losses of BERT fine-tuning. Bad values fail at construction."""

    method: str = "imm"
    """base (task loss), mlm (+ MLM), imm (+ MLM + λ·IMM)."""
    lam: float = 0.2
    """λ, the weight of IMM (the paper's value for its language models, App. D.2.2)."""
    k: int = 5
    """Histories per position (App. D.2.2: k = 5 for BERT)."""
    positions: int | None = None
    """Word positions per sentence that carry IMM; None: all of them (the paper)."""
    mlm_probability: float = 0.15
    """The share of word tokens the MLM loss masks (BERT's 15 %)."""

    def __post_init__(self) -> None:
        checks.one_of("method", self.method, METHODS)
        validate_lambda(self.lam, "lam")
        checks.integer("k", self.k, 1)
        checks.integer(
            "positions", self.positions, 1, optional=True, allowed="an integer >= 1 or None"
        )
        checks.number("mlm_probability", self.mlm_probability, above=0, below=1)
