"""``IMMTrainer``: a ``transformers.Trainer`` whose loss is the paper's sum for BERT
(App. D.2.2): the task loss + the MLM loss + λ·IMM within MLM.

A fine-tuning script gains IMM by swapping its ``Trainer`` for ``IMMTrainer`` (its model a
:class:`~imm_ray.supervised.bert.model.BertForMaskedLMAndClassification`, its
``processing_class`` the model's tokenizer) and passing :class:`BertIMMConfig`, the corpus
stream and the bigram. Methods (Table 2's columns):

- ``base``: the task loss alone (BERT's own fine-tuning);
- ``mlm``: + the MLM loss, BERT's pretraining masking (15 % of the word tokens; of those
  80 % ``[MASK]``, 10 % a random token, 10 % kept) on a copy of the batch;
- ``imm``: + λ·IMM within MLM (:mod:`~imm_ray.supervised.bert.imm_branch`), k = 5
  histories per position, every batch.

The task loss reads the clean batch, the MLM loss the masked copy, IMM the histories:
three forward passes. Masks and history draws come from a generator seeded with
``args.seed``.

**Clipping the terms separately.** With ``args.max_grad_norm > 0`` (and a method other
than ``base``), each term's gradient is clipped to that norm on its own before they are
added, as App. D.2.2 asks: ``clip(∇task) + clip(∇MLM) + λ·clip(∇IMM)``. ``compute_loss``
takes each term's gradient with ``torch.autograd.grad``, clips it, and returns the
surrogate ``Σ_p ⟨p, g_p⟩ − (same).detach() + loss.detach()``: its value is the loss and
its gradient the clipped sum, so Trainer's own ``backward``, gradient accumulation (each
micro-batch's terms are clipped) and optimizer step run unchanged. Trainer's clipping of
the *sum* is turned off on the trainer's copy of the arguments (the caller's object is not
touched), since it would clip the sum again. ``fp16`` (loss scaling) cannot be combined
with this; ``bf16`` can.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import Trainer

from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.bert.config import BertIMMConfig
from imm_ray.supervised.bert.imm_branch import BertHistories, check_bigram_vocabulary, imm_risk
from imm_ray.supervised.bert.model import BertForMaskedLMAndClassification
from imm_ray.supervised.bert.tokenizer import check_bert_tokenizer
from imm_ray.supervised.clipping import clipped_surrogate, separate_clipping

TERMS = ("task", "mlm", "imm")


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer,
    vocab_size: int,
    probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's MLM corruption of a batch: ``(masked ids, labels)``, labels −100 where unscored.

    Only attended word tokens are candidates; at least one is chosen when any exists.
    """
    ids = input_ids.cpu()
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    candidate = (attention_mask.cpu() > 0) & ~special & (ids != tokenizer.pad_token_id)
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & candidate
    if not bool(chosen.any()) and bool(candidate.any()):
        flat = candidate.reshape(-1).nonzero().squeeze(1)
        pick = flat[torch.randint(len(flat), (1,), generator=generator)]
        chosen.view(-1)[pick] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    draw = torch.rand(ids.shape, generator=generator)
    masked = torch.where(chosen & (draw < 0.8), torch.full_like(ids, tokenizer.mask_token_id), ids)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
    masked = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_ids, masked)
    return masked.to(input_ids.device), labels.to(input_ids.device)


def _encoder_inputs(inputs: dict) -> dict[str, torch.Tensor]:
    return {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs}


class IMMTrainer(Trainer):
    """``Trainer`` with the task + MLM + λ·IMM loss (see the module docstring)."""

    def __init__(
        self,
        model: BertForMaskedLMAndClassification | None = None,
        args=None,
        *,
        imm_config: BertIMMConfig | None = None,
        corpus: np.ndarray | None = None,
        bigram: KneserNeyBigram | None = None,
        **kwargs,
    ) -> None:
        """``corpus`` (the id stream histories are drawn from) and ``bigram`` are needed by
        the ``imm`` method only; both must be over the tokenizer's ids."""
        self.imm_config = imm_config or BertIMMConfig()
        method = self.imm_config.method
        args, self.term_max_norm = separate_clipping(args, method != "base")
        super().__init__(model=model, args=args, **kwargs)
        if not isinstance(self.model, BertForMaskedLMAndClassification):
            raise ValueError(
                "IMMTrainer needs a BertForMaskedLMAndClassification (both heads on one "
                f"encoder), got {type(self.model).__name__}"
            )
        tokenizer = self.processing_class
        if tokenizer is None:
            raise ValueError("IMMTrainer needs processing_class: the model's BERT tokenizer")
        check_bert_tokenizer(tokenizer)
        self.vocab_size = self.model.config.vocab_size
        # Our compute_loss does not use num_items_in_batch: Trainer must scale for accumulation.
        self.model_accepts_loss_kwargs = False
        self.generator = torch.Generator().manual_seed(self.args.seed)
        self.histories: BertHistories | None = None
        self.bigram = bigram
        if method == "imm":
            if corpus is None or bigram is None:
                raise ValueError("method imm needs the corpus stream and its Kneser–Ney bigram")
            check_bigram_vocabulary(bigram, tokenizer, self.vocab_size)
            self.histories = BertHistories(
                corpus, tokenizer, self.vocab_size, self.model.config.max_position_embeddings
            )
        self._term_sums = dict.fromkeys(TERMS, 0.0)
        self._term_counts = dict.fromkeys(TERMS, 0)

    @property
    def term_weights(self) -> dict[str, float]:
        """Each term's weight in the loss: 1, 1 and λ."""
        return {"task": 1.0, "mlm": 1.0, "imm": self.imm_config.lam}

    def loss_terms(self, model, inputs) -> tuple[object, dict[str, torch.Tensor]]:
        """``(task outputs, {"task", "mlm", "imm": term})`` of a training batch; a term is
        absent when its method is off or nothing in the batch carries it."""
        config = self.imm_config
        encoded = _encoder_inputs(inputs)
        attention = encoded.get("attention_mask", torch.ones_like(encoded["input_ids"]))
        outputs = model(**encoded, labels=inputs["labels"])
        terms = {"task": outputs.loss}
        if config.method == "base":
            return outputs, terms
        masked, labels = mask_tokens(
            encoded["input_ids"],
            attention,
            self.processing_class,
            self.vocab_size,
            config.mlm_probability,
            self.generator,
        )
        scored = labels != -100
        if bool(scored.any()):
            terms["mlm"] = model(
                input_ids=masked,
                attention_mask=attention,
                token_type_ids=encoded.get("token_type_ids"),
                head="mlm",
                predict_mask=scored,
                labels=labels[scored],
            ).loss
        if config.method == "imm" and config.lam > 0:
            result = imm_risk(
                model,
                encoded["input_ids"],
                attention,
                self.histories,  # type: ignore[arg-type]
                self.bigram,  # type: ignore[arg-type]
                config.k,
                config.positions,
                self.generator,
            )
            if result is not None:
                terms["imm"] = result[0]
        return outputs, terms

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (model.training and torch.is_grad_enabled()):
            outputs = model(**_encoder_inputs(inputs), labels=inputs["labels"])
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        outputs, terms = self.loss_terms(model, inputs)
        weights = self.term_weights
        for name, value in terms.items():
            self._record(name, value)
        loss = sum(weights[name] * value for name, value in terms.items())
        if self.term_max_norm is not None:
            params = [p for p in model.parameters() if p.requires_grad]
            loss = clipped_surrogate(terms, weights, params, self.term_max_norm, loss)
        return (loss, outputs) if return_outputs else loss

    def _record(self, name: str, value: torch.Tensor) -> None:
        self._term_sums[name] += float(value.detach())
        self._term_counts[name] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds each term's mean since the last log (``task_loss``, ``mlm_loss``,
        ``imm_risk``) to Trainer's training logs."""
        if "loss" in logs:
            names = {"task": "task_loss", "mlm": "mlm_loss", "imm": "imm_risk"}
            for term, key in names.items():
                if self._term_counts[term]:
                    logs[key] = self._term_sums[term] / self._term_counts[term]
            self._term_sums = dict.fromkeys(TERMS, 0.0)
            self._term_counts = dict.fromkeys(TERMS, 0)
        super().log(logs, start_time)
