"""Perplexity and the induced bigram of a causal Hugging Face LM: chunking by hand, and the
induced bigram of a tiny GPT-2 on the synthetic Markov corpus against the exact one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from imm_ray.supervised.hf_lm.metrics import chunks, induced_bigram, perplexity
from imm_ray.supervised.lm.synthetic import MarkovSource

LENGTH = 4


def tiny_gpt2(vocab: int, seed: int = 0) -> GPT2LMHeadModel:
    """Weights drawn wide (std 0.6), so that its predictions depend on the history."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=LENGTH,
        n_embd=16,
        n_layer=2,
        n_head=2,
        initializer_range=0.6,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def test_a_split_is_cut_into_chunks_of_length_inputs_after_an_eos():
    inputs, targets, mask = chunks(np.array([5, 6, 7, 8, 9, 4]), eos_id=0, length=4)
    # The last input (4) has no target: it is not scored.
    assert inputs.tolist() == [[0, 5, 6, 7], [8, 9, 4, 0]]
    assert targets.tolist() == [[5, 6, 7, 8], [9, 4, 0, 0]]
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    with pytest.raises(ValueError, match="length must be an integer >= 1, got 0"):
        chunks(np.array([1]), 0, 0)
    with pytest.raises(ValueError, match="the split is empty"):
        chunks(np.array([], dtype=np.int64), 0, 4)


def test_perplexity_is_exp_of_the_mean_nll_of_every_token_from_its_chunk():
    model = tiny_gpt2(6)
    ids = np.array([1, 2, 3, 0, 4, 5, 1, 0, 2])
    inputs, targets, mask = chunks(ids, 0, LENGTH)
    total = 0.0
    for row in range(len(inputs)):  # every position from its own prefix, one at a time
        for p in range(LENGTH):
            if mask[row, p]:
                with torch.no_grad():
                    logits = model(input_ids=inputs[row, : p + 1].unsqueeze(0)).logits[0, -1]
                total -= float(torch.log_softmax(logits, -1)[targets[row, p]])
    expected = math.exp(total / len(ids))
    assert perplexity(model, ids, 0, LENGTH, batch_size=2) == pytest.approx(expected, rel=1e-5)


def test_the_induced_bigram_of_a_tiny_gpt2_is_the_exact_one_on_the_markov_corpus():
    """Each position of a chunk reads its chunk up to it: p + 1 tokens at position p. Every
    position of the stationary stream is distributed alike, so the induced bigram is the
    mean over p of the exact induced bigrams of windows of p + 1 tokens (Eq. (4), computed
    from the source's stationary law over all V**m windows)."""
    source = MarkovSource.random(6, seed=2)
    model = tiny_gpt2(6)
    stream = source.sample(120_000, seed=3)

    def predictor(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(input_ids=torch.as_tensor(windows)).logits[:, -1]
        return torch.softmax(logits.double(), dim=-1).numpy()

    exact = [source.induced_bigram(predictor, m) for m in range(1, LENGTH + 1)]
    expected = np.mean(exact, axis=0)
    got = induced_bigram(model, stream, 0, LENGTH, batch_size=512).numpy()
    error = np.abs(got - expected).max()
    assert error < 4e-3, error
    # The history matters: reading only the last token, or always 4 tokens, is far off.
    assert np.abs(exact[0] - expected).max() > 10 * error
    assert np.abs(exact[-1] - expected).max() > 5 * error
