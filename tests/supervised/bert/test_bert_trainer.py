"""IMMTrainer: its configuration errors, BERT's MLM masking, the separately clipped gradient,
and the three loss terms falling inside a plain ``Trainer.train()``."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainingArguments,
)

from imm_ray.supervised.bert.finetune import encode_split, restricted_model
from imm_ray.supervised.bert.model import BertForMaskedLMAndClassification, preset_config
from imm_ray.supervised.bert.tasks import TASKS, load_task
from imm_ray.supervised.hf_lm.config import MaskedIMMConfig
from imm_ray.supervised.hf_lm.masked import mask_tokens
from imm_ray.supervised.hf_lm.trainer import IMMTrainer


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lam", -0.5, "lam must be a finite number >= 0, got -0.5"),
        ("k", 0, "k must be an integer >= 1, got 0"),
        ("method", "kd", "method must be one of base, mlm, imm, got 'kd'"),
        ("positions", 0, "positions must be an integer >= 1 or None, got 0"),
        ("mlm_probability", 1.0, r"mlm_probability must be a number in \(0, 1\), got 1.0"),
    ],
)
def test_bad_configuration_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        MaskedIMMConfig(**{field: value})


@pytest.fixture(scope="module")
def restricted(bert_tokenizer, bert_corpus):
    return restricted_model(bert_tokenizer, bert_corpus)


@pytest.fixture(scope="module")
def train_set(bert_tokenizer, acceptability_task):
    splits = load_task(TASKS["acceptability"], acceptability_task)
    return encode_split(bert_tokenizer, splits["train"], max_length=32, limit=16)


def _model(tokenizer, seed=0, **config):
    torch.manual_seed(seed)
    return BertForMaskedLMAndClassification(preset_config("tiny", len(tokenizer), **config))


def _args(tmp_path, **changes):
    values = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 8,
        "learning_rate": 3e-3,
        "max_steps": 30,
        "logging_steps": 5,
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": True,
        "save_strategy": "no",
        "seed": 0,
        **changes,
    }
    return TrainingArguments(**values)


def _trainer(tmp_path, tokenizer, restricted, train_set, method="imm", **args):
    stream, bigram = restricted
    return IMMTrainer(
        model=_model(tokenizer),
        args=_args(tmp_path, **args),
        imm_config=MaskedIMMConfig(method=method, k=3, positions=3),
        corpus=stream,
        bigram=bigram,
        train_dataset=train_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
    )


def test_mlm_masking_scores_word_tokens_only(bert_tokenizer, train_set):
    batch = DataCollatorWithPadding(bert_tokenizer)([train_set[i] for i in range(8)])
    ids, attention = batch["input_ids"], batch["attention_mask"]
    masked, labels = mask_tokens(
        ids, attention, bert_tokenizer, len(bert_tokenizer), 0.3, torch.Generator().manual_seed(0)
    )
    scored = labels != -100
    specials = (ids == 2) | (ids == 3) | (ids == 0)
    assert scored.any() and not (scored & specials).any()
    assert torch.equal(labels[scored], ids[scored])
    assert torch.equal(masked[~scored], ids[~scored])
    share = float((masked[scored] == bert_tokenizer.mask_token_id).float().mean())
    assert 0.6 < share < 0.95  # 80 % [MASK], the rest random or kept


def test_terms_are_clipped_separately_and_trainer_does_not_clip_the_sum(
    tmp_path, bert_tokenizer, restricted, train_set
):
    args = _args(tmp_path, max_grad_norm=0.01)
    stream, bigram = restricted
    # Without dropout, the two passes below see the same network.
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    trainer = IMMTrainer(
        model=_model(bert_tokenizer, **no_dropout),
        args=args,
        imm_config=MaskedIMMConfig(method="imm", k=3, lam=0.5),
        corpus=stream,
        bigram=bigram,
        train_dataset=train_set,
        processing_class=bert_tokenizer,
    )
    assert trainer.term_max_norm == 0.01 and trainer.args.max_grad_norm == 0
    assert args.max_grad_norm == 0.01, "the caller's arguments are left alone"
    model = trainer.model
    model.train()
    batch = DataCollatorWithPadding(bert_tokenizer)([train_set[i] for i in range(8)])
    state = trainer.generator.get_state()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    # Trainer's own backward took the first term's gradient alone; before the optimizer's
    # step, the terms are clipped and added.
    task_only = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    trainer.clip_terms_(model)
    got = [p.grad.clone() for p in model.parameters()]

    trainer.generator.set_state(state)
    _, terms = trainer.loss_terms(model, batch)
    assert set(terms) == {"task", "mlm", "imm"}
    assert float(loss.detach()) == pytest.approx(
        float((terms["task"] + terms["mlm"] + 0.5 * terms["imm"]).detach()), rel=1e-5
    )
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for name, weight in (("task", 1.0), ("mlm", 1.0), ("imm", 0.5)):
        grads = torch.autograd.grad(
            terms[name], list(model.parameters()), allow_unused=True, retain_graph=True
        )
        if name == "task":
            for g, t in zip(grads, task_only, strict=True):
                assert (g is None) == (t is None)
                if g is not None:
                    torch.testing.assert_close(t, g)
        norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None))
        assert norm > 0.01, f"the {name} gradient is clipped in this test"
        for e, g in zip(expected, grads, strict=True):
            if g is not None:
                e += weight * g * (0.01 / (norm + 1e-6))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-9)


def test_imm_trainer_runs_inside_plain_train_and_every_term_falls(
    tmp_path, bert_tokenizer, restricted, train_set
):
    trainer = _trainer(tmp_path, bert_tokenizer, restricted, train_set, max_grad_norm=1.0)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "imm_risk" in entry]
    assert len(logs) == 6
    for key in ("task_loss", "mlm_loss", "imm_risk", "loss"):
        values = [entry[key] for entry in logs]
        assert all(torch.isfinite(torch.tensor(values))), key
        assert values[-1] < values[0], f"{key} does not fall: {values}"


def test_bad_models_and_missing_inputs_are_refused(tmp_path, bert_tokenizer, restricted, train_set):
    stream, bigram = restricted
    plain = BertForSequenceClassification(preset_config("tiny", len(bert_tokenizer)))
    with pytest.raises(ValueError, match="a causal or a masked .* got BertForSequenceClass"):
        IMMTrainer(model=plain, args=_args(tmp_path), processing_class=bert_tokenizer)
    masked_lm = BertForMaskedLM(preset_config("tiny", len(bert_tokenizer)))
    with pytest.raises(ValueError, match="method: base trains a task head alone, and Bert"):
        IMMTrainer(
            model=masked_lm,
            args=_args(tmp_path),
            imm_config=MaskedIMMConfig(method="base"),
            processing_class=bert_tokenizer,
        )
    with pytest.raises(ValueError, match="processing_class: a masked LM's IMMTrainer needs"):
        IMMTrainer(model=masked_lm, args=_args(tmp_path), imm_config=MaskedIMMConfig("mlm"))
    with pytest.raises(ValueError, match="method imm needs the corpus stream"):
        IMMTrainer(
            model=_model(bert_tokenizer), args=_args(tmp_path), processing_class=bert_tokenizer
        )
    with pytest.raises(ValueError, match="fp16 cannot be combined with clipping"):
        IMMTrainer(
            model=_model(bert_tokenizer),
            args=_args(tmp_path, max_grad_norm=1.0, fp16=True, use_cpu=True),
            imm_config=MaskedIMMConfig(method="mlm"),
            processing_class=bert_tokenizer,
        )


def test_any_masked_lm_gets_the_mlm_and_imm_terms_the_two_headed_bert_gets(
    tmp_path, bert_tokenizer, restricted, train_set
):
    """A plain ``BertForMaskedLM`` carrying the two-headed BERT's encoder and MLM head:
    the trainer's generic path (full logits, read at the masked and predicted positions)
    and the two-headed path (the head run there alone) give the same MLM and IMM terms
    on the same batch with the same draws; the plain model has no task term, and a batch
    that holds labels (masked already, as a DataCollatorForLanguageModeling's) is refused."""
    stream, bigram = restricted
    config = MaskedIMMConfig(method="imm", k=3, positions=3, lam=0.5)
    # No dropout: the two forwards must see the same network.
    still = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    two_headed = _model(bert_tokenizer, **still)
    plain = BertForMaskedLM(preset_config("tiny", len(bert_tokenizer), **still))
    missing, unexpected = plain.load_state_dict(two_headed.state_dict(), strict=False)
    assert not missing and set(unexpected) <= {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    }
    batch = DataCollatorWithPadding(bert_tokenizer)([train_set[i] for i in range(8)])
    terms = {}
    for name, model in (("two-headed", two_headed), ("plain", plain)):
        trainer = IMMTrainer(
            model=model,
            args=_args(tmp_path),
            imm_config=config,
            corpus=stream,
            bigram=bigram,
            processing_class=bert_tokenizer,
        )
        model.train()
        inputs = (
            dict(batch)
            if name == "two-headed"
            else {k: v for k, v in batch.items() if k != "labels"}
        )
        terms[name] = trainer.loss_terms(model, inputs)[1]
    assert set(terms["two-headed"]) == {"task", "mlm", "imm"}
    assert set(terms["plain"]) == {"mlm", "imm"}
    for term in ("mlm", "imm"):
        assert terms["plain"][term].item() == pytest.approx(
            terms["two-headed"][term].item(), rel=1e-5
        )
    with pytest.raises(ValueError, match="no task head, and its batches hold labels"):
        trainer.loss_terms(plain, dict(batch))
