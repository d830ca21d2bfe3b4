"""``CausalIMMTrainer``: a ``transformers.Trainer`` for any causal language model
(``AutoModelForCausalLM``) whose loss is the language-model loss + λ·IMM, the Kneser–Ney
bigram over the model's token ids as the restricted model.

A training script gains IMM by swapping its ``Trainer`` for ``CausalIMMTrainer`` and
passing :class:`CausalIMMConfig`, the training stream (token ids) and its bigram::

    bigram = estimate_kneser_ney(train_ids, vocab_size, eos_id)
    trainer = CausalIMMTrainer(model, args, train_dataset=windows,
                               imm_config=CausalIMMConfig(method="imm", lam=0.2),
                               corpus=train_ids, bigram=bigram)

Every batch holds ``input_ids`` (and ``labels``, −100 where unscored; ``input_ids`` when
absent). Methods (Table 1's columns):

- ``none``: the language-model loss alone;
- ``noising``: Kneser–Ney noising of each batch, inputs and targets together
  (:class:`~imm_ray.supervised.lm.noising.KneserNeyNoiser`), the baseline;
- ``imm``: + λ · sampled IMM (:mod:`~imm_ray.supervised.hf_lm.causal_imm`), k windows per
  row every ``every``-th optimizer step, 1 on the others;
- ``serialized``: + λ · serialized IMM's corrected cross-entropy
  (:mod:`~imm_ray.supervised.hf_lm.serialized`), its snapshot refreshed every
  ``refresh_every`` optimizer steps.

**Trainer's conventions.** Each term is a sum over the batch's scored positions divided by
``num_items_in_batch`` (the scored positions of the whole accumulation window), so a run
with gradient accumulation takes the same steps as one with batches as large: sampled IMM
pools each row's own windows, and windows and noise are drawn row by row (serialized IMM
is the exception: Q̂† is a running mean over the rows read since the refresh, so a
micro-batch's targets see the rows read before it, not the whole step's); without
``num_items_in_batch``, each term is a mean over the micro-batch and Trainer divides by
the accumulation steps. With
``args.max_grad_norm > 0`` (and a method with a second term), the two terms' gradients are
clipped separately (App. D.2.2, :mod:`imm_ray.supervised.clipping`); ``fp16`` cannot be
combined with that, ``bf16`` can. Draws (windows, noise) come from a generator seeded with
``args.seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from imm_ray import checks
from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.clipping import clipped_surrogate, separate_clipping
from imm_ray.supervised.hf_lm.causal_imm import WindowPool, causal_imm_risk
from imm_ray.supervised.hf_lm.serialized import CausalSerializedIMM
from imm_ray.supervised.lm.imm_branch import linear_in_log_probs
from imm_ray.supervised.lm.noising import KneserNeyNoiser

METHODS = ("none", "noising", "imm", "serialized")
TERMS = ("lm", "imm")


@dataclass(frozen=True)
class CausalIMMConfig:
    """What a :class:`CausalIMMTrainer` adds to the language-model loss."""

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
    gamma0: float = 0.2
    """γ0 of Kneser–Ney noising (noising)."""

    def __post_init__(self) -> None:
        checks.one_of("method", self.method, METHODS)
        checks.number("lam", self.lam, at_least=0)
        checks.integer("k", self.k, 1)
        checks.integer("every", self.every, 1)
        checks.integer("refresh_every", self.refresh_every, 1)
        checks.number("gamma0", self.gamma0, at_least=0, at_most=1)


def _names(mapping: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for value in mapping.values():
        names.update((value,) if isinstance(value, str) else value)
    return names


def model_kind(model: torch.nn.Module | str) -> str:
    """``"causal"`` or ``"masked"``: which of transformers' auto classes lists the model's
    class, or the class of that name (``AutoModelForCausalLM``, ``AutoModelForMaskedLM``);
    a ``ValueError`` naming the class otherwise."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    name = model if isinstance(model, str) else type(model).__name__
    if name in _names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        return "causal"
    if name in _names(MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        return "masked"
    raise ValueError(
        f"model must be a causal or a masked language model (a class of "
        f"AutoModelForCausalLM or AutoModelForMaskedLM), got {name}"
    )


def check_bigram_vocabulary(bigram: KneserNeyBigram, model: torch.nn.Module) -> None:
    """The bigram must be over the model's token ids."""
    predicted = model.get_output_embeddings().weight.shape[0]
    if bigram.vocab_size != predicted:
        raise ValueError(
            f"bigram: its vocabulary ({bigram.vocab_size} ids) differs from the model's "
            f"({predicted} ids): estimate it on the corpus read through the model's tokenizer"
        )


class CausalIMMTrainer(Trainer):
    """``Trainer`` with the language-model loss + λ·IMM (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        args=None,
        *,
        imm_config: CausalIMMConfig | None = None,
        corpus: np.ndarray | None = None,
        bigram: KneserNeyBigram | None = None,
        eos_id: int | None = None,
        **kwargs,
    ) -> None:
        """``corpus`` (the training stream of token ids) and ``bigram`` are needed by every
        method but ``none``; ``eos_id`` by ``noising``."""
        self.imm_config = imm_config or CausalIMMConfig()
        config = self.imm_config
        if model is not None:
            kind = model_kind(model)
            if kind != "causal":
                raise ValueError(f"CausalIMMTrainer needs a causal LM, got a {kind} one")
        two_terms = config.method in ("imm", "serialized") and config.lam > 0
        args, self.term_max_norm = separate_clipping(args, two_terms)
        super().__init__(model=model, args=args, **kwargs)
        self.generator = torch.Generator().manual_seed(self.args.seed)
        self.bigram = bigram
        self.pool: WindowPool | None = None
        self.serialized: CausalSerializedIMM | None = None
        self.noiser: KneserNeyNoiser | None = None
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if config.method != "none":
            if corpus is None or bigram is None:
                raise ValueError(f"method {config.method} needs the training corpus and its bigram")
            check_bigram_vocabulary(bigram, self.model)
        if config.method == "imm":
            self.pool = WindowPool(corpus, vocab)  # type: ignore[arg-type]
        elif config.method == "serialized":
            self.serialized = CausalSerializedIMM(config.refresh_every, vocab)
        elif config.method == "noising":
            if eos_id is None:
                raise ValueError("method noising needs eos_id")
            self.noiser = KneserNeyNoiser(np.asarray(corpus), vocab, eos_id, config.gamma0)
        self._term_sums = dict.fromkeys(TERMS, 0.0)
        self._term_counts = dict.fromkeys(TERMS, 0)
        self._logged: tuple[float, dict[str, int]] = (0.0, {})

    @property
    def term_weights(self) -> dict[str, float]:
        """Each term's weight in the loss: 1 and λ."""
        return {"lm": 1.0, "imm": self.imm_config.lam}

    def loss_terms(
        self, model, inputs: dict[str, torch.Tensor], num_items_in_batch=None
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """``(outputs, {"lm", "imm": term})`` of a training batch, each term a sum over
        the batch's scored positions divided by ``num_items_in_batch`` (or their count);
        ``imm`` is absent when its method is off or no position of the batch has a
        member."""
        config = self.imm_config
        # Optimizer steps, not micro-batches: every micro-batch of a step gets as many
        # windows, and the snapshot is refreshed before the first of them.
        step = self.state.global_step
        input_ids = inputs["input_ids"]
        labels = inputs.get("labels", input_ids)
        attention = inputs.get("attention_mask")
        if self.noiser is not None:
            # Row by row, so that a row's draws do not depend on how rows are batched.
            noised = torch.stack(
                [self.noiser.noise(row, self.generator) for row in input_ids.cpu()]
            ).to(input_ids.device)
            labels = torch.where(labels == -100, labels, noised)
            input_ids = noised
        outputs = model(input_ids=input_ids, attention_mask=attention)
        targets = labels[:, 1:]
        scored = targets != -100
        items = num_items_in_batch if num_items_in_batch is not None else scored.sum()
        log_probs = torch.log_softmax(outputs.logits[:, :-1].float(), dim=-1)
        picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        terms = {"lm": -(picked * scored).sum() / items}
        # What the logs average a term over: the batch's items and, per term, its positions.
        self._logged = (float(items), {"lm": int(scored.sum())})
        if config.method == "imm" and config.lam > 0:
            rows, length = input_ids.shape
            k = config.k if step % config.every == 0 else 1
            # Row by row, as the noise: a row's windows do not depend on the batching.
            windows = torch.stack(
                [self.pool.sample(k, length - 1, self.generator) for _ in range(rows)]  # type: ignore[union-attr]
            )
            result = causal_imm_risk(
                model,
                input_ids[:, :-1],
                windows,
                self.bigram,  # type: ignore[arg-type]
                attention_mask=scored,
            )
            if result is not None:
                terms["imm"] = result.total / items
                self._logged[1]["imm"] = result.covered
        elif config.method == "serialized" and config.lam > 0:
            # The corrected cross-entropy −Σ w · log Q / items, its gradient in the log-probs
            # being the weights, built scaled by −1 / items: no further V-wide pass.
            everywhere = bool(scored.all())
            gradient = self.serialized.causal_target_(  # type: ignore[union-attr]
                model,
                step,
                input_ids[:, :-1],
                self.bigram,
                scale=-1.0 / float(items),
                attention_mask=None if everywhere else scored,
            )
            scored_log_probs = log_probs.reshape(-1, log_probs.shape[-1])
            if not everywhere:
                scored_log_probs = log_probs[scored]
            terms["imm"] = linear_in_log_probs(scored_log_probs, gradient)
            self._logged[1]["imm"] = int(scored.sum())
        return outputs, terms

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (model.training and torch.is_grad_enabled()):
            labels = inputs.get("labels", inputs["input_ids"])
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs.get("attention_mask"),
                labels=labels,
            )
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        # Terms divided by the accumulation window's items are already scaled for it.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        outputs, terms = self.loss_terms(model, inputs, num_items_in_batch)
        weights = self.term_weights
        items, positions = self._logged
        for name, value in terms.items():  # sums over positions, for per-position means
            self._term_sums[name] += float(value.detach()) * items
            self._term_counts[name] += positions[name]
        loss = sum(weights[name] * value for name, value in terms.items())
        if self.term_max_norm is not None:
            params = [p for p in model.parameters() if p.requires_grad]
            loss = clipped_surrogate(terms, weights, params, self.term_max_norm, loss)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds each term's mean per position since the last log to Trainer's training
        logs: ``lm_loss`` (per scored position), ``imm_risk`` (sampled: per covered
        position; serialized: its corrected cross-entropy, whose gradient, not value, is
        IMM's), whatever the gradient accumulation."""
        if "loss" in logs:
            for term, key in (("lm", "lm_loss"), ("imm", "imm_risk")):
                if self._term_counts[term]:
                    logs[key] = self._term_sums[term] / self._term_counts[term]
            self._term_sums = dict.fromkeys(TERMS, 0.0)
            self._term_counts = dict.fromkeys(TERMS, 0)
        super().log(logs, start_time)
