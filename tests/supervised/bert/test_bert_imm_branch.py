"""The IMM branch inside MLM: the masks are exactly "this token and every later one", each
history is a corpus window ending in x̄, and the risk is −Σ P̂ log mean_i Q computed by hand."""

from __future__ import annotations

from types import SimpleNamespace

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


# Hand-made: ids 0 [PAD], 2 [CLS], 3 [SEP], 4 [MASK], words 5–8; no tokenizer, no BERT.
PAD, CLS, SEP, MASK, V = 0, 2, 3, 4, 9
TINY_TOKENIZER = SimpleNamespace(
    cls_token_id=CLS, sep_token_id=SEP, mask_token_id=MASK, pad_token_id=PAD
)
# Windows of 4 tokens (max_length 6): ending in [SEP] [5, 6, 7, 3] and [3, 8, 6, 3], in 8
# [6, 7, 3, 8], in 6 [7, 3, 8, 6]; 5 and 7 end none.
TINY_STREAM = np.array([5, 6, 7, 3, 8, 6, 3])
TINY_IDS = torch.tensor(
    [
        [CLS, 6, 8, 5, SEP, PAD],  # words at 1 (x̄ = [CLS]), 2 (x̄ = 6), 3 (x̄ = 8)
        [CLS, 7, 5, SEP, PAD, PAD],  # word 5 at 2 has x̄ = 7, which ends no window
        [5, 7, SEP, PAD, PAD, PAD],  # a word at 0 (x̄ = [SEP]) is never eligible; 7 at 1 has
        # x̄ = 5, which ends no window
        [CLS, 5, SEP, 7, 6, SEP],  # word 7 at 3 has x̄ = [SEP]: two windows
    ]
)
TINY_ATTENTION = (TINY_IDS != PAD).long()


def tiny_histories() -> BertHistories:
    return BertHistories(TINY_STREAM, TINY_TOKENIZER, V, max_length=6)


def test_contexts_and_eligible_positions_of_a_hand_made_batch():
    histories = tiny_histories()
    assert histories.sampler.unroll == 4
    assert histories.contexts(TINY_IDS).tolist() == [
        [SEP, SEP, 6, 8, 5, SEP],
        [SEP, SEP, 7, 5, SEP, PAD],
        [SEP, 5, 7, SEP, PAD, PAD],
        [SEP, SEP, 5, SEP, 7, 6],
    ]
    # Padding inside the attention mask is not a word either (a [PAD] id is special).
    attention = TINY_ATTENTION.clone()
    attention[0, 5] = 1
    assert histories.eligible(TINY_IDS, attention).long().tolist() == [
        [0, 1, 1, 1, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 1, 0, 1, 0, 0],
    ]
    # A word outside the attention mask is not eligible.
    outside = TINY_ATTENTION.clone()
    outside[0, 3] = 0
    assert not histories.eligible(TINY_IDS, outside)[0, 3]


def test_choose_draws_up_to_positions_eligible_ones_per_row_uniformly():
    histories = tiny_histories()
    eligible = histories.eligible(TINY_IDS, TINY_ATTENTION)
    generator = torch.Generator().manual_seed(0)
    picks = torch.zeros(TINY_IDS.shape)
    for _ in range(600):
        one = histories.choose(eligible, 1, generator)
        assert one.dtype == torch.bool and one.sum(1).tolist() == [1, 1, 0, 1]
        assert not (one & ~eligible).any()
        picks += one
    # Row 0 has three eligible positions, row 3 two: each drawn about equally often.
    assert picks[0, 1:4].tolist() == pytest.approx([200, 200, 200], abs=45)
    assert picks[3, [1, 3]].tolist() == pytest.approx([300, 300], abs=50)
    # More positions than a row has (or than the batch is long): every eligible one.
    assert torch.equal(histories.choose(eligible, 3, generator), eligible)
    assert torch.equal(histories.choose(eligible, 10, generator), eligible)
    assert histories.choose(eligible, 2, generator).sum(1).tolist() == [2, 1, 0, 2]


def test_build_writes_each_history_by_hand():
    histories = tiny_histories()
    chosen = histories.eligible(TINY_IDS, TINY_ATTENTION)
    chosen[3, 3] = False  # keep the positions whose window is unique
    k = 2
    built = histories.build(TINY_IDS, TINY_ATTENTION, chosen, k, torch.Generator().manual_seed(0))
    assert built.rows.tolist() == [0, 0, 0, 1, 3]
    assert built.positions.tolist() == [1, 2, 3, 1, 1]
    assert built.contexts.tolist() == [SEP, 6, 8, SEP, SEP]
    histories_by_hand = [
        [CLS, MASK, MASK, MASK, MASK, PAD],  # t = 1: [CLS] alone
        [CLS, 6, MASK, MASK, MASK, PAD],  # t = 2 after 6: the window [7, 3, 8, 6]
        [CLS, 3, 8, MASK, MASK, PAD],  # t = 3 after 8: the window [6, 7, 3, 8]
        [CLS, MASK, MASK, MASK, PAD, PAD],  # row 1 has 4 tokens
        [CLS, MASK, MASK, MASK, MASK, MASK],  # row 3 has 6
    ]
    lengths = [5, 5, 5, 4, 6]
    assert built.input_ids.tolist() == [h for h in histories_by_hand for _ in range(k)]
    assert built.attention_mask.dtype == torch.int64
    assert built.attention_mask.tolist() == [
        [1] * n + [0] * (6 - n) for n in lengths for _ in range(k)
    ]
    assert built.predict_mask.dtype == torch.bool
    assert built.predict_mask.long().tolist() == [
        [int(c == t) for c in range(6)] for t in [1, 2, 3, 1, 1] for _ in range(k)
    ]


def test_build_takes_the_windows_last_tokens_for_a_full_length_history():
    histories = tiny_histories()
    chosen = torch.zeros_like(TINY_IDS, dtype=torch.bool)
    chosen[3, 3] = True  # x̄ = [SEP]: the windows [5, 6, 7, 3] and [3, 8, 6, 3]
    built = histories.build(TINY_IDS, TINY_ATTENTION, chosen, 8, torch.Generator().manual_seed(0))
    drawn = {tuple(row) for row in built.input_ids.tolist()}
    assert drawn == {(CLS, 7, 3, MASK, MASK, MASK), (CLS, 6, 3, MASK, MASK, MASK)}
    # The longest history a batch of max_length tokens holds: t = 5, all W = 4 tokens.
    long_ids = torch.tensor([[CLS, 5, 6, 7, 8, 6]])
    chosen = torch.tensor([[False, False, False, False, False, True]])  # x̄ = 8
    built = histories.build(long_ids, torch.ones_like(long_ids), chosen, 1)
    assert built.input_ids.tolist() == [[CLS, 6, 7, 3, 8, MASK]]


class _BagOfTokens(torch.nn.Module):
    """An MLM stand-in: the logits at position c are a position's row plus the rows of the
    visible tokens (attended, not [MASK]), returned in bfloat16 like an autocast model."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.token = torch.nn.Parameter(torch.randn(V, V, generator=generator, dtype=torch.float64))
        self.position = torch.nn.Parameter(
            torch.randn(6, V, generator=generator, dtype=torch.float64)
        )
        self.seen: list[bool] = []

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        visible = (attention_mask > 0) & (input_ids != MASK)
        bag = (self.token[input_ids] * visible[..., None]).sum(1, keepdim=True)
        return bag + self.position[: input_ids.shape[1]]

    def forward(self, input_ids, attention_mask, token_type_ids, head, predict_mask):
        self.seen.append(self.training)
        assert head == "mlm" and not token_type_ids.any()
        assert token_type_ids.shape == input_ids.shape
        logits = self.logits(input_ids, attention_mask)[predict_mask]
        return SimpleNamespace(logits=logits.to(torch.bfloat16))


def test_risk_of_a_hand_made_model_is_the_induced_models_cross_entropy():
    histories = tiny_histories()
    bigram = estimate_kneser_ney(TINY_STREAM, V, SEP)
    model = _BagOfTokens()
    model.train()
    k = 3
    risk, count = imm_risk(
        model,
        TINY_IDS,
        TINY_ATTENTION,
        histories,
        bigram,
        k,
        None,
        torch.Generator().manual_seed(1),
    )
    assert model.seen == [False] and model.training, "evaluated without dropout, then restored"
    assert count == 6 and risk.dtype == torch.float32
    built = histories.build(
        TINY_IDS,
        TINY_ATTENTION,
        histories.eligible(TINY_IDS, TINY_ATTENTION),
        k,
        torch.Generator().manual_seed(1),
    )
    members = built.input_ids.view(count, k, -1)
    assert len({tuple(m.tolist()) for m in members[5]}) == 2, "both windows of [SEP] drawn"
    total = 0.0
    with torch.no_grad():
        for j in range(count):
            t = int(built.positions[j])
            rows = slice(j * k, (j + 1) * k)
            logits = model.logits(built.input_ids[rows], built.attention_mask[rows])[:, t]
            logits = logits.to(torch.bfloat16).double()
            induced = torch.softmax(logits, -1).mean(0)
            target = bigram.rows(built.contexts[j : j + 1], dtype=torch.float64)[0]
            total += float(-(target * induced.log()).sum())
    assert float(risk.detach()) == pytest.approx(total / count, rel=1e-6)
    risk.backward()
    assert model.token.grad is not None and model.token.grad.abs().sum() > 0
    # The same with a number of positions: one per row, fewer rows.
    model.eval()
    risk, count = imm_risk(
        model, TINY_IDS, TINY_ATTENTION, histories, bigram, k, 1, torch.Generator().manual_seed(1)
    )
    assert count == 3 and model.seen[-1] is False and not model.training


def test_risk_is_none_when_no_position_has_a_history():
    histories = tiny_histories()
    bigram = estimate_kneser_ney(TINY_STREAM, V, SEP)
    model = _BagOfTokens()
    ids = torch.tensor([[5, 7, SEP, PAD], [7, 5, 7, SEP]])  # every x̄ is 5 or 7: no window
    assert imm_risk(model, ids, (ids != PAD).long(), histories, bigram, 2) is None
    assert model.seen == []


def test_a_bigram_over_the_tokenizers_ids_is_accepted_and_another_eos_refused():
    check_bigram_vocabulary(estimate_kneser_ney(TINY_STREAM, V, SEP), TINY_TOKENIZER, V)
    other_eos = estimate_kneser_ney(np.append(TINY_STREAM, 8), V, 8)
    with pytest.raises(ValueError, match=r"\(9 ids, <eos> = 8\) differs"):
        check_bigram_vocabulary(other_eos, TINY_TOKENIZER, V)


def test_histories_check_max_length_and_the_streams_ids():
    # Position t <= max_length − 1 needs t − 1 window tokens, and a window has at least one.
    for max_length, unroll in [(2, 1), (3, 1), (4, 2), (6, 4)]:
        histories = BertHistories(TINY_STREAM, TINY_TOKENIZER, V, max_length)
        assert histories.sampler.unroll == unroll and histories.max_length == max_length
    with pytest.raises(ValueError, match="max_length must be >= 2, got 1"):
        BertHistories(TINY_STREAM, TINY_TOKENIZER, V, 1)
    BertHistories(np.array([0, 8, 3]), TINY_TOKENIZER, V, 3)  # ids 0 and V − 1 are ids
    for bad in ([5, V, 3], [5, -1, 3], [-1, 3, V]):
        with pytest.raises(ValueError, match=r"ids in \[0, 9\)"):
            BertHistories(np.array(bad), TINY_TOKENIZER, V, 3)
    with pytest.raises(ValueError, match="a batch of 7 tokens exceeds max_length 6"):
        chosen = torch.zeros(1, 7, dtype=torch.bool)
        tiny_histories().build(torch.full((1, 7), 5), torch.ones(1, 7), chosen, 1)


def test_choose_and_build_draw_from_the_generator_they_are_given():
    histories = tiny_histories()
    eligible = histories.eligible(TINY_IDS, TINY_ATTENTION)
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the global stream differs; the generator's does not
        generator = torch.Generator().manual_seed(7)
        chosen = [histories.choose(eligible, 1, generator) for _ in range(10)]
        built = histories.build(TINY_IDS, TINY_ATTENTION, eligible, 16, generator)
        runs.append((torch.stack(chosen), built.input_ids))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_the_risk_draws_positions_and_histories_from_the_generator_it_is_given():
    histories = tiny_histories()
    bigram = estimate_kneser_ney(TINY_STREAM, V, SEP)
    model = _BagOfTokens()
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the global stream differs; the generator's does not
        generator = torch.Generator().manual_seed(7)
        risks = []
        for p in (1, 1, 1, None, None):
            risk, _ = imm_risk(model, TINY_IDS, TINY_ATTENTION, histories, bigram, 8, p, generator)
            risks.append(float(risk.detach()))
        runs.append(risks)
    assert runs[0] == runs[1]
