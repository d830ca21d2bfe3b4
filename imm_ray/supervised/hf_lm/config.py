"""What :class:`~imm_ray.supervised.hf_lm.trainer.IMMTrainer` adds to a language model's
loss: :class:`CausalIMMConfig` for a causal LM, :class:`MaskedIMMConfig` for a masked one.
Checked at construction, without importing transformers (so that sweeps can be planned
and validated cheaply)."""

from __future__ import annotations

from dataclasses import dataclass

from imm_ray import checks
from imm_ray.imm import validate_lambda

#: The methods of a causal LM (Table 1's columns) and of a masked one (Table 2's).
CAUSAL_METHODS = ("none", "noising", "imm", "serialized")
MASKED_METHODS = ("base", "mlm", "imm")


@dataclass(frozen=True)
class CausalIMMConfig:
    """What an :class:`~imm_ray.supervised.hf_lm.trainer.IMMTrainer` adds to a causal
    LM's loss (Table 1's columns). Bad values fail at construction."""

    method: str = "imm"
    """One of none, noising, imm, serialized."""
    lam: float = 0.2
    """λ, the IMM term's weight (imm, serialized)."""
    k: int = 10
    """Windows per row on every ``every``-th batch (imm)."""
    every: int = 5
    """j: k windows per row every j-th optimizer step, 1 on the others (imm)."""
    refresh_every: int = 50
    """r: optimizer steps between refreshes of serialized IMM's snapshot (serialized)."""
    positions: int | None = None
    """Positions per row that carry serialized IMM, drawn afresh for every row, each
    weighted by the row's scored positions over this many (so that the term sums over a
    row as many positions as it scores; Q̂† is the mean over the drawn ones); None: all
    of them, as Algorithm 2 (serialized)."""
    gamma0: float = 0.2
    """γ0 of Kneser–Ney noising (noising)."""
    clip_separately: bool | None = None
    """Where Trainer clips gradients (``max_grad_norm > 0``), whether the IMM term's
    gradient is clipped on its own before it is added to the LM term's (App. D.2.2), or the
    sum is clipped as one. None: the method's way (:attr:`clips_separately`)."""

    def __post_init__(self) -> None:
        checks.one_of("method", self.method, CAUSAL_METHODS)
        checks.number("lam", self.lam, at_least=0)
        checks.integer("k", self.k, 1)
        checks.integer("every", self.every, 1)
        checks.integer("refresh_every", self.refresh_every, 1)
        checks.integer(
            "positions", self.positions, 1, optional=True, allowed="an integer >= 1 or None"
        )
        checks.number("gamma0", self.gamma0, at_least=0, at_most=1)
        if not (self.clip_separately is None or isinstance(self.clip_separately, bool)):
            checks.fail("clip_separately", self.clip_separately, "true, false or None")

    @property
    def adds_terms(self) -> bool:
        """Whether the loss has a term besides the language model's (IMM's)."""
        return self.method in ("imm", "serialized") and self.lam > 0

    @property
    def clips_separately(self) -> bool:
        """Whether the terms' gradients are clipped each on its own: where the loss adds
        IMM, as ``clip_separately`` says, or by default for sampled IMM (App. D.2.2: its
        risk and the LM's cross-entropy have very different scales) and not for
        serialized IMM, whose term is a cross-entropy of the main pass's own outputs
        against a corrected target: with the LM term it is one soft-target cross-entropy,
        back-propagated and clipped once (Algorithm 2 applies ∇CE + λ·∇ĨMM; the LSTM's
        serialized IMM alike), which keeps its overhead a constant factor (a second
        backward pass through every layer is what clipping it apart costs)."""
        if not self.adds_terms:
            return False
        if self.clip_separately is None:
            return self.method == "imm"
        return self.clip_separately


@dataclass(frozen=True)
class MaskedIMMConfig:
    """What an :class:`~imm_ray.supervised.hf_lm.trainer.IMMTrainer` adds to a masked
    LM's losses (Table 2's columns for BERT fine-tuning). Bad values fail at
    construction."""

    method: str = "imm"
    """base (the task loss alone: a model with a task head), mlm (+ the MLM loss), imm
    (+ MLM + λ·IMM)."""
    lam: float = 0.2
    """λ, the weight of IMM (the paper's value for its language models, App. D.2.2)."""
    k: int = 5
    """Histories per position (App. D.2.2: k = 5 for BERT)."""
    positions: int | None = None
    """Word positions per sentence that carry IMM; None: all of them (the paper)."""
    mlm_probability: float = 0.15
    """The share of word tokens the MLM loss masks (BERT's 15 %)."""

    def __post_init__(self) -> None:
        checks.one_of("method", self.method, MASKED_METHODS)
        validate_lambda(self.lam, "lam")
        checks.integer("k", self.k, 1)
        checks.integer(
            "positions", self.positions, 1, optional=True, allowed="an integer >= 1 or None"
        )
        checks.number("mlm_probability", self.mlm_probability, above=0, below=1)

    @property
    def adds_terms(self) -> bool:
        """Whether the loss has a term besides the task's (MLM's, IMM's)."""
        return self.method != "base"

    @property
    def clips_separately(self) -> bool:
        """Whether the terms' gradients are clipped each on its own (App. D.2.2): wherever
        the loss has several terms."""
        return self.adds_terms
