"""Penn Treebank-format corpora: the loader, the vocabulary, and ``prepare`` for raw text.

**The format** (Mikolov's PTB files): one sentence per line, lower-case tokens separated
by spaces, words outside the vocabulary written ``<unk>``. The end of every line is the
token ``<eos>``; it is not written in the file. A folder holds ``train.txt``, ``valid.txt``
and ``test.txt`` (or PTB's own ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt``).

**The vocabulary** is the training split's: ``<eos>``, ``<unk>`` and every word of
``train.txt``, ids by descending training count (ties alphabetical). Words of the other
splits outside it are read as ``<unk>``.

**The tokenizer of** :func:`prepare` (for English prose such as the Austen novels):

1. Paragraphs are blocks of non-blank lines; the lines of a paragraph are joined.
2. Underscores (italics markers) are dropped.
3. A token is a run of letters, possibly joined by single ``'`` or ``-`` (``well-bred``,
   ``don't``), or a number (digits with ``,`` or ``.`` inside), which becomes ``N`` as in PTB.
   Everything else (quotes, commas, dashes ``--``, brackets) separates tokens and is dropped,
   as in PTB's language-modelling text.
4. Clitics are split off as in the Treebank: ``don't`` → ``do n't``, ``emma's`` →
   ``emma 's``; likewise ``'ll``, ``'re``, ``'ve``, ``'m``, ``'d``.
5. Sentences end at ``.``, ``!`` or ``?`` (except the ``.`` of ``mr``, ``mrs``, ``dr``,
   ``st`` and a few other abbreviations) and at every paragraph end.
6. Tokens are lower-cased.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imm_ray import checks
from imm_ray._io import write_text_atomically

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
#: Tokens a PTB-format file cannot hold: ``<eos>`` is implied by line ends; KenLM reserves
#: the other two.
RESERVED = (EOS, "<s>", "</s>")

_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "messrs", "esq", "capt", "col", "gen", "rev", "no", "vol"}
)
_TOKEN = re.compile(
    r"(?P<word>[A-Za-z]+(?:['-][A-Za-z]+)*)|(?P<number>\d+(?:[.,]\d+)*)|(?P<end>[.!?]+)"
)
_CLITIC = re.compile(r"^(?P<stem>[a-z][a-z'-]*?)(?P<clitic>n't|'s|'ll|'re|'ve|'m|'d)$")


@dataclass(frozen=True)
class Vocabulary:
    """Words by id. ``<eos>`` and ``<unk>`` are always in it."""

    words: tuple[str, ...]
    """``words[i]`` is the word of id ``i``."""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {w: i for i, w in enumerate(self.words)}
        if len(index) != len(self.words):
            raise ValueError("words must be distinct")
        for special in (EOS, UNK):
            if special not in index:
                raise ValueError(f"words must include {special}")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_counts(cls, counts: Counter[str], size: int | None = None) -> Vocabulary:
        """The ``size`` most frequent words (``<eos>`` and ``<unk>`` included, whatever their
        counts; ``None``: all), by descending count, ties alphabetical."""
        if size is not None and size < 2:
            raise ValueError(f"vocab must be >= 2 (it holds <eos> and <unk>), got {size}")
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        words = [w for w, _ in ranked if w not in (EOS, UNK)]
        if size is not None:
            words = words[: size - 2]
        keep = set(words) | {EOS, UNK}
        ordered = [w for w, _ in ranked if w in keep]
        ordered += [w for w in (EOS, UNK) if w not in counts]
        return cls(tuple(ordered))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def id(self, word: str) -> int:
        """The id of ``word``; ``<unk>``'s for a word outside the vocabulary."""
        return self._index.get(word, self._index[UNK])

    @property
    def eos_id(self) -> int:
        return self._index[EOS]

    @property
    def unk_id(self) -> int:
        return self._index[UNK]

    def encode(self, sentences: Iterable[Sequence[str]]) -> np.ndarray:
        """The id stream of sentences, ``<eos>`` after each; int64."""
        index, unk, eos = self._index, self.unk_id, self.eos_id
        ids: list[int] = []
        for sentence in sentences:
            ids.extend(index.get(w, unk) for w in sentence)
            ids.append(eos)
        return np.array(ids, dtype=np.int64)


@dataclass(frozen=True)
class Corpus:
    """A PTB-format corpus as id streams (``<eos>`` after every sentence)."""

    vocab: Vocabulary
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    files: dict[str, Path]
    """The file each split was read from."""
    oov: dict[str, int]
    """Per split, how many tokens were outside the vocabulary and read as ``<unk>``."""

    def split(self, name: str) -> np.ndarray:
        checks.one_of("split", name, SPLITS)
        return getattr(self, name)


def split_file(folder: str | Path, split: str) -> Path:
    """``folder/SPLIT.txt``, or PTB's ``folder/ptb.SPLIT.txt`` when only that exists."""
    folder = Path(folder)
    plain, ptb = folder / f"{split}.txt", folder / f"ptb.{split}.txt"
    return ptb if not plain.exists() and ptb.exists() else plain


def read_sentences(path: str | Path) -> list[list[str]]:
    """The sentences (lines, split at whitespace) of a PTB-format file, checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"corpus file {path} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"corpus file {path} cannot be read: {err}") from None
    sentences = [line.split() for line in text.splitlines()]
    for number, sentence in enumerate(sentences, 1):
        for token in sentence:
            if token in RESERVED:
                raise ValueError(
                    f"{path}:{number}: the token {token!r} must not appear in a PTB-format "
                    "file (each line end is <eos>)"
                )
    if not any(sentences):
        raise ValueError(f"corpus file {path} is empty: the split needs at least one word")
    return sentences


def load_corpus(folder: str | Path) -> Corpus:
    """Read ``train``, ``valid`` and ``test`` of a PTB-format folder; the vocabulary is train's."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"corpus folder {folder} does not exist")
    files = {s: split_file(folder, s) for s in SPLITS}
    sentences = {s: read_sentences(p) for s, p in files.items()}
    counts = Counter(w for sentence in sentences["train"] for w in sentence)
    counts[EOS] = len(sentences["train"])
    vocab = Vocabulary.from_counts(counts)
    oov = {s: sum(w not in vocab for sentence in sentences[s] for w in sentence) for s in SPLITS}
    streams = {s: vocab.encode(sentences[s]) for s in SPLITS}
    return Corpus(vocab=vocab, files=files, oov=oov, **streams)


def _split_clitic(word: str) -> list[str]:
    match = _CLITIC.match(word)
    if match and match["stem"] and not match["stem"].endswith(("'", "-")):
        return [match["stem"], match["clitic"]]
    return [word]


def tokenize(text: str) -> Iterator[list[str]]:
    """The sentences of English prose as lists of PTB-style tokens (see the module docstring)."""
    paragraphs = re.split(r"\n\s*\n", text.replace("\r", "").replace("_", ""))
    for paragraph in paragraphs:
        sentence: list[str] = []
        for match in _TOKEN.finditer(paragraph):
            if match["word"]:
                sentence.extend(_split_clitic(match["word"].lower()))
            elif match["number"]:
                sentence.append("N")
            elif sentence and not (match["end"] == "." and sentence[-1] in _ABBREVIATIONS):
                yield sentence
                sentence = []
        if sentence:
            yield sentence


@dataclass(frozen=True)
class PrepareSummary:
    """What :func:`prepare` wrote."""

    files: dict[str, Path]
    vocab_size: int
    sentences: dict[str, int]
    tokens: dict[str, int]
    """Per split, tokens with one ``<eos>`` per sentence."""
    unk: dict[str, int]
    """Per split, tokens written as ``<unk>``."""


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if (
        len(fractions) != 3
        or any(not 0 < f < 1 for f in fractions)
        or abs(sum(fractions) - 1) > 1e-9
    ):
        raise ValueError(
            f"fractions must be three numbers in (0, 1) summing to 1, got {list(fractions)}"
        )
    return tuple(fractions)  # type: ignore[return-value]


def _raw_sentences(paths: Sequence[Path]) -> list[list[str]]:
    sentences: list[list[str]] = []
    for path in paths:
        try:
            sentences.extend(tokenize(Path(path).read_text(errors="replace")))
        except OSError as err:
            raise ValueError(f"raw file {path} cannot be read: {err}") from None
    return sentences


def prepare(
    raw_files: Sequence[str | Path],
    out: str | Path,
    vocab_size: int = 10000,
    valid_files: Sequence[str | Path] = (),
    test_files: Sequence[str | Path] = (),
    fractions: Sequence[float] | None = None,
) -> PrepareSummary:
    """Turn raw English text into a PTB-format folder ``out`` (train/valid/test.txt).

    Split by file (``raw_files`` train, ``valid_files``, ``test_files``) or, without those,
    by ``fractions`` (default 0.8, 0.1, 0.1) of the sentences of ``raw_files`` in order.
    ``vocab_size`` counts ``<eos>`` and ``<unk>``. Everything is checked before anything is
    written, and each file is written atomically.
    """
    by_file = bool(valid_files) or bool(test_files)
    if by_file and fractions is not None:
        raise ValueError("fractions cannot be combined with valid/test files: split one way")
    if by_file and not (valid_files and test_files):
        raise ValueError("valid and test files must both be given to split by file")
    if vocab_size < 2:
        raise ValueError(f"vocab must be >= 2 (it holds <eos> and <unk>), got {vocab_size}")
    cut = _check_fractions((0.8, 0.1, 0.1) if fractions is None else fractions)
    groups = {"train": raw_files, "valid": valid_files, "test": test_files}
    if not raw_files:
        raise ValueError("raw files must name at least one file")
    for paths in groups.values():
        for path in paths:
            if not Path(path).is_file():
                raise ValueError(f"raw file {path} does not exist")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, and {out} is a file")

    if by_file:
        splits = {s: _raw_sentences([Path(p) for p in groups[s]]) for s in SPLITS}
    else:
        everything = _raw_sentences([Path(p) for p in raw_files])
        first = round(cut[0] * len(everything))
        second = first + round(cut[1] * len(everything))
        parts = (everything[:first], everything[first:second], everything[second:])
        splits = dict(zip(SPLITS, parts, strict=True))
    for split, sentences in splits.items():
        if not sentences:
            raise ValueError(f"the {split} split is empty: its raw text holds no words")

    counts = Counter(w for sentence in splits["train"] for w in sentence)
    vocab = Vocabulary.from_counts(counts, vocab_size)
    files, texts, unk = {}, {}, {}
    for split, sentences in splits.items():
        mapped = [[w if w in vocab else UNK for w in s] for s in sentences]
        unk[split] = sum(s.count(UNK) for s in mapped)
        texts[split] = "".join(" ".join(s) + "\n" for s in mapped)
        files[split] = out / f"{split}.txt"
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_text_atomically(files[split], texts[split])
    return PrepareSummary(
        files=files,
        vocab_size=len(vocab),
        sentences={s: len(v) for s, v in splits.items()},
        tokens={s: sum(map(len, v)) + len(v) for s, v in splits.items()},
        unk=unk,
    )
