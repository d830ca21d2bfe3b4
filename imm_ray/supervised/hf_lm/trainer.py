"""``IMMTrainer``: a ``transformers.Trainer`` for any language model of ``transformers``,
causal (``AutoModelForCausalLM``: GPT-2, Llama, …) or masked (``AutoModelForMaskedLM``, and
imm-ray's BERT with a task head), whose loss adds λ·IMM against the Kneser–Ney bigram over
the model's token ids. Which losses it computes follows from the model's class
(:func:`model_kind`); a model of neither kind is refused.

A training script gains IMM by swapping its ``Trainer`` for ``IMMTrainer`` and passing the
config, the training stream (token ids) and its bigram::

    bigram = estimate_kneser_ney(train_ids, vocab_size, eos_id)
    trainer = IMMTrainer(model, args, train_dataset=windows,
                         imm_config=CausalIMMConfig(method="imm", lam=0.2),
                         corpus=train_ids, bigram=bigram)

A masked LM takes a :class:`~imm_ray.supervised.hf_lm.config.MaskedIMMConfig` and its
tokenizer as ``processing_class``; its losses are :mod:`~imm_ray.supervised.hf_lm.masked`'s.

**A causal LM.** Every batch holds ``input_ids`` (and ``labels``, −100 where unscored;
``input_ids`` when absent). Methods (Table 1's columns):

- ``none``: the language-model loss alone;
- ``noising``: Kneser–Ney noising of each batch, inputs and targets together
  (:class:`~imm_ray.supervised.lm.noising.KneserNeyNoiser`), the baseline;
- ``imm``: + λ · sampled IMM (:mod:`~imm_ray.supervised.hf_lm.causal_imm`), k windows per
  row every ``every``-th optimizer step, 1 on the others;
- ``serialized``: + λ · serialized IMM's corrected cross-entropy
  (:mod:`~imm_ray.supervised.hf_lm.serialized`), its snapshot refreshed every
  ``refresh_every`` optimizer steps; at every scored position, or with ``positions`` at
  that many drawn per row, each weighted by the row's scored positions over the drawn
  (the snapshot's head, Q̂† and the correction then read only the drawn positions, and the
  term reads their hidden states through the model's head again, so that its gradient
  makes no pass over every position's logits).

Each term is a sum over the batch's scored positions divided by ``num_items_in_batch``
(the scored positions of the whole accumulation window), so a run with gradient
accumulation takes the same steps as one with batches as large: sampled IMM pools each
row's own windows, and windows and noise are drawn row by row (serialized IMM is the
exception: Q̂† is a running mean over the rows read since the refresh, so a micro-batch's
targets see the rows read before it, not the whole step's); without
``num_items_in_batch``, each term is a mean over the micro-batch and Trainer divides by
the accumulation steps.

**Both kinds.** With ``args.max_grad_norm > 0`` (and a method with a second term), the
terms' gradients are clipped separately (App. D.2.2, :mod:`imm_ray.supervised.clipping`),
once per optimizer step on the gradients accumulated over its micro-batches, as Trainer
clips the sum; ``fp16`` cannot be combined with that, ``bf16`` can. Serialized IMM is the
exception by default: its term and the LM's are one soft-target cross-entropy of the same
outputs, back-propagated and clipped once by Trainer, as Algorithm 2 and the LSTM's
serialized IMM do (``CausalIMMConfig.clip_separately=True`` clips them apart, at the cost
of a second backward pass). Draws (windows, noise, masks) come from a generator seeded
with ``args.seed``. The logs gain each term's
mean since the last log (``lm_loss``, ``imm_risk``; a masked LM's ``task_loss``,
``mlm_loss``, ``imm_risk``) and, where the terms are clipped separately, each term's mean
gradient norm before clipping (``lm_grad_norm``, ``imm_grad_norm``; ``task_grad_norm``,
``mlm_grad_norm``, ``imm_grad_norm``); Trainer's own ``grad_norm`` is then the first
term's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.clipping import TermGradients, separate_clipping
from imm_ray.supervised.hf_lm.causal_imm import WindowPool, causal_imm_risk
from imm_ray.supervised.hf_lm.config import CausalIMMConfig, MaskedIMMConfig
from imm_ray.supervised.hf_lm.masked import MaskedObjective
from imm_ray.supervised.hf_lm.serialized import CausalSerializedIMM
from imm_ray.supervised.lm.imm_branch import linear_in_log_probs
from imm_ray.supervised.lm.noising import KneserNeyNoiser

#: The kinds of language model IMMTrainer trains.
KINDS = ("causal", "masked")


def _names(mapping: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for value in mapping.values():
        names.update((value,) if isinstance(value, str) else value)
    return names


def model_kind(model: torch.nn.Module | str) -> str:
    """``"causal"`` or ``"masked"``: which of transformers' auto classes lists the model's
    class, or the class of that name (``AutoModelForCausalLM``, ``AutoModelForMaskedLM``),
    or what a class of another library declares as its ``imm_kind`` (imm-ray's BERT with
    a task head: masked); a ``ValueError`` naming the class otherwise."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    name = model if isinstance(model, str) else type(model).__name__
    declared = getattr(model, "imm_kind", None)
    if declared in KINDS:
        return declared
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


class CausalObjective:
    """The terms of a causal LM's training batch (see the module docstring)."""

    terms = ("lm", "imm")
    log_names = {"lm": "lm_loss", "imm": "imm_risk"}
    #: Terms are sums over positions divided by Trainer's ``num_items_in_batch``.
    divides_by_items = True

    def __init__(
        self,
        model: torch.nn.Module,
        config: CausalIMMConfig,
        corpus: np.ndarray | None,
        bigram: KneserNeyBigram | None,
        eos_id: int | None,
        generator: torch.Generator,
        precision: str = "fp32",
    ) -> None:
        """``precision``: the arithmetic of serialized IMM's snapshot (bf16 where the
        training passes run in bfloat16)."""
        self.config = config
        self.generator = generator
        self.bigram = bigram
        self.pool: WindowPool | None = None
        self.serialized: CausalSerializedIMM | None = None
        self.noiser: KneserNeyNoiser | None = None
        vocab = model.get_output_embeddings().weight.shape[0]
        if config.method != "none":
            if corpus is None or bigram is None:
                raise ValueError(f"method {config.method} needs the training corpus and its bigram")
            check_bigram_vocabulary(bigram, model)
        if config.method == "imm":
            self.pool = WindowPool(corpus, vocab)  # type: ignore[arg-type]
        elif config.method == "serialized":
            self.serialized = CausalSerializedIMM(config.refresh_every, vocab, precision)
        elif config.method == "noising":
            if eos_id is None:
                raise ValueError("method noising needs eos_id")
            self.noiser = KneserNeyNoiser(np.asarray(corpus), vocab, eos_id, config.gamma0)

    @property
    def weights(self) -> dict[str, float]:
        """Each term's weight in the loss: 1 and λ."""
        return {"lm": 1.0, "imm": self.config.lam}

    def evaluate(self, model, inputs: dict) -> Any:
        return model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            labels=inputs.get("labels", inputs["input_ids"]),
        )

    def training_terms(
        self, model, inputs: dict[str, torch.Tensor], num_items_in_batch=None, step: int = 0
    ) -> tuple[Any, dict[str, torch.Tensor], dict[str, tuple[float, int]]]:
        """``(outputs, {"lm", "imm": term}, records)`` of a training batch at optimizer
        step ``step``, each term a sum over the batch's scored positions divided by
        ``num_items_in_batch`` (or their count); ``imm`` is absent when its method is off
        or no position of the batch has a member. ``records`` (a term's sum over
        positions, and their number) are what the logs average per position."""
        config = self.config
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
        heads: list[torch.Tensor] = []
        drawn = config.method == "serialized" and config.positions is not None
        getter = getattr(model, "get_output_embeddings", None)  # None: a wrapped model
        head = getter() if drawn and getter is not None else None
        if head is not None:
            # What the vocabulary head reads: the drawn positions' IMM term reads it again
            # through the head, so its gradient makes no pass over every position's logits.
            hook = head.register_forward_hook(lambda _, args, __: heads.append(args[0]))
        try:
            outputs = model(input_ids=input_ids, attention_mask=attention)
        finally:
            if head is not None:
                hook.remove()
        targets = labels[:, 1:]
        scored = targets != -100
        items = num_items_in_batch if num_items_in_batch is not None else scored.sum()
        log_probs = torch.log_softmax(outputs.logits[:, :-1].float(), dim=-1)
        picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        terms = {"lm": -(picked * scored).sum() / items}
        positions = {"lm": int(scored.sum())}
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
                positions["imm"] = result.covered
        elif config.method == "serialized" and config.lam > 0:
            # The corrected cross-entropy −Σ w · log Q / items, its gradient in the log-probs
            # being the weights, built scaled by −1 / items: no further V-wide pass.
            chosen, row_weights = self.chosen_positions(scored)
            everywhere = bool(chosen.all())
            uniform = bool((row_weights == row_weights[0]).all())
            gradient = self.serialized.causal_target_(  # type: ignore[union-attr]
                model,
                step,
                input_ids[:, :-1],
                self.bigram,
                scale=-float(row_weights[0] if uniform else 1.0) / float(items),
                attention_mask=None if everywhere else chosen,
            )
            if not uniform:
                at = row_weights.to(gradient)[:, None].expand(chosen.shape)[chosen]
                gradient.mul_(at[:, None])
            chosen_log_probs = log_probs.reshape(-1, log_probs.shape[-1])
            if not everywhere and len(heads) == 1 and heads[0].shape[:2] == input_ids.shape:
                logits = head(heads[0][:, :-1][chosen])  # type: ignore[misc]
                chosen_log_probs = torch.log_softmax(logits.float(), dim=-1)
            elif not everywhere:
                chosen_log_probs = log_probs[chosen]
            terms["imm"] = linear_in_log_probs(chosen_log_probs, gradient)
            # Drawn positions stand for every scored one (their weights sum to that count).
            positions["imm"] = int(scored.sum())
        records = {
            name: (float(value.detach()) * float(items), positions[name])
            for name, value in terms.items()
        }
        return outputs, terms, records

    def chosen_positions(self, scored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The positions of a batch (``scored [B, L]``) that carry serialized IMM, and each
        row's weight ``[B]``: every scored position with weight 1, or, in a row with n >
        ``positions`` scored ones, ``positions`` of them drawn uniformly without
        replacement (those with the smallest of a uniform key per position, the keys drawn
        row after row from the trainer's generator, so that a row's draw does not depend
        on how rows are batched) with weight n / ``positions``: the term sums over each
        row as many positions as it scores."""
        count = self.config.positions
        per_row = scored.sum(dim=1)
        weights = torch.ones(scored.shape[0], dtype=torch.float64)
        if count is None or not bool((per_row > count).any()):
            return scored, weights
        keys = torch.rand(scored.shape, generator=self.generator).to(scored.device)
        keys = keys.masked_fill(~scored, 2.0)
        picked = keys.topk(min(count, scored.shape[1]), dim=1, largest=False).indices
        drawn = torch.zeros_like(scored).scatter_(1, picked, True)
        many = per_row > count
        chosen = torch.where(many[:, None], drawn, scored)
        weights[many.cpu()] = per_row[many].cpu().double() / count
        return chosen, weights


class IMMTrainer(Trainer):
    """``Trainer`` with a language model's loss + λ·IMM (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        args=None,
        *,
        imm_config: CausalIMMConfig | MaskedIMMConfig | None = None,
        corpus: np.ndarray | None = None,
        bigram: KneserNeyBigram | None = None,
        eos_id: int | None = None,
        **kwargs,
    ) -> None:
        """``corpus`` (the training stream of token ids) and ``bigram`` are needed by every
        method with a restricted model (a causal LM's noising, imm and serialized, a
        masked LM's imm); ``eos_id`` by noising. A masked LM needs its tokenizer as
        ``processing_class``. ``imm_config`` defaults to the model kind's defaults."""
        if model is None:
            raise ValueError("IMMTrainer needs the model (model_init is not supported)")
        self.kind = model_kind(model)
        configs = {"causal": CausalIMMConfig, "masked": MaskedIMMConfig}
        self.imm_config = imm_config or configs[self.kind]()
        if not isinstance(self.imm_config, configs[self.kind]):
            raise ValueError(
                f"imm_config: a {self.kind} LM ({type(model).__name__}) takes a "
                f"{configs[self.kind].__name__}, got a {type(self.imm_config).__name__}"
            )
        config = self.imm_config
        args, self.term_max_norm = separate_clipping(args, config.clips_separately)
        super().__init__(model=model, args=args, **kwargs)
        #: The step's term gradients, clipped separately before the optimizer's step
        #: (None where the terms are not clipped separately).
        self.term_gradients = (
            None if self.term_max_norm is None else TermGradients(self.term_max_norm)
        )
        if self.term_gradients is not None:
            self.add_callback(_ClipTermsBeforeStep(self))
        self.generator = torch.Generator().manual_seed(self.args.seed)
        self.objective: CausalObjective | MaskedObjective
        if isinstance(config, CausalIMMConfig):
            precision = "bf16" if self.args.bf16 else "fp32"
            self.objective = CausalObjective(
                self.model, config, corpus, bigram, eos_id, self.generator, precision
            )
        else:
            self.objective = MaskedObjective(
                self.model, config, self.processing_class, corpus, bigram, self.generator
            )
            # Its terms are micro-batch means: Trainer need not count the batch's items.
            self.model_accepts_loss_kwargs = False
        self._term_sums = dict.fromkeys(self.objective.terms, 0.0)
        self._term_counts = dict.fromkeys(self.objective.terms, 0)

    @property
    def term_weights(self) -> dict[str, float]:
        """Each term's weight in the loss."""
        return self.objective.weights

    def loss_terms(self, model, inputs, num_items_in_batch=None) -> tuple[Any, dict]:
        """``(outputs, {term: value})`` of a training batch (the objective's terms)."""
        outputs, terms, _ = self._training_terms(model, inputs, num_items_in_batch)
        return outputs, terms

    def _training_terms(self, model, inputs, num_items_in_batch):
        # Optimizer steps, not micro-batches: every micro-batch of a step gets as many
        # windows, and the snapshot is refreshed before the first of them.
        return self.objective.training_terms(
            model, inputs, num_items_in_batch, step=self.state.global_step
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (model.training and torch.is_grad_enabled()):
            outputs = self.objective.evaluate(model, inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        # Terms divided by the accumulation window's items are already scaled for it; a
        # masked LM's micro-batch means are not (Trainer divides them by the accumulation).
        self.loss_is_scaled_for_ga = (
            self.objective.divides_by_items and num_items_in_batch is not None
        )
        outputs, terms, records = self._training_terms(model, inputs, num_items_in_batch)
        for name, (total, count) in records.items():
            self._term_sums[name] += total
            self._term_counts[name] += count
        weights = self.term_weights
        if self.term_gradients is not None:
            # Trainer divides the loss it back-propagates by the accumulation steps
            # unless it is already scaled for them: the other terms' buffers alike.
            scale = 1.0
            if not self.loss_is_scaled_for_ga:
                scale = 1.0 / getattr(self, "current_gradient_accumulation_steps", 1)
            loss = self.term_gradients.add(terms, weights, self._trained_parameters(model), scale)
        else:
            loss = sum(weights[name] * value for name, value in terms.items())
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def _trained_parameters(model) -> list[torch.Tensor]:
        return [p for p in model.parameters() if p.requires_grad]

    def clip_terms_(self, model) -> None:
        """Sets ``p.grad`` to ``Σ_term weight · clip(term's gradient)`` over the optimizer
        step's micro-batches (:class:`~imm_ray.supervised.clipping.TermGradients`), where
        the terms are clipped separately: Trainer's training loop calls it before every
        optimizer step; a loop of one's own calls it after the step's ``backward`` calls."""
        if self.term_gradients is not None:
            self.term_gradients.clip_and_combine_(self._trained_parameters(model))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds each term's mean since the last log to Trainer's training logs: a causal
        LM's ``lm_loss`` (per scored position) and ``imm_risk`` (sampled: per covered
        position; serialized: its corrected cross-entropy, whose gradient, not value, is
        IMM's), whatever the gradient accumulation; a masked LM's ``task_loss``,
        ``mlm_loss`` and ``imm_risk`` (means of the micro-batches' means); and each term's
        mean gradient norm before clipping (``<term>_grad_norm``) where they are clipped
        separately."""
        if "loss" in logs:
            for term, key in self.objective.log_names.items():
                if self._term_counts[term]:
                    logs[key] = self._term_sums[term] / self._term_counts[term]
            if self.term_gradients is not None:
                for term, norm in self.term_gradients.pop_norms().items():
                    logs[f"{term}_grad_norm"] = norm
            self._term_sums = dict.fromkeys(self.objective.terms, 0.0)
            self._term_counts = dict.fromkeys(self.objective.terms, 0)
        super().log(logs, start_time)


class _ClipTermsBeforeStep(TrainerCallback):
    """Clips the step's terms separately and adds them, before the optimizer's step."""

    def __init__(self, trainer: IMMTrainer) -> None:
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.clip_terms_(self.trainer.model)
