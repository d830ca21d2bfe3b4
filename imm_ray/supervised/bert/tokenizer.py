"""A word-level BERT tokenizer over a PTB-format corpus's vocabulary, and the corpus as ids.

No pretrained tokenizer is on these machines, so a small BERT gets one built from its
pretraining corpus: the specials ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0–4), then the
training split's words in :class:`~imm_ray.supervised.lm.corpus.Vocabulary` order
(``<eos>`` and ``<unk>`` left out: BERT marks sentence ends with ``[SEP]``, unknown words
with ``[UNK]``). Text is lower-cased and split at whitespace, the PTB format's own
tokenization, so a corpus word is one token and the Kneser–Ney bigram of the corpus read
through the tokenizer is the bigram of its words. It is a ``transformers`` fast tokenizer:
``save_pretrained`` writes it beside the model and ``AutoTokenizer.from_pretrained`` reads
it back, as it reads a real BERT's WordPiece tokenizer.

:func:`corpus_ids` reads a corpus through *any* BERT tokenizer (WordPiece included): the
stream the Kneser–Ney bigram is estimated on and the histories are drawn from, over the
model's own token ids, with ``[SEP]`` ending every sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_word_tokenizer(words: Sequence[str]):
    """A ``PreTrainedTokenizerFast`` with :data:`SPECIALS` then ``words`` (``<eos>``,
    ``<unk>`` and repeats dropped), lower-casing, whitespace splitting and BERT's
    ``[CLS] A [SEP] (B [SEP])`` template with token types 0 and 1."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIALS)}
    for word in words:
        if word not in ("<eos>", "<unk>") and word not in vocab:
            vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def check_bert_tokenizer(tokenizer) -> None:
    """The IMM branch needs BERT's specials: ``[CLS]``, ``[SEP]``, ``[MASK]`` and ``[PAD]``."""
    for name in ("cls_token_id", "sep_token_id", "mask_token_id", "pad_token_id"):
        if getattr(tokenizer, name, None) is None:
            raise ValueError(f"the tokenizer has no {name.removesuffix('_id')}: it is not BERT's")


def read_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a text file (one sentence each), checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"corpus file {path} does not exist")
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"corpus file {path} is empty")
    return lines


def corpus_ids(tokenizer, lines: Sequence[str], max_tokens: int | None = None) -> np.ndarray:
    """The id stream of ``lines`` through ``tokenizer``, ``[SEP]`` after each line (int64).

    ``max_tokens`` truncates a line's own tokens (not its ``[SEP]``).
    """
    check_bert_tokenizer(tokenizer)
    encoded = tokenizer(list(lines), add_special_tokens=False)["input_ids"]
    sep = tokenizer.sep_token_id
    stream: list[int] = []
    for ids in encoded:
        stream.extend(ids if max_tokens is None else ids[:max_tokens])
        stream.append(sep)
    return np.asarray(stream, dtype=np.int64)
