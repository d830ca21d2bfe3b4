"""The Kneser–Ney bigram against hand computations, the true bigram of a known source, and
its own contract: rows sum to 1, sparse storage, fallback discounts reported."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from imm_ray.restricted.kneser_ney import (
    FALLBACK_DISCOUNTS,
    _lmplz_unigram_statistics,
    bigram_counts,
    count_of_counts,
    estimate_kneser_ney,
    modified_discounts,
)
from imm_ray.supervised.lm.synthetic import MarkovSource

# Ids of the hand corpus "a b" / "b": a b <eos> b <eos>.
A, B, EOS, UNK = 0, 1, 2, 3


@pytest.fixture(scope="module")
def hand():
    return estimate_kneser_ney(np.array([A, B, EOS, B, EOS]), vocab_size=4, eos_id=EOS)


def test_discounts_from_count_of_counts_by_hand():
    counts = np.array([1, 1, 1, 1, 2, 2, 3, 4, 7, 9])  # n1..n4 = 4, 2, 1, 1
    assert count_of_counts(counts) == (4, 2, 1, 1)
    # Y = 4 / (4 + 2·2) = 0.5; D1 = 1 − 2·0.5·2/4, D2 = 2 − 3·0.5·1/2, D3+ = 3 − 4·0.5·1/1.
    discounts, fell_back = modified_discounts(counts)
    assert discounts == pytest.approx((0.5, 1.25, 1.0))
    assert not fell_back


@pytest.mark.parametrize(
    "counts",
    [
        [1, 1, 2, 4],  # n3 = 0: a gap
        [1, 2, 3, 3, 3, 3, 3],  # Y = 1/3, D2 = 2 − 3·Y·5/1 < 0: out of range
    ],
)
def test_discount_fallback_when_count_of_counts_have_a_gap_or_go_out_of_range(counts):
    assert modified_discounts(np.array(counts)) == (FALLBACK_DISCOUNTS, True)


def test_hand_corpus_probabilities(hand):
    # Bigrams <s>a, ab, b</s> ×2, <s>b: n1..n3 = 3, 1, 0 → fallback; continuation counts
    # a(a) = 1, a(b) = 2, a(</s>) = 1 → fallback too. Σa = 4, γ₀ = (0.5·2 + 1·1)/4 = 0.5.
    assert hand.fallback == {"unigram": True, "bigram": True}
    expected_unigram = [0.5 / 4 + 0.5 / 4, 1 / 4 + 0.5 / 4, 0.5 / 4 + 0.5 / 4, 0.5 / 4]
    assert hand.unigram.tolist() == pytest.approx(expected_unigram)
    p_a, p_b, p_eos, p_unk = expected_unigram
    rows = hand.rows(torch.tensor([EOS, A, B, UNK]), dtype=torch.float64)
    # <s> (the <eos> row): c = 2, a and b once each, ν = (0.5 + 0.5)/2.
    assert rows[0].tolist() == pytest.approx(
        [0.5 / 2 + 0.5 * p_a, 0.5 / 2 + 0.5 * p_b, 0.5 * p_eos, 0.5 * p_unk]
    )
    # a: "a b" once, ν = 0.5/1.
    assert rows[1, B].item() == pytest.approx(0.5 + 0.5 * p_b)
    # b: "b </s>" twice, D2 = 1, ν = 1/2.
    assert rows[2, EOS].item() == pytest.approx(1 / 2 + 0.5 * p_eos)
    # <unk> is never a context: its row is the unigram.
    assert rows[3].tolist() == pytest.approx(expected_unigram)
    assert hand.backoff.tolist() == pytest.approx([0.5, 0.5, 0.5, 1.0])


def test_rows_agree_with_log_prob_and_perplexity(hand):
    contexts = torch.tensor([[EOS, A], [B, UNK]])
    targets = torch.tensor([[A, B], [EOS, UNK]])
    rows = hand.rows(contexts, dtype=torch.float64)
    assert rows.shape == (2, 2, 4)
    picked = rows.gather(-1, targets[..., None]).squeeze(-1)
    assert torch.allclose(hand.log_prob(contexts, targets).exp(), picked)
    stream = np.array([A, B, EOS, B, EOS])
    logp = [np.log(x) for x in (0.375, 0.6875, 0.625, 0.4375, 0.625)]
    assert hand.perplexity(stream) == pytest.approx(np.exp(-np.mean(logp)))


@pytest.fixture(scope="module")
def source():
    return MarkovSource.random(25, seed=3)


def test_every_row_sums_to_one(source):
    ids = source.sample(20_000, seed=0)
    ids = np.append(ids, 0)
    model = estimate_kneser_ney(ids, vocab_size=27, eos_id=0)  # id 26 never occurs
    rows = model.rows(torch.arange(27), dtype=torch.float64)
    assert torch.allclose(rows.sum(-1), torch.ones(27, dtype=torch.float64), atol=1e-12)
    assert (rows > 0).all()
    assert torch.equal(rows[26], model.unigram)


def test_estimate_approaches_the_true_bigram(source):
    truth = torch.from_numpy(source.true_bigram())
    weight = torch.from_numpy(source.stationary().sum(0))

    def kl(n_tokens):
        ids = np.append(source.sample(n_tokens, seed=1), 0)
        rows = estimate_kneser_ney(ids, 25, 0).rows(torch.arange(25), dtype=torch.float64)
        return float((weight * (truth * (truth / rows).log()).sum(-1)).sum())

    small, large = kl(5_000), kl(200_000)
    assert large < 0.01
    assert large < small / 5


def test_storage_is_sparse_for_a_large_vocabulary():
    v = 200_000  # a dense V×V float64 matrix would need 320 GB
    rng = np.random.default_rng(0)
    ids = rng.integers(1, v, size=50_000)
    ids[::10] = 0
    ids[-1] = 0
    model = estimate_kneser_ney(ids, vocab_size=v, eos_id=0)
    assert model.num_bigrams <= len(ids)
    sizes = [t.numel() for t in (model.unigram, model.backoff, model.indptr, model.targets)]
    assert max(sizes) <= v + 1
    rows = model.rows(torch.tensor([0, 5, 7]))
    assert rows.shape == (3, v)
    assert torch.allclose(rows.sum(-1), torch.ones(3), atol=1e-4)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "the corpus is empty"),
        ([0, 1, 5], "ids must be in [0, 4)"),
        ([0, 1], "ids must end with eos_id 2"),
        ([0.0, 2.0], "ids must be integer token ids"),
    ],
)
def test_bad_streams_are_refused(ids, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        estimate_kneser_ney(np.array(ids, dtype=None if ids else np.int64), 4, eos_id=2)


def test_lmplz_counts_the_latest_new_word_raw_in_the_unigram_statistics():
    # "c" appears first latest, three times, always after "a": continuation count 1, raw 3.
    a, b, c, eos = 0, 1, 2, 3
    ids = np.array([a, b, eos, b, a, eos, b, eos, a, c, eos, a, c, eos, a, c, b, eos])
    plain = estimate_kneser_ney(ids, 5, eos, match_lmplz=False)
    lmplz = estimate_kneser_ney(ids, 5, eos)
    # Continuation counts a, b, c, eos = 2, 3, 1, 3 → n1..n3 = 1, 1, 2; with c raw (3): 0, 1, 3.
    assert plain.fallback["unigram"] is False
    assert plain.discounts["unigram"] == pytest.approx(
        modified_discounts(np.array([2, 3, 1, 3]))[0]
    )
    assert lmplz.fallback["unigram"] is True
    assert lmplz.discounts["bigram"] == plain.discounts["bigram"]


def test_rows_over_is_the_scaled_rows_divided_elementwise(source):
    """Serialized IMM's fused factor scale · P̂ / denominators agrees with rows, seen
    bigrams (the sparse entries) and unseen ones alike."""
    model = estimate_kneser_ney(np.append(source.sample(3000, seed=1), 0), 27, 0)
    contexts = torch.tensor([0, 3, 1, 26])  # 26 never occurs: its row is the unigram's
    generator = torch.Generator().manual_seed(2)
    denominators = torch.rand(4, 27, generator=generator) + 0.1
    scale = torch.tensor([0.5, 2.0, 1.0, 3.0])
    expected = scale[:, None] * model.rows(contexts) / denominators
    out = denominators.clone()
    assert model.rows_over_(contexts, out, scale) is out
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match=r"denominators must be \[4, \d+\] and scale \[4\]"):
        model.rows_over_(contexts, out[:, :-1], scale)


def test_discounts_at_the_ends_of_their_range_are_kept():
    # n1..n4 = 2, 3, 8, 0: Y = 2 / (2 + 2·3) = 0.25, D1 = 1 − 2·0.25·3/2 = 0.25,
    # D2 = 2 − 3·0.25·8/3 = 0 and D3+ = 3 − 4·0.25·0/8 = 3: both ends of [0, k] are allowed.
    counts = np.array([1] * 2 + [2] * 3 + [3] * 8 + [5, 6])
    assert count_of_counts(counts) == (2, 3, 8, 0)
    assert modified_discounts(counts) == ((0.25, 0.0, 3.0), False)


def test_two_ids_are_the_smallest_vocabulary():
    # "a" / "a a": bigrams <s>a ×2, aa, a</s> ×2; V = 2 (a and <eos>), fallback at both levels.
    a, eos = 0, 1
    model = estimate_kneser_ney(np.array([a, eos, a, a, eos]), vocab_size=2, eos_id=eos)
    assert model.vocab_size == 2
    # Continuation counts a(a) = 2 (<s>, a), a(</s>) = 1: Σa = 3, γ₀ = (1 + 0.5)/3 = 0.5.
    assert model.unigram.tolist() == pytest.approx([1 / 3 + 0.25, 0.5 / 3 + 0.25])
    rows = model.rows(torch.tensor([a, eos]), dtype=torch.float64)
    assert torch.allclose(rows.sum(-1), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("vocab_size", "eos_id", "message"),
    [
        (1, 0, "vocab_size must be >= 2, got 1"),
        (4, 4, r"eos_id must be in \[0, 4\), got 4"),
        (4, -1, r"eos_id must be in \[0, 4\), got -1"),
    ],
)
def test_bad_vocabularies_and_eos_ids_are_refused(vocab_size, eos_id, message):
    with pytest.raises(ValueError, match=message):
        estimate_kneser_ney(np.array([0, 0]), vocab_size, eos_id=eos_id)


@pytest.mark.parametrize("ids", [[0, 4, 2], [-1, 2]])
def test_ids_just_outside_the_vocabulary_are_refused(ids):
    with pytest.raises(ValueError, match=r"ids must be in \[0, 4\)"):
        estimate_kneser_ney(np.array(ids), 4, eos_id=2)


def test_a_copy_keeps_the_discounts_and_fallback_flags(hand):
    moved = hand.to("cpu")
    assert moved.discounts == hand.discounts and moved.fallback == hand.fallback
    assert moved.discounts is not hand.discounts and moved.fallback is not hand.fallback
    for name in ("unigram", "backoff", "indptr", "targets", "probs"):
        assert torch.equal(getattr(moved, name), getattr(hand, name)), name


def test_out_of_range_ids_are_refused_by_the_argument_they_came_in(hand):
    ok = torch.tensor([A])
    with pytest.raises(ValueError, match=r"^contexts must be ids in \[0, 4\)"):
        hand.log_prob(torch.tensor([4]), ok)
    with pytest.raises(ValueError, match=r"^targets must be ids in \[0, 4\)"):
        hand.log_prob(ok, torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"^ids must be ids in \[0, 4\)"):
        hand.stream_log_prob(np.array([A, 4]))
    with pytest.raises(ValueError, match=r"^contexts must be ids in \[0, 4\)"):
        hand.rows_over_(torch.tensor([4]), torch.ones(1, 4), torch.ones(1))
    with pytest.raises(ValueError, match=r"^contexts must be ids in \[0, 4\)"):
        hand.rows(torch.tensor([4]))
    for not_ids in (torch.tensor([0.0]), torch.tensor([True])):
        with pytest.raises(ValueError, match="^contexts must be integer ids, got dtype"):
            hand.rows(not_ids)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_ids_of_any_integer_dtype_score_as_int64_ids(hand, dtype):
    contexts, targets = torch.tensor([EOS, A, B, UNK]), torch.tensor([A, B, EOS, UNK])
    expected = hand.log_prob(contexts, targets)
    assert torch.equal(hand.log_prob(contexts.to(dtype), targets.to(dtype)), expected)
    assert torch.equal(hand.rows(contexts.to(dtype)), hand.rows(contexts))


def test_a_one_token_stream_has_a_perplexity(hand):
    # P̂(<eos> | <s>) = ν(<s>)·p(</s>) = 0.5 · 0.25 (see test_hand_corpus_probabilities).
    assert hand.perplexity(np.array([EOS])) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="ids must hold at least one token"):
        hand.perplexity(np.array([], dtype=np.int64))


def test_the_latest_new_word_is_counted_raw_and_eos_only_when_there_is_no_word():
    adjusted = np.array([7, 8, 9])
    # Words 0, 1 first appear at 0 and 3, <eos> (2) at 2: word 1 is the latest, raw count 1.
    ids = np.array([0, 0, 2, 1, 2])
    assert _lmplz_unigram_statistics(ids, adjusted, 2).tolist() == [7, 1, 9]
    # Word 0 at 0, <eos> (1) at 1: word 0, raw count 2, though <eos> first appears later.
    assert _lmplz_unigram_statistics(np.array([0, 1, 0, 1]), np.array([7, 9]), 1).tolist() == [
        2,
        9,
    ]
    # No word at all: <eos>, raw count 2.
    assert _lmplz_unigram_statistics(np.array([1, 1]), np.array([7, 9]), 1).tolist() == [7, 2]
    assert adjusted.tolist() == [7, 8, 9]  # the caller's counts are left alone


def test_bigram_keys_do_not_overflow_for_int32_ids():
    v = 100_000  # x·V + y reaches 10^10, past int32
    keys, counts = bigram_counts(np.array([v - 1, v - 2, 0], dtype=np.int32), v, eos_id=0)
    expected = [(v - 2) * v + 0, (v - 1) * v + (v - 2), 0 * v + (v - 1)]
    assert keys.tolist() == sorted(expected) and counts.tolist() == [1, 1, 1]


def test_lmplz_unigram_discounts_by_hand_when_eos_first_appears_after_every_word():
    # "a b c d e" / "c b" / "a" / "a" / "e" / "e c" / "e d": <eos> first appears after e.
    a, b, c, d, e, eos = range(6)
    sentences = [[a, b, c, d, e], [c, b], [a], [a], [e], [e, c], [e, d]]
    ids = np.array([w for sentence in sentences for w in [*sentence, eos]])
    model = estimate_kneser_ney(ids, 6, eos)
    # Continuation counts a..e, </s> = 1, 2, 3, 2, 2, 5; e (the latest new word) raw: 4.
    # n1..n4 = 1, 2, 1, 1: Y = 1/5, D1 = 1 − 2·0.2·2/1, D2 = 2 − 3·0.2·1/2, D3+ = 3 − 4·0.2.
    assert model.fallback["unigram"] is False
    assert model.discounts["unigram"] == pytest.approx((0.2, 1.7, 2.2))


def test_count_of_counts_reads_float_counts():
    # Counts summed with np.bincount(weights=…) are floats.
    assert count_of_counts(np.array([1.0, 1.0, 2.0, 3.0, 4.0, 9.0])) == (2, 1, 1, 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eos_id": 4}, r"eos_id must be in \[0, 4\), got 4"),
        ({"backoff": torch.ones(3, dtype=torch.float64)}, "backoff must have shape"),
        ({"probs": torch.ones(3, dtype=torch.float64)}, "targets and probs must both have"),
    ],
)
def test_a_bigram_with_inconsistent_parts_is_refused(hand, change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(hand, **change)
