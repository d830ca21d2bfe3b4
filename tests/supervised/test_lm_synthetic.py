"""The synthetic Markov source: its stationary law, true bigram and induced bigrams are exact."""

from __future__ import annotations

import numpy as np
import pytest

from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.synthetic import MarkovSource


@pytest.fixture(scope="module")
def source():
    return MarkovSource.random(12, seed=4)


def test_stationary_law_is_a_fixed_point(source):
    pi = source.stationary()
    assert pi.sum() == pytest.approx(1.0)
    assert np.allclose(np.einsum("ab,abc->bc", pi, source.transitions), pi, atol=1e-14)
    # Both marginals of a stationary pair are the same unigram law.
    assert np.allclose(pi.sum(0), pi.sum(1), atol=1e-14)


def test_true_bigram_by_brute_force_over_triples(source):
    pi, t = source.stationary(), source.transitions
    v = source.vocab_size
    expected = np.zeros((v, v))
    for a in range(v):
        for x in range(v):
            expected[x] += pi[a, x] * t[a, x]
    expected /= expected.sum(1, keepdims=True)
    assert np.allclose(source.true_bigram(), expected, atol=1e-13)


@pytest.mark.parametrize("window", [2, 3])
def test_induced_bigram_of_the_true_predictor_is_the_true_bigram(source, window):
    t = source.transitions
    induced = source.induced_bigram(lambda h: t[h[:, -2], h[:, -1]], window)
    assert np.allclose(induced, source.true_bigram(), atol=1e-13)


def test_induced_bigram_of_a_longer_history_predictor(source):
    # Q reads three tokens; by hand, its induced bigram is Σ_{u,a} π(u,a)·T[u,a,x]·Q(u,a,x)
    # over the windows (u, a, x), normalized per x.
    rng = np.random.default_rng(0)
    v = source.vocab_size
    q = rng.dirichlet(np.ones(v), size=(v, v, v))
    induced = source.induced_bigram(lambda h: q[h[:, 0], h[:, 1], h[:, 2]], 3)
    pi, t = source.stationary(), source.transitions
    weight = pi[:, :, None] * t  # P(u, a, x)
    expected = np.einsum("uax,uaxy->xy", weight, q) / weight.sum((0, 1))[:, None]
    assert np.allclose(induced, expected, atol=1e-13)
    assert np.allclose(induced.sum(1), 1.0)


def test_samples_follow_the_true_bigram(source):
    ids = source.sample(100_000, seed=1)
    counts = np.zeros((12, 12))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    empirical = counts / counts.sum(1, keepdims=True)
    assert np.abs(empirical - source.true_bigram()).max() < 0.03


def test_written_corpus_is_ptb_format_and_loads(source, tmp_path):
    source.write_corpus(tmp_path, (5_000, 1_000, 1_000), seed=0)
    lines = (tmp_path / "train.txt").read_text().splitlines()
    assert "<eos>" not in " ".join(lines)
    corpus = load_corpus(tmp_path)
    assert set(corpus.vocab.words) <= set(source.words) | {"<unk>"}
    assert corpus.train[-1] == corpus.vocab.eos_id
    assert len(corpus.train) == sum(len(line.split()) + 1 for line in lines)


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="vocab_size must be >= 3"):
        MarkovSource.random(2, seed=0)
    with pytest.raises(ValueError, match="window must be >= 1"):
        MarkovSource.random(5, seed=0).window_probabilities(0)
    with pytest.raises(ValueError, match="transitions must be non-negative"):
        MarkovSource(np.full((2, 2, 2), 0.3), ("<eos>", "w1"))
