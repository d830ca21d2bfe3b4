"""Raw text read through a model's own tokenizer: the corpus of a causal LM whose
vocabulary is not a PTB-format folder's words (a GPT-2 or Llama tokenizer, or one trained
on the domain).

A folder of raw text holds ``train.txt``, ``valid.txt`` and ``test.txt`` (or PTB's
``ptb.SPLIT.txt`` names), any text, one paragraph or sentence per line. Each non-empty line
is tokenized on its own, without the tokenizer's added specials, and followed by the
tokenizer's end token (``eos_token``, else ``sep_token``): the id stream the model trains
on, the Kneser–Ney bigram is estimated on and the IMM windows are drawn from, over the
tokenizer's ids. Its end token is the bigram's ``<eos>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imm_ray import checks
from imm_ray.supervised.lm.corpus import EOS, SPLITS, split_file


@dataclass(frozen=True)
class TokenVocabulary:
    """A tokenizer's tokens by id, its end token written ``<eos>`` (as ARPA's ``</s>`` is
    read), so that an ARPA bigram over the tokens maps onto its ids."""

    words: tuple[str, ...]
    eos_id: int

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class TokenizedCorpus:
    """Raw text's splits as id streams over a tokenizer's ids (the end token after every
    line); the same fields as a PTB-format :class:`~imm_ray.supervised.lm.corpus.Corpus`
    that training reads."""

    vocab: TokenVocabulary
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    files: dict[str, Path]

    def split(self, name: str) -> np.ndarray:
        checks.one_of("split", name, SPLITS)
        return getattr(self, name)


def load_tokenizer(name: str | Path):
    """The tokenizer saved in folder ``name`` (``save_pretrained``), or cached by the
    Hugging Face hub under that name; never downloaded. A ``ValueError`` naming
    ``--tokenizer`` where there is none, or it has no end token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name), local_files_only=True)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"--tokenizer {name}: no tokenizer there (a folder saved with save_pretrained, "
            f"or a name in the Hugging Face cache; nothing is downloaded): {first}"
        ) from None
    if end_token_id(tokenizer) is None:
        raise ValueError(
            f"--tokenizer {name}: it has neither an eos_token nor a sep_token, so the end of "
            "a line cannot be marked"
        )
    return tokenizer


def end_token_id(tokenizer) -> int | None:
    """The id that ends a line: the tokenizer's ``eos_token``'s, else its ``sep_token``'s."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def read_tokenized(folder: str | Path, tokenizer) -> TokenizedCorpus:
    """The raw-text folder's splits through ``tokenizer`` (see the module docstring); a
    ``ValueError`` naming the file for a missing, unreadable or empty split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--data {folder}: no such folder")
    eos = end_token_id(tokenizer)
    if eos is None:
        raise ValueError("the tokenizer has neither an eos_token nor a sep_token")
    files = {split: split_file(folder, split) for split in SPLITS}
    streams = {}
    for split, path in files.items():
        if not path.is_file():
            raise ValueError(f"--data {folder}: no {path.name} there")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"corpus file {path} cannot be read: {error}") from None
        lines = [line for line in lines if line.strip()]
        if not lines:
            raise ValueError(f"corpus file {path} is empty: the split needs at least one line")
        encoded = tokenizer(lines, add_special_tokens=False)["input_ids"]
        ids = [token for row in encoded for token in (*row, eos)]
        streams[split] = np.asarray(ids, dtype=np.int64)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    words = tuple(EOS if i == eos else str(token) for i, token in enumerate(tokens))
    return TokenizedCorpus(vocab=TokenVocabulary(words, eos), files=files, **streams)
