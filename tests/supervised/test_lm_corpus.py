"""PTB-format corpora: the tokenizer, the vocabulary, the loader and ``prepare``."""

from __future__ import annotations

from collections import Counter

import pytest

from imm_ray.supervised.lm.corpus import Vocabulary, load_corpus, prepare, tokenize

PROSE = """CHAPTER 1

Mr. Darcy said, "I don't know _why_ Emma's well-bred
friend left--at 10.30, in 1813." She smiled! Was it

so? 'Tis  true.
"""


def test_tokenizer_by_hand():
    assert list(tokenize(PROSE)) == [
        ["chapter", "N"],
        ["mr", "darcy", "said", "i", "do", "n't", "know", "why", "emma", "'s", "well-bred"]
        + ["friend", "left", "at", "N", "in", "N"],
        ["she", "smiled"],
        ["was", "it"],
        ["so"],
        ["tis", "true"],
    ]


def test_vocabulary_orders_by_count_and_keeps_the_specials():
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1, "<eos>": 4})
    vocab = Vocabulary.from_counts(counts, size=4)
    assert vocab.words == ("c", "<eos>", "a", "<unk>")
    assert vocab.id("d") == vocab.unk_id == 3
    assert vocab.encode([["c", "zzz"], []]).tolist() == [0, 3, 1, 1]
    with pytest.raises(ValueError, match="vocab must be >= 2"):
        Vocabulary.from_counts(counts, size=1)


def write_splits(folder, train, valid="x y\n", test="y\n", prefix=""):
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{prefix}{name}.txt").write_text(text)


def test_loader_takes_the_vocabulary_from_train(tmp_path):
    write_splits(tmp_path, "x y x\n\nx <unk> x\n", valid="x new y\n", test="y\n")
    corpus = load_corpus(tmp_path)
    # Counts x 4, <eos> 3, then <unk> and y once each (ties alphabetical).
    assert corpus.vocab.words == ("x", "<eos>", "<unk>", "y")
    x, eos, unk, y = range(4)
    assert corpus.train.tolist() == [x, y, x, eos, eos, x, unk, x, eos]
    assert corpus.valid.tolist() == [x, unk, y, eos]
    assert corpus.oov == {"train": 0, "valid": 1, "test": 0}


def test_loader_reads_ptb_file_names(tmp_path):
    write_splits(tmp_path, " a b \n", prefix="ptb.")
    corpus = load_corpus(tmp_path)
    assert corpus.files["train"].name == "ptb.train.txt"
    assert len(corpus.train) == 3


@pytest.mark.parametrize(
    ("train", "valid", "message"),
    [
        ("", "x\n", "train.txt is empty"),
        ("x\n", "\n\n", "valid.txt is empty"),
        ("x <eos>\n", "x\n", "train.txt:1: the token '<eos>' must not appear"),
        ("x\ny </s>\n", "x\n", "train.txt:2: the token '</s>' must not appear"),
    ],
)
def test_loader_refuses_bad_corpora(tmp_path, train, valid, message):
    write_splits(tmp_path, train, valid=valid)
    with pytest.raises(ValueError, match=message):
        load_corpus(tmp_path)


def test_loader_names_a_missing_file(tmp_path):
    (tmp_path / "train.txt").write_text("x\n")
    with pytest.raises(ValueError, match="valid.txt does not exist"):
        load_corpus(tmp_path)


def test_prepare_by_file_caps_the_vocabulary(tmp_path):
    raw = {name: tmp_path / f"{name}.raw" for name in ("a", "b", "c")}
    raw["a"].write_text("The cat sat. The cat ran! A dog sat.\n")
    raw["b"].write_text("The bird sat.\n")
    raw["c"].write_text("A cat flew?\n")
    out = tmp_path / "ptb"
    summary = prepare([raw["a"]], out, vocab_size=5, valid_files=[raw["b"]], test_files=[raw["c"]])
    assert (out / "train.txt").read_text() == "the cat sat\nthe cat <unk>\n<unk> <unk> sat\n"
    assert (out / "valid.txt").read_text() == "the <unk> sat\n"
    assert summary.vocab_size == 5
    assert summary.tokens == {"train": 12, "valid": 4, "test": 4}
    assert summary.unk == {"train": 3, "valid": 1, "test": 2}
    # Five ids: <eos>, <unk> and the three words seen twice (a, dog, ran once: <unk>).
    assert set(load_corpus(out).vocab.words) == {"the", "cat", "sat", "<unk>", "<eos>"}


def test_prepare_by_fraction_keeps_sentence_order(tmp_path):
    raw = tmp_path / "book.txt"
    raw.write_text(" ".join(f"Sentence number {w}." for w in "abcdefghij"))
    prepare([raw], tmp_path / "out", fractions=(0.6, 0.2, 0.2))
    lines = {
        s: (tmp_path / "out" / f"{s}.txt").read_text().splitlines()
        for s in ("train", "valid", "test")
    }
    assert [len(v) for v in lines.values()] == [6, 2, 2]
    # "g" is not a training word.
    assert lines["valid"] == ["sentence number <unk>", "sentence number <unk>"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fractions": (0.5, 0.5, 0.0)}, "fractions must be three numbers in"),
        ({"vocab_size": 1}, "vocab must be >= 2"),
        ({"valid_files": ["v.raw"]}, "valid and test files must both be given"),
    ],
)
def test_prepare_refuses_bad_settings_before_writing(tmp_path, kwargs, message):
    raw = tmp_path / "book.txt"
    raw.write_text("One. Two. Three.\n")
    with pytest.raises(ValueError, match=message):
        prepare([raw], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_an_empty_split(tmp_path):
    (tmp_path / "a.raw").write_text("Words here.\n")
    (tmp_path / "b.raw").write_text("-- ... !\n")
    with pytest.raises(ValueError, match="the valid split is empty"):
        prepare(
            [tmp_path / "a.raw"],
            tmp_path / "out",
            valid_files=[tmp_path / "b.raw"],
            test_files=[tmp_path / "a.raw"],
        )
    assert not (tmp_path / "out").exists()
