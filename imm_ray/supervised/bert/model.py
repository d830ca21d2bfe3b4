"""BERT with its masked-LM head and a sequence-classification head on one encoder.

The paper fine-tunes with three losses on one BERT (App. D.2.2): the task's
classification loss, the reintroduced MLM loss, and IMM within MLM. So the model is
``transformers``' BERT encoder with both heads: ``cls`` is ``BertForMaskedLM``'s head (its
decoder tied to the word embeddings) and ``classifier`` sits on the pooled ``[CLS]``, as in
``BertForSequenceClassification``. The parameter names are those two classes', so
``from_pretrained`` reads a ``BertForMaskedLM`` checkpoint (a real BERT, or one from
``imm-ray train bert-pretrain``) with the pooler and classifier newly initialized.

:data:`PRESETS` are configurations for tests (``tiny``), CPU runs (``small``) and the
paper's size (``base``, BERT-base).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertOnlyMLMHead, BertPreTrainedModel

from imm_ray import checks

#: Encoder sizes; the vocabulary comes from the tokenizer.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    },
    "small": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 512,
        "max_position_embeddings": 128,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
    },
}
#: The MLM head's parameters; a checkpoint without them cannot do +MLM or IMM.
MLM_HEAD_PREFIX = "cls.predictions."
HEADS = ("classify", "mlm")


class BertForMaskedLMAndClassification(BertPreTrainedModel):
    """One BERT encoder, two heads: ``head="classify"`` (the task) or ``head="mlm"``."""

    #: What :class:`~imm_ray.supervised.hf_lm.trainer.IMMTrainer` trains it as.
    imm_kind = "masked"

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=True)
        self.cls = BertOnlyMLMHead(config)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        head: str = "classify",
        predict_mask: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput | MaskedLMOutput:
        """The task's logits ``[B, num_labels]``, or with ``head="mlm"`` the MLM logits.

        ``predict_mask`` (``[B, L]`` bool, MLM only) runs the vocabulary head at those
        positions alone, giving ``[N, V]`` logits in row-major order; ``labels`` then is
        ``[N]``. Without it the logits are ``[B, L, V]`` and ``labels`` ``[B, L]`` (−100:
        not scored). ``loss`` is the cross-entropy when ``labels`` are given.
        """
        checks.one_of("head", head, HEADS)
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
        )
        if head == "mlm":
            hidden = outputs.last_hidden_state
            if predict_mask is not None:
                hidden = hidden[predict_mask]
            logits = self.cls(hidden)
            loss = None
            if labels is not None:
                loss = nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
                )
            return MaskedLMOutput(loss=loss, logits=logits)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.reshape(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def preset_config(name: str, vocab_size: int, num_labels: int = 2, **overrides: Any) -> BertConfig:
    """The :data:`PRESETS` configuration ``name`` for a vocabulary of ``vocab_size`` ids."""
    if name not in PRESETS:
        raise ValueError(f"model preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return BertConfig(
        vocab_size=vocab_size,
        num_labels=num_labels,
        pad_token_id=0,
        **{**PRESETS[name], **overrides},
    )


def load_model(
    model: str | Path,
    num_labels: int,
    vocab_size: int | None = None,
    name: str | Path | None = None,
) -> BertForMaskedLMAndClassification:
    """A preset name (fresh weights over ``vocab_size`` ids) or a local checkpoint folder.

    A folder must hold a BERT config and weights with the MLM head (``cls.predictions.*``),
    else ``ValueError`` says what is missing, naming the checkpoint ``name`` (default: the
    folder; a copy of a checkpoint keeps its original's name). Its pooler and classifier
    may be new.
    """
    if str(model) in PRESETS:
        if vocab_size is None:
            raise ValueError("a model preset needs the tokenizer's vocabulary size")
        return BertForMaskedLMAndClassification(preset_config(str(model), vocab_size, num_labels))
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"model must be a preset ({', '.join(PRESETS)}) or a checkpoint folder; "
            f"{folder} does not exist"
        )
    label = folder if name is None else name
    if not (folder / "config.json").is_file():
        raise ValueError(f"model folder {label} has no config.json: not a transformers checkpoint")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    if config.model_type != "bert":
        raise ValueError(f"model {label} is a {config.model_type!r} model, not BERT")
    config.num_labels = num_labels
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    # The new pooler/classifier are expected; the MLM head's absence is checked below.
    logger.setLevel(logging.ERROR)
    try:
        loaded, info = BertForMaskedLMAndClassification.from_pretrained(
            folder, config=config, output_loading_info=True
        )
    except OSError as err:
        raise ValueError(f"model {label}: no readable weights ({err})") from None
    finally:
        logger.setLevel(level)
    missing = sorted(k for k in info["missing_keys"] if k.startswith(MLM_HEAD_PREFIX))
    if missing:
        raise ValueError(
            f"model {label} has no MLM head (missing {', '.join(missing[:3])}"
            f"{', …' if len(missing) > 3 else ''}): +MLM and IMM need a BERT saved with its "
            "masked-LM head, such as BertForMaskedLM or `imm-ray train bert-pretrain`"
        )
    return loaded
