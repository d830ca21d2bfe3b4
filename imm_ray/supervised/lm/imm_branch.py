"""The IMM branch of an LSTM language model: sampled IMM (Eq. (12)) and serialized IMM
(Eq. (13), Algorithm 2), on top of :mod:`imm_ray.imm`.

**Sampled.** For the position i of row b, whose input is x̄ = ``inputs[b, i]``, k windows
are drawn from extend(x̄) (:class:`~imm_ray.supervised.lm.histories.HistorySampler`). Each
window's last i + 1 tokens run from the state the primary branch carried into this batch
for row b, detached and unchanged, without dropout; the output after the last of them
(which is x̄) is Q(· | x̄, x̃ᵢ). ``imm_loss`` averages the k softmaxes into Q̂(· | x̄) by
``logsumexp`` and scores −Σ_y P̂(y | x̄) log Q̂(y | x̄), so autograd gives the exact
crosstalk gradient (Eq. (20)). All B·L·k histories go through the LSTM in one batched
call, grouped by length
(:meth:`~imm_ray.supervised.lm.model.LSTMLanguageModel.last_log_probs`); the
memory-bounded mode instead runs the B·L histories of one sample at a time
(:func:`~imm_ray.imm.imm_backward_memory_bounded`).

**Serialized.** A stale snapshot Q† (:class:`~imm_ray.imm.StaleSnapshot`, refreshed every
r batches) reads the same batches with its own carried state. Its induced model Q̂†(· | x̄)
is the mean of its predictions at every position with input x̄ since the last refresh
(Eq. (6) over the stream read so far, the current batch included), and the main
pass's log-probs are trained against the corrected target Q†/Q̂† · P̂ (Eq. (13)).
"""

from __future__ import annotations

import torch

from imm_ray.imm import (
    StaleSnapshot,
    imm_backward_memory_bounded,
    imm_loss,
    serialized_correction,
    serialized_imm_loss,
)
from imm_ray.supervised.lm.histories import HistorySampler
from imm_ray.supervised.lm.model import LSTMLanguageModel, State


def history_tokens(
    sampler: HistorySampler, ends: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [B, L, k, L], lengths [B, L, k])`` of the histories of ``ends [B, L, k]``.

    Position i's history is its window's last i + 1 tokens, left-aligned (entries past
    the length repeat the window's last token and are never read).
    """
    if steps > sampler.unroll:
        raise ValueError(f"a batch of {steps} steps needs windows of >= {steps} tokens")
    windows = sampler.windows(ends)  # [B, L, k, unroll]
    position = torch.arange(steps).view(1, steps, 1, 1)
    column = torch.arange(steps).view(1, 1, 1, steps)
    index = (sampler.unroll - 1 - position + column).clamp(max=sampler.unroll - 1)
    tokens = torch.gather(windows, 3, index.expand(*ends.shape, steps))
    lengths = (position[..., 0] + 1).expand(ends.shape)
    return tokens, lengths


def _repeat_state(state: State, per_row: int) -> State:
    """Row b's state repeated ``per_row`` times, as ``[layers, rows·per_row, hidden]``."""
    return tuple(s.detach().repeat_interleave(per_row, dim=1) for s in state)  # type: ignore[return-value]


def sampled_imm_backward(
    model: LSTMLanguageModel,
    inputs: torch.Tensor,
    state: State,
    target: torch.Tensor,
    sampler: HistorySampler,
    k: int,
    generator: torch.Generator | None = None,
    memory_bounded: bool = False,
) -> tuple[float, int]:
    """Accumulates ∇ IMM into ``.grad`` for the batch ``inputs [B, L]``; ``(risk, rows)``.

    ``state`` is the state carried into the batch (read, never changed); ``target``
    ``[B, L, V]`` is P̂(· | inputs). Positions whose input has no window (extend(x̄) empty)
    are left out; the risk is the mean over the others (0 and 0 rows when none is left).
    """
    rows, steps = inputs.shape
    device = inputs.device
    ends = sampler.sample_ends(inputs.cpu(), k, generator)
    tokens, lengths = history_tokens(sampler, ends, steps)
    keep = sampler.has_history(inputs.cpu()).reshape(-1)
    count = int(keep.sum())
    if count == 0:
        return 0.0, 0
    # [B·L, k, L] histories of the kept positions and their starting rows.
    tokens = tokens.reshape(rows * steps, k, steps)[keep].to(device)
    lengths = lengths.reshape(rows * steps, k)[keep]
    row_of = torch.arange(rows).repeat_interleave(steps)[keep].to(device)
    target = target.reshape(rows * steps, -1)[keep.to(device)]
    start = tuple(s.detach()[:, row_of] for s in state)

    def member(i: int) -> torch.Tensor:
        return model.last_log_probs(tokens[:, i], lengths[:, i], start)  # type: ignore[arg-type]

    if memory_bounded:
        return float(imm_backward_memory_bounded(member, k, target)), count
    all_start = _repeat_state(start, k)  # type: ignore[arg-type]
    members = model.last_log_probs(tokens.reshape(count * k, steps), lengths.reshape(-1), all_start)
    risk = imm_loss(members.view(count, k, -1), target)
    risk.backward()
    return float(risk.detach()), count


class SerializedIMM:
    """The stale snapshot Q†, its carried state and its running induced model Q̂†."""

    def __init__(self, refresh_every: int, vocab_size: int) -> None:
        self.snapshot = StaleSnapshot(refresh_every)
        self.vocab_size = vocab_size
        self.state: State | None = None
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    def loss(
        self,
        model: LSTMLanguageModel,
        step: int,
        inputs: torch.Tensor,
        state: State,
        log_probs: torch.Tensor,
        target: torch.Tensor,
    ) -> torch.Tensor:
        """ĨMM (Algorithm 2, line 14) of the main pass's ``log_probs [B, L, V]``.

        ``step`` counts batches (a refresh when ``step % r == 0``); ``state`` is the primary
        branch's state carried into this batch, which a fresh snapshot starts from.
        """
        v = self.vocab_size
        if self.snapshot.maybe_refresh(model, step):
            self.state = tuple(s.detach().clone() for s in state)  # type: ignore[assignment]
            self.sums = torch.zeros(v, v, device=inputs.device)
            self.counts = torch.zeros(v, device=inputs.device)
        stale, self.state = self.snapshot(inputs, self.state, dropout=False)
        flat = inputs.reshape(-1)
        self.sums.index_add_(0, flat, stale.exp().reshape(-1, v))  # type: ignore[union-attr]
        self.counts.index_add_(0, flat, torch.ones_like(flat, dtype=self.counts.dtype))  # type: ignore[union-attr]
        induced = torch.log(self.sums[flat] / self.counts[flat, None])  # type: ignore[index]
        correction = serialized_correction(stale.reshape(-1, v), induced)
        return serialized_imm_loss(log_probs.reshape(-1, v), target.reshape(-1, v), correction)
