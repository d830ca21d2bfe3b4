"""A CoLA-format acceptability task built from real text (``imm-ray lm make-acceptability``).

No GLUE data is on these machines; word order is what a bigram knows, so this is the task
on which IMM against a Kneser–Ney bigram can show its effect here. From a PTB-format
folder, each split's sentences (of ``min_words`` … ``max_words`` words) become examples:

- label 1: the sentence as it is;
- label 0: the sentence with two adjacent (different) words swapped, or with one word
  replaced by another vocabulary word drawn by training frequency (so that the word's
  frequency alone does not give it away), each corruption with probability one half.

Within a split, the sentences are shuffled and exactly half (rounded down) are corrupted,
so the classes are balanced. ``train.tsv`` comes from ``train.txt``, ``dev.tsv`` from
``valid.txt`` and ``test.tsv`` from ``test.txt``, all in CoLA's labeled layout
(``source  label  mark  sentence``, no header; the source is the corpus folder's name,
the mark ``*`` for label 0, as CoLA's).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imm_ray._io import write_text_atomically
from imm_ray.supervised.lm.corpus import EOS, UNK, read_sentences, split_file

OUT_FILES = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}


@dataclass(frozen=True)
class AcceptabilitySummary:
    files: dict[str, Path]
    examples: dict[str, int]
    """Per output split, examples written (half of each label, rounded)."""
    corruptions: dict[str, dict[str, int]]
    """Per output split, how many label-0 examples are swaps and how many replacements."""


def corrupt(
    words: list[str], rng: np.random.Generator, vocab: list[str], weights: np.ndarray
) -> tuple[list[str], str]:
    """``(corrupted words, "swap" | "replace")``; a swap needs two adjacent different words
    (else the sentence gets a replacement)."""
    swappable = [i for i in range(len(words) - 1) if words[i] != words[i + 1]]
    if swappable and rng.random() < 0.5:
        i = swappable[int(rng.integers(len(swappable)))]
        out = list(words)
        out[i], out[i + 1] = out[i + 1], out[i]
        return out, "swap"
    i = int(rng.integers(len(words)))
    while True:
        word = vocab[int(rng.choice(len(vocab), p=weights))]
        if word != words[i]:
            break
    out = list(words)
    out[i] = word
    return out, "replace"


def make_acceptability(
    corpus: str | Path,
    out: str | Path,
    seed: int = 0,
    min_words: int = 4,
    max_words: int = 30,
    max_examples: int | None = None,
) -> AcceptabilitySummary:
    """Writes the task's ``train.tsv``, ``dev.tsv`` and ``test.tsv`` under ``out``.

    ``max_examples`` caps every split (the first sentences after shuffling). Everything is
    checked and built before any file is written.
    """
    if min_words < 2:
        raise ValueError(f"min_words must be >= 2 (a swap needs two words), got {min_words}")
    if max_words < min_words:
        raise ValueError(f"max_words must be >= min_words ({min_words}), got {max_words}")
    if max_examples is not None and max_examples < 2:
        raise ValueError(f"max_examples must be >= 2 or None, got {max_examples}")
    corpus, out = Path(corpus), Path(out)
    if not corpus.is_dir():
        raise ValueError(f"corpus folder {corpus} does not exist")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, and {out} is a file")
    sentences = {s: read_sentences(split_file(corpus, s)) for s in OUT_FILES}
    counts = Counter(w for sentence in sentences["train"] for w in sentence if w != UNK)
    vocab = sorted(w for w in counts if w != EOS)
    if len(vocab) < 2:
        raise ValueError(f"{corpus}/train.txt needs >= 2 distinct words for replacements")
    weights = np.array([counts[w] for w in vocab], dtype=np.float64)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    source = corpus.resolve().name or "corpus"
    texts, examples, kinds = {}, {}, {}
    for split, name in OUT_FILES.items():
        usable = [s for s in sentences[split] if min_words <= len(s) <= max_words]
        order = rng.permutation(len(usable))
        chosen = [usable[i] for i in order[:max_examples]]
        if len(chosen) < 2:
            raise ValueError(
                f"the {split} split has {len(chosen)} sentences of {min_words}–{max_words} "
                "words: it needs >= 2 for two balanced classes"
            )
        corrupted = set(rng.permutation(len(chosen))[: len(chosen) // 2].tolist())
        lines, tally = [], {"swap": 0, "replace": 0}
        for i, words in enumerate(chosen):
            if i in corrupted:
                words, kind = corrupt(words, rng, vocab, weights)
                tally[kind] += 1
                lines.append(f"{source}\t0\t*\t{' '.join(words)}\n")
            else:
                lines.append(f"{source}\t1\t\t{' '.join(words)}\n")
        texts[name], examples[name], kinds[name] = "".join(lines), len(lines), tally
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, text in texts.items():
        files[name] = out / name
        write_text_atomically(files[name], text)
    return AcceptabilitySummary(files=files, examples=examples, corruptions=kinds)
