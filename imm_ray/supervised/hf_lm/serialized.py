"""Serialized IMM (Eq. (13), Algorithm 2) for a causal Hugging Face LM, as for the LSTM
(:class:`~imm_ray.supervised.lm.imm_branch.SerializedIMM`).

A stale snapshot Q† of the model (refreshed every r batches; its vocabulary head packed
once per refresh, and in bfloat16 where ``precision`` is) reads each training batch;
Q̂†(· | x̄) is the mean of its predictions at every position with input x̄ since the last
refresh, the current batch included; the main pass's log-probs at each position are
trained against the corrected target Q†(· | x_t) / Q̂†(· | x̄_t) · P̂(· | x̄_t).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import nn

from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.lm.imm_branch import SerializedIMM
from imm_ray.supervised.lm.model import FrozenLinear


class CausalSerializedIMM(SerializedIMM):
    """The stale snapshot Q† of a causal LM and its running induced model Q̂†."""

    last_step: int | None = None

    def causal_target_(
        self,
        model: torch.nn.Module,
        step: int,
        input_ids: torch.Tensor,
        target_rows: KneserNeyBigram | Callable[[torch.Tensor], torch.Tensor],
        scale: float = 1.0,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``scale`` · Q†(y | x_t) / Q̂†(y | x̄_t) · P̂(y | x̄_t), ``[N, V]`` without gradient,
        at the N attended positions of ``input_ids [B, L]`` (in row-major order); ``step``
        counts optimizer steps (a refresh at the first batch of a step with
        ``step % r == 0``)."""
        with torch.no_grad():
            # Several batches may share a step (gradient accumulation): refresh once.
            fresh = step != self.last_step and self.snapshot.maybe_refresh(model, step)
            self.last_step = step
            if fresh:
                self._freeze_snapshot(input_ids.numel())
                self.dtype = torch.float32
                self._reset_induced(input_ids.device)
            keep = None if attention_mask is None else attention_mask > 0
            head_keeps = keep is not None and self.keeps_logits
            if head_keeps:
                # Only the kept positions through the vocabulary head, in row-major order.
                logits = self.snapshot(input_ids=input_ids, logits_to_keep=keep).logits
            else:
                logits = self.snapshot(input_ids=input_ids).logits
            v = self.vocab_size
            if logits.shape[-1] != v:
                raise ValueError(
                    f"the model predicts {logits.shape[-1]} ids and the bigram {v}: both must "
                    "be over the tokenizer's ids"
                )
            logits = logits.reshape(-1, v)
            flat = input_ids.reshape(-1)
            if keep is not None:
                flat = flat[keep.reshape(-1)]
                if not head_keeps:
                    logits = logits[keep.reshape(-1)]
            stale = torch.softmax(logits, dim=-1, dtype=self.dtype)
            return self.weights_(stale, flat, target_rows, scale)

    @property
    def keeps_logits(self) -> bool:
        """Whether the snapshot's forward takes a boolean ``logits_to_keep`` (most causal
        LMs of transformers 5 do): its head then reads the kept positions only."""
        module = self.snapshot.module
        return module is not None and _takes_logits_to_keep(type(module))

    def _freeze_snapshot(self, rows_hint: int) -> None:
        """The fresh snapshot made fast to read for r steps: a bfloat16 copy where
        ``precision`` is bf16, and its vocabulary head's weight packed once for oneDNN
        (:class:`~imm_ray.supervised.lm.model.FrozenLinear`; an ``nn.Linear`` head only,
        the others are left as they are)."""
        snapshot = self.snapshot.module
        if self.precision == "bf16":
            snapshot.to(torch.bfloat16)  # type: ignore[union-attr]
        head = snapshot.get_output_embeddings()  # type: ignore[union-attr]
        if type(head) is nn.Linear:
            snapshot.set_output_embeddings(FrozenLinear(head, rows_hint))  # type: ignore[union-attr]


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters
