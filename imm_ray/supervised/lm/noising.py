"""Kneser–Ney data noising (Xie et al. 2017), the baseline of Table 1 (paper App. B).

Each token w_t of the training stream is replaced, with probability

    γ(w_{t−1}) = γ0 · N1+(w_{t−1}, ·) / c(w_{t−1}),

by a draw from the continuation distribution q(y) ∝ N1+(·, y) (the number of distinct
words that precede y). Here N1+(x, ·) is the number of distinct words that follow x and
c(x) the count of x as a context, both on the training stream. The whole stream is noised
afresh every epoch, so a replaced token is the target of one step and the context of the
next: inputs and targets are noised together, as one sequence. γ uses the *clean*
previous token. Appendix B reads γ(x) as λ·ν(x) with ν the Kneser–Ney missing mass, which
makes the expected counts an interpolation of the data with a Kneser–Ney-like bigram
(Eq. (16)); IMM instead matches the model's *induced* bigram to the bigram itself.
"""

from __future__ import annotations

import numpy as np
import torch

from imm_ray import checks
from imm_ray.restricted.kneser_ney import bigram_counts


class KneserNeyNoiser:
    """γ(x) and q(y) of one training stream; :meth:`noise` draws a noised copy of a stream."""

    def __init__(self, train: np.ndarray, vocab_size: int, eos_id: int, gamma0: float) -> None:
        checks.number("gamma0", gamma0, at_least=0, at_most=1)
        keys, counts = bigram_counts(np.asarray(train), vocab_size, eos_id)
        context, target = np.divmod(keys, vocab_size)
        followers = np.bincount(context, minlength=vocab_size).astype(np.float64)
        occurrences = np.bincount(context, weights=counts, minlength=vocab_size)
        gamma = np.zeros(vocab_size)
        seen = occurrences > 0
        gamma[seen] = gamma0 * followers[seen] / occurrences[seen]
        continuation = np.bincount(target, minlength=vocab_size).astype(np.float64)
        self.gamma0 = float(gamma0)
        #: γ(x), ``[V]``: the probability that the token after x is replaced.
        self.gamma = torch.from_numpy(np.minimum(gamma, 1.0))
        #: q(y) ∝ N1+(·, y), ``[V]``: what a replaced token is drawn from.
        self.q = torch.from_numpy(continuation / continuation.sum())

    def noise(self, stream: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A copy of the id stream ``[..., T]`` with tokens 1 … T−1 of each row noised."""
        gamma = self.gamma.to(stream.device)[stream[..., :-1]]
        replace = torch.rand(gamma.shape, generator=generator, device=stream.device) < gamma
        draws = (
            torch.multinomial(
                self.q.to(stream.device), int(replace.sum()), replacement=True, generator=generator
            )
            if bool(replace.any())
            else stream.new_empty(0)
        )
        out = stream.clone()
        tail = out[..., 1:]
        tail[replace] = draws.to(stream.dtype)
        return out
