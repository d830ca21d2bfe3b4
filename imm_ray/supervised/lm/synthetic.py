"""Synthetic corpora from a known order-2 Markov source, whose bigrams are known exactly.

The source emits ``w_t`` with probability ``T[w_{t−2}, w_{t−1}, w_t]``; symbol 0 is
``<eos>``, so a sampled stream cut at ``<eos>`` is a PTB-format corpus (one sentence per
line). It runs from its stationary distribution π over pairs ``(a, b)`` (the solution of
``π(b, c) = Σ_a π(a, b)·T[a, b, c]``), so every position of a sample is distributed alike,
and these are exact, not estimated:

- the true bigram ``P(y | x) = Σ_a π(a, x)·T[a, x, y] / Σ_a π(a, x)``, the Bayes-optimal
  restricted model P̂ that a Kneser–Ney estimate approaches (paper Eq. (3));
- the induced bigram ``Q̂(y | x) = Σ_h π(h | x)·Q(y | h)`` of any predictor Q that reads
  the last m tokens h (ending in x), under the stationary law of length-m windows
  (paper Eq. (4)): the quantity IMM matches against P̂.

Transition rows are Dirichlet draws around a Zipf-shaped base, so frequencies are skewed
as in text and the count-of-counts of modest corpora have no gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imm_ray._io import write_text_atomically

EOS = "<eos>"

#: Windows :meth:`MarkovSource.induced_bigram` may enumerate (V**m).
MAX_WINDOWS = 2_000_000


@dataclass(frozen=True)
class MarkovSource:
    """An order-2 Markov source over ``words`` (``words[0] == "<eos>"``)."""

    transitions: np.ndarray
    """``T[a, b, c] = P(w_t = c | w_{t−2} = a, w_{t−1} = b)``, ``[V, V, V]``, rows sum to 1."""
    words: tuple[str, ...]
    """The symbol names; ``words[0]`` is ``<eos>``, the others ``w1 … w{V−1}``."""

    def __post_init__(self) -> None:
        t = np.asarray(self.transitions, dtype=np.float64)
        v = len(self.words)
        if t.shape != (v, v, v):
            raise ValueError(f"transitions must have shape [{v}, {v}, {v}], got {list(t.shape)}")
        if v < 2 or self.words[0] != EOS:
            raise ValueError(f"words must hold >= 2 symbols, the first {EOS!r}")
        if np.any(t < 0) or not np.allclose(t.sum(-1), 1.0):
            raise ValueError("transitions must be non-negative with rows summing to 1")
        object.__setattr__(self, "transitions", t)

    @classmethod
    def random(
        cls,
        vocab_size: int,
        seed: int,
        concentration: float = 0.5,
        zipf: float = 1.1,
        eos_prob: float = 0.08,
    ) -> MarkovSource:
        """A random source: ``T[a, b, ·] ~ Dirichlet(concentration · V · base)`` with
        ``base ∝ rank^−zipf`` over the words, mixed so that ``<eos>`` has probability
        about ``eos_prob`` (sentences of ~1/eos_prob tokens)."""
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3, got {vocab_size}")
        if concentration <= 0 or zipf < 0 or not 0 < eos_prob < 1:
            raise ValueError(
                "concentration must be > 0, zipf >= 0 and eos_prob in (0, 1), got "
                f"{concentration}, {zipf}, {eos_prob}"
            )
        rng = np.random.default_rng(seed)
        base = np.arange(1, vocab_size, dtype=np.float64) ** -zipf
        base /= base.sum()
        words = rng.dirichlet(concentration * vocab_size * base, size=(vocab_size, vocab_size))
        # Keep every probability positive (the chain is then ergodic) however peaked the draw.
        words = 0.999 * words + 0.001 * base
        eos = rng.uniform(0.5, 1.5, size=(vocab_size, vocab_size, 1)) * eos_prob
        eos = np.minimum(eos, 0.9)
        transitions = np.concatenate([eos, (1 - eos) * words], axis=-1)
        names = (EOS, *(f"w{i}" for i in range(1, vocab_size)))
        return cls(transitions=transitions, words=names)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def stationary(self, tol: float = 1e-14, max_iter: int = 100_000) -> np.ndarray:
        """π over pairs ``(w_{t−1}, w_t)``, ``[V, V]``, summing to 1, by iterating the chain
        to a fixed point (to ``tol`` in L1)."""
        v = self.vocab_size
        pi = np.full((v, v), 1.0 / v**2)
        for _ in range(max_iter):
            nxt = np.einsum("ab,abc->bc", pi, self.transitions)
            if np.abs(nxt - pi).sum() < tol:
                return nxt / nxt.sum()
            pi = nxt
        raise RuntimeError(f"the chain did not reach its stationary law in {max_iter} steps")

    def true_bigram(self) -> np.ndarray:
        """``P(y | x)``, ``[V, V]`` (module docstring)."""
        pi = self.stationary()
        joint = np.einsum("ax,axy->xy", pi, self.transitions)
        return joint / joint.sum(-1, keepdims=True)

    def window_probabilities(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """``(windows [N, m], probabilities [N])``: every length-m window of the stationary
        stream with its probability (all V**m, in lexicographic order)."""
        v = self.vocab_size
        if window < 1 or v**window > MAX_WINDOWS:
            raise ValueError(
                f"window must be >= 1 with V**window <= {MAX_WINDOWS}, got {window} (V = {v})"
            )
        pi = self.stationary()
        if window == 1:
            return np.arange(v)[:, None], pi.sum(0)
        probs = pi  # [V, V] over (w1, w2); each step appends an axis for the next token.
        for _ in range(window - 2):
            transitions = self.transitions.reshape((1,) * (probs.ndim - 2) + (v, v, v))
            probs = probs[..., None] * transitions
        windows = np.indices((v,) * window).reshape(window, -1).T
        return windows, probs.reshape(-1)

    def induced_bigram(
        self, predictor: Callable[[np.ndarray], np.ndarray], window: int
    ) -> np.ndarray:
        """``Q̂(y | x)``, ``[V, V]``: ``predictor`` (windows ``[N, m]`` of ids → ``[N, V]``
        probabilities of the next token) averaged over the stationary windows ending in x."""
        windows, probs = self.window_probabilities(window)
        predictions = np.asarray(predictor(windows), dtype=np.float64)
        if predictions.shape != (len(windows), self.vocab_size):
            raise ValueError(
                f"predictor must return shape [{len(windows)}, {self.vocab_size}], got "
                f"{list(predictions.shape)}"
            )
        last = windows[:, -1]
        v = self.vocab_size
        induced = np.zeros((v, v))
        np.add.at(induced, last, probs[:, None] * predictions)
        return induced / np.bincount(last, weights=probs, minlength=v)[:, None]

    def sample(self, n_tokens: int, seed: int) -> np.ndarray:
        """A stationary stream of ``n_tokens`` ids."""
        if n_tokens < 2:
            raise ValueError(f"n_tokens must be >= 2, got {n_tokens}")
        rng = np.random.default_rng(seed)
        v = self.vocab_size
        pi = self.stationary().reshape(-1)
        out = np.empty(n_tokens, dtype=np.int64)
        out[0], out[1] = divmod(int(rng.choice(v * v, p=pi / pi.sum())), v)
        cumulative = np.cumsum(self.transitions, axis=-1)
        draws = rng.random(n_tokens)
        for t in range(2, n_tokens):
            row = cumulative[out[t - 2], out[t - 1]]
            out[t] = min(int(np.searchsorted(row, draws[t] * row[-1], side="right")), v - 1)
        return out

    def write_corpus(
        self, folder: str | Path, tokens: tuple[int, int, int], seed: int
    ) -> dict[str, Path]:
        """Write ``train.txt``, ``valid.txt``, ``test.txt`` (about ``tokens`` tokens each,
        cut after an ``<eos>``) in PTB format: one sentence per line, no ``<eos>`` written."""
        folder = Path(folder)
        files = {}
        for i, (split, n) in enumerate(zip(("train", "valid", "test"), tokens, strict=True)):
            stream = self.sample(n, seed=seed * 3 + i)
            ends = np.flatnonzero(stream == 0)
            if len(ends) == 0:
                raise ValueError(f"the {split} sample of {n} tokens holds no <eos>: sample more")
            lines, start = [], 0
            for end in ends:
                lines.append(" ".join(self.words[w] for w in stream[start:end]) + "\n")
                start = end + 1
            files[split] = folder / f"{split}.txt"
            write_text_atomically(files[split], "".join(lines))
        return files
