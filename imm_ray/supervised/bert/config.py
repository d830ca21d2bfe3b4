"""The extra losses of BERT fine-tuning (Table 2's columns), checked, without importing
transformers (so that sweeps can be planned and validated cheaply)."""

from __future__ import annotations

from dataclasses import dataclass

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
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        validate_lambda(self.lam, "lam")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.positions is not None and (
            isinstance(self.positions, bool)
            or not isinstance(self.positions, int)
            or self.positions < 1
        ):
            raise ValueError(f"positions must be an integer >= 1 or None, got {self.positions!r}")
        p = self.mlm_probability
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p < 1:
            raise ValueError(f"mlm_probability must be a number in (0, 1), got {p!r}")
