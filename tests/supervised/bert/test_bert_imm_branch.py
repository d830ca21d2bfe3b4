"""The IMM branch inside MLM: the masks are exactly "this token and every later one", each
history is a corpus window ending in x̄, and the risk is −Σ P̂ log mean_i Q computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.bert.imm_branch import BertHistories, check_bigram_vocabulary, imm_risk
from imm_ray.supervised.bert.model import BertForMaskedLMAndClassification, preset_config
from imm_ray.supervised.bert.tokenizer import corpus_ids, read_lines


@pytest.fixture(scope="module")
def stream(bert_corpus, bert_tokenizer):
    return corpus_ids(bert_tokenizer, read_lines(bert_corpus / "train.txt"))


@pytest.fixture(scope="module")
def histories(stream, bert_tokenizer):
    return BertHistories(stream, bert_tokenizer, len(bert_tokenizer), max_length=24)


@pytest.fixture(scope="module")
def batch(bert_corpus, bert_tokenizer):
    lines = read_lines(bert_corpus / "valid.txt")[:4]
    return bert_tokenizer(
        lines[:2], lines[2:4], truncation=True, max_length=24, padding=True, return_tensors="pt"
    )


def test_corpus_stream_ends_every_line_in_sep(bert_corpus, bert_tokenizer, stream):
    lines = read_lines(bert_corpus / "train.txt")
    sep = bert_tokenizer.sep_token_id
    assert int((stream == sep).sum()) == len(lines) and stream[-1] == sep
    first = bert_tokenizer(lines[0], add_special_tokens=False)["input_ids"]
    assert stream[: len(first) + 1].tolist() == [*first, sep]


def test_contexts_read_cls_and_sep_as_a_sentence_start(histories, batch, bert_tokenizer):
    ids = batch["input_ids"]
    contexts = histories.contexts(ids)
    sep = bert_tokenizer.sep_token_id
    assert (contexts[:, 0] == sep).all() and (contexts[:, 1] == sep).all()  # x̄ = [CLS]
    assert torch.equal(contexts[:, 2:], torch.where(ids[:, 1:-1] == 2, sep, ids[:, 1:-1]))


def test_eligible_positions_are_words_after_the_first_token(histories, batch, bert_tokenizer):
    ids, attention = batch["input_ids"], batch["attention_mask"]
    eligible = histories.eligible(ids, attention)
    specials = {bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id, 0}
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            word = t >= 1 and attention[b, t] == 1 and int(ids[b, t]) not in specials
            assert bool(eligible[b, t]) == word
    two = histories.choose(eligible, 2, torch.Generator().manual_seed(0))
    assert (two.sum(1) == torch.clamp(eligible.sum(1), max=2)).all() and not (two & ~eligible).any()
    assert torch.equal(histories.choose(eligible, None), eligible)


def test_masks_are_exactly_this_token_and_every_later_one(histories, batch, bert_tokenizer):
    ids, attention = batch["input_ids"], batch["attention_mask"]
    chosen = histories.eligible(ids, attention)
    k = 3
    built = histories.build(ids, attention, chosen, k, torch.Generator().manual_seed(1))
    mask, pad, cls = bert_tokenizer.mask_token_id, bert_tokenizer.pad_token_id, 2
    assert built.input_ids.shape == (int(chosen.sum()) * k, ids.shape[1])
    for row in range(built.input_ids.shape[0]):
        j = row // k
        b, t = int(built.rows[j]), int(built.positions[j])
        n = int(attention[b].sum())
        tokens = built.input_ids[row]
        assert tokens[0] == cls
        assert not (tokens[:t] == mask).any(), "no [MASK] before the predicted position"
        assert (tokens[t:n] == mask).all(), "the predicted position and all later ones masked"
        assert (tokens[n:] == pad).all()
        assert built.attention_mask[row].tolist() == [1] * n + [0] * (len(tokens) - n)
        assert built.predict_mask[row].nonzero().flatten().tolist() == [t]


def test_every_history_is_a_corpus_window_ending_in_x_bar(histories, batch, stream):
    ids, attention = batch["input_ids"], batch["attention_mask"]
    chosen = histories.eligible(ids, attention)
    k = 4
    built = histories.build(ids, attention, chosen, k, torch.Generator().manual_seed(2))
    text = stream.tolist()
    for row in range(built.input_ids.shape[0]):
        j = row // k
        b, t = int(built.rows[j]), int(built.positions[j])
        x_bar = int(ids[b, t - 1])
        prefix = built.input_ids[row, 1:t].tolist()
        if t == 1:
            assert prefix == [] and x_bar == 2  # [CLS]: the history is [CLS] alone
            continue
        assert prefix[-1] == x_bar, "the history ends in x̄"
        ends = [e for e in range(len(prefix) - 1, len(text)) if text[e] == x_bar]
        assert any(text[e - len(prefix) + 1 : e + 1] == prefix for e in ends)


def test_histories_differ_across_draws_but_share_x_bar(histories, batch):
    ids, attention = batch["input_ids"], batch["attention_mask"]
    chosen = histories.eligible(ids, attention)
    built = histories.build(ids, attention, chosen, 5, torch.Generator().manual_seed(3))
    members = built.input_ids.view(-1, 5, ids.shape[1])
    deep = built.positions >= 6
    assert deep.any()
    distinct = [len({tuple(m.tolist()) for m in members[j]}) for j in deep.nonzero().flatten()]
    assert max(distinct) > 1


def test_risk_matches_the_induced_model_computed_by_hand(histories, batch, bert_tokenizer, stream):
    torch.manual_seed(0)
    model = BertForMaskedLMAndClassification(preset_config("tiny", len(bert_tokenizer)))
    model.train()
    bigram = estimate_kneser_ney(stream, len(bert_tokenizer), bert_tokenizer.sep_token_id)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    k = 5
    risk, count = imm_risk(
        model, ids, attention, histories, bigram, k, None, torch.Generator().manual_seed(4)
    )
    assert model.training, "the branch restores training mode"
    built = histories.build(
        ids, attention, histories.eligible(ids, attention), k, torch.Generator().manual_seed(4)
    )
    assert count == len(built.rows)
    model.eval()
    with torch.no_grad():
        total = 0.0
        for j in range(count):
            probs = []
            for i in range(k):
                row = j * k + i
                t = int(built.positions[j])
                logits = model(
                    input_ids=built.input_ids[row : row + 1],
                    attention_mask=built.attention_mask[row : row + 1],
                    head="mlm",
                ).logits[0, t]
                probs.append(torch.softmax(logits, -1).double())
            induced = torch.stack(probs).mean(0)
            target = bigram.rows(built.contexts[j : j + 1], dtype=torch.float64)[0]
            total += float(-(target * induced.log()).sum())
    assert float(risk.detach()) == pytest.approx(total / count, rel=1e-4)
    risk.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.classifier.weight.grad is None, "IMM reaches the encoder and MLM head only"


def test_a_bigram_over_another_vocabulary_is_refused(bert_tokenizer, stream):
    other = estimate_kneser_ney(np.append(stream[stream < 20], 3), 20, 3)
    with pytest.raises(ValueError, match=r"the bigram's vocabulary \(20 ids, <eos> = 3\) differs"):
        check_bigram_vocabulary(other, bert_tokenizer, len(bert_tokenizer))
