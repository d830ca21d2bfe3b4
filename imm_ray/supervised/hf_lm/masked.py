"""The losses of a masked language model under
:class:`~imm_ray.supervised.hf_lm.trainer.IMMTrainer` (App. D.2.2 for BERT): the task
loss (a model with a task head), the MLM loss, and λ·IMM within MLM.

The model is any ``AutoModelForMaskedLM`` class (BERT, RoBERTa, DistilBERT, …; its MLM
loss alone, with IMM) or imm-ray's
:class:`~imm_ray.supervised.bert.model.BertForMaskedLMAndClassification` (the task loss
too: Table 2's fine-tuning). Methods (:class:`~imm_ray.supervised.hf_lm.config.MaskedIMMConfig`):

- ``base``: the task loss alone (BERT's own fine-tuning; a model with a task head);
- ``mlm``: + the MLM loss, BERT's pretraining masking (15 % of the word tokens; of those
  80 % the mask token, 10 % a random token, 10 % kept) on a copy of the batch;
- ``imm``: + λ·IMM within MLM (:mod:`~imm_ray.supervised.bert.imm_branch`), k histories
  per position, every batch.

Batches are clean text (``input_ids``, ``attention_mask``; ``labels`` the task's, for a
model with a task head): the trainer masks them itself, with a generator seeded with
``args.seed`` (so a ``DataCollatorForLanguageModeling`` batch, masked already, is
refused). The task loss reads the clean batch, the MLM loss the masked copy, IMM the
histories: three forward passes. Each term is a mean over its micro-batch, and Trainer
divides by the accumulation steps.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.bert.imm_branch import BertHistories, check_bigram_vocabulary, imm_risk
from imm_ray.supervised.bert.tokenizer import check_bert_tokenizer
from imm_ray.supervised.hf_lm.config import MaskedIMMConfig

TERMS = ("task", "mlm", "imm")
LOG_NAMES = {"task": "task_loss", "mlm": "mlm_loss", "imm": "imm_risk"}


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


def has_task_head(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or the model it wraps) is imm-ray's two-headed BERT."""
    from imm_ray.supervised.bert.model import BertForMaskedLMAndClassification

    return isinstance(getattr(model, "module", model), BertForMaskedLMAndClassification)


class MaskedObjective:
    """The terms of a masked LM's training batch (see the module docstring)."""

    terms = TERMS
    log_names = LOG_NAMES
    #: Terms are means over the micro-batch, whatever Trainer's ``num_items_in_batch``.
    divides_by_items = False

    def __init__(
        self,
        model: torch.nn.Module,
        config: MaskedIMMConfig,
        tokenizer,
        corpus: np.ndarray | None,
        bigram: KneserNeyBigram | None,
        generator: torch.Generator,
    ) -> None:
        self.config = config
        self.task_head = has_task_head(model)
        if config.method == "base" and not self.task_head:
            raise ValueError(
                f"method: base trains a task head alone, and {type(model).__name__} has "
                "none; use mlm or imm"
            )
        if tokenizer is None:
            raise ValueError("processing_class: a masked LM's IMMTrainer needs its tokenizer")
        check_bert_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.vocab_size = model.config.vocab_size
        self.generator = generator
        self.bigram = bigram
        self.histories: BertHistories | None = None
        if config.method == "imm":
            if corpus is None or bigram is None:
                raise ValueError("method imm needs the corpus stream and its Kneser–Ney bigram")
            check_bigram_vocabulary(bigram, tokenizer, self.vocab_size)
            self.histories = BertHistories(
                corpus, tokenizer, self.vocab_size, model.config.max_position_embeddings
            )
        accepted = inspect.signature(getattr(model, "module", model).forward).parameters
        self.token_types = "token_type_ids" in accepted

    @property
    def weights(self) -> dict[str, float]:
        """Each term's weight in the loss: 1, 1 and λ."""
        return {"task": 1.0, "mlm": 1.0, "imm": self.config.lam}

    def encoder_inputs(self, inputs: dict) -> dict[str, torch.Tensor]:
        names = ("input_ids", "attention_mask", "token_type_ids")
        return {k: inputs[k] for k in names if k in inputs and (k != names[2] or self.token_types)}

    def evaluate(self, model, inputs: dict) -> Any:
        return model(**self.encoder_inputs(inputs), labels=inputs.get("labels"))

    def training_terms(
        self, model, inputs: dict, num_items_in_batch=None, step: int = 0
    ) -> tuple[Any, dict[str, torch.Tensor], dict[str, tuple[float, int]]]:
        """``(task outputs or None, {"task", "mlm", "imm": term}, records)``, each term a
        mean over the micro-batch (``num_items_in_batch`` and ``step`` are not read); a
        term is absent when its method is off or nothing in the batch carries it.
        ``records`` (a term's value and weight 1) are what the logs average."""
        config = self.config
        encoded = self.encoder_inputs(inputs)
        attention = encoded.get("attention_mask", torch.ones_like(encoded["input_ids"]))
        outputs, terms = None, {}
        if self.task_head:
            outputs = model(**encoded, labels=inputs["labels"])
            terms["task"] = outputs.loss
        elif "labels" in inputs:
            raise ValueError(
                f"{type(model).__name__} has no task head, and its batches hold labels: pass "
                "the clean text (e.g. DataCollatorWithPadding); IMMTrainer masks it itself"
            )
        if config.method != "base":
            masked, labels = mask_tokens(
                encoded["input_ids"],
                attention,
                self.tokenizer,
                self.vocab_size,
                config.mlm_probability,
                self.generator,
            )
            scored = labels != -100
            if bool(scored.any()):
                masked_inputs = {**encoded, "input_ids": masked, "attention_mask": attention}
                if self.task_head:
                    mlm = model(
                        **masked_inputs, head="mlm", predict_mask=scored, labels=labels[scored]
                    )
                else:
                    mlm = model(**masked_inputs, labels=labels)
                    outputs = mlm
                terms["mlm"] = mlm.loss
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
                token_types=self.token_types,
            )
            if result is not None:
                terms["imm"] = result[0]
        records = {name: (float(value.detach()), 1) for name, value in terms.items()}
        return outputs, terms, records
