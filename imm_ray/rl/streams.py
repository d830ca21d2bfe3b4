"""Per-seed random streams: what a seed draws never depends on the seeds beside it.

Both RL paths draw from these. Each seed owns one ``torch.Generator`` per purpose
(training, evaluation, ...), seeded from ``numpy.random.SeedSequence([seed, purpose, ...])``
so that streams of different seeds and purposes are statistically independent. A seed's
uniforms for a whole trajectory are drawn in one call on its own generator; sampling from
them (:func:`inverse_cdf`) is vectorized over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Stream purposes (the second word of the SeedSequence entropy).
TRAIN_STREAM = 1
EVAL_STREAM = 2
#: Start seeds of the single-seed path's env resets (:mod:`imm_ray.rl.env_runner`).
START_STREAM = 3
#: Members drawn by the seed path's sampled extension (``imm_num_samples``).
IMM_STREAM = 4


def stream_seed(seed: int, *key: int) -> int:
    """A 64-bit generator seed for stream ``key`` of ``seed``, hashed by ``SeedSequence``."""
    return int(np.random.SeedSequence([seed, *key]).generate_state(1, dtype=np.uint64)[0])


class SeedStreams:
    """One ``torch.Generator`` per seed, all for the same purpose ``key``."""

    def __init__(self, seeds: Sequence[int], *key: int) -> None:
        self.generators = [torch.Generator().manual_seed(stream_seed(s, *key)) for s in seeds]

    def uniform(self, *shape: int) -> torch.Tensor:
        """``[S, *shape]`` uniforms on [0, 1); row i comes from seed i's generator alone."""
        out = torch.empty(len(self.generators), *shape)
        for row, generator in zip(out, self.generators, strict=True):
            row.uniform_(generator=generator)
        return out

    def get_state(self) -> list[torch.Tensor]:
        """Every generator's state, to checkpoint the streams."""
        return [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[torch.Tensor]) -> None:
        if len(states) != len(self.generators):
            raise ValueError(f"expected {len(self.generators)} generator states, got {len(states)}")
        for generator, state in zip(self.generators, states, strict=True):
            generator.set_state(state)


def inverse_cdf(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The index ``i`` with ``cdf[i−1] ≤ u < cdf[i]``: a draw from the distribution whose
    cumulative sums are ``cdf`` (``[..., K]``), given uniforms ``u`` (``[...]``).

    ``u`` is scaled by the total ``cdf[..., -1]``, so sums that rounding left just off 1
    still cover [0, 1); indices with zero mass have an empty interval and are never drawn.
    """
    index = torch.searchsorted(cdf, u.unsqueeze(-1) * cdf[..., -1:], right=True).squeeze(-1)
    return index.clamp_(max=cdf.shape[-1] - 1)
