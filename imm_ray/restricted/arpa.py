"""ARPA files of bigram models: write a :class:`KneserNeyBigram` as lmplz would, read one back.

The ARPA vocabulary is the model's with ``<eos>`` split in two, as in lmplz: ``</s>`` where
it is predicted, ``<s>`` where it is a context. ``<s>`` has log10 probability 0 (lmplz's
convention: it is never predicted) and carries the back-off of the ``<eos>`` row;
``</s>`` has back-off 0. A unigram that is never a context has back-off 0 (ν = 1).

Reading checks the file line by line; every problem is an :class:`ArpaError` that names
the file and the line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from imm_ray._io import write_text_atomically
from imm_ray.restricted.kneser_ney import KneserNeyBigram

BOS, EOS_ARPA, EOS = "<s>", "</s>", "<eos>"

_NGRAM_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)$")


class ArpaError(ValueError):
    """A malformed ARPA file, or one whose vocabulary does not match the corpus."""


def _check_words(words: Sequence[str], model: KneserNeyBigram) -> None:
    if len(words) != model.vocab_size:
        raise ValueError(f"words must have {model.vocab_size} entries, got {len(words)}")
    if words[model.eos_id] != EOS:
        raise ValueError(f"words[{model.eos_id}] (eos_id) must be {EOS!r}")
    if BOS in words or EOS_ARPA in words:
        raise ValueError(f"words must not contain {BOS!r} or {EOS_ARPA!r}: <eos> stands for both")


def _log10(values: torch.Tensor) -> list[str]:
    return [f"{v:.8g}" for v in np.log10(values.numpy())]


def write_arpa(model: KneserNeyBigram, words: Sequence[str], path: str | Path) -> None:
    """Write ``model`` (ids named by ``words``) as an ARPA file, atomically."""
    _check_words(words, model)
    model = model.to("cpu")
    target_names = list(words)
    target_names[model.eos_id] = EOS_ARPA
    context_names = list(words)
    context_names[model.eos_id] = BOS
    uni = _log10(model.unigram)
    backoff = _log10(model.backoff)
    bigram = _log10(model.probs)
    lines = [
        "\\data\\",
        f"ngram 1={model.vocab_size + 1}",
        f"ngram 2={model.num_bigrams}",
        "",
        "\\1-grams:",
        f"0\t{BOS}\t{backoff[model.eos_id]}",
    ]
    for i, name in enumerate(target_names):
        lines.append(f"{uni[i]}\t{name}\t{0 if i == model.eos_id else backoff[i]}")
    lines += ["", "\\2-grams:"]
    indptr = model.indptr.tolist()
    targets = model.targets.tolist()
    for x in range(model.vocab_size):
        for j in range(indptr[x], indptr[x + 1]):
            lines.append(f"{bigram[j]}\t{context_names[x]} {target_names[targets[j]]}")
    lines += ["", "\\end\\", ""]
    write_text_atomically(Path(path), "\n".join(lines))


class _Lines:
    """The file's lines with their numbers, for errors that say where."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.lines = path.read_text().splitlines()
        except FileNotFoundError:
            raise ArpaError(f"ARPA file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ArpaError(f"ARPA file {path} cannot be read: {err}") from None
        self.at = 0

    def error(self, message: str, line: int | None = None) -> ArpaError:
        return ArpaError(f"{self.path}:{self.at if line is None else line}: {message}")

    def next(self, what: str) -> str:
        if self.at >= len(self.lines):
            raise ArpaError(f"{self.path}:{len(self.lines)}: file ends before {what}")
        self.at += 1
        return self.lines[self.at - 1].strip()

    def skip_blank(self) -> None:
        while self.at < len(self.lines) and not self.lines[self.at].strip():
            self.at += 1


def _number(lines: _Lines, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise lines.error(f"{what} must be a number, got {text!r}") from None
    if value > 0 or value != value:
        raise lines.error(f"{what} must be a log10 value <= 0, got {text!r}")
    return value


def _parse(path: Path) -> tuple[dict[str, tuple[float, float]], dict[tuple[str, str], float]]:
    lines = _Lines(path)
    lines.skip_blank()
    if lines.next("\\data\\") != "\\data\\":
        raise lines.error("expected '\\data\\' (is this an ARPA file?)")
    counts: dict[int, int] = {}
    while (line := lines.next("the n-gram counts")) != "":
        match = _NGRAM_COUNT.match(line)
        if not match:
            raise lines.error(f"expected 'ngram N=COUNT', got {line!r}")
        order, count = int(match[1]), int(match[2])
        if order not in (1, 2):
            raise lines.error(f"order must be 1 or 2 (a bigram model), got ngram {order}")
        counts[order] = count
    if 1 not in counts:
        raise lines.error("the header must give 'ngram 1=COUNT'")
    unigrams: dict[str, tuple[float, float]] = {}
    bigrams: dict[tuple[str, str], float] = {}
    for order in sorted(counts):
        lines.skip_blank()
        header = f"\\{order}-grams:"
        if lines.next(header) != header:
            raise lines.error(f"expected {header!r}")
        for _ in range(counts[order]):
            fields = lines.next(f"the {counts[order]} {order}-grams the header announces").split()
            if not fields:
                raise lines.error(f"expected {counts[order]} {order}-grams, found a blank line")
            if len(fields) not in (order + 1, order + 2) or (order == 2 and len(fields) == 4):
                raise lines.error(f"expected 'log10p {'w ' * order}[backoff]', got {fields!r}")
            prob = _number(lines, fields[0], "log10 probability")
            if order == 1:
                backoff = _number(lines, fields[2], "back-off") if len(fields) == 3 else 0.0
                if backoff > 0:
                    raise lines.error("back-off must be <= 0")
                if fields[1] in unigrams:
                    raise lines.error(f"duplicate unigram {fields[1]!r}")
                unigrams[fields[1]] = (prob, backoff)
            else:
                pair = (fields[1], fields[2])
                for word in pair:
                    if word not in unigrams:
                        raise lines.error(f"bigram word {word!r} is not a unigram")
                if pair[0] == EOS_ARPA or pair[1] == BOS:
                    raise lines.error(
                        f"bigram {' '.join(pair)!r} cannot be represented: {EOS_ARPA} is "
                        f"never a context and {BOS} never a target"
                    )
                if pair in bigrams:
                    raise lines.error(f"duplicate bigram {' '.join(pair)!r}")
                bigrams[pair] = prob
    lines.skip_blank()
    if lines.next("\\end\\") != "\\end\\":
        raise lines.error("expected '\\end\\' after the announced n-grams")
    for word in (BOS, EOS_ARPA):
        if word not in unigrams:
            raise lines.error(f"the unigrams must include {word}", line=1)
    return unigrams, bigrams


def read_arpa(
    path: str | Path, words: Sequence[str] | None = None
) -> tuple[KneserNeyBigram, tuple[str, ...]]:
    """``(model, words)`` from a bigram ARPA file (lmplz's, or :func:`write_arpa`'s).

    With ``words`` (a corpus vocabulary, id → word, ``<eos>`` included), the model uses those
    ids, and the ARPA vocabulary (``<s>`` dropped, ``</s>`` read as ``<eos>``) must be the same
    set of words, else :class:`ArpaError`. Without, ids follow the file's unigram order.
    """
    path = Path(path)
    unigrams, bigrams = _parse(path)
    arpa_words = [EOS if w == EOS_ARPA else w for w in unigrams if w != BOS]
    if EOS in unigrams:
        raise ArpaError(f"{path}: the unigram {EOS!r} clashes with </s>, which is read as it")
    if words is None:
        words = tuple(arpa_words)
    else:
        words = tuple(words)
        missing = sorted(set(words) - set(arpa_words))
        extra = sorted(set(arpa_words) - set(words))
        if missing or extra or len(set(words)) != len(words):
            raise ArpaError(
                f"vocabulary mismatch between the corpus ({len(words)} words) and {path} "
                f"({len(arpa_words)} words): {len(missing)} corpus words are not in the ARPA "
                f"file (e.g. {missing[:3]}), {len(extra)} ARPA words are not in the corpus "
                f"(e.g. {extra[:3]})"
            )
    index = {w: i for i, w in enumerate(words)}
    index[BOS] = index[EOS_ARPA] = index[EOS]
    v = len(words)
    unigram = np.zeros(v)
    backoff = np.ones(v)
    for word, (prob, bo) in unigrams.items():
        if word != BOS:
            unigram[index[word]] = 10.0**prob
        if word != EOS_ARPA:
            backoff[index[word]] = 10.0**bo
    keys = np.fromiter(
        (index[x] * v + index[y] for x, y in bigrams), dtype=np.int64, count=len(bigrams)
    )
    probs = np.fromiter((10.0**p for p in bigrams.values()), dtype=np.float64, count=len(bigrams))
    order = np.argsort(keys)
    context, target = np.divmod(keys[order], v)
    indptr = np.zeros(v + 1, dtype=np.int64)
    np.cumsum(np.bincount(context, minlength=v), out=indptr[1:])
    model = KneserNeyBigram(
        eos_id=index[EOS],
        unigram=torch.from_numpy(unigram),
        backoff=torch.from_numpy(backoff),
        indptr=torch.from_numpy(indptr),
        targets=torch.from_numpy(target),
        probs=torch.from_numpy(probs[order]),
    )
    return model, words
