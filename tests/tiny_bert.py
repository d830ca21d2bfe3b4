"""What the tiny BERT runs of several test folders share (``test_bert_cli.py``,
``supervised/bert/conftest.py``, ``tuning/cluster_runs.py``): a synthetic PTB-format corpus,
and the options that keep a fine-tuning run tiny."""

from __future__ import annotations

from pathlib import Path

from imm_ray.supervised.lm.synthetic import MarkovSource

#: ``imm-ray train bert`` and ``imm-ray sweep table2`` options for a tiny run: batches of 8,
#: 2 IMM positions a sentence, sentences cut to 32 tokens.
TINY_BERT_TRAINING = ("--batch-size", "8", "--positions", "2", "--max-length", "32")


def markov_corpus(folder: Path, symbols: int, seed: int, sizes: tuple[int, int, int]) -> Path:
    """``folder``, now a PTB-format corpus (train, valid, test of ``sizes`` tokens) from a
    random order-2 Markov source over ``symbols`` symbols."""
    MarkovSource.random(symbols, seed=seed).write_corpus(folder, sizes, seed=seed)
    return folder
