"""ARPA files: a written model reads back the same, and malformed files name their line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imm_ray.restricted.arpa import ArpaError, read_arpa, write_arpa
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.synthetic import MarkovSource

WORDS = ("<eos>", *(f"w{i}" for i in range(1, 15)), "<unk>")


@pytest.fixture(scope="module")
def model():
    ids = np.append(MarkovSource.random(15, seed=5).sample(3_000, seed=0), 0)
    return estimate_kneser_ney(ids, vocab_size=16, eos_id=0)


@pytest.fixture
def arpa(model, tmp_path):
    path = tmp_path / "model.arpa"
    write_arpa(model, WORDS, path)
    return path


def test_round_trip_keeps_every_probability(model, arpa):
    back, words = read_arpa(arpa, WORDS)
    assert words == WORDS
    contexts = torch.arange(16)
    assert torch.allclose(
        back.rows(contexts, torch.float64), model.rows(contexts, torch.float64), rtol=1e-6, atol=0
    )
    assert back.num_bigrams == model.num_bigrams


def test_reading_with_another_id_order_maps_by_word(model, arpa):
    shuffled = WORDS[::-1]
    back, _ = read_arpa(arpa, shuffled)
    to_new = torch.tensor([shuffled.index(w) for w in WORDS])
    rows = back.rows(to_new, torch.float64)[:, to_new]
    assert torch.allclose(rows, model.rows(torch.arange(16), torch.float64), rtol=1e-6)
    assert back.eos_id == shuffled.index("<eos>")


def test_file_layout_follows_lmplz(arpa, model):
    lines = arpa.read_text().splitlines()
    assert lines[:3] == ["\\data\\", "ngram 1=17", f"ngram 2={model.num_bigrams}"]
    unigrams = {line.split("\t")[1]: line.split("\t") for line in lines[5:22]}
    assert unigrams["<s>"][0] == "0" and unigrams["</s>"][2] == "0"
    assert "<eos>" not in arpa.read_text()


def test_vocabulary_mismatch_is_named(arpa):
    with pytest.raises(ArpaError, match=r"vocabulary mismatch .* 1 corpus words are not in"):
        read_arpa(arpa, (*WORDS, "extra"))


def corrupt(path, line_number, new_line):
    lines = path.read_text().splitlines()
    lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("line", "text", "message"),
    [
        (1, "data", ":1: expected '\\\\data\\\\'"),
        (2, "ngram 1 = x", ":2: expected 'ngram N=COUNT'"),
        (3, "ngram 3=5", ":3: order must be 1 or 2"),
        (7, "-1.5\tw1\tnot-a-number", ":7: back-off must be a number"),
        (8, "0.5\tw2\t-0.1", ":8: log10 probability must be a log10 value <= 0"),
        (26, "-0.5\tw1 nope", ":26: bigram word 'nope' is not a unigram"),
        (26, "-0.5\t</s> w1", ":26: bigram '</s> w1' cannot be represented"),
        (9, "-1.0\tw1\t-0.1", ":9: duplicate unigram 'w1'"),
    ],
)
def test_malformed_files_name_the_line(arpa, line, text, message):
    corrupt(arpa, line, text)
    with pytest.raises(ArpaError, match=message.replace("(", r"\(")) as info:
        read_arpa(arpa)
    assert str(arpa) in str(info.value)


def test_truncated_file_says_what_is_missing(arpa):
    arpa.write_text("\n".join(arpa.read_text().splitlines()[:30]))
    with pytest.raises(ArpaError, match=":30: file ends before the .* 2-grams"):
        read_arpa(arpa)


def test_missing_file(tmp_path):
    with pytest.raises(ArpaError, match="does not exist"):
        read_arpa(tmp_path / "none.arpa")
