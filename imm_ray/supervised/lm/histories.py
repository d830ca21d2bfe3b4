"""extend(x̄) for a language model: training windows that end in the previous word x̄.

A history of the short context x̄ is a window of ``unroll`` consecutive training tokens
whose last token is x̄ (paper Eq. (10); the windows of the public LSTM code). The index
maps each token to the end positions of all its windows, so that a sample is a uniform
draw from extend(x̄) (Eq. (12)), made independently for every (row, position, sample).
Memory is O(n) for n training tokens (one pointer per window, footnote 1). The index
lives on the CPU, where draws are made with a CPU generator; callers move the windows.
"""

from __future__ import annotations

import numpy as np
import torch

from imm_ray import checks


class HistorySampler:
    """Uniform draws from extend(x̄) over the windows of one training stream."""

    def __init__(self, train: np.ndarray | torch.Tensor, vocab_size: int, unroll: int) -> None:
        checks.integer("unroll", unroll, 1)
        train = torch.as_tensor(np.asarray(train), dtype=torch.int64)
        if train.dim() != 1 or len(train) < unroll:
            raise ValueError(
                f"the training stream must hold at least unroll = {unroll} tokens, got {len(train)}"
            )
        self.unroll, self.vocab_size = unroll, vocab_size
        self.train = train
        ends = torch.arange(unroll - 1, len(train))
        last = train[ends]
        order = torch.sort(last, stable=True).indices
        #: End positions of every window, grouped by their last token (CSR by token).
        self.ends = ends[order]
        self.counts = torch.bincount(last, minlength=vocab_size)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def has_history(self, contexts: torch.Tensor) -> torch.Tensor:
        """Whether extend(x̄) is non-empty for each context (bool, same shape)."""
        return self.counts[contexts] > 0

    def sample_ends(
        self, contexts: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """End positions of k uniform windows per context, ``[*contexts.shape, k]``.

        A context without windows gets position ``unroll − 1`` (a placeholder that callers
        mask with :meth:`has_history`).
        """
        checks.integer("k", k, 1)
        counts = self.counts[contexts].unsqueeze(-1)
        u = torch.rand(
            (*contexts.shape, k), generator=generator, device=self.ends.device, dtype=torch.float64
        )
        offset = torch.minimum((u * counts).long(), (counts - 1).clamp(min=0))
        picked = self.starts[contexts].unsqueeze(-1) + offset
        ends = self.ends[picked.clamp(max=max(len(self.ends) - 1, 0))]
        return torch.where(counts > 0, ends, torch.full_like(ends, self.unroll - 1))

    def windows(self, ends: torch.Tensor) -> torch.Tensor:
        """The ``unroll`` tokens of each window, ``[*ends.shape, unroll]``; the last is x̄."""
        offsets = torch.arange(-self.unroll + 1, 1, device=ends.device)
        return self.train[(ends.unsqueeze(-1) + offsets).clamp(min=0)]
