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

from collections.abc import Callable

import torch

from imm_ray.imm import StaleSnapshot, imm_backward_memory_bounded, imm_loss
from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.lm.histories import HistorySampler
from imm_ray.supervised.lm.model import PRECISIONS, LSTMLanguageModel, State


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
    """The stale snapshot Q†, its carried state and its running induced model Q̂†.

    ``precision`` is the arithmetic of the snapshot's forward pass: ``"fp32"``, or ``"bf16"``
    (the snapshot is a bfloat16 copy; its probabilities are float32). The correction needs no
    more: Q̂† is the running mean of the same predictions Q† that the correction divides,
    so the correction averages to 1 over the rows of a context whatever their rounding.

    The ``V × V`` table of Q̂†'s sums is allocated once, uninitialized, and a context's row is
    set when the context is first seen after a refresh (its count is 0): a ``torch.zeros``
    writes every page of it (0.14 s for V = 10,000 on this project's machine), and a refresh
    only zeroes the counts.
    """

    def __init__(self, refresh_every: int, vocab_size: int, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.snapshot = StaleSnapshot(refresh_every)
        self.vocab_size = vocab_size
        self.precision = precision
        self.state: State | None = None
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.dtype = torch.float32

    def _reset_induced(self, device: torch.device) -> None:
        v = self.vocab_size
        if self.sums is None or self.sums.dtype != self.dtype or self.sums.device != device:
            # Rows are set when their context is first seen (count 0), so the table's
            # untouched pages are never written.
            self.sums = torch.empty(v, v, device=device, dtype=self.dtype)
            self.counts = torch.zeros(v, device=device, dtype=self.dtype)
        else:
            self.counts.zero_()  # type: ignore[union-attr]

    def corrected_target_(
        self,
        model: LSTMLanguageModel,
        step: int,
        inputs: torch.Tensor,
        state: State,
        target_rows: KneserNeyBigram | Callable[[torch.Tensor], torch.Tensor],
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``scale`` times the weights Q†(y | x_t) / Q̂†(y | x̄_t) · P̂(y | x̄_t) of ĨMM
        (Algorithm 2, line 14) at every position of ``inputs [B, L]``, as ``[B·L, V]``,
        without gradient.

        ``target_rows`` maps context ids ``[U]`` to P̂(· | x̄) ``[U, V]`` (a bigram's
        ``rows``), or is a :class:`KneserNeyBigram`, whose ``rows_over_`` forms the factor
        in fewer passes; it is asked for each distinct context of the batch once, and the factor
        ``scale · P̂ / Q̂†`` is formed per context, so that only the snapshot's predictions
        and the result are ``B·L × V`` (a caller sets ``scale`` to λ). ĨMM of the main pass's
        log-probs is then ``−Σ_y weights · log Q``. ``step`` counts batches (a refresh when
        ``step % r == 0``); ``state`` is the primary branch's state carried into this batch,
        which a fresh snapshot starts from.
        """
        v = self.vocab_size
        with torch.no_grad():
            if self.snapshot.maybe_refresh(model, step):
                if self.precision == "bf16":
                    # A bf16 copy rather than autocast: no weight casts on every batch.
                    self.snapshot.module.to(torch.bfloat16)  # type: ignore[union-attr]
                self.state = tuple(s.detach().clone() for s in state)  # type: ignore[assignment]
                self.dtype = torch.promote_types(model.decoder.weight.dtype, torch.float32)
                self._reset_induced(inputs.device)
            logits, self.state = self.snapshot.module.logits(inputs, self.state, dropout=False)  # type: ignore[union-attr]
            stale = torch.softmax(logits.reshape(-1, v), dim=-1, dtype=self.dtype)  # Q†(· | x_t)
            flat = inputs.reshape(-1)
            sums, counts = self.sums, self.counts
            contexts, position_context = torch.unique(flat, return_inverse=True)
            # A context's row starts at the smallest normal number rather than 0, so that
            # sums > 0 everywhere and a Q† that underflows to 0 gets the weight 0 / sums = 0
            # (its bias on Q̂† is below 1e-38).
            new = contexts[counts[contexts] == 0]  # type: ignore[index]
            sums.index_fill_(0, new, torch.finfo(self.dtype).tiny)  # type: ignore[union-attr]
            sums.index_add_(0, flat, stale)  # type: ignore[union-attr]
            counts.index_add_(0, flat, torch.ones_like(flat, dtype=self.dtype))  # type: ignore[union-attr]
            # Per context: scale · P̂(y | x̄) / Q̂†(y | x̄), Q̂† = sums[x̄] / counts[x̄].
            factor = sums.index_select(0, contexts)  # type: ignore[union-attr]
            row_scale = counts[contexts] * scale  # type: ignore[index]
            if isinstance(target_rows, KneserNeyBigram):
                factor = target_rows.rows_over_(contexts, factor, row_scale)
            else:
                rows = target_rows(contexts).reshape(-1, v).to(self.dtype)
                factor = rows.mul_(row_scale[:, None]).div_(factor)
            return stale.mul_(factor.index_select(0, position_context))


class _SoftTargetNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_probs: torch.Tensor, weights: torch.Tensor, rows: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(weights)
        ctx.rows = rows
        ctx.shape = log_probs.shape
        return -torch.dot(weights.reshape(-1), log_probs.reshape(-1)) / rows

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (weights,) = ctx.saved_tensors
        return weights.mul_(grad * (-1.0 / ctx.rows)).view(ctx.shape), None, None


def soft_target_nll(log_probs: torch.Tensor, weights: torch.Tensor, rows: int) -> torch.Tensor:
    """``−Σ weights · log_probs / rows``, differentiable in ``log_probs`` only.

    ``weights`` (as many numbers as ``log_probs``, no gradient) is consumed: the backward
    pass writes the gradient into its memory rather than allocating a ``B·L × V`` tensor,
    so the graph can be run backward once.
    """
    if weights.numel() != log_probs.numel():
        raise ValueError(
            f"weights must have as many numbers as log_probs ({log_probs.numel()}), "
            f"got {weights.numel()}"
        )
    return _SoftTargetNLL.apply(log_probs, weights.detach(), rows)
