"""The restricted model of the language experiments: an interpolated modified Kneser–Ney
bigram P̂(y | x) (paper Sec. 7.2 and App. D.2: the target of the LSTM and BERT experiments).

Estimation follows KenLM's ``lmplz -o 2`` (Chen & Goodman 1998, eqs. (17), (26)):

- Counts come from a stream of token ids in which ``<eos>`` ends every sentence. For
  lmplz each sentence is ``<s> w1 … wn </s>``; here the context of a sentence's first word
  is the previous ``<eos>`` (or the stream's start), so the ``<eos>`` *context* row is
  lmplz's ``<s>`` row and the ``<eos>`` *target* is lmplz's ``</s>``. That is the
  convention of an LM that reads one token stream and predicts ``<eos>`` as a token.
- The bigram level uses raw counts c(x y) with discounts D1, D2, D3+ from the bigram
  count-of-counts n1…n4: ``D_k = k − (k+1)·Y·n_{k+1}/n_k``, ``Y = n1 / (n1 + 2·n2)``.
- The unigram level uses adjusted (continuation) counts a(y) = the number of distinct
  left contexts of y (``<s>`` counts as one), its own discounts from their count-of-counts,
  and is interpolated with the uniform distribution over the V predictable tokens
  (every id, ``<unk>`` included; lmplz's ``<s>`` is never predicted):
  ``p(y) = (a(y) − D(a(y))) / Σa + γ₀ / V``, ``γ₀ = Σ_k D_k·N_k / Σa``.
  An unseen ``<unk>`` thus gets γ₀ / V, exactly as lmplz gives its zeroton ``<unk>``.
- ``P̂(y | x) = (c(x y) − D(c(x y))) / c(x ·) + ν(x)·p(y)`` with the back-off weight
  ``ν(x) = Σ_k D_k·N_k(x ·) / c(x ·)``; a context never seen has ``ν(x) = 1``.

One detail follows lmplz rather than the letter of Chen & Goodman: in the unigram
count-of-counts, the word that first appears latest in the corpus is counted with its raw
count instead of its continuation count, as lmplz's ``AdjustCounts`` does (``match_lmplz``).

Where a level's count-of-counts has a gap (some of n1, n2, n3 is 0) or a discount falls
outside ``[0, k]``, that level uses lmplz's ``--discount_fallback`` discounts 0.5, 1, 1.5
and :attr:`KneserNeyBigram.fallback` says so.

Unlike lmplz, a ``<unk>`` token in the training text (a closed-vocabulary corpus such as
PTB) is counted as the word it is; lmplz refuses such text.

The model is stored sparse: the interpolated probability of every seen bigram (CSR by
context) plus ν(x) and p(y), O(V + distinct bigrams) memory. Only a batch of rows is ever
materialized (:meth:`KneserNeyBigram.rows`), never the V×V matrix.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

#: lmplz's ``--discount_fallback`` default: D1, D2, D3+.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def count_of_counts(counts: np.ndarray) -> tuple[int, int, int, int]:
    """``(n1, n2, n3, n4)``: how many of ``counts`` equal 1, 2, 3 and 4."""
    binned = np.bincount(np.minimum(np.asarray(counts, dtype=np.int64), 5), minlength=6)
    return int(binned[1]), int(binned[2]), int(binned[3]), int(binned[4])


def modified_discounts(
    counts: np.ndarray,
) -> tuple[tuple[float, float, float], bool]:
    """``((D1, D2, D3+), fell_back)`` from a level's counts (Chen & Goodman eq. (26)).

    Falls back to :data:`FALLBACK_DISCOUNTS` where lmplz would need ``--discount_fallback``:
    some of n1, n2, n3 is 0, or some ``D_k`` is outside ``[0, k]``.
    """
    n = count_of_counts(counts)
    if min(n[:3]) == 0:
        return FALLBACK_DISCOUNTS, True
    y = n[0] / (n[0] + 2.0 * n[1])
    discounts = tuple(k - (k + 1) * y * n[k] / n[k - 1] for k in (1, 2, 3))
    if any(not 0.0 <= d <= k for k, d in zip((1, 2, 3), discounts, strict=True)):
        return FALLBACK_DISCOUNTS, True
    return discounts, False  # type: ignore[return-value]


def _discount(counts: np.ndarray, discounts: tuple[float, float, float]) -> np.ndarray:
    """``D(c)`` of every count: 0 for c = 0, then D1, D2, D3+."""
    return np.array((0.0, *discounts))[np.minimum(counts, 3)]


def _backoff_mass(counts: np.ndarray, discounts: tuple[float, float, float]) -> float:
    """``Σ_k D_k·N_k``: the mass a level's discounts free (N3 counts every c >= 3)."""
    return float(_discount(counts, discounts).sum())


@dataclass(frozen=True)
class KneserNeyBigram:
    """A bigram P̂(y | x) over ids ``0 … V−1``, stored sparse (see the module docstring).

    Build one with :func:`estimate_kneser_ney` or :func:`imm_ray.restricted.arpa.read_arpa`.
    """

    eos_id: int
    """The id of ``<eos>``: lmplz's ``</s>`` as a target, its ``<s>`` as a context."""
    unigram: torch.Tensor
    """``p(y)``, ``[V]`` float64: the interpolated continuation unigram."""
    backoff: torch.Tensor
    """``ν(x)``, ``[V]`` float64: the mass context x gives to ``p(·)``; 1 for unseen contexts."""
    indptr: torch.Tensor
    """``[V + 1]`` int64: context x's seen bigrams are entries ``indptr[x] … indptr[x+1] − 1``."""
    targets: torch.Tensor
    """``[nnz]`` int64: the y of each seen bigram, ascending within a context."""
    probs: torch.Tensor
    """``[nnz]`` float64: ``P̂(y | x)`` of each seen bigram, interpolation included."""
    discounts: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """``{"unigram": (D1, D2, D3+), "bigram": (...)}``; empty when read from ARPA."""
    fallback: dict[str, bool] = field(default_factory=dict)
    """Per level: whether it used :data:`FALLBACK_DISCOUNTS`."""

    def __post_init__(self) -> None:
        v = self.vocab_size
        if v < 2:
            raise ValueError(f"vocab_size must be >= 2, got {v}")
        if not 0 <= self.eos_id < v:
            raise ValueError(f"eos_id must be in [0, {v}), got {self.eos_id}")
        if self.backoff.shape != (v,) or self.indptr.shape != (v + 1,):
            raise ValueError(
                f"backoff must have shape [{v}] and indptr [{v + 1}], got "
                f"{list(self.backoff.shape)} and {list(self.indptr.shape)}"
            )
        if self.targets.shape != self.probs.shape or int(self.indptr[-1]) != len(self.targets):
            raise ValueError("targets and probs must both have indptr[-1] entries")

    @property
    def vocab_size(self) -> int:
        """V, the number of ids."""
        return int(self.unigram.shape[0])

    @property
    def num_bigrams(self) -> int:
        """The number of stored (seen) bigrams."""
        return int(self.targets.shape[0])

    @functools.cached_property
    def keys(self) -> torch.Tensor:
        """``x·V + y`` of every stored bigram, ascending (for pair look-ups; built once)."""
        rows = torch.repeat_interleave(
            torch.arange(self.vocab_size, device=self.indptr.device), torch.diff(self.indptr)
        )
        return rows * self.vocab_size + self.targets

    def to(self, device: torch.device | str) -> KneserNeyBigram:
        """A copy with every tensor on ``device`` (rows are then built there)."""
        return KneserNeyBigram(
            eos_id=self.eos_id,
            unigram=self.unigram.to(device),
            backoff=self.backoff.to(device),
            indptr=self.indptr.to(device),
            targets=self.targets.to(device),
            probs=self.probs.to(device),
            discounts=dict(self.discounts),
            fallback=dict(self.fallback),
        )

    def _check_ids(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, device=self.unigram.device)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{name} must be integer ids, got dtype {ids.dtype}")
        ids = ids.to(torch.int64)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"{name} must be ids in [0, {self.vocab_size})")
        return ids

    def rows(self, contexts: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """P̂(· | x) for a batch of context ids: ``[*contexts.shape, V]``, each row sums to 1.

        This is the target ``P̂(y | x̄)`` the IMM core takes (Eq. (5), (12)). Memory is the
        output's plus the batch's seen bigrams.
        """
        contexts = self._check_ids("contexts", contexts)
        flat = contexts.reshape(-1)
        backoff, unigram, probs = self._in_dtype(dtype)
        out = backoff[flat, None] * unigram[None, :]
        _, at, entry = self._seen_entries(flat)
        out.view(-1).index_copy_(0, at, probs.index_select(0, entry))
        return out.reshape(*contexts.shape, self.vocab_size)

    def rows_over_(
        self, contexts: torch.Tensor, denominators: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """``scale[u] · P̂(· | contexts[u]) / denominators[u]`` for contexts ``[U]``, written
        into ``denominators [U, V]`` (a float tensor, > 0) and returned; ``scale`` is ``[U]``.

        Serialized IMM's factor P̂ / Q̂† in two passes over ``U × V`` numbers, where
        :meth:`rows` followed by the scaling and the division takes four.
        """
        flat = self._check_ids("contexts", contexts).reshape(-1)
        if denominators.shape != (len(flat), self.vocab_size) or scale.shape != flat.shape:
            raise ValueError(
                f"denominators must be [{len(flat)}, {self.vocab_size}] and scale "
                f"[{len(flat)}], got {list(denominators.shape)} and {list(scale.shape)}"
            )
        if not denominators.is_contiguous():
            raise ValueError("denominators must be a contiguous tensor")
        backoff, unigram, probs = self._in_dtype(denominators.dtype)
        row, at, entry = self._seen_entries(flat)
        cells = denominators.view(-1)
        # The seen bigrams' cells, read before the dense passes overwrite them.
        seen = probs.index_select(0, entry).mul_(scale.index_select(0, row))
        seen.div_(cells.index_select(0, at))
        torch.div(unigram, denominators, out=denominators)
        denominators.mul_((backoff[flat] * scale)[:, None])
        cells.index_copy_(0, at, seen)
        return denominators

    def _seen_entries(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For context ids ``flat [U]``, of each seen bigram (x, y) of ``x = flat[u]``: its
        row u, its cell ``u·V + y`` in a ``U × V`` table, and its entry in ``targets`` /
        ``probs``.

        One ``repeat_interleave`` and flat indices (``index_select`` / ``index_copy_``):
        2-D advanced indexing costs several times as much per entry, and a batch of an
        English corpus's contexts has tens of thousands of seen bigrams."""
        starts = self.indptr.index_select(0, flat)
        lengths = self.indptr.index_select(0, flat + 1) - starts
        total = int(lengths.sum())
        row_of = torch.repeat_interleave(lengths, output_size=total)
        # Entry j of row u is starts[u] + (j − offset[u]), offset[u] = Σ lengths before u.
        shift = starts - (torch.cumsum(lengths, 0) - lengths)
        entry = torch.arange(total, device=flat.device)
        entry += torch.repeat_interleave(shift, lengths, output_size=total)
        at = torch.add(self.targets.index_select(0, entry), row_of, alpha=self.vocab_size)
        return row_of, at, entry

    def _in_dtype(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(backoff, unigram, probs)`` in ``dtype``, cast once per dtype: rows are built in
        the dtype asked for, which halves the passes over ``B × V`` numbers for float32."""
        cache = self.__dict__.setdefault("_dtype_cache", {})
        if dtype not in cache:
            cache[dtype] = tuple(t.to(dtype) for t in (self.backoff, self.unigram, self.probs))
        return cache[dtype]

    def log_prob(self, contexts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``ln P̂(y | x)`` for paired ids (same shape), float64, without building rows."""
        contexts = self._check_ids("contexts", contexts)
        targets = self._check_ids("targets", targets)
        if contexts.shape != targets.shape:
            raise ValueError(
                f"contexts and targets must have the same shape, got {list(contexts.shape)} "
                f"and {list(targets.shape)}"
            )
        flat_contexts, flat_targets = contexts.reshape(-1), targets.reshape(-1)
        prob = self.backoff[flat_contexts] * self.unigram[flat_targets]
        keys = self.keys
        if len(keys):
            query = flat_contexts * self.vocab_size + flat_targets
            at = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
            prob = torch.where(keys[at] == query, self.probs[at], prob)
        return torch.log(prob).reshape(contexts.shape)

    def stream_log_prob(self, ids: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``ln P̂(w_t | w_{t−1})`` of every token of an id stream whose sentences end in
        ``<eos>``; the first token's context is ``<eos>`` (lmplz's ``<s>``)."""
        ids = self._check_ids("ids", ids)
        previous = torch.cat([torch.tensor([self.eos_id], device=ids.device), ids[:-1]])
        return self.log_prob(previous, ids)

    def perplexity(self, ids: np.ndarray | torch.Tensor) -> float:
        """``exp(−mean ln P̂)`` over every token of the stream, each ``<eos>`` included: the
        perplexity KenLM reports for the same sentences with ``<s>``/``</s>`` added."""
        if len(ids) == 0:
            raise ValueError("ids must hold at least one token")
        return math.exp(-float(self.stream_log_prob(ids).mean()))


def bigram_counts(ids: np.ndarray, vocab_size: int, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, counts)``: the distinct ``x·V + y`` of the stream's bigrams, ascending, and
    their counts; the first token's context is ``eos_id``."""
    ids = np.asarray(ids, dtype=np.int64)
    previous = np.empty_like(ids)
    previous[0] = eos_id
    previous[1:] = ids[:-1]
    return np.unique(previous * vocab_size + ids, return_counts=True)


def _lmplz_unigram_statistics(ids: np.ndarray, adjusted: np.ndarray, eos_id: int) -> np.ndarray:
    """The counts whose count-of-counts lmplz turns into unigram discounts.

    lmplz (``AdjustCounts``) adds every unigram's adjusted count to the statistics except the
    last one of its suffix-sorted stream, which it flushes with its raw count. That unigram is
    the one with the highest KenLM id: the word that first appears latest in the corpus
    (``</s>`` only when there are no words).
    """
    words, first = np.unique(ids, return_index=True)
    first = np.where(words == eos_id, -1, first)
    last = words[int(np.argmax(first))]
    counts = adjusted.copy()
    counts[last] = int((ids == last).sum())
    return counts


def estimate_kneser_ney(
    ids: np.ndarray, vocab_size: int, eos_id: int, match_lmplz: bool = True
) -> KneserNeyBigram:
    """The interpolated modified Kneser–Ney bigram of an id stream, as ``lmplz -o 2``
    estimates it (see the module docstring).

    ``ids`` is the training split as ids in ``[0, vocab_size)``, each sentence ended by
    ``eos_id``; the stream must end in ``eos_id``. With ``match_lmplz`` (the default), the
    unigram discounts reproduce one detail of lmplz's (see
    :func:`_lmplz_unigram_statistics`): one word's raw count stands in for its continuation
    count in the count-of-counts. Without it, they follow Chen & Goodman to the letter; the
    two differ by that one word's term, which matters only on small corpora.
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    if not 0 <= eos_id < vocab_size:
        raise ValueError(f"eos_id must be in [0, {vocab_size}), got {eos_id}")
    ids = np.asarray(ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError("ids must be a non-empty 1-D stream of token ids (the corpus is empty)")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"ids must be in [0, {vocab_size})")
    if ids[-1] != eos_id:
        raise ValueError(f"ids must end with eos_id {eos_id}: every sentence ends in <eos>")

    keys, counts = bigram_counts(ids, vocab_size, eos_id)
    context, target = np.divmod(keys, vocab_size)

    # Unigram level: continuation counts a(y) = number of distinct left contexts.
    adjusted = np.bincount(target, minlength=vocab_size)
    uni_d, uni_fallback = modified_discounts(
        _lmplz_unigram_statistics(ids, adjusted, eos_id) if match_lmplz else adjusted
    )
    uni_total = float(adjusted.sum())
    gamma0 = _backoff_mass(adjusted, uni_d) / uni_total
    unigram = (adjusted - _discount(adjusted, uni_d)) / uni_total + gamma0 / vocab_size

    # Bigram level: raw counts.
    bi_d, bi_fallback = modified_discounts(counts)
    discount = _discount(counts, bi_d)
    totals = np.bincount(context, weights=counts, minlength=vocab_size)
    discounted_mass = np.bincount(context, weights=discount, minlength=vocab_size)
    seen = totals > 0
    backoff = np.ones(vocab_size)
    backoff[seen] = discounted_mass[seen] / totals[seen]
    probs = (counts - discount) / totals[context] + backoff[context] * unigram[target]

    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(context, minlength=vocab_size), out=indptr[1:])
    return KneserNeyBigram(
        eos_id=eos_id,
        unigram=torch.from_numpy(unigram),
        backoff=torch.from_numpy(backoff),
        indptr=torch.from_numpy(indptr),
        targets=torch.from_numpy(target),
        probs=torch.from_numpy(probs),
        discounts={"unigram": tuple(uni_d), "bigram": tuple(bi_d)},
        fallback={"unigram": uni_fallback, "bigram": bi_fallback},
    )
